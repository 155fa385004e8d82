"""Builders: ModelCard -> FoundationModel, one small adapter per backbone family.

Backbones come from timm (BiT ResNet-v2 and any timm model) and MONAI (3D ResNet/DenseNet); medfound
defines only the Genesis 3D U-Net, which neither library has, and the 2D one, which
segmentation-models-pytorch assembles on a timm encoder.
"""

import torch
from torch import nn

from medfound.errors import UnknownModelError
from medfound.models.card import ModelCard
from medfound.models.foundation import FoundationModel
from medfound.models.resnet_v1 import parse_architecture, resnet_v1
from medfound.models.unet3d import UNet3D


class TimmEncoder(FoundationModel):
    """Any timm model with its classifier removed (num_classes=0)."""

    def __init__(self, card: ModelCard, network: nn.Module):
        super().__init__(card, network)
        self.stage_names = tuple(info["module"] for info in network.feature_info)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.forward_features(self.normalise(x))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        # norm=True applies the final norm to the last stage, so it equals forward_features.
        return self.network.forward_intermediates(
            self.normalise(x), norm=True, intermediates_only=True
        )

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim == 3:  # token sequences of ViT-like models: the model's own pooling
            return self.network.forward_head(features, pre_logits=True)
        return super().pool(features)


class GenesisEncoder(FoundationModel):
    """The encoder half of a Genesis U-Net (3D or 2D); the whole U-Net is kept as `.network` so its
    weights load intact and restoration can use it. The embedding is the pooled deepest level."""

    stage_names = ("level1", "level2", "level3", "level4")

    def __init__(self, card: ModelCard, network: nn.Module):
        super().__init__(card, network)
        self.stage_names = getattr(network, "stage_names", type(self).stage_names)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[-1]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.network.encode(self.normalise(x))


class MonaiResNetEncoder(FoundationModel):
    """MONAI's 3D ResNet without its classifier."""

    stage_names = ("stem", "layer1", "layer2", "layer3", "layer4")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[-1]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        net = self.network
        x = net.maxpool(net.act(net.bn1(net.conv1(self.normalise(x)))))
        stages = [x]
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            x = layer(x)
            stages.append(x)
        return stages


class MonaiDenseNetEncoder(FoundationModel):
    """MONAI's 3D DenseNet: its feature trunk followed by the ReLU of its classifier."""

    stage_names = ("features",)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.network.features(self.normalise(x)))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.forward_features(x)]


_MONAI_RESNETS = {f"resnet{d}" for d in (10, 18, 34, 50, 101, 152, 200)}
_MONAI_DENSENETS = {"densenet121", "densenet169", "densenet201", "densenet264"}


# BiT's weight standardisation divides by sqrt(var + 1e-10) in every original implementation (TF2,
# JAX, PyTorch) and so in REMEDIS; timm builds BiT with 1e-8, which changes the output of layers
# whose weights vary little and keeps converted checkpoints a little off TensorFlow.
BIT_WS_EPS = 1e-10


def _timm_network(architecture: str) -> nn.Module:
    import timm

    try:
        network = timm.create_model(architecture, pretrained=False, num_classes=0)
    except RuntimeError as exc:  # timm's "Unknown model"
        raise UnknownModelError(f"timm has no model {architecture!r} ({exc})") from exc
    if architecture.startswith("resnetv2_") and "_bit" in architecture:
        from timm.layers import StdConv2d

        for module in network.modules():
            if isinstance(module, StdConv2d):
                module.eps = BIT_WS_EPS
    return network


def _monai_network(architecture: str) -> nn.Module:
    from monai.networks import nets

    if architecture in _MONAI_RESNETS:
        return getattr(nets, architecture)(spatial_dims=3, n_input_channels=1, feed_forward=False)
    if architecture in _MONAI_DENSENETS:
        cls = getattr(nets, architecture.replace("densenet", "DenseNet"))
        return cls(spatial_dims=3, in_channels=1, out_channels=1)
    raise UnknownModelError(
        f"monai:{architecture} is not supported; choose one of "
        f"{sorted(_MONAI_RESNETS | _MONAI_DENSENETS)}"
    )


