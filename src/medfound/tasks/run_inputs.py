"""What every pretraining run shares about its inputs: paths made absolute, the data fingerprint that
an exact resume requires, and the provenance an exported weight file may carry (without any path)."""

import dataclasses
import hashlib
from pathlib import Path

# Fields that name files: they stay in the run folder's config.yaml, never in a file made to be shared.
PATH_FIELDS = ("data", "val_data", "init", "eval_data")


def absolute_paths(fields: dict) -> dict:
    """The path fields of `fields` made absolute, so that a run can be resumed from any folder."""
    fields = dict(fields)
    for name in ("data", "val_data"):
        if fields.get(name):
            fields[name] = [str(Path(p).absolute()) for p in fields[name]]
    if fields.get("init") not in (None, "random"):
        fields["init"] = str(Path(fields["init"]).absolute())
    if fields.get("eval_data"):
        fields["eval_data"] = str(Path(fields["eval_data"]).absolute())
    return fields


def shareable_provenance(config, sources, model) -> dict:
    """How an exported model was made, without any path: in MIMIC-style layouts folder names are
    subject and study ids. The data are described by their fingerprint and count, the starting
    weights by their sha256."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in PATH_FIELDS}
    init = "random" if config.init == "random" else {"sha256": model.weights_sha256}
    data = {"fingerprint": fingerprint(sources), "images": len(sources)}
    return {"config": settings, "init": init, "data": data}


def fingerprint(sources) -> str:
    """A digest of the image set (resolved paths, order-free): what an exact resume requires."""
    paths = sorted(str(p.resolve()) for s in sources for p in s.paths)
    return hashlib.sha256("\n".join(paths).encode()).hexdigest()
