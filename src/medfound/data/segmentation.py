"""Segmentation data: image/mask pairs (2D) and image/label volumes (3D), found, checked and read.

Layouts understood:
- 2D: a folder where each image `NAME.EXT` has its mask `NAME_mask.EXT2` beside it (the suffix is an
  option; masks are lossless rasters: PNG, TIFF, BMP), or a CSV with `image` and `mask` columns and an
  optional `patient` column (relative paths are relative to the CSV).
- 3D: a Medical Segmentation Decathlon task folder (dataset.json with "labels", "modality",
  "training", "test"; images may be 4D NIfTI (X, Y, Z, C)), a folder with imagesTr/ and labelsTr/ of
  same-named volumes or of nnU-Net's channel files (`NAME_0000.nii.gz`, `NAME_0001.nii.gz`, ... with
  `labelsTr/NAME.nii.gz`), or a CSV with `image` and `label` columns.

Masks hold class indices, 0 being background. `instances="foreground"` reduces every label above 0 to
1 (instance label images: one value per cell), `instances="classes"` keeps the values as class
indices. A mask whose only non-zero value is 255 (a binary mask saved for viewing) reads as 0/1.
Volumes and their labels are read in the same orientation (the closest RAS+, as io/readers.py gives).
"""

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from medfound.data.labels import read_csv_rows
from medfound.errors import ConfigError, ImageReadError, MedfoundError, first_items
from medfound.io.geometry import voxel_spacing
from medfound.io.image import MedicalImage
from medfound.io.metaimage import METAIMAGE_SUFFIXES
from medfound.io.presets import Preset, resolve_auto, to_unit_range
from medfound.io.raster import RASTER_SUFFIXES
from medfound.io.readers import read_image
from medfound.io.volume import NIFTI_SUFFIXES

log = logging.getLogger(__name__)

Instances = Literal["foreground", "classes"]
INSTANCES = ("foreground", "classes")
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")  # lossless: JPEG would blur label values
VOLUME_SUFFIXES = (*NIFTI_SUFFIXES, *METAIMAGE_SUFFIXES)
SCAN_VOLUMES = 5  # label volumes read to find the classes when nothing declares them
_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")  # nnU-Net: NAME_0000.nii.gz
_GRAY_MODES = ("1", "L", "LA", "I", "F")  # Pillow modes read_raster gives one channel (+ "I;16*")


@dataclass(frozen=True)
class SegmentationCase:
    """One image (one file, or one file per channel) and its mask (None when unlabelled)."""

    id: str  # the resolved image path (the first channel's for multi-file images)
    images: tuple[Path, ...]
    mask: Path | None
    patient: str


@dataclass
class SegmentationTable:
    """The cases of a segmentation data set and what they hold.

    classes: class names, index 0 = "background"; a mask's values are indices into them.
    dims: 2 (images) or 3 (volumes). channels: image channels after reading (4 for BraTS-like MSD).
    instances: how masks are read by default ("foreground": labels > 0 become 1; "classes": kept).
    """

    cases: list[SegmentationCase]
    classes: tuple[str, ...]
    dims: int
    channels: int
    instances: Instances = "foreground"

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def ids(self) -> list[str]:
        """The case ids, in order."""
        return [case.id for case in self.cases]

    @property
    def patients(self) -> np.ndarray:
        """The patient of each case (str array), for patient-level splits."""
        return np.array([case.patient for case in self.cases], dtype=str)

    def subset(self, indices: Sequence[int]) -> "SegmentationTable":
        """The table of the cases at `indices` (same classes, dims, channels)."""
        return replace(self, cases=[self.cases[int(i)] for i in indices])


def checked_instances(instances: str) -> Instances:
    """`instances` if it is "foreground" or "classes", else a ConfigError."""
    if instances not in INSTANCES:
        raise ConfigError(f"instances: {instances!r} is not one of {INSTANCES}")
    return instances


# ---------------------------------------------------------------------------------------------
# Finding the cases


