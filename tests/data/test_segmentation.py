"""Segmentation tables: pairing in every layout, the errors found before training, mask reading
(instances, RGB, 0/255) and the alignment of volumes and labels after reorientation."""

import json
import logging

import numpy as np
import pytest

from medfound.data.segmentation import (
    check_pairs,
    find_pairs_2d,
    find_volumes_3d,
    read_mask,
    read_segmentation_case,
)
from medfound.errors import ConfigError, ImageReadError
from medfound.io import get_preset
from tests.data.seg_fixtures import (
    MSD_LABELS,
    STORED_AFFINE,
    disc_pair,
    save,
    save_nifti,
    write_csv,
    write_msd_task,
    write_nnunet_folder,
    write_pairs_2d,
)

CXR, MRI = get_preset("cxr"), get_preset("mri")


def _canonical(stored: np.ndarray) -> np.ndarray:
    """STORED_AFFINE's array in RAS+ order, worked out by hand: stored axis i runs to -x (flip it,
    keep it first), j to +z (last), k to -y (flip it, middle)."""
    return np.swapaxes(stored[::-1, :, ::-1], 1, 2)


def _percentile_unit(values: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(values, (0.5, 99.5))
    return np.clip((values - lo) / (hi - lo), 0, 1)


# ---- 2D pairs -------------------------------------------------------------------------------


def test_folder_pairs_match_by_name_across_formats_and_subfolders(tmp_path, caplog):
    write_pairs_2d(tmp_path, names=("a",))
    image, mask = disc_pair()
    save(tmp_path / "b.jpg", image)
    save(tmp_path / "b_mask.png", mask)
    save(tmp_path / "sub" / "c.tif", image)
    save(tmp_path / "sub" / "c_mask.tif", mask)
    save(tmp_path / "z_mask.png", mask)  # a mask without image: warned about, not used
    save(tmp_path / ".hidden.png", image)
    with caplog.at_level(logging.WARNING):
        table = find_pairs_2d(tmp_path)
    pairs = {c.images[0].name: c.mask.name for c in table.cases}
    assert pairs == {"a.png": "a_mask.png", "b.jpg": "b_mask.png", "c.tif": "c_mask.tif"}
    assert table.ids == [str(c.images[0].resolve()) for c in table.cases]
    assert list(table.patients) == table.ids
    assert (table.classes, table.dims, table.channels) == (("background", "foreground"), 2, 1)
    assert "z_mask.png" in caplog.text
    assert table.subset([2, 0]).ids == [table.ids[2], table.ids[0]]


def test_images_without_masks_are_listed_unless_unlabelled_is_allowed(tmp_path):
    write_pairs_2d(tmp_path, names=("a",))
    for name in ("lone1", "lone2"):
        save(tmp_path / f"{name}.png", disc_pair()[0])
    with pytest.raises(ConfigError, match="2 images have no _mask") as err:
        find_pairs_2d(tmp_path)
    assert "lone1.png" in str(err.value) and "lone2.png" in str(err.value)
    table = find_pairs_2d(tmp_path, allow_unlabelled=True)
    assert [c.mask is None for c in table.cases] == [False, True, True]


def test_lossy_and_ambiguous_masks_are_refused(tmp_path):
    image, mask = disc_pair()
    save(tmp_path / "a.png", image)
    save(tmp_path / "a_mask.jpg", mask * 255)
    with pytest.raises(ConfigError, match=r"lossy format.*a_mask\.jpg"):
        find_pairs_2d(tmp_path)
    (tmp_path / "a_mask.jpg").unlink()
    save(tmp_path / "a_mask.png", mask)
    save(tmp_path / "a_mask.tif", mask)
    with pytest.raises(ConfigError, match=r"several masks.*a_mask\.png, a_mask\.tif"):
        find_pairs_2d(tmp_path)


def test_a_custom_mask_suffix(tmp_path):
    image, mask = disc_pair()
    save(tmp_path / "x.png", image)
    save(tmp_path / "x_seg.png", mask)
    table = find_pairs_2d(tmp_path, mask_suffix="_seg")
    assert [(c.images[0].name, c.mask.name) for c in table.cases] == [("x.png", "x_seg.png")]


def test_csv_pairs_with_relative_paths_and_patients(tmp_path):
    write_pairs_2d(tmp_path / "img", names=("a", "b"))
    rows = [
        {"image": "img/a.png", "mask": "img/a_mask.png", "patient": "p1"},
        {"image": str(tmp_path / "img" / "b.png"), "mask": "img/b_mask.png", "patient": ""},
    ]
    table = find_pairs_2d(write_csv(tmp_path / "pairs.csv", rows))
    assert table.ids == [str(tmp_path / "img" / "a.png"), str(tmp_path / "img" / "b.png")]
    assert [c.mask for c in table.cases] == [
        tmp_path / "img" / "a_mask.png",
        tmp_path / "img" / "b_mask.png",
    ]
    assert list(table.patients) == ["p1", table.ids[1]]  # no patient: the item is its own


def test_csv_naming_missing_files_or_rows_without_mask_is_refused(tmp_path):
    write_pairs_2d(tmp_path, names=("a",))
    rows = [
        {"image": "a.png", "mask": "a_mask.png"},
        {"image": "gone.png", "mask": "a_mask.png"},
        {"image": "a.png", "mask": ""},
    ]
    with pytest.raises(ConfigError) as err:
        find_pairs_2d(write_csv(tmp_path / "pairs.csv", rows))
    message = str(err.value)
    assert "line 3: " in message and "gone.png" in message
    assert "rows without a mask: line 4" in message and "listed twice: line 4" in message
    with pytest.raises(ConfigError, match="'image' and 'mask'"):
        find_pairs_2d(write_csv(tmp_path / "bad.csv", [{"path": "a.png"}]))


def test_csv_read_as_label_csvs_are_bom_gzip_spaces_and_file_line_numbers(tmp_path):
    import gzip

    write_pairs_2d(tmp_path, names=("a", "b"))
    text = "\ufeffimage, mask ,patient\n a.png ,a_mask.png, p1\n\nb.png,b_mask.png,p2\n"
    with gzip.open(tmp_path / "pairs.csv.gz", "wt", newline="") as fh:
        fh.write(text)
    table = find_pairs_2d(tmp_path / "pairs.csv.gz")
    assert table.ids == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert [c.mask.name for c in table.cases] == ["a_mask.png", "b_mask.png"]
    assert list(table.patients) == ["p1", "p2"]
    # after a blank line, the offender is named by its line in the file
    (tmp_path / "bad.csv").write_text("image,mask\na.png,a_mask.png\n\ngone.png,a_mask.png\n")
    with pytest.raises(ConfigError, match=r"line 4: .*gone\.png"):
        find_pairs_2d(tmp_path / "bad.csv")
    # a JPEG mask is refused from a CSV as from a folder
    save(tmp_path / "c.png", disc_pair()[0])
    save(tmp_path / "c_mask.jpg", disc_pair()[1] * 255)
    (tmp_path / "lossy.csv").write_text("image,mask\nc.png,c_mask.jpg\n")
    with pytest.raises(ConfigError, match=r"lossy format.*line 2: .*c_mask\.jpg"):
        find_pairs_2d(tmp_path / "lossy.csv")


def test_instance_label_images_reduce_to_foreground_or_become_classes(tmp_path):
    image, _ = disc_pair((20, 20))
    instances = np.zeros((20, 20), np.uint16)
    for value, (r, c) in enumerate([(2, 2), (2, 12), (12, 2), (12, 12), (9, 9)], start=1):
        instances[r : r + 4, c : c + 4] = value  # five cells, one label value each
    other = np.where(instances > 2, 0, instances).astype(np.uint16)
    save(tmp_path / "a.png", image)
    save(tmp_path / "a_mask.png", instances)  # 16-bit PNG (Pillow mode I;16)
    save(tmp_path / "b.png", image)
    save(tmp_path / "b_mask.png", other)

    table = find_pairs_2d(tmp_path)
    _, mask = read_segmentation_case(table.cases[0], CXR, "foreground")
    assert mask.dtype == np.int64
    np.testing.assert_array_equal(mask, (instances > 0).astype(np.int64))
    assert check_pairs(table) == [(20, 20), (20, 20)]

    classes = find_pairs_2d(tmp_path, instances="classes")
    assert classes.classes == ("background", "1", "2", "3", "4", "5")
    _, kept = read_segmentation_case(classes.cases[0], CXR, "classes")
    np.testing.assert_array_equal(kept, instances.astype(np.int64))
    check_pairs(classes)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_masks_saved_for_viewing_read_as_label_maps(tmp_path, mode):
    _, mask = disc_pair()
    if mode == "P":  # palette indices are the labels, whatever colours they show
        from PIL import Image

        img = Image.fromarray(mask, mode="L").convert("P")
        img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        img.save(tmp_path / "m.png")
    else:
        channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
        pixels = np.repeat((mask * 255)[..., None], channels, axis=-1)
        if mode == "RGBA":
            pixels[..., 3] = 255
        save(tmp_path / "m.png", pixels[..., 0] if mode == "L" else pixels)
    for instances in ("foreground", "classes"):
        np.testing.assert_array_equal(read_mask(tmp_path / "m.png", instances), mask)


def test_colour_coded_rgb_masks_are_foreground_only(tmp_path):
    _, mask = disc_pair()
    rgb = np.zeros((*mask.shape, 3), np.uint8)
    rgb[..., 0] = mask * 255  # red disc
    rgb[:3, :3, 1] = 255  # a green corner
    save(tmp_path / "m.png", rgb)
    expected = ((mask > 0) | (np.indices(mask.shape).max(0) < 3)).astype(np.int64)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", "foreground"), expected)
    with pytest.raises(ImageReadError, match="colour-coded"):
        read_mask(tmp_path / "m.png", "classes")


def test_2d_image_intensities_follow_the_preset(tmp_path):
    gray, mask = disc_pair()
    rgb = np.stack([gray, 255 - gray, gray // 2], axis=-1)
    save(tmp_path / "g.png", gray)
    save(tmp_path / "g_mask.png", mask)
    save(tmp_path / "c.png", rgb)
    save(tmp_path / "c_mask.png", mask)
    rows = [{"image": n, "mask": f"{n[0]}_mask.png"} for n in ("g.png", "c.png")]
    table = find_pairs_2d(write_csv(tmp_path / "l.csv", rows))
    image, read = read_segmentation_case(table.cases[0], CXR)
    np.testing.assert_allclose(image.array, gray[None] / 255.0, atol=1e-6)  # 8 bits: /255
    np.testing.assert_array_equal(read, mask)
    image, _ = read_segmentation_case(table.cases[1], get_preset("path"))
    np.testing.assert_allclose(image.array, np.moveaxis(rgb, -1, 0) / 255.0, atol=1e-6)


def test_check_pairs_lists_every_kind_of_offender(tmp_path):
    image, mask = disc_pair((20, 24))
    save(tmp_path / "good.png", image)
    save(tmp_path / "good_mask.png", mask)
    save(tmp_path / "shape.png", image)
    save(tmp_path / "shape_mask.png", mask[:, :20])
    save(tmp_path / "labels.png", image)
    save(tmp_path / "labels_mask.png", mask * 7)
    save(tmp_path / "rgb.png", np.repeat(image[..., None], 3, axis=-1))
    save(tmp_path / "rgb_mask.png", mask)
    table = find_pairs_2d(tmp_path, classes=("background", "cell", "nucleus"), instances="classes")
    with pytest.raises(ConfigError) as err:
        check_pairs(table)
    lines = str(err.value).splitlines()
    assert lines[0] == "3 of 4 segmentation cases cannot be used:"
    found = {line.strip().split(":")[0].rsplit("/", 1)[-1]: line for line in lines[1:]}
    assert set(found) == {"shape.png", "labels.png", "rgb.png"}
    assert "shape (20, 20), the image (20, 24)" in found["shape.png"]
    assert "label values 7 outside the 3 classes" in found["labels.png"]
    assert "3 channels, the first case has 1" in found["rgb.png"]
    # With instances reduced to foreground, 7 is a foreground label; a 3-class table is a mistake.
    with pytest.raises(ConfigError, match="use instances='classes'"):
        check_pairs(table, instances="foreground")


# ---- 3D volumes -----------------------------------------------------------------------------


def test_msd_task_folder(tmp_path):
    stored = write_msd_task(tmp_path)
    table = find_volumes_3d(tmp_path)
    assert table.classes == tuple(MSD_LABELS.values())
    assert (table.dims, table.channels, table.instances) == (3, 4, "classes")
    names = [c.images[0].name for c in table.cases]
    assert names == [f"{n}.nii.gz" for n in stored]  # the '._NAME' files are not cases
    assert [c.mask.parent.name for c in table.cases] == ["labelsTr"] * 3
    test = find_volumes_3d(tmp_path, part="test")
    assert [(c.images[0].name, c.mask) for c in test.cases] == [("BRATS_900.nii.gz", None)]


def test_msd_volume_and_label_stay_aligned_after_reorientation(tmp_path):
    stored = write_msd_task(tmp_path, names=("BRATS_001",))
    image_stored, label_stored = stored["BRATS_001"]
    table = find_volumes_3d(tmp_path)
    image, mask = read_segmentation_case(table.cases[0], MRI, "classes")
    # Reoriented to RAS+: a diagonal, positive affine, axes permuted as worked out by hand.
    np.testing.assert_allclose(image.affine[:3, :3], np.diag([1.5, 2.0, 1.0]))
    assert image.spacing == pytest.approx((1.5, 2.0, 1.0))
    assert image.array.shape == (4, 12, 8, 10) and mask.shape == (12, 8, 10)
    np.testing.assert_array_equal(mask, _canonical(label_stored))
    # The one voxel of class 2 is where it was in the patient (mm), in the image and the mask.
    (voxel,) = np.argwhere(mask == 2)
    stored_mm = STORED_AFFINE @ np.array([4, 3, 3, 1.0])
    np.testing.assert_allclose(image.affine @ np.append(voxel, 1.0), stored_mm)
    for c in range(4):  # each channel mapped on its own percentiles (scales differ 1000-fold)
        expected = _canonical(_percentile_unit(image_stored[..., c].astype(np.float64)))
        np.testing.assert_allclose(image.array[c], expected, atol=1e-5)
    assert check_pairs(table) == [mask.shape]  # from the headers: the same permuted shape


def test_nnunet_channel_files_form_one_case(tmp_path):
    stored = write_nnunet_folder(tmp_path)
    (tmp_path / "imagesTr" / "._case_a_0000.nii.gz").write_bytes(b"\0")
    table = find_volumes_3d(tmp_path)
    assert [len(c.images) for c in table.cases] == [2, 2]
    assert table.channels == 2 and table.classes == ("background", "1", "2")
    image, mask = read_segmentation_case(table.cases[1], MRI, "classes")
    image_stored, label_stored = stored["case_b"]
    np.testing.assert_array_equal(mask, _canonical(label_stored))
    for c in range(2):
        expected = _canonical(_percentile_unit(image_stored[..., c].astype(np.float64)))
        np.testing.assert_allclose(image.array[c], expected, atol=1e-5)
    assert check_pairs(table) == [mask.shape, mask.shape]
    foreground = find_volumes_3d(tmp_path, instances="foreground")
    assert foreground.classes == ("background", "foreground")
    _, binary = read_segmentation_case(foreground.cases[0], MRI, "foreground")
    np.testing.assert_array_equal(binary, _canonical(stored["case_a"][1] > 0))


def test_nnunet_channel_gaps_and_missing_labels_are_refused(tmp_path):
    write_nnunet_folder(tmp_path)
    (tmp_path / "imagesTr" / "case_b_0001.nii.gz").rename(
        tmp_path / "imagesTr" / "case_b_0002.nii.gz"
    )
    (tmp_path / "labelsTr" / "case_a.nii.gz").unlink()
    with pytest.raises(ConfigError) as err:
        find_volumes_3d(tmp_path)
    assert "case_a_0000.nii.gz" in str(err.value)
    assert "case_b (channels [0, 2])" in str(err.value)


def test_csv_volumes(tmp_path):
    _, label = write_msd_task(tmp_path / "task", names=("x",))["x"]
    rows = [{"image": "task/imagesTr/x.nii.gz", "label": "task/labelsTr/x.nii.gz"}]
    table = find_volumes_3d(write_csv(tmp_path / "vol.csv", rows), instances="foreground")
    assert (table.channels, table.classes) == (4, ("background", "foreground"))
    _, mask = read_segmentation_case(table.cases[0], MRI, "foreground")
    np.testing.assert_array_equal(mask, _canonical(label > 0))


def test_3d_errors_before_training(tmp_path):
    write_msd_task(tmp_path)
    _, label = write_msd_task(tmp_path / "spare", names=("y",))["y"]
    save_nifti(tmp_path / "labelsTr" / "BRATS_002.nii.gz", label[:, :, :6])  # wrong shape
    bad = label.copy()
    bad[0, 0, 0] = 5
    save_nifti(tmp_path / "labelsTr" / "BRATS_003.nii.gz", bad)  # a class dataset.json lacks
    with pytest.raises(ConfigError) as err:
        check_pairs(find_volumes_3d(tmp_path))
    message = str(err.value)
    assert message.startswith("2 of 3 segmentation cases cannot be used")
    assert "BRATS_002.nii.gz: mask" in message and "has shape (12, 6, 10)" in message
    assert "BRATS_003.nii.gz: mask" in message and "label values 5 outside the 3 classes" in message

    meta = json.loads((tmp_path / "dataset.json").read_text())
    meta["modality"] = {"0": "FLAIR", "1": "T1w"}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"declares 2 channels.*has 4"):
        find_volumes_3d(tmp_path)
    meta["labels"] = {"0": "background", "2": "tumour"}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"label values \[0, 2\] do not run 0..K-1"):
        find_volumes_3d(tmp_path)
    (tmp_path / "spare" / "dataset.json").unlink()
    with pytest.raises(ConfigError, match="not an MSD task folder"):
        find_volumes_3d(tmp_path / "spare" / "imagesTr")


def test_a_mask_with_fractions_is_refused(tmp_path):
    path = save_nifti(tmp_path / "m.nii.gz", np.full((4, 5, 6), 0.5, np.float32))
    with pytest.raises(ImageReadError, match="fractions"):
        read_mask(path, "classes")
