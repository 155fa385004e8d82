import csv
import json

from medfound.engine.metrics_log import MetricsLog


def _write(run, steps, start=0):
    log = MetricsLog(run, resume_step=start)
    for step in steps:
        log.write({"step": step, "loss": 1.0 / step, "lr": 0.1})
    log.close()


def test_rows_go_to_jsonl_csv_and_tensorboard(tmp_path):
    _write(tmp_path, [1, 2, 3])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    with (tmp_path / "metrics.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [float(r["loss"]) for r in table] == [r["loss"] for r in rows]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_resuming_drops_rows_after_the_checkpoint_and_a_line_cut_by_a_kill(tmp_path):
    _write(tmp_path, [1, 2, 3, 4])
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "lo')  # what SIGKILL mid-write leaves
    _write(tmp_path, [3, 4, 5], start=2)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    with (tmp_path / "metrics.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5]


def test_a_new_run_starts_a_fresh_log(tmp_path):
    _write(tmp_path, [1, 2])
    _write(tmp_path, [1])
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
