"""Vision transformers of published foundation models (UNI, Virchow, RAD-DINO, MedSAM, ...).

Every network is timm's, built with the keyword arguments of its publisher's hub config (the card's
`architecture_args`); medfound adds only what timm lacks: CTransPath's convolutional stem and the
bias-free image projection of a CLIP vision tower. How the output becomes one vector (class
token, class token + mean of the patches, a pooled map, a projected class token) is the card's
`embedding` rule, applied by `ViTEncoder.pool`.
"""

from functools import partial

import torch
from torch import nn

from medfound.errors import UnknownModelError
from medfound.models.card import EMBEDDINGS, ModelCard
from medfound.models.foundation import FoundationModel

# Card arguments medfound resolves itself (timm takes no such names).
PROJECTION_DIM = "proj_dim"
LAYER_NORM_EPS = "layer_norm_eps"


class ConvStem(nn.Module):
    """CTransPath's patch embedding: two stride-2 3x3 convolutions (each with BatchNorm and ReLU)
    and a 1x1 projection, instead of Swin's 4x4 patchify. timm has no such stem; the names
    (`proj.0` ... `proj.6`, `norm`) are those of the CTransPath checkpoint. Output is NHWC, as
    timm's Swin stages expect."""

    def __init__(
        self,
        img_size=224,
        patch_size=4,
        in_chans=3,
        embed_dim=96,
        norm_layer=None,
        output_fmt="NHWC",
        **_timm_args,
    ):
        super().__init__()
        if patch_size != 4:
            raise UnknownModelError(f"ConvStem downsamples by 4, not by patch_size {patch_size}")
        layers, width, channels = [], embed_dim // 8, in_chans
        for _ in range(2):
            layers += [
                nn.Conv2d(channels, width, kernel_size=3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels, width = width, width * 2
        layers.append(nn.Conv2d(channels, embed_dim, kernel_size=1))
        self.proj = nn.Sequential(*layers)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.img_size, self.patch_size = size, (patch_size, patch_size)
        self.grid_size = (size[0] // patch_size, size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.output_fmt = output_fmt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ProjectedViT(nn.Module):
    """A ViT trunk and a bias-free linear image projection (open_clip's timm vision tower with
    `timm_proj: linear`): the projection maps the class token into the joint image-text space."""

    def __init__(self, trunk: nn.Module, projection_dim: int):
        super().__init__()
        self.trunk = trunk
        self.proj = nn.Linear(trunk.num_features, projection_dim, bias=False)


_MLP_LAYERS = {"swiglu_packed": "SwiGLUPacked"}  # timm takes classes here, the cards names
_EMBED_LAYERS = {"convstem": ConvStem}


def vit_network(card: ModelCard) -> nn.Module:
    """The card's network with fresh weights: timm's model with the card's arguments."""
    import timm
    import timm.layers

    args = dict(card.architecture_args)
    projection_dim = args.pop(PROJECTION_DIM, None)
    if LAYER_NORM_EPS in args:
        args["norm_layer"] = partial(nn.LayerNorm, eps=args.pop(LAYER_NORM_EPS))
    if "mlp_layer" in args:
        args["mlp_layer"] = getattr(timm.layers, _MLP_LAYERS[args["mlp_layer"]])
    if "embed_layer" in args:
        args["embed_layer"] = _EMBED_LAYERS[args["embed_layer"]]
    try:
        trunk = timm.create_model(card.architecture, pretrained=False, num_classes=0, **args)
    except RuntimeError as exc:  # timm's "Unknown model"
        raise UnknownModelError(f"timm has no model {card.architecture!r} ({exc})") from exc
    return ProjectedViT(trunk, projection_dim) if projection_dim else trunk


class ViTEncoder(FoundationModel):
    """A transformer backbone whose embedding is the card's `embedding` rule.

    `forward_features` gives tokens (B, T, D) in the order class token, registers, patches, or for
    backbones that end in a map (Swin, SAM's neck) a (B, C, H, W) map; `forward_stages` gives the
    maps timm's `forward_intermediates` gives (each block's patch map for a ViT, each stage's for
    Swin), so unlike a CNN's the last stage is not `forward_features`.
    """

    def __init__(self, card: ModelCard, network: nn.Module):
        super().__init__(card, network)
        if card.embedding not in EMBEDDINGS:
            raise UnknownModelError(
                f"model {card.name!r}: unknown embedding rule {card.embedding!r}; "
                f"choose one of {sorted(EMBEDDINGS)}"
            )
        self.stage_names = tuple(info["module"] for info in self.trunk.feature_info)
        # Swin's stages run channels-last: its maps are turned to (B, C, H, W) like every other
        self.channels_last_output = getattr(self.trunk, "output_fmt", "NCHW") == "NHWC"
        if card.embedding == "cls+proj" and not isinstance(network, ProjectedViT):
            raise UnknownModelError(
                f"model {card.name!r}: a projected embedding needs `proj_dim` in its arguments"
            )
        prefix = getattr(self.trunk, "num_prefix_tokens", 1)
        if card.embedding.startswith("cls") and prefix != 1 + card.register_tokens:
            raise UnknownModelError(
                f"model {card.name!r}: the card counts {card.register_tokens} register tokens, "
                f"the network {prefix - 1}"
            )

    @property
    def trunk(self) -> nn.Module:
        """The timm network (without a CLIP projection); a property, so its weights are not
        registered twice."""
        return self.network.trunk if isinstance(self.network, ProjectedViT) else self.network

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        features = self.trunk.forward_features(self.normalise(x))
        return features.permute(0, 3, 1, 2) if self.channels_last_output else features

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.trunk.forward_intermediates(
            self.normalise(x), norm=True, intermediates_only=True
        )

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        rule = self.card.embedding
        if rule == "pooled":
            return super().pool(features)
        cls = features[:, 0]
        if rule == "cls":
            return cls
        if rule == "cls+proj":
            return self.network.proj(cls)
        # cls+mean: the patches start after the class token and the registers
        patches = features[:, self.trunk.num_prefix_tokens :]
        return torch.cat([cls, patches.mean(dim=1)], dim=-1)

    def embedding_and_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # The embedding needs the final tokens (or SAM's neck), which no stage map holds.
        return self.pool(self.forward_features(x)), self.forward_stages(x)
