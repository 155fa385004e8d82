"""The transfer commands from the command line: finetune segment, predict, and errors by name."""

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from medfound.cli.main import app
from tests.data.seg_fixtures import disc_pair, save
from tests.tasks.classify_fixtures import write_labelled_images

runner = CliRunner()
WIDE = {"COLUMNS": "200"}
QUIET = ["--device", "cpu", "--workers", "0", "--no-progress", "--no-tensorboard"]


def test_finetune_segment_then_predict(tmp_path: Path):
    for n in range(8):
        image, mask = disc_pair((32, 32), centre=(10 + n, 12 + n), radius=5, seed=n)
        save(tmp_path / "pairs" / f"c{n}.png", image)
        save(tmp_path / "pairs" / f"c{n}_mask.png", mask * 255)
    run = tmp_path / "run"
    args = ["finetune", "segment", "--data", str(tmp_path / "pairs"), "--out", str(run)]
    args += ["--model", "timm:resnet10t", "--init", "random", "--patch", "32,32", "--epochs", "1"]
    args += ["--batch-size", "2", "--patches-per-image", "1", "--bootstrap", "10", *QUIET]
    result = runner.invoke(app, args, env=WIDE)
    assert result.exit_code == 0, result.output
    assert "Dice" in result.output and "foreground" in result.output  # the per-class table
    result = runner.invoke(
        app, ["predict", str(run), str(tmp_path / "pairs" / "c0.png"), "--out", str(tmp_path / "p")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p" / "c0_pred.png").is_file()


def test_a_wrong_setting_is_named_without_a_traceback(tmp_path: Path):
    labels = write_labelled_images(tmp_path / "images", patients=4)
    args = ["finetune", "classify", "--data", str(labels), "--out", str(tmp_path / "run")]
    args += ["--model", "timm:resnet10t", "--init", "random", "--freeze-until", "9", *QUIET]
    result = runner.invoke(app, args, env=WIDE)
    assert result.exit_code == 2
    assert "freeze_until must be in -1..4, got 9" in result.output
    assert "Traceback" not in result.output


def test_predict_without_a_fine_tuned_model_says_what_it_needs(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    save(tmp_path / "x.png", np.zeros((8, 8), np.uint8))
    result = runner.invoke(
        app, ["predict", str(tmp_path / "empty"), str(tmp_path / "x.png"), "-o", "o"]
    )
    assert result.exit_code == 2
    assert "no fine-tuned model here" in result.output


def test_finetune_classify_on_volumes_with_slices_then_predict_with_other_slices(tmp_path: Path):
    from tests.factories import write_nifti

    rows = ["path,label,patient,split"]
    for p in range(8):
        volume = np.random.default_rng(p).uniform(0, 50, (16, 16, 6))
        volume[4:12, 4:12] += 100 * (p % 2)
        write_nifti(tmp_path / f"v{p}.nii.gz", volume)
        split = ["train", "train", "train", "train", "val", "val", "test", "test"][p]
        rows.append(f"v{p}.nii.gz,{'lesion' if p % 2 else 'clear'},p{p},{split}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    args = ["finetune", "classify", "--data", str(tmp_path / "labels.csv"), "--out", str(run)]
    args += ["--model", "timm:resnet10t", "--init", "random", "--image-size", "32"]
    args += ["--epochs", "1", "--batch-size", "4", "--bootstrap", "10", "--slices", "middle"]
    args += ["--slice-axis", "2", *QUIET]
    result = runner.invoke(app, args, env=WIDE)
    assert result.exit_code == 0, result.output
    out = tmp_path / "pred"
    args = ["predict", str(run), str(tmp_path / "v0.nii.gz"), "--out", str(out), "--slices", "2"]
    result = runner.invoke(app, [*args, "--workers", "0"])
    assert result.exit_code == 0, result.output
    header, row = (out / "predictions.csv").read_text().splitlines()
    assert header == "id,clear,lesion,predicted,slices" and row.endswith(",2")
    result = runner.invoke(app, [*args[:5], "--slices", "zero", "--workers", "0"])
    assert result.exit_code == 2 and "--slices 'zero'" in result.output