def find_pairs_2d(
    source: str | Path,
    *,
    mask_suffix: str = "_mask",
    classes: Sequence[str] | None = None,
    instances: Instances = "foreground",
    allow_unlabelled: bool = False,
) -> SegmentationTable:
    """2D image/mask pairs from a folder (`NAME.EXT` + `NAME{mask_suffix}.EXT2`, searched
    recursively, hidden files skipped) or a CSV with `image`, `mask` (and optional `patient`) columns.

    classes: the class names (index 0 = background); by default ("background", "foreground"), or
        with `instances="classes"` the label values found in all masks ("background", "1", ...).
    allow_unlabelled: images without a mask become cases with `mask=None` (for predict) instead of
        a ConfigError listing them.
    Raises ConfigError for a source that is neither, images without masks, several masks for one
    image, masks in a lossy format, CSV rows naming missing files.
    """
    instances = checked_instances(instances)
    path = Path(source).resolve()
    if path.is_dir():
        cases = _folder_pairs(path, mask_suffix, allow_unlabelled)
    elif _is_csv(path):
        cases = _csv_cases(path, allow_unlabelled)
    else:
        raise ConfigError(
            f"{path}: not a folder of images with NAME{mask_suffix} masks nor a CSV with "
            "image,mask columns"
        )
    if not cases:
        raise ConfigError(f"{path}: no images found")
    channels, _ = _case_header(cases[0])
    return SegmentationTable(
        cases, _resolve_classes(cases, classes, instances, None), 2, channels, instances
    )


def find_volumes_3d(
    source: str | Path,
    *,
    classes: Sequence[str] | None = None,
    instances: Instances = "classes",
    allow_unlabelled: bool = False,
    part: Literal["training", "test"] = "training",
) -> SegmentationTable:
    """3D image/label volumes: an MSD task folder (dataset.json), a folder with imagesTr/ and
    labelsTr/ (same-named volumes, or nnU-Net channel files NAME_0000...), or a CSV with `image` and
    `label` (and optional `patient`) columns.

    classes: by default dataset.json's "labels"; else with `instances="classes"` the label values of
        the first few label volumes ("background", "1", ...), with "foreground" the two classes.
    part: "test" takes the MSD "test" list or imagesTs/ (unlabelled cases, for predict).
    allow_unlabelled: also accepts images without a label, and a plain folder of volumes.
    The channels are those of the first image (4D NIfTI: its last axis; nnU-Net: its files).
    """
    instances = checked_instances(instances)
    if part not in ("training", "test"):
        raise ConfigError(f"part: {part!r} is not 'training' or 'test'")
    path = Path(source).resolve()
    declared, modalities = None, None
    if _is_csv(path):
        cases = _csv_cases(path, allow_unlabelled)
    elif path.is_dir() and (path / "dataset.json").is_file():
        cases, declared, modalities = _msd_cases(path, part, allow_unlabelled)
    elif path.is_dir() and (path / "imagesTr").is_dir():
        folder = "imagesTr" if part == "training" else "imagesTs"
        labels = "labelsTr" if part == "training" else None
        cases = _folder_volumes(path, folder, labels, allow_unlabelled or part == "test")
    elif path.is_dir() and allow_unlabelled:
        cases = _folder_volumes(path, ".", None, True)
    else:
        raise ConfigError(
            f"{path}: not an MSD task folder (dataset.json), a folder with imagesTr/ and labelsTr/, "
            "nor a CSV with image,label columns"
        )
    if not cases:
        raise ConfigError(f"{path}: no volumes found")
    channels, _ = _case_header(cases[0])
    if modalities is not None and len(modalities) != channels:
        raise ConfigError(
            f"{path / 'dataset.json'}: declares {len(modalities)} channels "
            f"({', '.join(modalities)}), the first image {cases[0].id} has {channels}"
        )
    chosen = classes if classes is not None else declared
    return SegmentationTable(
        cases, _resolve_classes(cases, chosen, instances, SCAN_VOLUMES), 3, channels, instances
    )


