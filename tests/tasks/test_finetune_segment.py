"""`finetune segment` end to end: 2D pairs learn discs, outputs, predict on the input's grid (2D
PNG, 3D NIfTI with the input's affine), and bad pairs refused before training."""

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medfound.errors import ConfigError
from medfound.tasks.finetune_segment import finetune_segment
from medfound.tasks.predict import predict
from tests.data.seg_fixtures import STORED_AFFINE, disc_pair, save, save_nifti

COMMON = {
    "init": "random",
    "device": "cpu",
    "workers": 0,
    "progress": False,
    "tensorboard": False,
    "early_stop_patience": None,
    "bootstrap": 50,
}


def _pairs(folder, count=14):
    rng = np.random.default_rng(0)
    for n in range(count):
        centre = tuple(int(v) for v in rng.integers(9, 23, 2))
        image, mask = disc_pair((32, 32), centre=centre, radius=int(rng.integers(4, 8)), seed=n)
        save(folder / f"case{n:02d}.png", image)
        save(folder / f"case{n:02d}_mask.png", mask * 255)
    return folder


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory):
    data = _pairs(tmp_path_factory.mktemp("pairs"))
    out = tmp_path_factory.mktemp("seg") / "run"
    settings = {
        **COMMON,
        "data": str(data),
        "model": "timm:resnet10t",
        "patch": "32,32",
        "batch_size": 4,
        "patches_per_image": 2,
        "epochs": 12,
        "lr": 3e-3,
        "val_fraction": 0.15,
        "test_fraction": 0.15,
    }
    return data, out, finetune_segment(out, overrides=settings)


def test_a_2d_run_learns_the_shapes_and_reports_dice_with_intervals(run_2d):
    _, out, result = run_2d
    dice = result.metrics["mean_dice"]
    assert dice["value"] > 0.8
    assert dice["low"] <= dice["value"] <= dice["high"]
    assert set(result.metrics["per_class"]) == {"foreground"}
    rows = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert max(r["val_dice"] for r in rows) > rows[0]["val_dice"]
    for name in (
        "segmenter.safetensors",
        "metrics.json",
        "cases.csv",
        "overlays.png",
        "splits.csv",
    ):
        assert (out / name).is_file(), name
    with open(out / "cases.csv") as fh:
        assert len(list(csv.DictReader(fh))) == result.counts["test"]


def test_predicted_2d_masks_have_the_inputs_size(run_2d, tmp_path):
    data, out, _ = run_2d
    odd = np.random.default_rng(1).integers(0, 255, (40, 27)).astype(np.uint8)
    save(tmp_path / "odd.png", odd)
    summary = predict(out, [data / "case00.png", tmp_path / "odd.png"], tmp_path / "pred")
    assert summary.predicted == 2
    mask = np.asarray(Image.open(tmp_path / "pred" / "case00_pred.png"))
    assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}
    truth = np.asarray(Image.open(data / "case00_mask.png")) > 0
    overlap = ((mask > 0) & truth).sum() / max(truth.sum(), 1)
    assert overlap > 0.5
    assert np.asarray(Image.open(tmp_path / "pred" / "odd_pred.png")).shape == (40, 27)


def test_a_3d_run_predicts_on_the_input_niftis_own_grid(tmp_path):
    rng = np.random.default_rng(0)
    for n in range(6):
        label = np.zeros((20, 18, 16), np.uint8)
        x, y, z = (int(v) for v in rng.integers(5, 11, 3))
        label[x : x + 5, y : y + 5, z : z + 4] = 1
        image = (rng.random(label.shape) * 100 + 400.0 * label).astype(np.float32)
        save_nifti(tmp_path / "data" / "imagesTr" / f"case{n}.nii.gz", image)
        save_nifti(tmp_path / "data" / "labelsTr" / f"case{n}.nii.gz", label)
    settings = {
        **COMMON,
        "data": str(tmp_path / "data"),
        "model": "monai_unet",
        "preset": "mri",
        "patch": "16,16,16",
        "batch_size": 2,
        "patches_per_image": 1,
        "max_steps": 4,
        "validate_every": 2,
        "val_fraction": 0.2,
        "test_fraction": 0.2,
    }
    result = finetune_segment(tmp_path / "run", overrides=settings)
    assert result.metrics["cases"] == result.counts["test"]
    source = tmp_path / "data" / "imagesTr" / "case0.nii.gz"
    predict(tmp_path / "run", [source], tmp_path / "pred")
    written = nib.load(str(tmp_path / "pred" / "case0_pred.nii.gz"))
    original = nib.load(str(source))
    assert written.shape == original.shape
    np.testing.assert_allclose(written.affine, STORED_AFFINE, atol=1e-5)
    assert written.get_data_dtype() == np.uint8


def test_a_mask_of_another_shape_is_refused_before_training(tmp_path):
    data = _pairs(tmp_path / "pairs", count=4)
    save(data / "case01_mask.png", np.zeros((20, 20), np.uint8))
    settings = {**COMMON, "data": str(data), "model": "timm:resnet10t", "patch": "32,32"}
    with pytest.raises(ConfigError, match="case01"):
        finetune_segment(tmp_path / "run", overrides=settings)
    assert not (tmp_path / "run").exists()
