"""`medfound example-data OUT`: small labelled data sets built offline from real medical images
that ship inside installed packages, in the layouts the transfer commands read.

- `tissue_slices/`: axial slices of nilearn's MNI152 T1 template (ICBM152 2009a symmetric,
  1 mm) with masks from its grey and white matter probability maps (0 background, 1 grey matter,
  2 white matter, 3 cerebrospinal fluid: inside nilearn's brain mask, the most probable of grey
  matter, white matter and neither, "neither" being CSF). One brain
  cut into pseudo-patients of consecutive slices: this demonstrates the commands; it does not
  evaluate anything.
- `ihc_tiles/`: 64x64 tiles of scikit-image's immunohistochemistry image in class folders
  `dab_high/` and `dab_low/`: a real image with a derived label (the tile's mean DAB stain from
  colour deconvolution, split at the median), and `labels.csv` with 2x2 blocks of neighbouring tiles
  as patients.
- `tissue_volume/`: six slabs of the same template and tissue labels as the cases of a Medical
  Segmentation Decathlon task folder (dataset.json, imagesTr/, labelsTr/).

Nothing is random: the same packages give the same files, byte for byte.
"""

import csv
import gzip
import io
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfound._optional import require
from medfound.errors import ConfigError
from medfound.files import atomic_write

TISSUE_CLASSES = ("background", "grey matter", "white matter", "CSF")
SLICE_STEP = 4  # every 4th axial slice (4 mm apart)
MIN_BRAIN_SHARE = 0.02  # slices whose brain covers less of the head's box are left out
PSEUDO_PATIENTS = 6  # groups of consecutive slices (and slabs of the volume)
HEAD_LEVEL = 0.05  # template intensity (of 1) above which a voxel is part of the head
MARGIN = 4  # voxels kept around the head's bounding box
TILE = 64
IHC_CLASSES = ("dab_high", "dab_low")
SUBFOLDERS = ("tissue_slices", "ihc_tiles", "tissue_volume")


@dataclass
class ExampleData:
    """The paths written by `write_example_data` and what they hold.

    counts: per data set, the items, patients and per-class counts (pixels or voxels per class for
    the segmentation sets, tiles per class for the tiles), as README.txt states them.
    """

    root: Path
    tissue_slices: Path  # folder of sliceNNN.png + sliceNNN_mask.png
    tissue_pairs: Path  # tissue_slices/pairs.csv: image,mask,patient
    ihc_tiles: Path  # folder of class folders dab_high/, dab_low/
    ihc_labels: Path  # ihc_tiles/labels.csv: path,label,patient
    tissue_volume: Path  # MSD task folder: dataset.json, imagesTr/, labelsTr/
    readme: Path
    counts: dict = field(default_factory=dict)


def write_example_data(out: str | Path) -> ExampleData:
    """Write the three example data sets and a README.txt with their counts under `out`.

    Raises ConfigError when one of the data set folders already holds files (nothing is
    overwritten), MissingDependencyError when nilearn, nibabel or scikit-image is missing.
    """
    root = Path(out)
    taken = [
        str(root / name)
        for name in SUBFOLDERS
        if (root / name).is_dir() and any((root / name).iterdir())
    ]
    if taken:
        raise ConfigError(
            f"{', '.join(taken)}: already hold files; choose a new or empty folder for the "
            "example data"
        )
    brain = load_brain()
    slices = root / "tissue_slices"
    ihc = root / "ihc_tiles"
    volume = root / "tissue_volume"
    counts = {
        "tissue_slices": write_tissue_slices(slices, brain),
        "ihc_tiles": write_ihc_tiles(ihc),
        "tissue_volume": write_tissue_volume(volume, brain),
    }
    readme = root / "README.txt"
    atomic_write(readme, lambda tmp: tmp.write_text(readme_text(counts)))
    return ExampleData(
        root=root,
        tissue_slices=slices,
        tissue_pairs=slices / "pairs.csv",
        ihc_tiles=ihc,
        ihc_labels=ihc / "labels.csv",
        tissue_volume=volume,
        readme=readme,
        counts=counts,
    )


# --- the brain: nilearn's bundled MNI152 template and tissue maps ------------------------------