def _folder_pairs(folder: Path, mask_suffix: str, allow_unlabelled: bool) -> list[SegmentationCase]:
    if not mask_suffix:
        raise ConfigError("mask_suffix: must not be empty (masks would be images of their own)")
    images: list[Path] = []
    masks: dict[tuple[Path, str], list[Path]] = {}
    lossy: list[str] = []
    for path in _files(folder, RASTER_SUFFIXES):
        stem = path.name[: -len(_suffix(path))]
        if stem.endswith(mask_suffix):
            if _suffix(path) not in MASK_SUFFIXES:
                lossy.append(str(path))
            masks.setdefault((path.parent, stem[: -len(mask_suffix)]), []).append(path)
        else:
            images.append(path)
    cases, missing, ambiguous = [], [], []
    for image in images:
        found = masks.pop((image.parent, image.name[: -len(_suffix(image))]), [])
        if len(found) > 1:
            ambiguous.append(f"{image} ({', '.join(p.name for p in found)})")
        elif not found and not allow_unlabelled:
            missing.append(str(image))
        cases.append(
            SegmentationCase(str(image), (image,), found[0] if found else None, str(image))
        )
    problems = []
    if missing:
        problems.append(
            f"{len(missing)} images have no {mask_suffix} mask beside them: {first_items(missing)}"
        )
    if ambiguous:
        problems.append(f"{len(ambiguous)} images have several masks: {first_items(ambiguous)}")
    if lossy:
        problems.append(
            f"{len(lossy)} masks are in a lossy format (save them as PNG or TIFF): "
            f"{first_items(lossy)}"
        )
    if problems:
        raise ConfigError(f"{folder}: " + "; ".join(problems))
    orphans = [str(p) for found in masks.values() for p in found]
    if orphans:
        log.warning("%s: %d masks have no image: %s", folder, len(orphans), first_items(orphans))
    return cases


def _csv_cases(csv_path: Path, allow_unlabelled: bool) -> list[SegmentationCase]:
    """Cases from a CSV: `image`, then `mask` or `label`, optional `patient` (read as label CSVs
    are: gzip, a byte-order mark, spaces around cells, line numbers as in the file)."""
    fields, rows = read_csv_rows(csv_path)
    label = next((name for name in ("mask", "label") if name in fields), None)
    if "image" not in fields or (label is None and not allow_unlabelled):
        raise ConfigError(
            f"{csv_path}: needs 'image' and 'mask' (or 'label') columns, has {fields}"
        )
    cases, missing, unlabelled, lossy, seen, repeated = [], [], [], [], set(), []
    for line, row in rows:
        if not row["image"]:
            missing.append(f"line {line}: no image")
            continue
        image = _resolved(csv_path.parent, row["image"])
        mask = _resolved(csv_path.parent, row[label]) if label and row[label] else None
        for path in (image, mask):
            if path is not None and not path.is_file():
                missing.append(f"line {line}: {path}")
        if mask is None and not allow_unlabelled:
            unlabelled.append(f"line {line}: {image}")
        if (
            mask is not None
            and _suffix(mask) in RASTER_SUFFIXES
            and _suffix(mask) not in MASK_SUFFIXES
        ):
            lossy.append(f"line {line}: {mask}")
        if image in seen:
            repeated.append(f"line {line}: {image}")
        seen.add(image)
        patient = row.get("patient") or str(image)
        cases.append(SegmentationCase(str(image), (image,), mask, patient))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing files: {first_items(missing)}")
    if unlabelled:
        problems.append(f"{len(unlabelled)} rows without a {label}: {first_items(unlabelled)}")
    if lossy:
        problems.append(
            f"{len(lossy)} masks in a lossy format (save them as PNG or TIFF): {first_items(lossy)}"
        )
    if repeated:
        problems.append(f"{len(repeated)} images listed twice: {first_items(repeated)}")
    if problems:
        raise ConfigError(f"{csv_path}: " + "; ".join(problems))
    return cases


