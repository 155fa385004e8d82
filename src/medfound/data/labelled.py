"""A Dataset of labelled images for classification: read and preprocess in DataLoader workers, one bad
image reported as an error item instead of ending the run (as data/datasets.py's ImageDataset)."""

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from medfound.data.labels import LabelTable
from medfound.errors import MedfoundError
from medfound.io.presets import Preset, preprocess


class LabelledImageDataset(Dataset):
    """Items of `table` at `indices`: {index, source, tensor, target} or {index, source, error}.

    `index` is the position in this dataset, `source` the item id; `tensor` is (C, *size) in [0, 1]
    for a model of the given shape (the keyword arguments are `ModelCard.preprocess_args()`);
    `target` is an int64 scalar tensor (multiclass) or float32 (K,) with NaN = unknown (multilabel).
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
    ):
        self.table = table
        self.indices = np.asarray(indices, dtype=np.int64)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= len(table)):
            raise IndexError(f"indices outside the table's {len(table)} items")
        self.preset = preset
        self.shape_args = {
            "spatial_dims": spatial_dims,
            "channels": channels,
            "native_size": native_size,
            "native_spacing": native_spacing,
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
        item = int(self.indices[index])
        source = self.table.images.item_id(item)
        try:
            image = self.table.images.read(item)
            tensor = preprocess(image, self.preset, **self.shape_args)
        except MedfoundError as exc:
            return {"index": index, "source": source, "error": str(exc)}
        except Exception as exc:  # a library bug on one odd file must not end the whole run
            return {"index": index, "source": source, "error": f"{type(exc).__name__}: {exc}"}
        return {"index": index, "source": source, "tensor": tensor, "target": self.target(index)}
