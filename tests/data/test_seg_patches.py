"""Segmentation patches (foreground ratio, determinism, padding, contents) and whole-image items."""

import pickle

import numpy as np
import pytest
import torch

from medfound.data.seg_patches import SegmentationImageDataset, SegmentationPatchDataset
from medfound.data.segmentation import find_pairs_2d, find_volumes_3d, read_segmentation_case
from medfound.errors import ConfigError
from medfound.io import get_preset
from tests.data.seg_fixtures import disc_pair, save, write_msd_task, write_pairs_2d

CXR, MRI = get_preset("cxr"), get_preset("mri")


def _blob_case(folder, shape=(64, 64), rows=(40, 42), cols=(50, 52)):
    """One gray image with a 2x2 foreground square; returns its table, image and mask."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    mask = np.zeros(shape, np.uint8)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = 1
    save(folder / "blob.png", image)
    save(folder / "blob_mask.png", mask)
    return find_pairs_2d(folder), image, mask


def _share_of_windows_with_foreground(mask: np.ndarray, patch) -> float:
    """By brute force: the share of all patch positions inside the image that hold foreground."""
    h, w = mask.shape
    hits = [
        mask[r : r + patch[0], c : c + patch[1]].any()
        for r in range(h - patch[0] + 1)
        for c in range(w - patch[1] + 1)
    ]
    return float(np.mean(hits))


@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_the_share_of_patches_with_foreground_follows_the_ratio(tmp_path, ratio):
    table, _, mask = _blob_case(tmp_path)
    patch, k, epochs = (16, 16), 50, 40
    dataset = SegmentationPatchDataset(
        table, [0], CXR, patch_size=patch, patches_per_item=k, foreground_ratio=ratio, seed=3
    )
    items = [dataset[(epoch, 0)] for epoch in range(epochs)]
    targets = torch.cat([item["target"] for item in items])
    has_foreground = targets.flatten(1).any(1).double().mean().item()
    centred = np.mean([flag for item in items for flag in item["centred"]])
    # A centred patch always holds the foreground; a uniform one by chance (q, counted by hand).
    q = _share_of_windows_with_foreground(mask, patch)
    expected = ratio + (1 - ratio) * q
    n = k * epochs
    assert 0.05 < q < 0.15  # the foreground is small: the ratio decides
    assert has_foreground == pytest.approx(expected, abs=4 * np.sqrt(0.25 / n))
    assert centred == pytest.approx(ratio, abs=4 * np.sqrt(0.25 / n))
    if ratio == 1.0:
        assert has_foreground == 1.0


def test_patches_are_the_image_and_mask_at_their_positions(tmp_path):
    write_pairs_2d(tmp_path, names=("a", "b"), shape=(24, 32))
    table = find_pairs_2d(tmp_path)
    dataset = SegmentationPatchDataset(
        table, [1, 0], CXR, patch_size=(8, 12), patches_per_item=6, foreground_ratio=0.5
    )
    item = dataset[(2, 0)]
    assert item["source"] == table.ids[1] and item["group"] and not item["padded"]
    assert item["tensor"].shape == (6, 1, 8, 12) and item["tensor"].dtype == torch.float32
    assert item["target"].shape == (6, 8, 12) and item["target"].dtype == torch.int64
    from PIL import Image

    image = np.asarray(Image.open(tmp_path / "b.png")) / 255.0  # the cxr preset: 8 bits -> [0, 1]
    mask = np.asarray(Image.open(tmp_path / "b_mask.png")) > 0
    for n, (r, c) in enumerate(item["positions"]):
        window = (slice(r, r + 8), slice(c, c + 12))
        np.testing.assert_allclose(item["tensor"][n, 0].numpy(), image[window], atol=1e-6)
        np.testing.assert_array_equal(item["target"][n].numpy(), mask[window])


def test_patches_depend_only_on_seed_epoch_and_index(tmp_path):
    write_pairs_2d(tmp_path, names=("a", "b"), shape=(24, 32))
    table = find_pairs_2d(tmp_path)

    def make(seed=0, cache_mb=64.0):
        return SegmentationPatchDataset(
            table, [0, 1], CXR, patch_size=(8, 8), patches_per_item=4, foreground_ratio=0.5,
            seed=seed, cache_mb=cache_mb,
        )  # fmt: skip

    first = make()
    reference = first[(5, 1)]
    first[(0, 0)]  # other items read in between change nothing
    copy = pickle.loads(pickle.dumps(first))  # as a worker gets it
    assert len(copy.cache.entries) == 0
    for dataset in (first, copy, make(cache_mb=0)):
        again = dataset[(5, 1)]
        assert again["positions"] == reference["positions"]
        assert torch.equal(again["tensor"], reference["tensor"])
        assert torch.equal(again["target"], reference["target"])
    assert first.cache.hits >= 1
    assert make()[(6, 1)]["positions"] != reference["positions"]
    assert make(seed=1)[(5, 1)]["positions"] != reference["positions"]
    assert first[1]["positions"] == first[(0, 1)]["positions"]  # a plain index is epoch 0


def test_images_smaller_than_the_patch_are_padded_with_zeros(tmp_path):
    image, mask = disc_pair((10, 12), centre=(5, 6), radius=3)
    save(tmp_path / "s.png", image)
    save(tmp_path / "s_mask.png", mask)
    dataset = SegmentationPatchDataset(
        find_pairs_2d(tmp_path), [0], CXR, patch_size=(16, 16), patches_per_item=3
    )
    item = dataset[(0, 0)]
    assert item["padded"] and item["tensor"].shape == (3, 1, 16, 16)
    # Centred: 6 rows (3 above, 3 below), 4 columns (2 and 2); the patch is the padded image.
    expected_image = np.pad(image / 255.0, ((3, 3), (2, 2)))
    expected_mask = np.pad(mask, ((3, 3), (2, 2)))
    for n in range(3):
        np.testing.assert_allclose(item["tensor"][n, 0].numpy(), expected_image, atol=1e-6)
        np.testing.assert_array_equal(item["target"][n].numpy(), expected_mask)


def test_3d_patches_from_a_multichannel_msd_task(tmp_path):
    write_msd_task(tmp_path, names=("BRATS_001", "BRATS_002"))
    table = find_volumes_3d(tmp_path)
    dataset = SegmentationPatchDataset(
        table, [0, 1], MRI, patch_size=(6, 4, 5), patches_per_item=5, foreground_ratio=1.0
    )
    assert dataset.samples_per_item == 5 and dataset.keyed_by_epoch
    item = dataset[(1, 1)]
    assert item["tensor"].shape == (5, 4, 6, 4, 5) and item["target"].shape == (5, 6, 4, 5)
    assert all(t.any() for t in item["target"])  # every patch centred on foreground
    image, mask = read_segmentation_case(table.cases[1], MRI, "classes")
    for n, (x, y, z) in enumerate(item["positions"]):
        window = (slice(x, x + 6), slice(y, y + 4), slice(z, z + 5))
        np.testing.assert_array_equal(item["target"][n].numpy(), mask[window])
        np.testing.assert_array_equal(
            item["tensor"][n].numpy(), image.array[(slice(None), *window)]
        )
    assert set(torch.cat([item["target"].unique()]).tolist()) <= {0, 1, 2}


def test_bad_cases_become_error_items(tmp_path):
    write_pairs_2d(tmp_path, names=("a", "b", "c"))
    _, mask = disc_pair()
    save(tmp_path / "c_mask.png", mask * 7)  # a label the table does not declare
    table = find_pairs_2d(tmp_path, classes=("background", "cell", "nucleus"), instances="classes")
    (tmp_path / "b.png").unlink()
    patches = SegmentationPatchDataset(table, [0, 1, 2], CXR, patch_size=(8, 8))
    whole = SegmentationImageDataset(table, [0, 1, 2], CXR)
    for dataset in (patches, whole):
        assert "error" not in dataset[0]
        missing, labels = dataset[1], dataset[2]
        assert set(missing) == {"index", "source", "error"} and "no such file" in missing["error"]
        assert missing["source"] == table.ids[1]
        assert "mask label 7 outside the 3 classes" in labels["error"]
    unlabelled = find_pairs_2d(tmp_path, allow_unlabelled=True)
    (tmp_path / "a_mask.png").unlink()
    unlabelled.cases[0] = unlabelled.cases[0].__class__(
        unlabelled.cases[0].id, unlabelled.cases[0].images, None, unlabelled.cases[0].patient
    )
    item = SegmentationPatchDataset(unlabelled, [0], CXR, patch_size=(8, 8))[0]
    assert "no mask" in item["error"]


def test_whole_images_keep_geometry_and_omit_missing_targets(tmp_path):
    write_msd_task(tmp_path, names=("BRATS_001",))
    train = find_volumes_3d(tmp_path)
    item = SegmentationImageDataset(train, [0], MRI)[0]
    image, mask = read_segmentation_case(train.cases[0], MRI, "classes")
    assert torch.equal(item["tensor"], torch.from_numpy(image.array))
    assert (
        torch.equal(item["target"], torch.from_numpy(mask)) and item["target"].dtype == torch.int64
    )
    np.testing.assert_array_equal(item["affine"], image.affine)
    assert item["spacing"] == image.spacing
    test = find_volumes_3d(tmp_path, part="test")
    item = SegmentationImageDataset(test, [0], MRI)[0]
    assert "target" not in item and item["tensor"].shape == (4, 12, 8, 10)


def test_settings_are_checked(tmp_path):
    write_pairs_2d(tmp_path, names=("a",))
    table = find_pairs_2d(tmp_path)
    good = {"patch_size": (8, 8), "patches_per_item": 2, "foreground_ratio": 0.5, "seed": 0}
    for field, value in [
        ("patch_size", (8, 8, 8)),
        ("patch_size", (8, 0)),
        ("patches_per_item", 0),
        ("foreground_ratio", 1.5),
        ("seed", -1),
    ]:
        with pytest.raises(ConfigError, match=field):
            SegmentationPatchDataset(table, [0], CXR, **{**good, field: value})
    with pytest.raises(ConfigError, match="indices"):
        SegmentationPatchDataset(table, [1], CXR, **good)
    with pytest.raises(ConfigError, match="instances"):
        SegmentationImageDataset(table, [0], CXR, instances="cells")