def _msd_cases(
    task: Path, part: str, allow_unlabelled: bool
) -> tuple[list[SegmentationCase], tuple[str, ...] | None, list[str] | None]:
    """The cases, classes and channel names of an MSD task folder (or nnU-Net v2's dataset.json,
    which lists no cases: then imagesTr/ and labelsTr/ are searched)."""
    where = task / "dataset.json"
    try:
        meta = json.loads(where.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{where}: not readable JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ConfigError(f"{where}: expected a JSON object")
    classes = _declared_classes(meta.get("labels"), where)
    channels = meta.get("modality", meta.get("channel_names"))
    modalities = None
    if isinstance(channels, dict):
        modalities = [str(channels[k]) for k in sorted(channels, key=_index_key)]
    entries = meta.get(part)
    if entries is None:  # nnU-Net v2: the folders are the list
        folder = "imagesTr" if part == "training" else "imagesTs"
        labels = "labelsTr" if part == "training" else None
        unlabelled = allow_unlabelled or part == "test"
        return _folder_volumes(task, folder, labels, unlabelled), classes, modalities
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: {part!r} is not a list")
    cases, missing, bad = [], [], []
    for n, entry in enumerate(entries):
        if isinstance(entry, str):  # MSD "test": image paths only
            image_text, label_text = entry, None
        elif isinstance(entry, dict) and isinstance(entry.get("image"), str):
            image_text, label_text = entry["image"], entry.get("label")
        else:
            bad.append(f"{part}[{n}]")
            continue
        image = _resolved(task, image_text)
        mask = _resolved(task, label_text) if isinstance(label_text, str) else None
        missing += [str(p) for p in (image, mask) if p is not None and not p.is_file()]
        if mask is None and part == "training" and not allow_unlabelled:
            bad.append(f"{part}[{n}] (no label)")
        cases.append(SegmentationCase(str(image), (image,), mask, str(image)))
    problems = []
    if bad:
        problems.append(f"entries without an image and label: {first_items(bad)}")
    if missing:
        problems.append(f"{len(missing)} files listed are missing: {first_items(missing)}")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    return cases, classes, modalities


def _declared_classes(labels, where: Path) -> tuple[str, ...] | None:
    """dataset.json "labels": MSD's {"0": "background", "1": ...} or nnU-Net v2's {"background": 0,
    ...}; indices must run 0..K-1."""
    if labels is None:
        return None
    if not isinstance(labels, dict) or not labels:
        raise ConfigError(f"{where}: 'labels' is not a mapping of label values and names")
    try:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values()):
            by_index = {int(v): str(k) for k, v in labels.items()}
        else:
            by_index = {int(k): str(v) for k, v in labels.items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{where}: 'labels' must map label values to names (regions are not supported): "
            f"{labels}"
        ) from exc
    if sorted(by_index) != list(range(len(by_index))):
        raise ConfigError(f"{where}: label values {sorted(by_index)} do not run 0..K-1")
    return tuple(by_index[i] for i in range(len(by_index)))


def _folder_volumes(
    root: Path, images_dir: str, labels_dir: str | None, allow_unlabelled: bool
) -> list[SegmentationCase]:
    """Volumes in root/images_dir with same-named labels in root/labels_dir; nnU-Net's channel
    files NAME_0000, NAME_0001, ... form one multi-channel case labelled NAME."""
    folder = root / images_dir
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder")
    labels = {}
    if labels_dir is not None and (root / labels_dir).is_dir():
        labels = {p.name: p for p in _files(root / labels_dir, VOLUME_SUFFIXES, recursive=False)}
    groups: dict[str, list[tuple[int, Path]]] = {}
    names: dict[str, str] = {}  # case -> the label file name it needs
    for path in _files(folder, VOLUME_SUFFIXES, recursive=False):
        suffix = _suffix(path)
        stem = path.name[: -len(suffix)]
        match = _CHANNEL_FILE.match(stem)
        if path.name in labels or match is None:
            groups[stem] = [(0, path)]
            names[stem] = path.name
        else:
            groups.setdefault(match["case"], []).append((int(match["channel"]), path))
            names[match["case"]] = match["case"] + suffix
    cases, gaps, missing = [], [], []
    for case in sorted(groups):
        files = sorted(groups[case])
        if [c for c, _ in files] != list(range(len(files))):
            gaps.append(f"{case} (channels {[c for c, _ in files]})")
            continue
        mask = labels.pop(names[case], None)
        if mask is None and not allow_unlabelled:
            missing.append(str(files[0][1]))
        image = files[0][1]
        cases.append(SegmentationCase(str(image), tuple(p for _, p in files), mask, str(image)))
    problems = []
    if missing:
        problems.append(
            f"{len(missing)} images have no label in {labels_dir}/: {first_items(missing)}"
        )
    if gaps:
        problems.append(f"channel files not numbered 0000, 0001, ...: {first_items(gaps)}")
    if problems:
        raise ConfigError(f"{folder}: " + "; ".join(problems))
    if labels:
        log.warning(
            "%s: %d labels have no image: %s",
            root / (labels_dir or ""),
            len(labels),
            first_items(sorted(labels)),
        )
    return cases


