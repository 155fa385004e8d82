"""SavedModel directories given as `--weights`: converted once, cached by content hash."""

import hashlib
import os
from pathlib import Path

from medfound.convert.savedmodel import variables_prefix


def cache_dir() -> Path:
    """Where converted weights are kept: $MEDFOUND_CACHE, else ~/.cache/medfound."""
    return Path(os.environ.get("MEDFOUND_CACHE", Path.home() / ".cache" / "medfound")) / "converted"


def savedmodel_digest(src: Path) -> str:
    """sha256 over saved_model.pb and every variables file: a changed checkpoint converts anew."""
    prefix = variables_prefix(src)
    digest = hashlib.sha256()
    for path in [src / "saved_model.pb", *sorted(prefix.parent.glob(prefix.name + ".*"))]:
        digest.update(path.name.encode())
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def converted_weights(src: str | Path, model: str) -> Path:
    """The medfound weight file for SavedModel `src` as `model`, converting it on first use."""
    from medfound.convert.remedis import convert_remedis

    src = Path(src)
    out = cache_dir() / f"{savedmodel_digest(src)[:32]}-{model.replace(':', '_')}.safetensors"
    if not out.exists():
        convert_remedis(src, out, model=model)  # written atomically: a crash leaves no entry
    return out