def timm_card(name: str) -> ModelCard:
    """A card for `timm:ARCH`, read off the model built on the meta device (no memory, no time)."""
    architecture = name.removeprefix("timm:")
    with torch.device("meta"):
        network = _timm_network(architecture)
    cfg = network.pretrained_cfg
    channels, *size = cfg.get("input_size", (3, 224, 224))
    return ModelCard(
        name=name,
        family="timm",
        architecture=architecture,
        modality="any (generic timm backbone)",
        spatial_dims=2,
        in_channels=channels,
        input_size=size[0] if len(set(size)) == 1 else tuple(size),
        embedding_dim=network.num_features,
        preset="path" if channels == 3 else "cxr",
        description=f"timm {architecture}, classifier removed; pooled pre-logits embedding",
        input_mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        input_std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        weights_source="a timm-format state dict given by path",
        licence=str(cfg.get("license", "see timm")),
    )


def monai_card(name: str) -> ModelCard:
    """A card for `monai:ARCH` (3D, one channel, 96^3 default input)."""
    architecture = name.removeprefix("monai:")
    with torch.device("meta"):
        network = _monai_network(architecture)
    if architecture in _MONAI_RESNETS:
        dim = _monai_resnet_dim(network)
    else:
        dim = network.class_layers.out.in_features
    return ModelCard(
        name=name,
        family="monai",
        architecture=architecture,
        modality="3D volumes (generic MONAI backbone)",
        spatial_dims=3,
        in_channels=1,
        input_size=(96, 96, 96),
        embedding_dim=dim,
        preset="ct",
        description=f"MONAI {architecture} (3D, 1 channel), classifier removed",
        weights_source="a MONAI-format state dict given by path",
        licence="Apache-2.0 (architecture)",
        feature_layout="(C, X, Y, Z) per volume; C = embedding_dim",
    )


def _monai_resnet_dim(network: nn.Module) -> int:
    last = network.layer4[-1]
    conv = getattr(last, "conv3", None) or last.conv2
    return conv.out_channels


def genesis_width(architecture: str) -> int:
    """The UNet3D width of a Genesis architecture name: "unet3d-genesis" is the published network
    (32), "unet3d-genesis-wN" the same network N/32 as wide."""
    from medfound.models.unet3d import ORIGINAL_WIDTH

    base, sep, suffix = architecture.partition("-w")
    if base == "unet3d-genesis" and not sep:
        return ORIGINAL_WIDTH
    if base != "unet3d-genesis" or not suffix.isdigit() or int(suffix) < 1:
        raise UnknownModelError(f"unknown Genesis architecture {architecture!r}")
    return int(suffix)


def build_model(card: ModelCard) -> FoundationModel:
    """A FoundationModel for `card` with freshly initialised weights, in eval mode."""
    if card.family in ("bit", "timm"):
        model: FoundationModel = TimmEncoder(card, _timm_network(card.architecture))
    elif card.family == "simclr":
        depth, width = parse_architecture(card.architecture)
        model = TimmEncoder(card, resnet_v1(depth, width))
    elif card.family == "genesis":
        model = GenesisEncoder(
            card, UNet3D(in_channels=card.in_channels, width=genesis_width(card.architecture))
        )
    elif card.family == "genesis2d":
        from medfound.models.unet2d import UNet2D  # smp is slow to import: only when asked for

        # architecture "unet2d-genesis": the ResNet-18 encoder of Genesis 2D
        model = GenesisEncoder(card, UNet2D("resnet18", in_channels=card.in_channels))
    elif card.family == "vit":
        from medfound.models.vit import ViTEncoder, vit_network

        model = ViTEncoder(card, vit_network(card))
    elif card.family == "monai":
        network = _monai_network(card.architecture)
        cls = MonaiResNetEncoder if card.architecture in _MONAI_RESNETS else MonaiDenseNetEncoder
        model = cls(card, network)
    else:
        raise UnknownModelError(f"model {card.name!r}: unknown family {card.family!r}")
    return model.eval()