def _resolve_classes(
    cases: list[SegmentationCase],
    classes: Sequence[str] | None,
    instances: str,
    scan: int | None,
) -> tuple[str, ...]:
    """The given class names (at least two, first the background), the foreground pair, or with
    instances="classes" one class per label value up to the largest found in the first `scan`
    masks (all when None)."""
    if classes is not None:
        names = tuple(str(c) for c in classes)
        if len(names) < 2 or len(set(names)) != len(names):
            raise ConfigError(f"classes: {names} are not two or more distinct names")
        if instances == "foreground" and len(names) != 2:
            raise ConfigError(
                f"classes: {len(names)} names, but instances='foreground' gives two classes "
                "(background and foreground); use instances='classes'"
            )
        return names
    if instances == "foreground":
        return ("background", "foreground")
    labelled = [case for case in cases if case.mask is not None][:scan]
    top = 1
    for case in labelled:
        try:
            top = max(top, int(read_mask(case.mask, "classes").max()))
        except MedfoundError as exc:
            raise ConfigError(f"classes: cannot read the mask of {case.id} ({exc})") from exc
    return ("background", *(str(v) for v in range(1, top + 1)))


def _files(folder: Path, suffixes: Sequence[str], recursive: bool = True) -> list[Path]:
    """The non-hidden files under `folder` with one of `suffixes`, sorted (MSD archives carry
    '._NAME' AppleDouble files beside each volume)."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in found
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and _suffix(p) in suffixes
    )


def _is_csv(path: Path) -> bool:
    """A CSV file (or a gzip-compressed one)."""
    return path.is_file() and path.name.lower().endswith((".csv", ".csv.gz"))


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _resolved(base: Path, text: str) -> Path:
    path = Path(text.strip())
    return (path if path.is_absolute() else base / path).resolve()


def _index_key(key) -> tuple[int, str]:
    return (int(key), "") if str(key).isdigit() else (1 << 30, str(key))


# ---------------------------------------------------------------------------------------------
# Reading


def read_segmentation_case(
    case: SegmentationCase, preset: Preset, instances: Instances = "foreground"
) -> tuple[MedicalImage, np.ndarray | None]:
    """The image of `case` with intensities in [0, 1], and its mask (None when unlabelled).

    The image is (C, H, W) or (C, X, Y, Z) float32 after the preset's intensity mapping only (not
    resized nor resampled): each file on its own, and each channel of a 4D volume on its own (MRI
    sequences have unrelated scales). The mask is int64 of the image's spatial shape, in the same
    orientation. Raises ImageReadError naming the file for anything unreadable or mismatched.
    """
    instances = checked_instances(instances)
    parts = [read_channels(path) for path in case.images]
    shapes = [tuple(part.array.shape[1:]) for part in parts]
    if len(set(shapes)) > 1:
        raise ImageReadError(f"{case.id}: its channel files differ in shape {shapes}")
    first = parts[0]
    array = np.concatenate([_unit_channels(part, preset) for part in parts])
    image = MedicalImage(
        array=array,
        source_id=case.id,
        modality=first.modality,
        spacing=first.spacing,
        value_range=(0.0, 1.0),
        meta=dict(first.meta),
        affine=first.affine,
    )
    if case.mask is None:
        return image, None
    mask = read_mask(case.mask, instances)
    if mask.shape != shapes[0]:
        raise ImageReadError(
            f"{case.id}: mask {case.mask} has shape {mask.shape}, the image {shapes[0]}"
        )
    return image, mask


def read_channels(path: Path) -> MedicalImage:
    """An image file as read_image gives it, and 4D NIfTI (X, Y, Z, C) as (C, X, Y, Z) reoriented
    like its 3D volumes (read_image takes 1 or 3 channels and 3D NIfTI only)."""
    path = Path(path)
    if _suffix(path) in NIFTI_SUFFIXES and len(_nifti_shape(path)) == 4:
        return _read_nifti_channels(path)
    return read_image(path)


def _nifti_shape(path: Path) -> tuple[int, ...]:
    import nibabel as nib

    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        shape = tuple(int(n) for n in nib.load(str(path)).shape)
    except Exception as exc:  # nibabel raises many types for bad files
        raise ImageReadError(f"{path}: not a readable NIfTI file ({exc})") from exc
    # A trailing axis of one is dropped, as read_nifti does.
    return shape[:3] if len(shape) == 4 and shape[3] == 1 else shape


def _read_nifti_channels(path: Path) -> MedicalImage:
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(nib.load(str(path)))  # the spatial axes, as read_nifti
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:
        raise ImageReadError(f"{path}: not a readable NIfTI file ({exc})") from exc
    if data.ndim != 4 or min(data.shape) == 0:
        raise ImageReadError(f"{path}: expected a 4D (X, Y, Z, C) NIfTI image, got {data.shape}")
    if not np.isfinite(data).all():
        raise ImageReadError(f"{path}: some values are NaN or infinite")
    return MedicalImage(
        array=np.ascontiguousarray(np.moveaxis(data, -1, 0)),
        source_id=str(path),
        spacing=voxel_spacing(img.affine),
        meta={"format": "NIFTI"},
        affine=np.asarray(img.affine, dtype=np.float64),
    )


def _unit_channels(image: MedicalImage, preset: Preset) -> np.ndarray:
    """[0, 1] intensities: a 2D image (gray or RGB) as a whole, a volume's channels each alone."""
    preset = resolve_auto(preset, image)
    if image.spatial_dims == 2 or image.channels == 1:
        return to_unit_range(image, preset)
    return np.concatenate(
        [
            to_unit_range(replace(image, array=image.array[c : c + 1]), preset)
            for c in range(image.channels)
        ]
    )


