"""The 3D U-Net of Models Genesis, written from its published description (REFERENCE.md section 3).

Encoder levels 1->32->64, 64->64->128, 128->128->256, 256->256->512 (3x3x3 conv + BatchNorm + ReLU,
max-pool 2 between levels; inputs divisible by 8), decoder with transposed convolutions and skip
concatenations, 1x1x1 head with sigmoid: 19,073,665 parameters, 7,027,776 in the encoder.
Unlike the original, BatchNorm follows train/eval mode, and no activations are kept as attributes.
"""

import torch
from torch import nn


def _conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, kernel_size=3, padding=1),
        nn.BatchNorm3d(out_ch),
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
    """Upsample x2, concatenate the skip, two conv blocks."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int):
        super().__init__()
        self.up = nn.ConvTranspose3d(in_ch, in_ch, kernel_size=2, stride=2)
        self.convs = nn.Sequential(
            _conv_block(in_ch + skip_ch, out_ch), _conv_block(out_ch, out_ch)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([self.up(x), skip], dim=1))


class UNet3D(nn.Module):
    """Models Genesis 3D U-Net. Input (B, in_channels, X, Y, Z) with X, Y, Z divisible by 8."""

    encoder_channels = (64, 128, 256, 512)

    def __init__(self, in_channels: int = 1, out_channels: int = 1):
        super().__init__()
        self.encoder = nn.ModuleList(
            [
                EncoderLevel(in_channels, 32, 64),
                EncoderLevel(64, 64, 128),
                EncoderLevel(128, 128, 256),
                EncoderLevel(256, 256, 512),
            ]
        )
        self.pool = nn.MaxPool3d(2)
        self.decoder = nn.ModuleList(
            [DecoderLevel(512, 256, 256), DecoderLevel(256, 128, 128), DecoderLevel(128, 64, 64)]
        )
        self.head = nn.Conv3d(64, out_channels, kernel_size=1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the four encoder levels, finest first (64, 128, 256, 512 channels)."""
        levels = []
        for i, level in enumerate(self.encoder):
            x = level(x if i == 0 else self.pool(x))
            levels.append(x)
        return levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restored volume in [0, 1] (sigmoid head), same spatial size as the input."""
        levels = self.encode(x)
        y = levels[-1]
        for decoder, skip in zip(self.decoder, reversed(levels[:-1]), strict=True):
            y = decoder(y, skip)
        return torch.sigmoid(self.head(y))
