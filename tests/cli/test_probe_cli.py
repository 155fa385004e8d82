"""`medfound probe` on the command line: the per-class tables with intervals, the files written, the
left-out rows, and a user error as one line with exit code 2. (A local app registers the command, as
cli/main.py does.)"""

import csv

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import typer
from typer.testing import CliRunner

from medfound.cli.probe import probe_command

app = typer.Typer(pretty_exceptions_enable=False)
app.command("probe")(probe_command)


@app.callback()
def _root() -> None:
    """A group, so that the command is called by name as under `medfound`."""


runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def _inputs(tmp_path, n=80):
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, n)
    vectors = (rng.normal(size=(n, 8)) + 3 * targets[:, None]).astype(np.float32)
    paths = [(tmp_path / f"img{i}.png").resolve() for i in range(n)]
    for p in paths:
        p.write_bytes(b"")  # only their paths matter to a probe
    emb = tmp_path / "emb.parquet"
    pq.write_table(
        pa.table(
            {
                "path": [str(p) for p in paths[1:]],  # the first image has no embedding
                "embedding": pa.array([v.tolist() for v in vectors[1:]], pa.list_(pa.float32())),
            }
        ),
        emb,
    )
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "patient"])
        writer.writerows((p.name, ["benign", "malignant"][t], f"p{i // 2}") for i, (p, t) in
                         enumerate(zip(paths, targets, strict=True)))  # fmt: skip
    return emb, labels


def test_probe_prints_tables_and_writes_the_run(tmp_path):
    emb, labels = _inputs(tmp_path)
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["probe", str(emb), "--labels", str(labels), "--out", str(out), "--bootstrap", "100"],
        env=WIDE,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "logistic probe on the test split" in result.stdout
    assert "knn probe on the test split" in result.stdout
    malignant = [line for line in result.stdout.splitlines() if "malignant" in line]
    assert len(malignant) == 2 and all("[" in line and "]" in line for line in malignant)
    assert "labels without embedding: 1" in result.stderr
    wrote = [
        line.split(" ", 1)[1] for line in result.stderr.splitlines() if line.startswith("wrote")
    ]
    assert wrote[0] == str(out / "metrics.json")
    assert {out / name for name in ("splits.csv", "predictions.csv", "roc.png")} <= set(
        map(type(out), wrote)
    )
    assert all((out / name).is_file() for name in ("metrics.json", "roc_knn.png", "config.json"))


def test_probe_user_error_is_one_line(tmp_path):
    emb, labels = _inputs(tmp_path, n=20)
    result = runner.invoke(
        app,
        ["probe", str(emb), "--labels", str(labels), "--out", str(tmp_path / "r"),
         "--classifier", "svm"],
        env=WIDE,
    )  # fmt: skip
    assert result.exit_code == 2
    assert "error:" in result.stderr and "--classifier" in result.stderr
    assert "Traceback" not in result.output
