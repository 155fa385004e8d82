"""`medfound pretrain genesis` end to end on real anatomy: learning, validation and the best weights,
exact resume after SIGKILL, torchrun, 2D, recipes and bad input."""

import json
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
import torch

from medfound.engine.checkpoint import list_checkpoints, load_checkpoint
from medfound.engine.trainer import best_weights_files
from medfound.errors import ConfigError
from medfound.models import load_model
from medfound.tasks.pretrain_genesis import GenesisConfig, pretrain_genesis
from tests.distributed import torchrun
from tests.factories import tissue_tiles

TINY = {
    "cube": "16,16,8",
    "cubes_per_volume": 2,
    "batch_size": 4,
    "modality": "mri",
    "foreground_fraction": 0.3,
    "device": "cpu",
    "progress": False,
    "log_every": 1,
    "tensorboard": False,
}


@pytest.fixture(scope="module")
def brains(tmp_path_factory):
    """Six 40x48x32 blocks of the MNI152 T1 template (real anatomy), as NIfTI files."""
    from nilearn.datasets import load_mni152_template

    template = load_mni152_template(resolution=2)
    data = np.asarray(template.dataobj, dtype=np.float32)
    folder = tmp_path_factory.mktemp("brains")
    corners = [(10, 20, 20), (50, 20, 20), (10, 60, 20), (50, 60, 20), (30, 40, 45), (30, 30, 10)]
    for i, (x, y, z) in enumerate(corners):
        block = data[x : x + 40, y : y + 48, z : z + 32]
        nib.save(nib.Nifti1Image(block, template.affine), folder / f"brain{i}.nii.gz")
    return folder


