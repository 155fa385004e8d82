"""TensorFlow SavedModels and checkpoints given as `--weights`: converted once, cached by content hash."""

import hashlib
import os
from pathlib import Path

from medfound.convert.savedmodel import bundle_prefix
from medfound.files import update_digest


def cache_dir() -> Path:
    """Where converted weights are kept: $MEDFOUND_CACHE, else ~/.cache/medfound."""
    return Path(os.environ.get("MEDFOUND_CACHE", Path.home() / ".cache" / "medfound")) / "converted"


def is_tensorflow_checkpoint(path: Path) -> bool:
    """A SavedModel directory or a TF checkpoint prefix (`model.ckpt-N` beside `model.ckpt-N.index`)."""
    path = Path(path)
    if path.is_dir():
        return (path / "saved_model.pb").exists()
    return path.with_name(path.name + ".index").exists()


def savedmodel_digest(src: Path) -> str:
    """sha256 over saved_model.pb (if any) and every bundle file: a changed checkpoint converts anew."""
    prefix = bundle_prefix(src)
    digest = hashlib.sha256()
    graph = [src / "saved_model.pb"] if src.is_dir() else []
    for path in [*graph, *sorted(prefix.parent.glob(prefix.name + ".*"))]:
        digest.update(path.name.encode())
        update_digest(digest, path)
    return digest.hexdigest()


def converted_weights(src: str | Path, model: str) -> Path:
    """The medfound weight file for TF checkpoint `src` as `model`, converting it on first use."""
    from medfound.convert.remedis import convert_remedis
    from medfound.convert.simclr import convert_simclr
    from medfound.models import get_card

    src = Path(src)
    out = cache_dir() / f"{savedmodel_digest(src)[:32]}-{model.replace(':', '_')}.safetensors"
    if not out.exists():  # written atomically: a crash leaves no entry
        convert = convert_simclr if get_card(model).family == "simclr" else convert_remedis
        convert(src, out, model=model)
    return out
