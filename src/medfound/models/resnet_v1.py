"""ResNet-v1 with a width multiplier, as SimCLR v1/v2 train it (BatchNorm, bottleneck, stride on 3x3).

Built with timm's ResNet (channels and stem widened by the multiplier). One change makes it match the
TensorFlow original exactly: the stem max-pool pads like TensorFlow's 'SAME' (nothing before, one
after on even inputs), which timm's `MaxPool2dSame` does; PyTorch's symmetric padding would shift
every pooling window by one pixel.
"""

import re

from torch import nn

from medfound.errors import UnknownModelError
from medfound.models.card import ModelCard

DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_NAME = re.compile(r"simclr:r(\d+)x(\d+)")


def parse_architecture(architecture: str) -> tuple[int, int]:
    """'r50x2' -> (50, 2); UnknownModelError for depths or widths SimCLR did not use."""
    match = _NAME.fullmatch(f"simclr:{architecture}")
    if not match or int(match.group(1)) not in DEPTHS or not 1 <= int(match.group(2)) <= 4:
        raise UnknownModelError(
            f"simclr:{architecture} is not a SimCLR ResNet; use simclr:r{{50,101,152}}x{{1,2,3,4}}"
        )
    return int(match.group(1)), int(match.group(2))


def resnet_v1(depth: int, width: int) -> nn.Module:
    """SimCLR's ResNet-v1 (depth, width multiplier) without classifier."""
    from timm.layers import create_pool2d
    from timm.models.resnet import Bottleneck, ResNet

    network = ResNet(
        block=Bottleneck,
        layers=DEPTHS[depth],
        channels=tuple(c * width for c in (64, 128, 256, 512)),
        stem_width=64 * width,
        num_classes=0,
    )
    network.maxpool = create_pool2d("max", kernel_size=3, stride=2, padding="same")
    return network


def simclr_card(name: str) -> ModelCard:
    """A card for `simclr:r{depth}x{width}`: RGB in [0, 1] fed as is (SimCLR normalises nothing)."""
    depth, width = parse_architecture(name.removeprefix("simclr:"))
    return ModelCard(
        name=name,
        family="simclr",
        architecture=f"r{depth}x{width}",
        modality="natural images (SimCLR ImageNet pretraining)",
        spatial_dims=2,
        in_channels=3,
        input_size=224,
        embedding_dim=2048 * width,
        preset="path",
        description=f"SimCLR ResNet-v1 {depth} with width multiplier {width} (BatchNorm)",
        weights_source="google-research/simclr TF checkpoints, converted with `medfound convert simclr`",
        licence="Apache-2.0",
    )
