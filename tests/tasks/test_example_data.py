"""`medfound example-data`: the data sets are in the layouts the transfer commands read, and their
labels are what README.txt says, checked against the bundled maps and image recomputed here."""

import csv
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import typer
from nilearn import datasets
from PIL import Image
from skimage import data as skimage_data
from skimage.color import rgb2hed
from typer.testing import CliRunner

from medfound.cli.example_data import example_data_command
from medfound.data.labels import read_class_folders, read_label_csv
from medfound.data.segmentation import check_pairs, find_pairs_2d, find_volumes_3d, read_mask
from medfound.errors import ConfigError
from medfound.tasks.example_data import write_example_data


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return write_example_data(tmp_path_factory.mktemp("example") / "data")


@pytest.fixture(scope="module")
def brain():
    """The bundled 1 mm template and its labels, computed here from the probability maps."""
    t1 = np.asarray(datasets.load_mni152_template(resolution=1).dataobj, dtype=np.float64)
    grey = np.asarray(datasets.load_mni152_gm_template(resolution=1).dataobj)
    white = np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj)
    inside = np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj) > 0
    # inside the mask, the most probable of grey, white and neither (CSF), computed another way
    labels = np.where(grey >= np.maximum(white, 1 - grey - white), 1, 0)
    labels = np.where((labels == 0) & (white >= 1 - grey - white), 2, labels)
    labels = np.where(labels == 0, 3, labels) * inside
    assert np.bincount(labels.ravel()).min() > 1e5  # every class, CSF included, is there
    return t1, labels


def _bbox(array: np.ndarray) -> tuple[int, int]:
    """(first row, first column) holding a non-zero value."""
    rows, cols = np.nonzero(array)
    return rows.min(), cols.min()


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_tissue_slices_are_four_class_pairs_with_contiguous_patients(example):
    table = find_pairs_2d(example.tissue_pairs, instances="classes")
    assert (
        table.classes == ("background", "1", "2", "3") and table.dims == 2 and table.channels == 1
    )
    shapes = check_pairs(table)
    assert len(shapes) == len(table) == example.counts["tissue_slices"]["items"] >= 30
    # the folder itself reads the same pairs (pairs.csv only adds the patients)
    assert sorted(find_pairs_2d(example.tissue_slices, instances="classes").ids) == sorted(
        table.ids
    )
    # patients are runs of consecutive slices: along z the patient changes 5 times for 6 patients
    z = [int(re.search(r"slice(\d{3})\.png$", case.id)[1]) for case in table.cases]
    patients = table.patients[np.argsort(z)]
    assert len(set(patients)) == 6
    assert int(np.sum(patients[1:] != patients[:-1])) == 5
    assert np.all(np.diff(np.sort(z)) == 4)
    # every class occurs, in the counts README.txt gives
    pixels = np.zeros(4, dtype=np.int64)
    for case in table.cases:
        pixels += np.bincount(read_mask(case.mask, "classes").ravel(), minlength=4)
    assert pixels.tolist() == list(example.counts["tissue_slices"]["per_class"].values())
    assert pixels.min() > 0
    assert f"pixels: background {pixels[0]} " in example.readme.read_text()


def test_tissue_slices_show_the_template_and_its_maps(example, brain):
    t1, labels = brain
    for name in ("slice008", "slice068", "slice148"):
        z = int(name[5:])
        mask = np.asarray(Image.open(example.tissue_slices / f"{name}_mask.png"))
        image = np.asarray(Image.open(example.tissue_slices / f"{name}.png"))
        assert mask.shape == image.shape
        # undo the picture orientation (rows anterior to posterior): back to the (x, y) plane
        plane_mask, plane_image = mask[::-1].T, image[::-1].T
        x0, y0 = np.subtract(_bbox(labels[:, :, z]), _bbox(plane_mask))
        h, w = plane_mask.shape
        np.testing.assert_array_equal(plane_mask, labels[x0 : x0 + h, y0 : y0 + w, z])
        assert labels[:, :, z].sum() == plane_mask.sum()  # no tissue cut off by the crop
        expected = np.rint(t1[x0 : x0 + h, y0 : y0 + w, z] / t1.max() * 255)
        np.testing.assert_array_equal(plane_image, expected)
    # so, with the template in RAS+ (y increasing to anterior), anterior is at the top
    affine = datasets.load_mni152_template(resolution=1).affine
    assert np.all(np.diag(affine)[:3] > 0) and np.count_nonzero(affine[:3, :3]) == 3