@dataclass
class Brain:
    """The template as the example data use it."""

    template: object  # the nibabel image (its geometry)
    t1: np.ndarray  # float32 (X, Y, Z), scaled to [0, 1]
    labels: np.ndarray  # uint8 (X, Y, Z), tissue_labels of the probability maps
    box: tuple[slice, slice]  # the head's (x, y) bounding box with a margin


def load_brain(resolution: int = 1) -> Brain:
    """nilearn's MNI152 T1 template (1 mm, or resampled to `resolution` mm) and the tissue labels of
    its grey and white matter probability maps and brain mask, all read from files inside the
    package (`load_*`; the `fetch_*` functions download)."""
    datasets = require("nilearn.datasets", "demo", "the example brain (MNI152 template)")
    template = datasets.load_mni152_template(resolution=resolution)
    t1 = np.asarray(template.dataobj, dtype=np.float32)
    t1 = np.clip(t1 / t1.max(), 0.0, 1.0)

    def read(image) -> np.ndarray:
        return np.asarray(image.dataobj, dtype=np.float32)

    labels = tissue_labels(
        read(datasets.load_mni152_gm_template(resolution=resolution)),
        read(datasets.load_mni152_wm_template(resolution=resolution)),
        read(datasets.load_mni152_brain_mask(resolution=resolution)) > 0,
    )
    head = t1 > HEAD_LEVEL
    box = []
    for axis in (0, 1):
        inside = np.flatnonzero(head.any(axis=tuple(a for a in range(3) if a != axis)))
        start, stop = inside[0] - MARGIN, inside[-1] + 1 + MARGIN
        box.append(slice(int(max(start, 0)), int(min(stop, t1.shape[axis]))))
    return Brain(template, t1, labels, (box[0], box[1]))


