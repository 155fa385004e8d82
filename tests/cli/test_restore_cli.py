"""`medfound restore` on the command line: files written and named, skips reported, user errors."""

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medfound.cli.main import app
from medfound.models import load_model
from medfound.models.weights import save_safetensors

runner = CliRunner()
WIDE = {"COLUMNS": "1000"}  # no wrapping: one printed line per file
MODEL = "unet3d_genesis.chest_ct"


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env=WIDE)


def _scan(path, shape=(20, 12, 8)):
    """A NIfTI in HU with an LPS-style affine (the first two axes flipped)."""
    hu = np.random.default_rng(0).normal(-300, 400, shape).astype(np.float32)
    affine = np.diag([-0.8, -0.8, 2.0, 1.0])
    nib.save(nib.Nifti1Image(hu, affine), str(path))
    return path


@pytest.fixture
def weights(tmp_path):
    """Weights saved from a random-init Genesis U-Net, with its card (so the file names its model)."""
    model = load_model(MODEL, random_init=True, seed=3)
    path = tmp_path / "genesis.safetensors"
    save_safetensors(model.network, path, model.card.to_json())
    return path


@pytest.mark.slow  # the first MONAI import and a 19M-parameter U-Net: about 5-8 s here
def test_restore_prints_each_written_file_and_the_skipped_inputs(tmp_path, weights):
    scan = _scan(tmp_path / "scan.nii.gz")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"garbage")
    out = tmp_path / "out"
    result = _invoke(
        "restore", scan, broken, "--weights", weights, "--out", out,
        "--roi", "8,8,8", "--batch-size", "8", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # something was skipped
    assert result.exception is None or isinstance(result.exception, SystemExit)
    wrote = [line.split(" ")[1] for line in result.stderr.splitlines() if line.startswith("wrote ")]
    expected = [
        out / f"scan_{kind}" for kind in ("restored.nii.gz", "anomaly.nii.gz", "montage.png")
    ]
    assert wrote == [str(p) for p in expected]
    assert all(p.is_file() for p in expected)
    assert "(restored, HU)" in result.stderr
    assert "restored 1, skipped 1" in result.stderr
    skipped = [line for line in result.stderr.splitlines() if line.startswith("  skipped ")]
    assert len(skipped) == 1 and str(broken.resolve()) in skipped[0]
    assert "not a readable NIfTI" in skipped[0]
    # The outputs overlay the input: same shape and affine.
    source, restored = nib.load(str(scan)), nib.load(str(expected[0]))
    assert restored.shape == source.shape
    np.testing.assert_allclose(restored.affine, source.affine, atol=1e-6)


def test_restore_exits_0_when_every_input_is_restored(tmp_path):
    scan = _scan(tmp_path / "a.nii.gz", shape=(8, 8, 8))
    result = _invoke(
        "restore", scan, "--random-init", "--out", tmp_path / "out", "--roi", "8",
        "--preset", "mri", "--overlap", "0", "--blend", "constant",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "(restored, [0, 1])" in result.stderr and "random init" in result.stderr
    assert (tmp_path / "out" / "a_anomaly.nii.gz").is_file()


# case -> (arguments after the scan; what the one error line must say)
USER_ERRORS = {
    "no weights": ([], f"model {MODEL!r} needs weights"),
    "missing weights": (["-w", "{tmp}/none.safetensors"], "none.safetensors"),
    "bad roi": (["--random-init", "--roi", "8,x,8"], "--roi '8,x,8'"),
    "roi not divisible": (["--random-init", "--roi", "12,12,12"], "divisible by 8"),
    "bad overlap": (["--random-init", "--overlap", "1"], "--overlap must be in [0, 1)"),
    "bad blend": (["--random-init", "--blend", "max"], "--blend must be one of"),
    "unknown model": (["--random-init", "-m", "nosuchmodel"], "unknown model 'nosuchmodel'"),
}


@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_user_errors_exit_2_with_one_line_and_write_nothing(case, tmp_path):
    scan = _scan(tmp_path / "scan.nii.gz", shape=(8, 8, 8))
    extra, message = USER_ERRORS[case]
    args = [arg.format(tmp=tmp_path) for arg in extra]
    result = _invoke("restore", scan, "--out", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # handled, not an uncaught exception
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_restore_help_lists_its_options():
    result = _invoke("restore", "--help")
    assert result.exit_code == 0
    for option in ("--weights", "--out", "--model", "--random-init", "--preset", "--overlap"):
        assert option in result.output
    for option in ("--batch-size", "--device", "--compat-batchnorm", "--roi"):
        assert option in result.output
