"""Training metrics on disk: JSONL and CSV in the run folder, TensorBoard events with tensorboardX.

Only the main rank writes. On resume, rows after the checkpoint's step are dropped first (they belong
to the part of the run that is being redone), so the log reads as one uninterrupted run. A line cut
by a kill mid-write is dropped too.
"""

import csv
import json
import logging
import time
from pathlib import Path

import torch

from medfound.files import atomic_write

log = logging.getLogger(__name__)


class MetricsLog:
    """Appends one row of scalars per logged step to RUN_DIR/metrics.{jsonl,csv} (+ tensorboard/)."""

    def __init__(
        self, run_dir: Path, resume_step: int = 0, tensorboard: bool = True, name: str = "metrics"
    ):
        """`name` names the files (`metrics`: training rows; `validation`: held-out rows)."""
        self.run_dir = Path(run_dir)
        self.jsonl = self.run_dir / f"{name}.jsonl"
        self.csv = self.run_dir / f"{name}.csv"
        rows = _rows_up_to(self.jsonl, resume_step)
        self._rewrite(rows)
        self.columns: list[str] | None = list(rows[0]) if rows else None
        events = self.run_dir / "tensorboard"
        self.writer = _tensorboard_writer(
            events if name == "metrics" else events / name, resume_step, tensorboard
        )

    def write(self, row: dict[str, float]) -> None:
        """Append `row` (must contain 'step'); the first row fixes the CSV columns."""
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.columns is None:
            self.columns = list(row)
            with self.csv.open("w", newline="") as f:
                csv.writer(f).writerow(self.columns)
        with self.csv.open("a", newline="") as f:
            csv.writer(f).writerow([row.get(c, "") for c in self.columns])
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and value is not None:  # an undefined figure: not plotted
                    self.writer.add_scalar(key, value, global_step=int(row["step"]))

    def close(self) -> None:
        """Flush TensorBoard's event file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _rewrite(self, rows: list[dict]) -> None:
        """Both logs cut back to `rows`, atomically: a kill here never loses the history."""

        def write_csv(tmp: Path) -> None:
            with tmp.open("w", newline="") as f:
                if rows:
                    writer = csv.writer(f)
                    writer.writerow(list(rows[0]))
                    writer.writerows([r.get(c, "") for c in rows[0]] for r in rows)

        text = "".join(json.dumps(r) + "\n" for r in rows)
        atomic_write(self.jsonl, lambda tmp: tmp.write_text(text))
        atomic_write(self.csv, write_csv)


def _rows_up_to(path: Path, step: int) -> list[dict]:
    if step == 0 or not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of a killed run may be cut short
        if row.get("step", 0) <= step:
            rows.append(row)
    return rows


def _tensorboard_writer(folder: Path, resume_step: int, enabled: bool):
    if not enabled:
        return None
    try:
        # tensorboardX rather than torch.utils.tensorboard: the latter imports TensorFlow when it
        # is installed (seconds of start-up and a GB of memory in every training process).
        from tensorboardX import SummaryWriter
    except ImportError:
        log.info("tensorboardX is not installed: metrics go to CSV/JSONL only")
        return None
    # purge_step discards events after the resumed step, as the JSONL/CSV rewrite does.
    return SummaryWriter(str(folder), purge_step=resume_step or None)


class MetricWindow:
    """Image-weighted means of the loss and metrics since the last logged row (one per rank).

    Its sums are part of the checkpoint (engine/train_state.py), so a row whose window spans a resume
    averages every step it covers, and its rate counts the seconds before the interruption too.
    """

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.images = 0
        self.steps = 0
        self.seconds_before = 0.0  # seconds this window ran before a resume
        self.started = time.perf_counter()

    def add(self, values: dict[str, torch.Tensor], images: int) -> None:
        """Add one step's scalars, weighted by the images it trained on (over all ranks)."""
        for key, value in values.items():
            value = value.detach().float() * images
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.images += images
        self.steps += 1

    def flush(self, ctx, device: torch.device) -> dict[str, float]:
        """The window's means over ranks (a collective call) and its image rate; then reset."""
        keys = sorted(self.sums)
        means = ctx.mean(torch.stack([self.sums[k].to(device) for k in keys])) / self.images
        seconds = self.seconds_before + time.perf_counter() - self.started
        row = {"images_per_s": self.images / seconds, "steps_averaged": self.steps}
        row |= dict(zip(keys, means.tolist(), strict=True))
        self.__init__()
        return row

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the open window (CPU tensors and numbers)."""
        return {
            "sums": {k: v.detach().cpu() for k, v in self.sums.items()},
            "images": self.images,
            "steps": self.steps,
            "seconds": self.seconds_before + time.perf_counter() - self.started,
        }

    def load_state_dict(self, state: dict) -> None:
        """Reopen a window saved by `state_dict` (its sums stay on the CPU until the next add)."""
        self.sums = dict(state["sums"])
        self.images = int(state["images"])
        self.steps = int(state["steps"])
        self.seconds_before = float(state["seconds"])
        self.started = time.perf_counter()