def test_tissue_volume_is_an_msd_task_with_the_template_geometry(example, brain):
    t1, labels = brain
    template = datasets.load_mni152_template(resolution=1)
    table = find_volumes_3d(example.tissue_volume)
    assert table.classes == ("background", "grey matter", "white matter", "CSF") and table.dims == 3
    assert len(check_pairs(table)) == len(table) == 6
    seen = 0
    for case in table.cases:
        label = nib.load(case.mask)
        image = nib.load(case.images[0])
        np.testing.assert_array_equal(label.affine, image.affine)
        # where the slab's first voxel lies in the template's voxel grid
        offset = np.linalg.inv(template.affine) @ label.affine @ np.array([0, 0, 0, 1.0])
        x, y, z = np.rint(offset[:3]).astype(int)
        sx, sy, sz = label.shape
        np.testing.assert_array_equal(
            np.asarray(label.dataobj), labels[x : x + sx, y : y + sy, z : z + sz]
        )
        np.testing.assert_allclose(
            np.asarray(image.dataobj), t1[x : x + sx, y : y + sy, z : z + sz] / t1.max(), atol=1e-6
        )
        seen += sz
    brain_z = np.flatnonzero(labels.any(axis=(0, 1)))
    assert seen >= 0.9 * len(brain_z)  # the slabs cover (almost) the whole brain


def test_ihc_tiles_are_labelled_by_their_dab_stain(example):
    folders = read_class_folders(example.ihc_tiles)
    table = read_label_csv(example.ihc_labels)
    assert folders.classes == table.classes == ("dab_high", "dab_low")
    assert np.bincount(table.targets).tolist() == [32, 32]
    by_path = dict(zip(folders.ids, folders.targets.tolist(), strict=True))
    assert {i: by_path[i] for i in table.ids} == dict(
        zip(table.ids, table.targets.tolist(), strict=True)
    )
    # the label: every dab_high tile holds more DAB (mean over the tile) than every dab_low tile
    dab = np.array([rgb2hed(np.asarray(Image.open(p)))[..., 2].mean() for p in table.ids])
    assert dab[table.targets == 0].min() >= dab[table.targets == 1].max()
    # the tiles are the image's, and a patient is a 2x2 block of neighbours
    ihc = skimage_data.immunohistochemistry()
    blocks: dict[str, set] = {}
    for path, patient in zip(table.ids, table.patients, strict=True):
        r, c = map(int, re.search(r"tile_r(\d+)_c(\d+)\.png$", path).groups())
        tile = np.asarray(Image.open(path))
        np.testing.assert_array_equal(tile, ihc[r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64])
        blocks.setdefault(patient, set()).add((r // 2, c // 2))
    assert len(blocks) == 16 and all(len(b) == 1 for b in blocks.values())
    assert len(set().union(*blocks.values())) == 16
    with open(example.ihc_labels, newline="") as fh:
        assert next(csv.reader(fh)) == ["path", "label", "patient"]


def test_the_command_writes_the_same_bytes_and_refuses_a_used_folder(example, tmp_path):
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("example-data")(example_data_command)

    @app.callback()
    def _root() -> None:
        """A group, so that the command is called by name as under `medfound`."""

    runner = CliRunner()
    result = runner.invoke(app, ["example-data", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    assert "37 items of 6 patients" in result.output and "64 items of 16 patients" in result.output
    assert _files(tmp_path / "again") == _files(example.root)
    # a second run into the same folder is refused, naming the folder, and changes nothing
    again = runner.invoke(app, ["example-data", str(tmp_path / "again")])
    assert again.exit_code == 2 and "already hold files" in again.output
    assert _files(tmp_path / "again") == _files(example.root)
    with pytest.raises(ConfigError, match="ihc_tiles"):
        write_example_data(example.root)
