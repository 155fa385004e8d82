"""Training checkpoints: atomic files holding everything needed to continue exactly.

A checkpoint is `RUN_DIR/checkpoints/step-00001234.pt`, written to a temporary file, fsync'ed and
renamed (files.atomic_write), so a run killed at any moment (SIGKILL, power loss) leaves only complete
checkpoints. It stores what the caller passes (engine/train_state.py: model, optimiser, scheduler,
data position, every rank's random-number states) and is read back with `weights_only=True`. Should the
newest one still be unreadable (a disk fault), `load_newest_checkpoint` falls back to the one before.
"""

import logging
import random
import re
from pathlib import Path

import numpy as np
import torch

from medfound.errors import WeightsError
from medfound.files import atomic_write

log = logging.getLogger(__name__)

_NAME = re.compile(r"step-(\d{8})\.pt")
UNREADABLE_SUFFIX = ".unreadable"


def rng_state() -> dict:
    """Every random-number generator's state, in types `weights_only` loading accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict) -> None:
    """Put every generator back where `rng_state` found it."""
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """Where the checkpoint of `step` lives."""
    return Path(run_dir) / "checkpoints" / f"step-{step:08d}.pt"


def save_checkpoint(run_dir: Path, step: int, state: dict, keep: int = 2) -> Path:
    """Write `state` for `step` atomically; keep the newest `keep` checkpoints."""
    path = checkpoint_path(run_dir, step)
    payload = {**state, "step": step}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    # Only older checkpoints make room, never the one just written.
    older = [p for p in list_checkpoints(run_dir) if p != path and _step_of(p) < step]
    for old in older[: max(0, len(older) - (keep - 1))]:
        old.unlink(missing_ok=True)
    return path


def _step_of(path: Path) -> int:
    return int(_NAME.fullmatch(path.name).group(1))


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary files are not listed)."""
    folder = Path(run_dir) / "checkpoints"
    found = (
        [p for p in folder.glob("step-*.pt") if _NAME.fullmatch(p.name)] if folder.is_dir() else []
    )
    return sorted(found)


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint (weights_only); WeightsError naming the file when it cannot be read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc


def load_newest_checkpoint(run_dir: Path) -> tuple[Path, dict] | None:
    """The newest readable checkpoint of a run and its state (None when there is none).

    An unreadable newest file is reported, renamed to `*.pt.unreadable` and the previous one used;
    only when none can be read is that an error (listing each file's reason).
    """
    failures = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path)
        except WeightsError as exc:
            # Set aside (kept for inspection), so that retention never counts it as a checkpoint.
            aside = path.with_name(path.name + UNREADABLE_SUFFIX)
            path.replace(aside)
            log.warning("%s; set aside as %s, using the checkpoint before it", exc, aside.name)
            failures.append(str(exc))
    if failures:
        raise WeightsError(f"{run_dir}: no readable checkpoint: " + "; ".join(failures))
    return None
