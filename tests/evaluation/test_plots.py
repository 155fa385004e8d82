"""ROC and mask-overlay PNGs: valid images with the drawn content, written atomically, without
touching matplotlib's process-wide backend."""

import matplotlib
import numpy as np
import pytest
from PIL import Image

from medfound.evaluation.plots import save_mask_overlays, save_roc_curves


def _backend():
    return dict.__getitem__(matplotlib.rcParams, "backend")  # without resolving it


def _colours(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        rgb = np.asarray(image.convert("RGB"))
    return rgb, len(np.unique(rgb.reshape(-1, 3), axis=0))


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
def test_roc_curves_png(tmp_path, kind):
    rng = np.random.default_rng(0)
    n = 60
    if kind == "multiclass":
        targets = rng.integers(0, 3, n)
        scores = rng.dirichlet(np.ones(3), n)
    else:
        targets = rng.integers(0, 2, (n, 3)).astype(np.float32)
        targets[:, 2] = 1.0  # undefined: listed, no curve
        targets[:10, 0] = np.nan
        scores = rng.random((n, 3))
    before = _backend()
    path = save_roc_curves(tmp_path / "roc.png", targets, scores, kind, ("a", "b", "c"))
    assert path == tmp_path / "roc.png"
    rgb, colours = _colours(path)
    assert rgb.shape[0] > 200 and rgb.shape[1] > 200
    assert colours > 10  # curves, text, axes on white
    assert _backend() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roc.png"]  # no temporary left


def test_roc_curves_with_a_class_unknown_for_every_item(tmp_path):
    # multilabel "ignore" policies can leave a class without a known label in a small test split
    rng = np.random.default_rng(2)
    targets = rng.integers(0, 2, (30, 2)).astype(np.float32)
    targets[:, 1] = np.nan
    path = save_roc_curves(tmp_path / "roc.png", targets, rng.random((30, 2)), "multilabel", "ab")
    _, colours = _colours(path)
    assert colours > 10


def test_mask_overlays_2d_and_3d(tmp_path):
    rng = np.random.default_rng(1)
    image2d = rng.random((32, 32))
    truth2d = np.zeros((32, 32), np.int64)
    truth2d[8:20, 8:20] = 1
    pred2d = np.roll(truth2d, 2, axis=1)
    volume = rng.random((1, 20, 20, 10))
    truth3d = np.zeros((20, 20, 10), np.int64)
    truth3d[5:12, 5:12, 6] = 2
    path = save_mask_overlays(
        tmp_path / "masks.png",
        [image2d, volume],
        [truth2d, truth3d],
        [pred2d, truth3d],
        titles=["a.png", "b.nii.gz"],
    )
    rgb, colours = _colours(path)
    assert colours > 50  # gray images plus tints and outlines
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    assert np.sum((r - g > 60) & (r - b > 60)) > 50  # class 1 tinted red
    assert np.sum(b - r > 40) > 50  # class 2 (3D case) tinted blue
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks.png"]


def test_mask_overlays_without_cases_refused(tmp_path):
    with pytest.raises(ValueError, match="no cases"):
        save_mask_overlays(tmp_path / "x.png", [], [], [])
