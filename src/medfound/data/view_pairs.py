"""Pairs of views for contrastive pretraining, cut in the DataLoader workers from images as decoded.

An item is a pair (2, C, S, S): two random resized crops (data/crops.py) of one image, as SimCLR
pairs them; or, with MICLe (REMEDIS's Multi-Instance Contrastive Learning) and a patient that has
several images, with probability `micle_p` one crop each of two different images of that patient.
Items are patients (a patient is one image when none are given), so a batch never holds one patient
twice, not even as each other's negatives. A volume shows one slice per visit. Everything drawn
follows (seed, epoch, index), as the engine's sampler passes them: a resumed run cuts the same crops.
The rest of the view (flip, colour, blur, ...) is made batched on the training device
(methods/simclr_views.py).
"""

import numpy as np
import torch
from torch.utils.data import Dataset

from medfound.data.crops import CropSpec, view_pair
from medfound.data.datasets import epoch_and_index
from medfound.data.slices import volume_slices
from medfound.data.sources import ImageSource
from medfound.errors import MedfoundError
from medfound.io.presets import Preset, preprocess_native
from medfound.io.readers import read_image


class ViewPairDataset(Dataset):
    """Items: {index, source, tensor (2, C, S, S), group, pair} or {index, source, error}.

    `groups`: the source indices of each patient (None: each source its own); `pair` names the
    sources the two views came from.
    """

    keyed_by_epoch = True

    def __init__(
        self,
        sources: list[ImageSource],
        preset: Preset,
        views: CropSpec,
        *,
        channels: int = 3,
        seed: int = 0,
        groups: list[list[int]] | None = None,
        micle_p: float = 0.0,
    ):
        self.sources, self.preset, self.views = sources, preset, views
        self.channels, self.seed, self.micle_p = channels, seed, micle_p
        self.groups = groups if groups is not None else [[i] for i in range(len(sources))]

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = epoch_and_index(key)
        rng = np.random.default_rng([self.seed, epoch, index, 7])  # 7: apart from other draws
        members = self.groups[index]
        if len(members) > 1 and rng.random() < self.micle_p:
            chosen = [int(i) for i in rng.choice(members, size=2, replace=False)]
        else:
            chosen = [int(rng.choice(members))] * 2
        reading = chosen[0]  # the source being read, named if it fails
        try:
            first = self._read(reading, rng)
            reading = chosen[1]
            second = first if chosen[1] == chosen[0] else self._read(reading, rng)
            tensor = view_pair(first, second, rng, self.views)
        except MedfoundError as exc:
            return {"index": index, "source": self.sources[reading].id, "error": str(exc)}
        except Exception as exc:  # a library bug on one odd file must not end the whole run
            error = f"{type(exc).__name__}: {exc}"
            return {"index": index, "source": self.sources[reading].id, "error": error}
        pair = [self.sources[i].id for i in chosen]
        return {"index": index, "source": pair[0], "tensor": tensor, "group": True, "pair": pair}

    def _read(self, i: int, rng: np.random.Generator) -> torch.Tensor:
        """Source i as a (C, H, W) tensor in [0, 1] at its own size (a volume: one drawn slice)."""
        source = self.sources[i]
        image = read_image(source.target)
        if image.array.ndim == 4:
            draw = int(rng.integers(2**31))
            image = volume_slices(image, ("draw", draw))[0].image
        return preprocess_native(image, self.preset, channels=self.channels)