def _rows(run, name) -> list[dict]:
    return [json.loads(line) for line in (run / f"{name}.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_restoration_learns_on_real_anatomy_and_exports_the_best(brains, tmp_path):
    run = tmp_path / "run"
    overrides = {**TINY, "data": [str(brains)], "max_steps": 40, "validate_every": 10}
    # Batch statistics in validation too (the original's BatchNorm): after a few dozen steps the
    # running statistics are still far from the batches', which would make eval-mode figures noise.
    overrides |= {"lr": 1e-3, "warmup_epochs": 0.0, "workers": 0, "compat_batchnorm": True}
    summary = pretrain_genesis(run, overrides=overrides)
    assert summary.step == 40 and not summary.skipped
    train_losses = [row["loss"] for row in _rows(run, "metrics")]
    assert sum(train_losses[-5:]) / 5 < 0.75 * train_losses[0], train_losses
    losses = [row["val_loss"] for row in _rows(run, "validation")]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    weights = run / "genesis.safetensors"
    assert summary.exported == [weights]
    model = load_model("unet3d_genesis.chest_ct", weights)
    best = load_checkpoint(best_weights_files(run)[0])
    assert best["step"] == summary.best_step
    restored_state = {f"model.network.{k}": v for k, v in model.network.state_dict().items()}
    for key, value in restored_state.items():
        assert torch.equal(value, best["model"][key]), key
    assert len(best_weights_files(run)) == 1


def _cli_args(brains, run, *extra: str) -> list[str]:
    return [
        "-m", "medfound.cli.main", "pretrain", "genesis", "--data", str(brains), "--out", str(run),
        "--cube", "16,16,8", "--cubes-per-volume", "2", "--batch-size", "4", "--modality", "mri",
        "--foreground-fraction", "0.3", "--device", "cpu", "--log-every", "1", "--no-tensorboard",
        *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_sigkill_then_resume_repeats_the_uninterrupted_run(brains, tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    extra = ("--max-steps", "8", "--checkpoint-every", "1", "--validate-every", "3")
    proc = subprocess.Popen(
        [sys.executable, *_cli_args(brains, killed, *extra)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 180
    while time.time() < deadline and not (killed / "checkpoints" / "step-00000004.pt").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    last = int(list_checkpoints(killed)[-1].stem.split("-")[1])
    assert 4 <= last < 8
    resumed = pretrain_genesis(killed, overrides={"progress": False}, resume=True)
    assert (resumed.start_step, resumed.step) == (last, 8)
    subprocess.run([sys.executable, *_cli_args(brains, whole, *extra)], check=True)
    a = load_checkpoint(list_checkpoints(killed)[-1])
    b = load_checkpoint(list_checkpoints(whole)[-1])
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert _rows(killed, "validation") == _rows(whole, "validation")
    exported = [
        load_model("unet3d_genesis.chest_ct", r / "genesis.safetensors") for r in (killed, whole)
    ]
    for (key, a_value), b_value in zip(
        exported[0].network.state_dict().items(),
        exported[1].network.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a_value, b_value), key
    assert [r["loss"] for r in _rows(killed, "metrics")] == [
        r["loss"] for r in _rows(whole, "metrics")
    ]


@pytest.mark.slow
def test_torchrun_two_processes_train_validate_and_export(brains, tmp_path):
    run = tmp_path / "run"
    # One held-out volume (val_fraction 0.2 of 6): rank 1 has no validation chunk of its own.
    extra = ("--max-steps", "2", "--workers", "0", "--validate-every", "1")
    done = torchrun(*_cli_args(brains, run, *extra))
    assert done.returncode == 0, done.stderr[-3000:]
    assert [row["step"] for row in _rows(run, "metrics")] == [1, 2]
    rows = _rows(run, "validation")  # rank 1 had no validation chunk and did not hang
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["val_loss"]) for r in rows)
    assert load_checkpoint(list_checkpoints(run)[-1])["batches_consumed"] == 2
    load_model("unet3d_genesis.chest_ct", run / "genesis.safetensors")


@pytest.mark.slow
def test_torchrun_two_processes_in_two_dimensions(tmp_path):
    tiles, run = tmp_path / "tiles", tmp_path / "run"
    tissue_tiles(tiles)
    args = [
        "-m", "medfound.cli.main", "pretrain", "genesis", "--dims", "2", "--cube", "32,32",
        "--modality", "xray", "--data", str(tiles), "--out", str(run), "--cubes-per-volume", "2",
        "--batch-size", "4", "--device", "cpu", "--max-steps", "2", "--workers", "0",
        "--no-tensorboard", "--validate-every", "1", "--log-every", "1",
    ]  # fmt: skip
    done = torchrun(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [row["step"] for row in _rows(run, "validation")] == [1, 2]
    load_model("unet2d_genesis.resnet18", run / "genesis.safetensors")


@pytest.mark.slow
def test_two_dimensional_genesis_on_images(tmp_path):
    tiles = tmp_path / "tiles"
    tissue_tiles(tiles)
    run = tmp_path / "run"
    overrides = {**TINY, "dims": 2, "cube": "32,32", "modality": "xray", "data": [str(tiles)]}
    summary = pretrain_genesis(run, overrides={**overrides, "max_steps": 2, "workers": 0})
    assert summary.step == 2 and np.isfinite(summary.last_metrics["loss"])
    model = load_model("unet2d_genesis.resnet18", run / "genesis.safetensors")
    assert model.card.spatial_dims == 2
    restored = model.network(torch.rand(1, 1, 32, 32))
    assert restored.shape == (1, 1, 32, 32) and restored.min() >= 0 and restored.max() <= 1


def test_the_original_recipe_sets_the_published_optimiser(brains, tmp_path):
    run = tmp_path / "run"
    overrides = {**TINY, "data": [str(brains)], "recipe": "original", "batch_size": 4}
    summary = pretrain_genesis(run, overrides={**overrides, "max_steps": 1, "workers": 0})
    saved = (run / "config.yaml").read_text()
    assert "optimizer: sgd" in saved and "lr: 1.0" in saved and "schedule: step" in saved
    assert "batch_size: 4" in saved  # the command line still wins over the recipe
    # 5 training volumes (one held out), 2 volumes a batch: 2 steps an epoch.
    assert "decay_every: 80" in saved and "validate_every: 2" in saved
    assert "early_stop_patience: 50" in saved
    assert summary.step == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cube": "20,16,8"}, "multiple of 8"),
        ({"cube": "16,16"}, "expected 3 comma-separated numbers"),
        ({"batch_size": 3}, "multiple of cubes_per_volume"),
        ({"flip_p": 1.5}, "flip_p"),
        ({"target_spacing": "1,0,1"}, "target_spacing"),
        ({"model": "resnetv2_50x1_bit.bit_m_in21k"}, "not a 3D restoration network"),
    ],
)
def test_bad_settings_are_refused_before_training(brains, tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        pretrain_genesis(tmp_path / "run", overrides={**TINY, "data": [str(brains)], **changes})
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_images_where_volumes_are_needed_are_refused_before_training(tmp_path):
    tiles = tmp_path / "tiles"
    tissue_tiles(tiles)
    with pytest.raises(ConfigError, match="2D image file") as caught:
        pretrain_genesis(tmp_path / "run", overrides={**TINY, "data": [str(tiles)], "workers": 0})
    assert "tile" in str(caught.value)


def test_a_recipe_in_the_config_file_is_overridden_by_the_file_and_the_flags(brains, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("recipe: original\nlr: 0.5\n")
    overrides = {**TINY, "data": [str(brains)], "max_steps": 1, "workers": 0, "momentum": 0.8}
    pretrain_genesis(tmp_path / "run", config_file=config, overrides=overrides)
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "optimizer: sgd" in saved  # the recipe
    assert "lr: 0.5" in saved  # the file over the recipe
    assert "momentum: 0.8" in saved  # the flag over both


def test_a_config_object_for_a_recipe():
    config = GenesisConfig.for_recipe("original", data=["x"], batch_size=4)
    assert (config.optimizer, config.lr, config.batch_size, config.epochs) == ("sgd", 1.0, 4, 10000)
    with pytest.raises(ConfigError, match="recipe must be one of"):
        GenesisConfig.for_recipe("fancy")


def test_held_out_volumes_validate_once_an_epoch_and_may_stop_early(brains, tmp_path):
    volumes = sorted(brains.glob("*.nii.gz"))
    overrides = {**TINY, "data": [str(p) for p in volumes[:4]], "val_data": [str(volumes[4])]}
    overrides |= {"max_steps": 2, "workers": 0, "early_stop_patience": 5}
    summary = pretrain_genesis(tmp_path / "run", overrides=overrides)
    assert summary.best_step is not None
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "validate_every: 2" in saved  # 4 volumes, 2 a batch: one epoch is 2 steps
    overlap = {**overrides, "val_data": [str(volumes[0])]}
    with pytest.raises(ConfigError, match="val_data overlaps data"):
        pretrain_genesis(tmp_path / "other", overrides=overlap)


def test_compatibility_batchnorm_is_refused_on_several_ranks(brains, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    overrides = {**TINY, "data": [str(brains)], "compat_batchnorm": True}
    with pytest.raises(ConfigError, match="single-process"):
        pretrain_genesis(tmp_path / "run", overrides=overrides)


def test_a_series_with_a_missing_slice_is_refused_before_training(brains, tmp_path):
    from pydicom.uid import generate_uid

    from tests.factories import write_dicom

    folder = tmp_path / "series"
    folder.mkdir()
    uid = generate_uid()
    for i, z in enumerate([0, 2, 4, 8, 10, 12, 14, 16, 18]):  # 6 missing
        pixels = np.full((32, 32), 100 * i, np.uint16)
        write_dicom(
            folder / f"z{i}.dcm",
            pixels,
            SeriesInstanceUID=uid,
            ImagePositionPatient=[0, 0, float(z)],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            PixelSpacing=[1, 1],
        )
    overrides = {**TINY, "data": [str(brains), str(folder)]}
    with pytest.raises(ConfigError, match=r"1 DICOM series with uneven slice steps .*2 to 4 mm"):
        pretrain_genesis(tmp_path / "run", overrides=overrides)