def read_mask(path: Path, instances: Instances = "foreground") -> np.ndarray:
    """A mask file as int64 class indices (0/1 with instances="foreground").

    Rasters are read with Pillow keeping palette indices; RGB(A) masks whose channels agree read as
    that value, others (colour-coded) as foreground, refused with instances="classes". Other
    formats go through read_image, so volumes get the image's reorientation. Raises ImageReadError
    for unreadable files and non-integer or negative values.
    """
    path = Path(path)
    if _suffix(path) in RASTER_SUFFIXES:
        values = _raster_labels(path, instances)
    else:
        image = read_image(path)
        if image.channels != 1:
            raise ImageReadError(f"{path}: a mask has one channel, this has {image.channels}")
        values = image.array[0]
    if np.issubdtype(values.dtype, np.floating):
        rounded = np.rint(values)
        if not np.array_equal(rounded, values):
            raise ImageReadError(f"{path}: a mask holds whole numbers, this has fractions")
        values = rounded
    labels = values.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ImageReadError(f"{path}: negative label values ({int(labels.min())})")
    if instances == "foreground":
        return (labels > 0).astype(np.int64)
    if labels.size and labels.max() == 255 and np.isin(labels, (0, 255)).all():
        labels = labels // 255  # only 0 and 255: a binary mask saved for viewing
    return labels


def _raster_labels(path: Path, instances: str) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("P", "PA", "L", "1") or mode.startswith("I") or mode == "F":
                values = np.asarray(img)
                return values[..., 0] if values.ndim == 3 else values  # PA: the index
            if mode == "LA":
                return np.asarray(img.getchannel("L"))
            rgb = np.asarray(img.convert("RGB"))  # alpha dropped
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"{path}: not a readable mask image ({exc})") from exc
    if (rgb == rgb[..., :1]).all():
        return rgb[..., 0]
    if instances == "classes":
        raise ImageReadError(
            f"{path}: a colour-coded RGB mask; with instances='classes' save the classes as a "
            "single-channel label image (gray or palette PNG)"
        )
    return rgb.max(axis=-1)


# ---------------------------------------------------------------------------------------------
# Checking before training


