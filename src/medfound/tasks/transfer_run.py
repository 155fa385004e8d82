"""What the fine-tuning commands share about a run: paths made absolute, the starting encoder, the
patient-level split, the data fingerprint an exact resume checks, and the provenance an exported
file carries (without any path: folder names can be patient ids)."""

import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from medfound.data.splits import assign_splits
from medfound.models import FoundationModel, load_model

log = logging.getLogger(__name__)


def absolute_fields(fields: dict, names: Iterable[str]) -> dict:
    """`fields` with the path fields `names` made absolute (and `init`, unless it is random), so
    that a run can be resumed from any folder."""
    out = dict(fields)
    for name in names:
        if out.get(name):
            out[name] = str(Path(out[name]).absolute())
    if out.get("init") and out["init"] != "random":
        out["init"] = str(Path(out["init"]).absolute())
    return out


def resolve_transfer_config(
    cls, run_dir: Path, config, path_fields, *, config_file, overrides: dict | None, resume: bool
):
    """A fine-tuning run's config, validated, path fields absolute: `config` as given, else
    defaults + `config_file` + `overrides` (a resumed run: the config saved in `run_dir`)."""
    from medfound.engine.config import resolve_run_config
    from medfound.engine.loop_config import RESUMABLE_FIELDS

    if config is None:
        config = resolve_run_config(
            cls,
            run_dir,
            config_file=config_file,
            overrides=absolute_fields(overrides or {}, path_fields),
            resume=resume,
            may_change=RESUMABLE_FIELDS,
        )
    config.validate()
    return dataclasses.replace(config, **absolute_fields(dataclasses.asdict(config), path_fields))


def load_encoder(name: str, init: str, seed: int) -> FoundationModel:
    """The encoder a run starts from: its weight file, or a seeded random start said out loud."""
    random = init == "random"
    encoder = load_model(name, None if random else init, random_init=random, seed=seed)
    if random:
        log.info("%s: initialised randomly (seed %d), as --init random asks", name, seed)
    return encoder.train()


def patient_splits(patients: np.ndarray, config, given: np.ndarray | None = None) -> np.ndarray:
    """train/val/test per item from the config's fractions (whole patients; seeded by split_seed,
    else seed), or `given`; with a label_fraction below 1, training items outside the label subset
    are marked "unused" (they never reach training, validation or test)."""
    fractions = (
        1 - config.val_fraction - config.test_fraction,
        config.val_fraction,
        config.test_fraction,
    )
    split_seed = config.seed if config.split_seed is None else config.split_seed
    splits = assign_splits(patients, fractions, seed=split_seed, given=given)
    if config.label_fraction < 1:
        from medfound.evaluation.label_fractions import nested_subsets

        label_seed = config.seed if config.label_seed is None else config.label_seed
        fraction = config.label_fraction
        keep = nested_subsets(patients, splits == "train", [fraction], label_seed)[fraction]
        splits = np.where((splits == "train") & ~keep, "unused", splits)
    return splits


def batch_for_subset(config, items: int, per_item: int = 1):
    """The config, with its batch shrunk to the training subset when a label subset holds fewer
    items than one batch (a 1% subset of a small data set), said in a warning; the run's saved
    config records the batch it trained with."""
    from medfound.errors import ConfigError

    if config.label_fraction >= 1 or items * per_item >= config.batch_size:
        return config
    if items * per_item < 2:
        raise ConfigError(
            f"label_fraction {config.label_fraction} leaves {items} training item(s): too few "
            "to train on (raise the fraction)"
        )
    log.warning(
        "label_fraction %g leaves %d training items: batch %d -> %d",
        config.label_fraction,
        items,
        config.batch_size,
        items * per_item,
    )
    return dataclasses.replace(config, batch_size=items * per_item)


def data_fingerprint(*parts) -> str:
    """A digest of what an exact resume needs unchanged (item ids, labels, splits ...): strings
    and sequences are joined by lines, arrays hashed by their bytes."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update("\n".join(map(str, part)).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def provenance(config, path_fields: Iterable[str], encoder, data: dict) -> dict:
    """How a fine-tuned model was made: settings without paths, the starting weights' sha256."""
    hidden = {*path_fields, "init"}
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in hidden}
    weights = getattr(encoder, "weights_sha256", None)
    init = "random" if config.init == "random" else {"sha256": weights}
    return {"config": settings, "init": init, "data": data}


def is_main_process() -> bool:
    """Rank 0 (or no torchrun): the process that evaluates and writes the run's results."""
    return int(os.environ.get("RANK", "0")) == 0
