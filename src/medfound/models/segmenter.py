"""Segmentation networks on any medfound encoder: [0, 1] images -> per-class logits.

`build_segmenter(model, num_classes)` keeps the encoder's weights (whatever `load_model` loaded into
it: BiT/REMEDIS, a SimCLR or Genesis run, a timm or MONAI state dict) and adds what segmentation
needs:

- 2D encoders (BiT, timm, SimCLR): segmentation-models-pytorch's U-Net decoder over the encoder's
  `forward_stages` maps; its channel counts and strides are read off one forward pass on a small
  dummy input. The last decoder block upsamples to the input size, so an encoder whose first stage
  is already at stride 2 or 4 (every timm ResNet) still gives full-resolution logits.
- Genesis U-Nets (`unet3d_genesis.*`, `unet2d_genesis.*`): the whole restoration network, encoder
  and decoder, with a new final convolution of `num_classes` outputs (the Models Genesis target
  task recipe).
- MONAI 3D ResNets (`monai:resnet*`): MONAI's FlexibleUNet decoder over the encoder's stages.
- `"monai_unet"` (a name, not a model): MONAI's `UNet`, randomly initialised, for a baseline without
  any pretrained encoder.

Inputs with another channel count than the encoder's (`in_channels`): one channel into a k-channel
encoder is repeated k times (what the encoder saw for grey images); otherwise the encoder's first
convolution is expanded in place by timm's rule (its kernels repeated cyclically over the new
channels and scaled by old/new channel count, `models.weights.expand_input_conv`), and input
channel i is normalised with the card's statistics of channel i modulo the old count.
"""

import dataclasses
import math

import torch
from torch import nn

from medfound.errors import ConfigError
from medfound.models.card import ModelCard
from medfound.models.foundation import FoundationModel
from medfound.models.weights import expand_input_conv

MONAI_UNET = "monai_unet"
# MONAI's tutorial U-Net (spleen/BraTS examples): five levels, four 2x downsamplings.
MONAI_UNET_CHANNELS = (16, 32, 64, 128, 256)
MONAI_UNET_STRIDES = (2, 2, 2, 2)
_DUMMY_SIZE = {2: 64, 3: 32}  # spatial size of the shape-probing forward pass