def check_pairs(
    table: SegmentationTable, instances: Instances | None = None
) -> list[tuple[int, ...]]:
    """Check every case before training; return each case's spatial shape.

    Images are checked from their headers where the format allows (Pillow's size and mode, the
    NIfTI header's shape); each mask is read once (its label values are needed), so for large data
    this costs one pass over the masks. Checks: files readable, channel files of one shape, the
    channels equal to the table's, mask shape == image spatial shape, label values within the
    classes (instances="classes"). Raises ConfigError listing the first offenders.
    """
    instances = checked_instances(table.instances if instances is None else instances)
    if instances == "foreground" and len(table.classes) != 2:
        raise ConfigError(
            f"instances='foreground' gives two classes, the table declares {len(table.classes)} "
            f"({', '.join(table.classes)}): use instances='classes'"
        )
    problems, shapes = [], []
    for case in table.cases:
        reasons: list[str] = []
        shape: tuple[int, ...] = ()
        try:
            channels, shape = _case_header(case)
            if len(shape) != table.dims:
                reasons.append(f"{len(shape)}D, the data set is {table.dims}D")
            if channels != table.channels:
                reasons.append(f"{channels} channels, the first case has {table.channels}")
            if case.mask is not None:
                reasons += _mask_problems(case, shape, instances, table.classes)
        except MedfoundError as exc:
            reasons.append(str(exc))
        shapes.append(shape)
        if reasons:
            problems.append(f"{case.id}: {'; '.join(reasons)}")
    if problems:
        raise ConfigError(
            f"{len(problems)} of {len(table.cases)} segmentation cases cannot be used:\n  "
            + first_items(problems, sep="\n  ")
        )
    return shapes


def _mask_problems(
    case: SegmentationCase, shape: tuple[int, ...], instances: str, classes: tuple[str, ...]
) -> list[str]:
    labels = read_mask(case.mask, instances)
    if labels.shape != shape:
        return [f"mask {case.mask} has shape {labels.shape}, the image {shape}"]
    if labels.size and labels.max() >= len(classes):
        outside = np.unique(labels[labels >= len(classes)]).tolist()
        return [
            f"mask {case.mask} has label values {first_items([str(v) for v in outside])} outside "
            f"the {len(classes)} classes ({', '.join(classes)})"
        ]
    return []


def _case_header(case: SegmentationCase) -> tuple[int, tuple[int, ...]]:
    """(channels, spatial shape) of a case's image from its files' headers."""
    headers = [_file_header(path) for path in case.images]
    shapes = {shape for _, shape in headers}
    if len(shapes) > 1:
        raise ImageReadError(f"{case.id}: its channel files differ in shape {sorted(shapes)}")
    return sum(c for c, _ in headers), headers[0][1]


def _file_header(path: Path) -> tuple[int, tuple[int, ...]]:
    """(channels, spatial shape) of an image file as read_channels would give it, from the header
    for rasters and NIfTI; other formats are read whole."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    suffix = _suffix(path)
    if suffix in RASTER_SUFFIXES:
        try:
            with Image.open(path) as img:
                mode, (width, height) = img.mode, img.size
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise ImageReadError(f"{path}: not a readable image ({exc})") from exc
        gray = mode in _GRAY_MODES or mode.startswith("I;16")
        return (1 if gray else 3), (height, width)
    if suffix in NIFTI_SUFFIXES:
        return _nifti_header(path)
    image = read_channels(path)
    return image.channels, tuple(image.array.shape[1:])


def _nifti_header(path: Path) -> tuple[int, tuple[int, ...]]:
    import nibabel as nib
    from nibabel.orientations import io_orientation

    shape = _nifti_shape(path)
    if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1):
        return 1, shape[:2]  # one slice: a 2D image as stored
    if len(shape) not in (3, 4):
        raise ImageReadError(f"{path}: expected a 3D or 4D NIfTI image, got shape {shape}")
    # The canonical (RAS+) reorientation permutes the axes: array axis i goes to ornt[i, 0].
    ornt = io_orientation(nib.load(str(path)).affine)
    spatial = [0, 0, 0]
    for axis, size in zip(ornt[:, 0], shape[:3], strict=True):
        spatial[int(axis)] = size
    return (shape[3] if len(shape) == 4 else 1), tuple(spatial)
