"""A Dataset of labelled images for classification: read and preprocess in DataLoader workers, one bad
image reported as an error item instead of ending the run (as data/datasets.py's ImageDataset)."""

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from medfound.data.datasets import drawn_sample, epoch_and_index
from medfound.data.labels import LabelTable
from medfound.data.slices import draw_seed, slice_tensors, wants_slices
from medfound.data.sources import path_may_be_volume
from medfound.errors import MedfoundError
from medfound.io.presets import Preset, Resize, preprocess


class LabelledImageDataset(Dataset):
    """Items of `table` at `indices`: {index, source, tensor, target} or {index, source, error}.

    `index` is the position in this dataset, `source` the item id; `tensor` is (C, *size) in [0, 1]
    for a model of the given shape (the keyword arguments are `ModelCard.preprocess_args()`);
    `target` is an int64 scalar tensor (multiclass) or float32 (K,) with NaN = unknown (multilabel).

    With `slices` (each, middle or N; data/slices.py), a volume given to a 2D model is read as its
    chosen slices: a `group` item whose tensor is (k, C, H, W) and whose target is the volume's
    (1, ...), with `slices` rows, so that its k outputs are pooled into one (data.slices.pool_slices).
    """

    def __init__(
        self,
        table: LabelTable,
        indices: Sequence[int],
        preset: Preset,
        *,
        spatial_dims: int,
        channels: int,
        native_size,
        native_spacing: tuple[float, ...] | None = None,
        native_resize: Resize | None = None,
        slices: str | int | None = None,
        slice_axis: int | None = None,
    ):
        self.table = table
        self.slices, self.slice_axis = slices, slice_axis
        self.indices = np.asarray(indices, dtype=np.int64)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= len(table)):
            raise IndexError(f"indices outside the table's {len(table)} items")
        # items may be whole volumes read as slices: loaders should then take one item at a time
        self.holds_volumes = (
            slices not in (None, "middle", 1)  # one slice per volume batches like an image
            and spatial_dims == 2
            and any(path_may_be_volume(table.images.item_id(int(i))) for i in self.indices)
        )
        self.preset = preset
        self.shape_args = {
            "spatial_dims": spatial_dims,
            "channels": channels,
            "native_size": native_size,
            "native_spacing": native_spacing,
            "native_resize": native_resize,
        }

    def __len__(self) -> int:
        return len(self.indices)

    def target(self, index: int) -> torch.Tensor:
        """The target of item `index` of this dataset (no image read)."""
        value = self.table.targets[self.indices[index]]
        if self.table.kind == "multiclass":
            return torch.tensor(int(value), dtype=torch.int64)
        return torch.from_numpy(np.array(value, dtype=np.float32))

    def __getitem__(self, index: int) -> dict:
        return self._item(index, self.slices)

    def _item(self, index: int, slices) -> dict:
        item = int(self.indices[index])
        source = self.table.images.item_id(item)
        try:
            image = self.table.images.read(item)
            if wants_slices(image, slices, self.shape_args["spatial_dims"]):
                tensor, rows = slice_tensors(image, slices, self.slice_axis, self._prepare)
                return {
                    "index": index,
                    "source": source,
                    "tensor": tensor,
                    "target": self.target(index)[None],
                    "group": True,
                    "slices": rows,
                }
            tensor = self._prepare(image)
        except MedfoundError as exc:
            return {"index": index, "source": source, "error": str(exc)}
        except Exception as exc:  # a library bug on one odd file must not end the whole run
            return {"index": index, "source": source, "error": f"{type(exc).__name__}: {exc}"}
        return {"index": index, "source": source, "tensor": tensor, "target": self.target(index)}

    def _prepare(self, image) -> torch.Tensor:
        return preprocess(image, self.preset, **self.shape_args)


class SliceSampledLabelledDataset(LabelledImageDataset):
    """A LabelledImageDataset for training 2D models: a volume gives one of its chosen slices per
    visit, drawn by (seed, epoch, index) (the engine's sampler passes those keys) and labelled
    with the volume's target, so every item is one sample; a resumed run draws the same slices."""

    keyed_by_epoch = True

    def __init__(self, table: LabelTable, indices, preset: Preset, *, seed: int = 0, **shape):
        super().__init__(table, indices, preset, **shape)
        self.seed = seed

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = epoch_and_index(key)
        if self.slices is None:
            return self._item(index, None)
        return drawn_sample(
            self._item(index, ("draw", draw_seed(self.seed, epoch, index), self.slices))
        )


class IndexedTargets(Dataset):
    """A labelled dataset whose targets carry their item's index as a last column (float32): a
    scorer that sees only outputs and targets then knows which items (and so which patients) they
    were, unreadable items skipped or not."""

    def __init__(self, dataset: LabelledImageDataset):
        self.dataset = dataset
        self.holds_volumes = dataset.holds_volumes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        if "target" in item:
            target = item["target"].float()
            rows = target.shape[0] if item.get("group") else None  # a sliced volume's (1, ...)
            flat = target.reshape(rows or 1, -1)
            tagged = torch.cat([flat, torch.full((len(flat), 1), float(index))], dim=1)
            item["target"] = tagged if rows else tagged[0]
        return item