class Segmenter(nn.Module):
    """Input (B, in_channels, *spatial) in [0, 1] -> logits (B, num_classes, *spatial).

    `card` is the encoder's model card with the input contract it was built with; `input_divisor`
    is what every spatial size of a training patch or inference window must be divisible by.
    """

    def __init__(self, card: ModelCard, num_classes: int, in_channels: int, input_divisor: int):
        super().__init__()
        self.card = card
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.input_divisor = input_divisor
        self.spatial_dims = card.spatial_dims
        self.decoder_name = "unet"

    def encoder_modules(self) -> list[nn.Module]:
        """The modules holding the pretrained encoder's weights (the rest is new)."""
        raise NotImplementedError

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse an input of the wrong rank or channel count, or not divisible where the network
        needs it, with a message saying which."""
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            axes = ", ".join(["B", str(self.in_channels)] + ["..."] * self.spatial_dims)
            raise ConfigError(f"segmenter input of shape {tuple(x.shape)}: expected ({axes})")


class UNetSegmenter(Segmenter):
    """A FoundationModel encoder, a U-Net decoder over its stages, and a conv head.

    2D decoders are smp's `UnetDecoder` (any input size: each block interpolates to its skip's
    size); 3D decoders are MONAI's FlexibleUNet `UNetDecoder` (inputs divisible by `input_divisor`).
    """

    def __init__(
        self,
        encoder: FoundationModel,
        card: ModelCard,
        num_classes: int,
        in_channels: int,
        repeat_input: bool,
    ):
        channels, strides = _probe_stages(encoder, in_channels if not repeat_input else None)
        super().__init__(card, num_classes, in_channels, input_divisor=strides[-1])
        self.encoder = encoder
        self.repeat_input = repeat_input
        self.decoder_channels = tuple(max(16, 256 >> i) for i in range(len(channels)))
        dims = card.spatial_dims
        if dims == 2:
            from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

            # smp's decoder drops its first feature (the input itself) but upsamples to its size.
            self.decoder = UnetDecoder(
                encoder_channels=(0, *channels),
                decoder_channels=self.decoder_channels,
                n_blocks=len(channels),
            )
            self.keep = None
        else:
            self.keep = _halving_stages(strides, card.name)
            channels = tuple(channels[i] for i in self.keep)
            self.decoder_channels = self.decoder_channels[: len(channels)]
            self.decoder = _monai_decoder(dims, channels, self.decoder_channels)
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.head = conv(self.decoder_channels[-1], num_classes, kernel_size=3, padding=1)

    def encoder_modules(self) -> list[nn.Module]:
        return [self.encoder]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self.spatial_dims == 3:
            _check_divisible(x, self.input_divisor, self.card.name)
        if self.repeat_input:
            x = x.expand(-1, self.card.in_channels, *x.shape[2:])
        stages = self.encoder.forward_stages(x)
        # A zero-channel stand-in of the input's size: the decoders read only its shape.
        stand_in = x.new_empty((x.shape[0], 0, *x.shape[2:]))
        if self.keep is None:
            return self.head(self.decoder([stand_in, *stages]))
        stages = [stages[i] for i in self.keep]
        # The stand-in is no skip connection: the last block only upsamples.
        return self.head(self.decoder([stand_in, *stages], skip_connect=len(stages) - 1))


class GenesisSegmenter(Segmenter):
    """A Genesis U-Net (3D UNet3D or 2D UNet2D) whole, with a new `num_classes` head: logits."""

    def __init__(self, encoder: FoundationModel, card: ModelCard, num_classes: int, in_ch: int):
        from medfound.models import unet2d, unet3d

        network = encoder.network
        divisor = unet3d.DIVISOR if card.spatial_dims == 3 else unet2d.DIVISOR
        super().__init__(card, num_classes, in_ch, input_divisor=divisor)
        self.encoder = encoder
        if card.spatial_dims == 3:
            old = network.head
            network.head = nn.Conv3d(old.in_channels, num_classes, kernel_size=1)
        else:
            from segmentation_models_pytorch.base import SegmentationHead

            old = network.unet.segmentation_head[0]
            network.unet.segmentation_head = SegmentationHead(
                old.in_channels, num_classes, kernel_size=old.kernel_size[0]
            )

    def encoder_modules(self) -> list[nn.Module]:
        network = self.encoder.network
        return [network.encoder] if self.spatial_dims == 3 else [network.unet.encoder]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.encoder.network.decode(self.encoder.forward_stages(x), logits=True)


class MonaiUNetSegmenter(Segmenter):
    """MONAI's UNet (random init; channels 16..256, four stride-2 levels, two residual units),
    fed [0, 1] as is. It has no pretrained part: every parameter counts as decoder."""

    def __init__(self, num_classes: int, in_channels: int, spatial_dims: int):
        from monai.networks.nets import UNet

        card = ModelCard(
            name=MONAI_UNET,
            family=MONAI_UNET,
            architecture="monai.networks.nets.UNet",
            modality="any",
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            input_size=(96,) * spatial_dims,
            embedding_dim=MONAI_UNET_CHANNELS[-1],
            preset="auto",
            description="MONAI UNet, channels 16-256, 2 residual units, batch norm; random init",
            weights_source="none: trained from random initialisation",
            licence="Apache-2.0 (architecture)",
        )
        super().__init__(card, num_classes, in_channels, math.prod(MONAI_UNET_STRIDES))
        self.network = UNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=num_classes,
            channels=MONAI_UNET_CHANNELS,
            strides=MONAI_UNET_STRIDES,
            num_res_units=2,
            norm="batch",
        )

    def encoder_modules(self) -> list[nn.Module]:
        return []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        _check_divisible(x, self.input_divisor, MONAI_UNET)
        return self.network(x)


def build_segmenter(
    model: FoundationModel | str,
    num_classes: int,
    *,
    in_channels: int | None = None,
    decoder: str = "unet",
    spatial_dims: int = 3,
    seed: int = 0,
) -> Segmenter:
    """A segmentation network on `model`'s encoder (see the module docstring), in train mode.

    `model`: a FoundationModel (its weights are kept and its modules reused, not copied), or the
    name "monai_unet" for MONAI's randomly initialised U-Net of `spatial_dims` dimensions.
    `in_channels`: input channels (default: the encoder's). `decoder`: "unet" (the only one).
    New layers are initialised from `seed`, so every run and rank builds the same network.
    """
    if num_classes < 2:
        raise ConfigError(
            f"num_classes is {num_classes}: a segmenter needs at least 2 (background included)"
        )
    if decoder != "unet":
        raise ConfigError(f"decoder {decoder!r} is not supported; choose 'unet'")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(model, str):
            if model != MONAI_UNET:
                raise ConfigError(
                    f"build_segmenter takes a loaded model or {MONAI_UNET!r}, not {model!r}"
                )
            return MonaiUNetSegmenter(num_classes, in_channels or 1, spatial_dims).train()
        return _build_on_encoder(model, num_classes, in_channels, decoder).train()


def _build_on_encoder(
    model: FoundationModel, num_classes: int, in_channels: int | None, decoder: str
) -> Segmenter:
    card = _card_with_contract(model)
    family = card.family
    in_channels = in_channels or card.in_channels
    repeat = in_channels == 1 and card.in_channels > 1
    if in_channels != card.in_channels and not repeat:
        _expand_input_channels(model, in_channels)
    if family in ("genesis", "genesis2d"):
        return GenesisSegmenter(model, card, num_classes, in_channels)
    if card.spatial_dims == 2 or family == "monai":
        if family == "monai" and not card.architecture.startswith("resnet"):
            raise ConfigError(
                f"{card.name}: a U-Net needs an encoder with several stages; of the MONAI "
                f"networks use monai:resnet*, or {MONAI_UNET!r}"
            )
        return UNetSegmenter(model, card, num_classes, in_channels, repeat)
    raise ConfigError(f"{card.name}: no segmentation decoder for family {family!r}")


def encoder_parameters(segmenter: Segmenter) -> list[nn.Parameter]:
    """The parameters holding the encoder's (pretrained) weights, in module order."""
    return [p for module in segmenter.encoder_modules() for p in module.parameters()]


def decoder_parameters(segmenter: Segmenter) -> list[nn.Parameter]:
    """Every other parameter: decoder, head, and new layers."""
    encoder = {id(p) for p in encoder_parameters(segmenter)}
    return [p for p in segmenter.parameters() if id(p) not in encoder]


def _card_with_contract(model: FoundationModel) -> ModelCard:
    """The encoder's card with the input scaling the model applies (a converted or trained file can
    record its own), before any change of input channels."""
    mean = tuple(model.input_mean.flatten().tolist())
    std = tuple(model.input_std.flatten().tolist())
    if set(mean) == {0.0} and set(std) == {1.0} and model.card.input_mean is None:
        return model.card
    return dataclasses.replace(model.card, input_mean=mean, input_std=std)


def _expand_input_channels(model: FoundationModel, in_channels: int) -> None:
    """Make `model` take `in_channels` channels: first conv expanded in place, statistics cycled."""
    conv = next(
        (m for m in model.network.modules() if isinstance(m, nn.modules.conv._ConvNd)), None
    )
    old = model.card.in_channels
    if conv is None or conv.in_channels != old or conv.groups != 1:
        raise ConfigError(
            f"{model.card.name}: cannot take {in_channels} input channels (its first layer is not "
            f"a plain convolution over its {old} channels)"
        )
    with torch.no_grad():
        conv.weight = nn.Parameter(expand_input_conv(conv.weight.detach(), in_channels))
    conv.in_channels = in_channels
    if hasattr(model.network, "in_channels"):  # the Genesis U-Nets check their input with it
        model.network.in_channels = in_channels
    order = [i % old for i in range(in_channels)]
    shape = (1, in_channels) + (1,) * model.card.spatial_dims
    for name in ("input_mean", "input_std"):
        values = getattr(model, name).flatten()[order].view(shape)
        model.register_buffer(name, values.clone(), persistent=False)


@torch.no_grad()
def _probe_stages(model: FoundationModel, in_channels: int | None):
    """(channels, strides) of the encoder's stages, from one forward pass on a small zero input
    (at the card's input size for models that accept no other, such as ViTs)."""
    dims = model.card.spatial_dims
    channels = in_channels or model.card.in_channels
    was_training = model.training
    model.eval()
    try:
        try:
            size = (_DUMMY_SIZE[dims],) * dims
            stages = model.forward_stages(torch.zeros(1, channels, *size))
        except (AssertionError, RuntimeError, ValueError):
            native = model.card.input_size
            size = (native,) * dims if isinstance(native, int) else tuple(native)
            stages = model.forward_stages(torch.zeros(1, channels, *size))
    finally:
        model.train(was_training)
    if any(s.ndim != dims + 2 for s in stages):
        raise ConfigError(f"{model.card.name}: its stages are not {dims}D feature maps")
    strides = tuple(size[0] // s.shape[2] for s in stages)
    return tuple(s.shape[1] for s in stages), strides


def _halving_stages(strides: tuple[int, ...], name: str) -> list[int]:
    """Indices of the stages MONAI's decoder can take (strides 2, 4, 8, ...: of stages sharing a
    stride, the deepest)."""
    keep = [i for i, s in enumerate(strides) if i + 1 == len(strides) or strides[i + 1] != s]
    kept = [strides[i] for i in keep]
    if kept != [2 ** (k + 1) for k in range(len(kept))]:
        raise ConfigError(
            f"{name}: stage strides {strides} do not halve level by level; the 3D U-Net decoder "
            "needs strides 2, 4, 8, ..."
        )
    return keep


def _monai_decoder(dims: int, channels: tuple[int, ...], decoder_channels: tuple[int, ...]):
    """MONAI's FlexibleUNet decoder with FlexibleUNet's own defaults (nearest upsampling)."""
    from monai.networks.nets.flexible_unet import UNetDecoder

    return UNetDecoder(
        spatial_dims=dims,
        encoder_channels=(0, *channels),
        decoder_channels=decoder_channels,
        act=("relu", {"inplace": True}),
        norm=("batch", {"eps": 1e-3, "momentum": 0.1}),
        dropout=0.0,
        bias=False,
        upsample="nontrainable",
        pre_conv="default",
        interp_mode="nearest",
        align_corners=None,
        is_pad=True,
    )


def _check_divisible(x: torch.Tensor, divisor: int, what: str) -> None:
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    bad = [size for size in x.shape[2:] if size % divisor]
    if bad:
        raise ConfigError(
            f"{what} segmenter input of shape {tuple(x.shape)}: spatial sizes must be divisible "
            f"by {divisor}; {', '.join(map(str, bad))} {'is' if len(bad) == 1 else 'are'} not"
        )
