"""A Dataset that reads and preprocesses in DataLoader workers and never lets one bad file stop a run."""

import numpy as np
import torch
from torch.utils.data import Dataset

from medfound.data.slices import slice_tensors, wants_slices
from medfound.data.sources import ImageSource
from medfound.errors import MedfoundError
from medfound.io.presets import Preset, Resize, preprocess, resolve_auto
from medfound.io.readers import read_image
from medfound.privacy import UidPolicy


def epoch_and_index(key: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """(epoch, index) of an item key: the engine's sampler passes (epoch, index) to datasets that
    are `keyed_by_epoch`; a plain index (validation, direct use) is epoch 0."""
    return tuple(key) if isinstance(key, tuple | list) else (0, key)


class ImageDataset(Dataset):
    """Items are dicts: {index, source, tensor, source_id, modality, preset} or {index, source, error}.

    The keyword arguments after `preset` are the model's shape (`ModelCard.preprocess_args()`). With
    `slices` (each, middle or N; see data/slices.py), a volume given to a 2D model gives its slices:
    the item is a `group` whose tensor is (k, C, H, W), with `slices` = [{index, position_mm, count}]
    per slice; without, such a volume is an error item (callers that pair one output with one item).
    """

    def __init__(
        self,
        sources: list[ImageSource],
        preset: Preset,
        *,
        spatial_dims: int,
        channels: int,
        native_size,
        native_spacing: tuple[float, ...] | None = None,
        native_resize: Resize | None = None,
        uids: UidPolicy | None = None,
        slices: str | int | None = None,
        slice_axis: int | None = None,
    ):
        self.sources = sources
        self.slices, self.slice_axis = slices, slice_axis
        # None: each reader resolves the default policy when it first meets a DICOM UID (so data
        # without DICOM never needs the installation's salt).
        self.uids = uids
        self.preset = preset
        self.shape_args = {
            "spatial_dims": spatial_dims,
            "channels": channels,
            "native_size": native_size,
            "native_spacing": native_spacing,
            "native_resize": native_resize,
        }

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> dict:
        return self._item(index, self.slices)

    def _item(self, index: int, slices) -> dict:
        source = self.sources[index]
        try:
            image = read_image(source.target, source_id=None, uids=self.uids)
            item = {
                "index": index,
                "source": source.id,
                "source_id": source.id if source.series else image.source_id,
                "modality": image.modality,
                "preset": resolve_auto(self.preset, image).name,
            }
            if wants_slices(image, slices, self.shape_args["spatial_dims"]):
                tensor, rows = slice_tensors(image, slices, self.slice_axis, self._prepare)
                return item | {"tensor": tensor, "group": True, "slices": rows}
            return item | {"tensor": self._prepare(image)}
        except MedfoundError as exc:
            return {"index": index, "source": source.id, "error": str(exc)}
        except Exception as exc:  # a library bug on one odd file must not end the whole run
            return {"index": index, "source": source.id, "error": f"{type(exc).__name__}: {exc}"}

    def _prepare(self, image) -> torch.Tensor:
        return preprocess(image, self.preset, **self.shape_args)


def drawn_sample(item: dict) -> dict:
    """An item read as one drawn slice (a group of one) made a plain sample; others as they are."""
    if not item.get("group"):
        return item
    item = {k: v for k, v in item.items() if k not in ("group", "slices")}
    for key in ("tensor", "target"):
        if key in item:
            item[key] = item[key][0]
    return item


class KeyedConcat(Dataset):
    """Datasets one after another, keyed by (epoch, index) as the engine's sampler passes them to
    datasets that ask (`keyed_by_epoch`); each part gets the key its own way."""

    keyed_by_epoch = True

    def __init__(self, parts: list[Dataset]):
        if any(getattr(part, "samples_per_item", 1) != 1 for part in parts):
            raise ValueError("KeyedConcat takes datasets of one sample per item")
        self.parts = [part for part in parts if len(part)]
        self.starts = np.cumsum([0] + [len(part) for part in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = epoch_and_index(key)
        k = int(np.searchsorted(self.starts, index, side="right")) - 1
        part, local = self.parts[k], index - int(self.starts[k])
        return part[(epoch, local)] if getattr(part, "keyed_by_epoch", False) else part[local]


def collate_items(items: list[dict]) -> dict:
    """Stack the good items into one batch tensor (and their `target`s, for labelled data); pass
    the failed ones through as errors.

    An item marked `group` holds several samples (k, C, ...) cut from one read (the cubes of one
    volume, the patches of one image) and its targets (k, ...): they join the batch one by one.
    """
    good = [item for item in items if "error" not in item]
    labelled = bool(good) and "target" in good[0]
    batch = {
        "tensor": _stack(good, "tensor"),
        "items": [{k: v for k, v in item.items() if k not in _STACKED} for item in good],
        "errors": [(item["source"], item["error"]) for item in items if "error" in item],
    }
    if labelled:
        batch["target"] = _stack(good, "target")
    return batch


_STACKED = ("tensor", "target")


def _stack(items: list[dict], key: str) -> torch.Tensor | None:
    parts = [item[key] if item.get("group") else torch.as_tensor(item[key])[None] for item in items]
    return torch.cat(parts) if parts else None


def worker_init(_worker_id: int) -> None:
    """Workers decode one image each: one thread apiece keeps them off the model's cores."""
    torch.set_num_threads(1)
