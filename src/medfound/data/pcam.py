"""PatchCamelyon (Veeling et al., 2018): 96x96 RGB patches of lymph-node sections, labelled 1 when the
centre 32x32 region holds tumour tissue, in HDF5 files per split:
camelyonpatch_level_2_split_{train,valid,test}_x.h5 (dataset "x", uint8 (N, 96, 96, 3)) and
..._y.h5 (dataset "y", uint8 (N, 1, 1, 1))."""

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfound._optional import require
from medfound.data.labels import SPLIT_NAMES, LabelTable
from medfound.errors import ConfigError, ImageReadError, first_items
from medfound.io.image import MedicalImage

PCAM_CLASSES = ("normal", "tumour")
# medfound's split names -> the token in PCam's file names.
_FILE_SPLIT = {"train": "train", "val": "valid", "test": "test"}


def pcam_file(folder: str | Path, split: str, part: str) -> Path:
    """The path of PCam's `part` ("x" or "y") file of `split` (train, valid or test)."""
    return Path(folder) / f"camelyonpatch_level_2_split_{split}_{part}.h5"


def _h5py():
    return require("h5py", purpose="PatchCamelyon's HDF5 files")


class PcamImages:
    """Patches read one at a time from PCam's x files.

    Picklable: h5py handles never travel to DataLoader workers; each process opens the files on its
    first read (a handle inherited through fork is dropped, not used).
    """

    def __init__(self, files: Sequence[str | Path], entries: np.ndarray):
        self.files = tuple(Path(f).resolve() for f in files)
        self.entries = np.asarray(entries, dtype=np.int64).reshape(-1, 2)  # (file number, row)
        self._handles: dict = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        return {"files": self.files, "entries": self.entries}

    def __setstate__(self, state: dict) -> None:
        self.files, self.entries = state["files"], state["entries"]
        self._handles, self._pid = {}, os.getpid()

    def __len__(self) -> int:
        return len(self.entries)

    def item_id(self, i: int) -> str:
        f, row = self.entries[i]
        return f"{self.files[f]}#{row}"

    def read(self, i: int) -> MedicalImage:
        f, row = (int(v) for v in self.entries[i])
        try:
            patch = np.asarray(self._file(f)["x"][row])
        except (OSError, KeyError, ValueError, IndexError) as exc:
            raise ImageReadError(f"{self.item_id(i)}: cannot read the patch ({exc})") from exc
        if patch.ndim != 3 or patch.shape[-1] != 3:
            raise ImageReadError(
                f"{self.item_id(i)}: expected an (H, W, 3) patch, got {patch.shape}"
            )
        return MedicalImage(
            array=np.ascontiguousarray(np.moveaxis(patch, -1, 0), dtype=np.float32),
            source_id=self.item_id(i),
            value_range=(0.0, 255.0),
            meta={"format": "HDF5", "bits": "8"},
        )

    def _file(self, f: int):
        if self._pid != os.getpid():  # forked: the parent's handles are not ours to use
            self._handles, self._pid = {}, os.getpid()
        if f not in self._handles:
            self._handles[f] = _h5py().File(self.files[f], "r")
        return self._handles[f]

    def subset(self, indices: Sequence[int]) -> "PcamImages":
        """The patches at `indices`, in that order."""
        return PcamImages(self.files, self.entries[np.asarray(indices, dtype=np.int64)])

    def missing(self) -> list[str]:
        """The x files that are not there."""
        return [str(p) for p in self.files if not p.is_file()]

    def close(self) -> None:
        """Close this process's open files (they reopen on the next read)."""
        if self._pid == os.getpid():
            for handle in self._handles.values():
                handle.close()
        self._handles = {}


def read_pcam(folder: str | Path, splits: Sequence[str] = ("train", "valid", "test")) -> LabelTable:
    """A binary multiclass LabelTable (classes "normal", "tumour") of the PCam splits in `folder`.

    `splits` names PCam's files (train, valid, test; "val" is taken for valid); the table's splits
    are "train"/"val"/"test" accordingly. PCam names no patients (the patient of each patch is its
    id, `X_FILE#ROW`), so a new split by "patient" could put patches of one slide on both sides:
    use the benchmark's own splits. Labels are read now; patches lazily, per process.
    The files as downloaded are gzip-compressed (.h5.gz): decompress them first (gunzip).
    """
    folder = Path(folder).resolve()
    names = [SPLIT_NAMES.get(str(s).strip().lower()) for s in splits]
    if not names or None in names or len(set(names)) != len(names):
        raise ConfigError(f"PCam splits {list(splits)}: choose distinct ones of train, valid, test")
    needed = [pcam_file(folder, _FILE_SPLIT[n], part) for n in names for part in ("x", "y")]
    absent = [p for p in needed if not p.is_file()]
    if absent:
        zipped = [p.name for p in absent if p.with_name(p.name + ".gz").is_file()]
        hint = (
            f" ({first_items(zipped)} are still .gz: decompress them with gunzip)" if zipped else ""
        )
        raise ConfigError(
            f"{folder}: PatchCamelyon files missing: {first_items([p.name for p in absent])}{hint}"
        )
    h5py = _h5py()
    files, entries, targets, split_of = [], [], [], []
    for f, name in enumerate(names):
        x_path, y_path = (pcam_file(folder, _FILE_SPLIT[name], part) for part in ("x", "y"))
        labels = _read_labels(h5py, y_path)
        count = _patch_count(h5py, x_path)
        if count != len(labels):
            raise ConfigError(
                f"{x_path.name} holds {count} patches, {y_path.name} {len(labels)} labels"
            )
        files.append(x_path)
        entries.append(np.stack([np.full(count, f), np.arange(count)], axis=1))
        targets.append(labels)
        split_of.append(np.full(count, name))
    images = PcamImages(files, np.concatenate(entries))
    ids = np.asarray([images.item_id(i) for i in range(len(images))], dtype=str)
    return LabelTable(
        images, np.concatenate(targets), "multiclass", PCAM_CLASSES, ids, np.concatenate(split_of)
    )


def _read_labels(h5py, path: Path) -> np.ndarray:
    try:
        with h5py.File(path, "r") as fh:
            labels = np.asarray(fh["y"]).reshape(-1)
    except (OSError, KeyError) as exc:
        raise ConfigError(f"{path}: not a PCam label file (HDF5 with dataset 'y'): {exc}") from exc
    if not np.isin(labels, (0, 1)).all():
        odd = [f"{v:g}" for v in np.unique(labels) if v not in (0, 1)]  # 0.5 is not "0"
        raise ConfigError(f"{path}: labels must be 0 or 1, found {first_items(odd)}")
    return labels.astype(np.int64)


def _patch_count(h5py, path: Path) -> int:
    try:
        with h5py.File(path, "r") as fh:
            shape = fh["x"].shape
    except (OSError, KeyError) as exc:
        raise ConfigError(f"{path}: not a PCam patch file (HDF5 with dataset 'x'): {exc}") from exc
    if len(shape) != 4 or shape[-1] != 3:
        raise ConfigError(f"{path}: dataset 'x' must be (N, H, W, 3), is {shape}")
    return int(shape[0])
