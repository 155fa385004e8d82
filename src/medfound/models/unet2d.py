"""The 2D Models Genesis network for X-ray and CT slices: a U-Net on a timm encoder.

segmentation-models-pytorch builds the U-Net (`tu-` encoders are timm's `features_only` models);
Genesis 2D used ResNet-18. medfound adds only the Genesis contract shared with UNet3D: `encode(x)`
-> the encoder's levels, `decode(levels)` -> the restored image in [0, 1] (sigmoid), `forward` =
decode(encode(x)), and a clear error for inputs the encoder cannot halve five times.
"""

import segmentation_models_pytorch as smp
import torch
from torch import nn

from medfound.models.unet3d import check_input

DIVISOR = 32  # five 2x downsamplings in a ResNet encoder


class UNet2D(nn.Module):
    """U-Net with a timm encoder (default ResNet-18) and a sigmoid head; input (B, C, H, W),
    H and W divisible by 32. `encoder_channels` lists the channels of `encode`'s levels."""

    def __init__(self, encoder: str = "resnet18", in_channels: int = 1, out_channels: int = 1):
        super().__init__()
        self.in_channels = in_channels
        self.encoder_name = encoder
        self.unet = smp.Unet(
            encoder_name=f"tu-{encoder}",
            encoder_weights=None,  # nothing is downloaded; weights come from a file
            in_channels=in_channels,
            classes=out_channels,
        )
        # smp's first feature is the input itself; the levels are the encoder's own stages.
        self.encoder_channels = tuple(self.unet.encoder.out_channels[1:])
        self.stage_names = tuple(self.unet.encoder.model.feature_info.module_name())

    @property
    def head(self) -> nn.Module:
        """The final conv (replace it for segmentation transfer)."""
        return self.unet.segmentation_head

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's levels, finest first (ResNet-18: 64, 64, 128, 256, 512 channels at
        1/2 .. 1/32 of the input size)."""
        check_input(x, self.in_channels, spatial_dims=2, divisor=DIVISOR, what="UNet2D")
        return self.unet.encoder(x)[1:]

    def decode(self, levels: list[torch.Tensor], *, logits: bool = False) -> torch.Tensor:
        """The restored image in [0, 1] from `encode`'s levels (pre-sigmoid if `logits`)."""
        if len(levels) != len(self.encoder_channels):
            raise ValueError(
                f"UNet2D.decode needs {len(self.encoder_channels)} levels, got {len(levels)}"
            )
        # smp's decoder reads only the spatial size of the input feature it drops: an empty
        # stand-in of that size (twice the finest level's) costs nothing.
        first = levels[0]
        size = tuple(2 * s for s in first.shape[2:])
        stand_in = first.new_empty((first.shape[0], 0, *size))
        y = self.unet.segmentation_head(self.unet.decoder([stand_in, *levels]))
        return y if logits else torch.sigmoid(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restored image in [0, 1], same size as the input."""
        return self.decode(self.encode(x))