def tissue_labels(grey: np.ndarray, white: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """uint8 labels: 0 outside the `brain` mask; inside, the most probable of 1 grey matter,
    2 white matter and 3 neither (1 - grey - white: cerebrospinal fluid, as the template's tissue
    maps leave no other class inside the brain). Ties go to the lower label."""
    rest = 1.0 - grey - white
    labels = (1 + np.argmax(np.stack([grey, white, rest]), axis=0)).astype(np.uint8)
    labels[~brain] = 0
    return labels


def _brain_slices(labels: np.ndarray, box: tuple[slice, slice]) -> np.ndarray:
    """The axial (z) indices whose brain covers at least MIN_BRAIN_SHARE of the head's box."""
    area = (labels[box] > 0).sum(axis=(0, 1))
    box_area = (box[0].stop - box[0].start) * (box[1].stop - box[1].start)
    return np.flatnonzero(area >= MIN_BRAIN_SHARE * box_area)


def axial_view(plane: np.ndarray) -> np.ndarray:
    """An (x, y) axial plane of a RAS+ volume as a picture: the plane transposed and its rows
    flipped, so rows run anterior (top) to posterior and columns from the subject's left to right
    (x increasing; the neurological convention)."""
    return np.ascontiguousarray(plane.T[::-1])


def write_tissue_slices(folder: Path, brain: Brain) -> dict:
    """Every SLICE_STEP-th axial slice through the brain as `sliceNNN.png` (8-bit gray, NNN = the
    template's z index) and `sliceNNN_mask.png` (labels 0-3, TISSUE_CLASSES), `pairs.csv`
    (image,mask,patient; patients = PSEUDO_PATIENTS groups of consecutive slices) and `labels.txt`.
    Returns counts."""
    t1, labels, box = brain.t1, brain.labels, brain.box
    zs = _brain_slices(labels, box)[::SLICE_STEP]
    groups = np.array_split(zs, PSEUDO_PATIENTS)
    rows, pixels = [], np.zeros(len(TISSUE_CLASSES), dtype=np.int64)
    for number, group in enumerate(groups, start=1):
        for z in group:
            image = axial_view(np.rint(t1[box[0], box[1], z] * 255).astype(np.uint8))
            mask = axial_view(labels[box[0], box[1], z])
            name = f"slice{z:03d}"
            _write_png(folder / f"{name}.png", image)
            _write_png(folder / f"{name}_mask.png", mask)
            pixels += np.bincount(mask.ravel(), minlength=len(TISSUE_CLASSES))
            rows.append((f"{name}.png", f"{name}_mask.png", f"brain_block{number}"))
    _write_csv(folder / "pairs.csv", ("image", "mask", "patient"), rows)
    note = "".join(f"{value} {name}\n" for value, name in enumerate(TISSUE_CLASSES))
    atomic_write(folder / "labels.txt", lambda tmp: tmp.write_text(note))
    return {
        "items": len(rows),
        "patients": len(groups),
        "shape": list(image.shape),
        "z": [int(zs[0]), int(zs[-1])],
        "per_class": dict(zip(TISSUE_CLASSES, pixels.tolist(), strict=True)),
    }


def write_tissue_volume(folder: Path, brain: Brain, slabs: int = PSEUDO_PATIENTS) -> dict:
    """`slabs` slabs of consecutive axial slices through the brain (each the head's box)
    as NIfTI cases `imagesTr/brain_slabN.nii.gz` (T1, float32 in [0, 1]) with `labelsTr/` (uint8
    labels 0-3), both with the template's geometry at their place, and an MSD `dataset.json`.
    Slabs, not hemispheres: the template is symmetric, so a hemisphere would be the mirror image of
    the other. Returns counts."""
    nib = require("nibabel")
    t1, labels, box = brain.t1, brain.labels, brain.box
    zs = _brain_slices(labels, box)
    bounds = np.linspace(zs[0], zs[-1] + 1, slabs + 1).round().astype(int)
    training, voxels = [], np.zeros(len(TISSUE_CLASSES), dtype=np.int64)
    for number, (z0, z1) in enumerate(itertools.pairwise(bounds), start=1):
        where = (box[0], box[1], slice(int(z0), int(z1)))
        # nibabel's slicer moves the origin to the slab's first voxel
        affine = brain.template.slicer[where].affine
        name = f"brain_slab{number}.nii.gz"
        _write_nifti(folder / "imagesTr" / name, nib.Nifti1Image(t1[where], affine))
        _write_nifti(folder / "labelsTr" / name, nib.Nifti1Image(labels[where], affine))
        voxels += np.bincount(labels[where].ravel(), minlength=len(TISSUE_CLASSES))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {
        "name": "MNI152 tissue slabs (medfound example data)",
        "description": (
            f"{slabs} slabs of consecutive axial slices of one brain template (nilearn's MNI152, "
            "ICBM152 2009a nonlinear symmetric) with grey/white matter/CSF labels from its "
            "tissue probability maps and brain mask (the most probable inside the mask): a "
            "demonstration of the layout, not an evaluation."
        ),
        "tensorImageSize": "3D",
        "modality": {"0": "MRI"},
        "labels": {str(value): name for value, name in enumerate(TISSUE_CLASSES)},
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
    }
    text = json.dumps(meta, indent=2) + "\n"
    atomic_write(folder / "dataset.json", lambda tmp: tmp.write_text(text))
    return {
        "items": len(training),
        "patients": len(training),
        "shape": [box[0].stop - box[0].start, box[1].stop - box[1].start],
        "slab_depths": np.diff(bounds).tolist(),
        "per_class": dict(zip(TISSUE_CLASSES, voxels.tolist(), strict=True)),
    }


# --- the tiles: scikit-image's immunohistochemistry image ---------------------------------------


def tile_dab(rgb: np.ndarray, tile: int = TILE) -> np.ndarray:
    """(rows, cols) mean DAB stain of each `tile`-sided tile of an RGB image (scikit-image's
    colour deconvolution, `rgb2hed`: channels haematoxylin, eosin, DAB)."""
    from skimage import color

    dab = color.rgb2hed(rgb)[..., 2]
    rows, cols = rgb.shape[0] // tile, rgb.shape[1] // tile
    return dab[: rows * tile, : cols * tile].reshape(rows, tile, cols, tile).mean(axis=(1, 3))


def write_ihc_tiles(folder: Path) -> dict:
    """The immunohistochemistry image cut into TILE x TILE tiles, `dab_high/` for the half with the
    most DAB stain (mean over the tile), `dab_low/` for the rest, and `labels.csv` (path,label,
    patient; patient = the 2x2 block of tiles, so neighbours stay in one split). Returns counts."""
    from skimage import data

    rgb = data.immunohistochemistry()
    dab = tile_dab(rgb)
    order = np.argsort(dab.ravel(), kind="stable")  # ties: the earlier tile is "lower"
    high = np.zeros(dab.size, dtype=bool)
    high[order[dab.size // 2 :]] = True
    high = high.reshape(dab.shape)
    rows = []
    for r in range(dab.shape[0]):
        for c in range(dab.shape[1]):
            label = IHC_CLASSES[0] if high[r, c] else IHC_CLASSES[1]
            path = f"{label}/tile_r{r}_c{c}.png"
            _write_png(folder / path, rgb[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE])
            rows.append((path, label, f"block_r{r // 2}_c{c // 2}"))
    _write_csv(folder / "labels.csv", ("path", "label", "patient"), rows)
    return {
        "items": len(rows),
        "patients": len({row[2] for row in rows}),
        "shape": [TILE, TILE],
        "per_class": {name: sum(row[1] == name for row in rows) for name in IHC_CLASSES},
        "dab_median": float(np.median(dab)),
    }


# --- writing ----------------------------------------------------------------------------------


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    image = Image.fromarray(array)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def _write_nifti(path: Path, image) -> None:
    # mtime=0: the same data give the same bytes
    data = gzip.compress(image.to_bytes(), mtime=0)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(path, lambda tmp: tmp.write_text(buffer.getvalue()))


def readme_text(counts: dict) -> str:
    """README.txt: where the data come from, what the labels mean, counts per class."""
    s, t, v = counts["tissue_slices"], counts["ihc_tiles"], counts["tissue_volume"]

    def shares(per_class: dict) -> str:
        total = sum(per_class.values())
        return ", ".join(f"{k} {n} ({100 * n / total:.1f}%)" for k, n in per_class.items())

    height, width = s["shape"]
    depths = f"{min(v['slab_depths'])}..{max(v['slab_depths'])}"
    lines = [
        "medfound example data (written by `medfound example-data`)",
        "",
        "Real images that ship inside installed packages, with labels derived from them. One",
        "brain and one histology image: these data show how the commands are used; their figures",
        "evaluate nothing.",
        "",
        f"tissue_slices/  2D segmentation: {s['items']} axial slices (z {s['z'][0]}..{s['z'][1]}, "
        f"every {SLICE_STEP}th) of",
        "  nilearn's MNI152 T1 template (ICBM152 2009a nonlinear symmetric, 1 mm),",
        f"  {width} x {height} px, as sliceNNN.png + sliceNNN_mask.png",
        "  mask values: 0 background, 1 grey matter, 2 white matter, 3 cerebrospinal fluid:",
        "  inside nilearn's MNI152 brain mask, the most probable of grey matter, white matter",
        "  and neither (CSF) by the template's tissue probability maps; see labels.txt",
        f"  pixels: {shares(s['per_class'])}",
        f"  pairs.csv (image,mask,patient): {s['patients']} pseudo-patients of consecutive "
        "slices, so",
        "  that neighbouring slices stay in one split (except at the block boundaries)",
        "  use: --data tissue_slices/pairs.csv --instances classes (a CSV names no classes: the",
        "  metrics call them 1, 2 and 3)",
        "",
        f"ihc_tiles/  2D classification: {t['items']} tiles of {TILE} x {TILE} px cut from "
        "scikit-image's",
        "  immunohistochemistry image (skimage.data.immunohistochemistry) in class folders",
        "  label: dab_high for the half of the tiles with the most DAB stain (mean over the tile;",
        "  colour deconvolution by skimage.color.rgb2hed; median "
        f"{t['dab_median']:.4f}), else dab_low:",
        "  a real image, a derived label",
        "  tiles: " + ", ".join(f"{k} {n}" for k, n in t["per_class"].items()),
        f"  labels.csv (path,label,patient): {t['patients']} pseudo-patients of 2 x 2 "
        "neighbouring tiles",
        "  use: --data ihc_tiles/labels.csv (the class folders alone name no patients)",
        "",
        "tissue_volume/  3D segmentation in the Medical Segmentation Decathlon layout "
        "(dataset.json,",
        f"  imagesTr/, labelsTr/): {v['items']} slabs of consecutive axial slices of the same "
        "template,",
        f"  each {v['shape'][0]} x {v['shape'][1]} x {depths} voxels, the same labels (named in "
        "dataset.json)",
        f"  voxels: {shares(v['per_class'])}",
        "  use: --data tissue_volume",
    ]
    return "\n".join(lines) + "\n"
