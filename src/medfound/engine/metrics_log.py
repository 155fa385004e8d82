"""Training metrics on disk: JSONL and CSV in the run folder, TensorBoard events with tensorboardX.

Only the main rank writes. On resume, rows after the checkpoint's step are dropped first (they belong
to the part of the run that is being redone), so the log reads as one uninterrupted run. A line cut
by a kill mid-write is dropped too.
"""

import csv
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

JSONL_NAME, CSV_NAME = "metrics.jsonl", "metrics.csv"


class MetricsLog:
    """Appends one row of scalars per logged step to RUN_DIR/metrics.{jsonl,csv} (+ tensorboard/)."""

    def __init__(self, run_dir: Path, resume_step: int = 0, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.jsonl = self.run_dir / JSONL_NAME
        self.csv = self.run_dir / CSV_NAME
        rows = _rows_up_to(self.jsonl, resume_step)
        self._rewrite(rows)
        self.columns: list[str] | None = list(rows[0]) if rows else None
        self.writer = _tensorboard_writer(self.run_dir / "tensorboard", resume_step, tensorboard)

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
                if key != "step":
                    self.writer.add_scalar(key, value, global_step=int(row["step"]))

    def close(self) -> None:
        """Flush TensorBoard's event file."""
        if self.writer is not None:
            self.writer.close()

    def _rewrite(self, rows: list[dict]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with self.csv.open("w", newline="") as f:
            if rows:
                writer = csv.writer(f)
                writer.writerow(list(rows[0]))
                writer.writerows([r.get(c, "") for c in rows[0]] for r in rows)


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
