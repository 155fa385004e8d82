"""The 3D U-Net of Models Genesis, written from its published description (REFERENCE.md section 3).

Encoder levels 1->32->64, 64->64->128, 128->128->256, 256->256->512 (3x3x3 conv + BatchNorm + ReLU,
max-pool 2 between levels; inputs divisible by 8), decoder with transposed convolutions and
(upsampled, skip) concatenations, 1x1x1 head with sigmoid: 19,073,665 parameters, 7,027,776 in the
encoder. Unlike the original, BatchNorm follows train/eval mode by default and no activations are
kept as attributes; `compat_batchnorm=True` (or `use_batch_statistics`) reproduces the original's
always-batch-statistics BatchNorm, to match its published outputs.
"""

import torch
from torch import nn
from torch.nn import functional as F

from medfound.errors import ConfigError

DIVISOR = 8  # three 2x max-pools
ORIGINAL_WIDTH = 32  # channels of the first convolution in the published network


class GenesisBatchNorm3d(nn.BatchNorm3d):
    """BatchNorm3d that can, on request, normalise with batch statistics in eval mode too.

    `batch_statistics=True` reproduces the original release, whose BatchNorm ignored eval mode: a
    sample's output then depends on the rest of its batch. Outside training the running statistics
    are left untouched (the original also updated them there; that does not change its outputs).
    The state-dict entries are those of nn.BatchNorm3d.
    """

    batch_statistics: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch_statistics and not self.training:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return super().forward(x)


def _conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, kernel_size=3, padding=1),
        GenesisBatchNorm3d(out_ch),
        nn.ReLU(inplace=True),
    )


class EncoderLevel(nn.Module):
    """Two conv blocks: in -> mid -> out channels (the Genesis encoder doubles at the second)."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int):
        super().__init__()
        self.convs = nn.Sequential(_conv_block(in_ch, mid_ch), _conv_block(mid_ch, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class DecoderLevel(nn.Module):
    """Upsample x2, concatenate (upsampled, skip) in that order, two conv blocks."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int):
        super().__init__()
        self.up = nn.ConvTranspose3d(in_ch, in_ch, kernel_size=2, stride=2)
        self.convs = nn.Sequential(
            _conv_block(in_ch + skip_ch, out_ch), _conv_block(out_ch, out_ch)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([self.up(x), skip], dim=1))


class UNet3D(nn.Module):
    """Models Genesis 3D U-Net. Input (B, in_channels, X, Y, Z) with X, Y, Z divisible by 8.

    `width` scales every layer (32: the published network; 8: a 16x smaller one for CPU demos).
    `encode` and `decode` are separable, so transfer can take the encoder alone (classification)
    or the whole network (segmentation, after replacing `head`). `compat_batchnorm=True` makes every
    BatchNorm use batch statistics even in eval mode, as the original release does.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        compat_batchnorm: bool = False,
        width: int = ORIGINAL_WIDTH,
    ):
        super().__init__()
        self.in_channels = in_channels
        w = width  # the first convolution's channels; every other width is a multiple of it
        self.encoder_channels = (2 * w, 4 * w, 8 * w, 16 * w)
        self.encoder = nn.ModuleList(
            [
                EncoderLevel(in_channels, w, 2 * w),
                EncoderLevel(2 * w, 2 * w, 4 * w),
                EncoderLevel(4 * w, 4 * w, 8 * w),
                EncoderLevel(8 * w, 8 * w, 16 * w),
            ]
        )
        self.pool = nn.MaxPool3d(2)
        self.decoder = nn.ModuleList(
            [
                DecoderLevel(16 * w, 8 * w, 8 * w),
                DecoderLevel(8 * w, 4 * w, 4 * w),
                DecoderLevel(4 * w, 2 * w, 2 * w),
            ]
        )
        self.head = nn.Conv3d(2 * w, out_channels, kernel_size=1)
        if compat_batchnorm:
            use_batch_statistics(self, True)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the four encoder levels, finest first (`encoder_channels`; 64 ... 512)."""
        check_input(x, self.in_channels, spatial_dims=3, divisor=DIVISOR, what="UNet3D")
        levels = []
        for i, level in enumerate(self.encoder):
            x = level(x if i == 0 else self.pool(x))
            levels.append(x)
        return levels

    def decode(self, levels: list[torch.Tensor], *, logits: bool = False) -> torch.Tensor:
        """The restored volume in [0, 1] from `encode`'s four levels (pre-sigmoid if `logits`)."""
        if len(levels) != len(self.encoder):
            raise ValueError(f"UNet3D.decode needs {len(self.encoder)} levels, got {len(levels)}")
        y = levels[-1]
        for decoder, skip in zip(self.decoder, reversed(levels[:-1]), strict=True):
            y = decoder(y, skip)
        y = self.head(y)
        return y if logits else torch.sigmoid(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restored volume in [0, 1] (sigmoid head), same spatial size as the input."""
        return self.decode(self.encode(x))


def use_batch_statistics(module: nn.Module, on: bool = True) -> nn.Module:
    """Switch the original's always-batch-statistics BatchNorm on (or off) in `module`, in place.

    Works on a UNet3D or anything holding one (e.g. `load_model(...)` or its `.network`), so a
    loaded model can be put in compatibility mode. Returns `module`; raises ConfigError if it holds
    no Genesis BatchNorm layer, rather than silently changing nothing.
    """
    layers = [m for m in module.modules() if isinstance(m, GenesisBatchNorm3d)]
    if not layers:
        raise ConfigError(
            f"{type(module).__name__} has no Genesis UNet3D BatchNorm layer: the batch-statistics "
            "compatibility mode applies to the Genesis 3D U-Net only"
        )
    for layer in layers:
        layer.batch_statistics = on
    return module


def check_input(x: torch.Tensor, channels: int, spatial_dims: int, divisor: int, what: str) -> None:
    """Refuse an input whose rank, channel count or spatial sizes the network cannot take.

    Skipped while tracing or compiling (export), where sizes are symbolic."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    shape = tuple(x.shape)
    if x.ndim != spatial_dims + 2 or shape[1] != channels:
        axes = ", ".join(["B", str(channels)] + ["..."] * spatial_dims)
        raise ConfigError(f"{what} input of shape {shape}: expected ({axes})")
    bad = [size for size in shape[2:] if size % divisor]
    if bad:
        raise ConfigError(
            f"{what} input of shape {shape}: spatial sizes must be divisible by {divisor} "
            f"(the encoder halves them {divisor.bit_length() - 1} times); "
            f"{', '.join(map(str, bad))} {'is' if len(bad) == 1 else 'are'} not"
        )
