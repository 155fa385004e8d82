"""The Models Genesis corruption of a batch, composed as the original: flip input and target
together, then on the input only local pixel shuffling, non-linear intensity and in-/out-painting,
each with its own probability (so some inputs stay uncorrupted: the identity case). The target is
always the (flipped) uncorrupted cube. Each step computes only the samples that drew it, and all but
the flip write into the one corrupted batch.
"""

from dataclasses import dataclass

import torch

from medfound.errors import ConfigError
from medfound.methods.config_checks import check_probabilities
from medfound.methods.genesis import flip, intensity, painting, shuffle


@dataclass(frozen=True)
class CorruptionConfig:
    """Probabilities of the original (REFERENCE.md section 3); `fill` None paints with noise;
    `shuffle_share`: boxes of one shape in a sample per shuffling permutation (1, the default:
    each its own, as the original; more draws fewer permutations, see methods/genesis/shuffle.py)."""

    flip_p: float = 0.4
    shuffle_p: float = 0.5
    intensity_p: float = 0.9
    invert_p: float = 0.5
    paint_p: float = 0.9
    outpaint_p: float = 0.8
    fill: float | None = None
    shuffle_share: int = shuffle.SHARE

    def __post_init__(self):
        check_probabilities(self)
        share = self.shuffle_share
        if isinstance(share, bool) or not isinstance(share, int) or share < 1:
            raise ConfigError(f"shuffle_share must be an integer >= 1, got {share!r}")
        fill = self.fill
        if fill is not None and (
            isinstance(fill, bool) or not isinstance(fill, int | float) or not 0 <= fill <= 1
        ):
            raise ConfigError(f"fill must be a number in [0, 1] (or none for noise), got {fill!r}")


@dataclass
class CorruptionParams:
    """Everything one batch's corruption drew: replaying it needs no seed."""

    flip: flip.FlipParams
    shuffle: shuffle.ShuffleParams
    intensity: intensity.IntensityParams
    painting: painting.PaintingParams


class GenesisCorruption:
    """cubes (B, C, *spatial) in [0, 1] -> (corrupted inputs, targets), 2D or 3D."""

    def __init__(self, config: CorruptionConfig | None = None):
        self.config = config or CorruptionConfig()

    def sample(self, shape: tuple[int, ...], seed: int) -> CorruptionParams:
        """Per-sample parameters of every step, from `seed` (on the CPU: the same on any device)."""
        c, generator = self.config, torch.Generator().manual_seed(seed)
        return CorruptionParams(
            flip=flip.sample(shape, generator, p=c.flip_p),
            shuffle=shuffle.sample(shape, generator, p=c.shuffle_p, share=c.shuffle_share),
            intensity=intensity.sample(shape, generator, p=c.intensity_p, invert_p=c.invert_p),
            painting=painting.sample(shape, generator, p=c.paint_p, outpaint_p=c.outpaint_p),
        )

    @torch.no_grad()  # inputs and targets are data: never part of a graph
    def apply(self, cubes: torch.Tensor, params: CorruptionParams):
        """The corrupted inputs and the targets, as `params` say."""
        target = flip.apply(cubes, params.flip)
        corrupted = torch.empty(target.shape, dtype=target.dtype, device=target.device)
        corrupted = shuffle.shuffle_into(corrupted, target, params.shuffle)
        corrupted = intensity.apply_(corrupted, params.intensity)
        corrupted = painting.apply_(corrupted, params.painting, fill=self.config.fill)
        return corrupted, target

    def __call__(self, cubes: torch.Tensor, seed: int):
        """Sample with `seed`, then apply."""
        return self.apply(cubes, self.sample(tuple(cubes.shape), seed))
