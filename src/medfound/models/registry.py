"""The one place that names every model (as timm's registry does): name -> ModelCard.

Names follow timm's `architecture.weight_tag` (e.g. `resnetv2_50x1_bit.remedis_cxr_m`), so one
architecture's weights sort together and `list_models("resnetv2_50x1_bit.*")` finds them; the earlier
names (`cxr-50x1-remedis-m`, the folder names of the REMEDIS release) stay valid as aliases.
Registered cards are plain data; no network is built until `build_backbone` is called. Names of the
form `timm:NAME` and `monai:NAME` reach any timm model and MONAI's 3D ResNet/DenseNet families.
"""

import fnmatch

from medfound.errors import UnknownModelError
from medfound.models.card import ModelCard
from medfound.models.vit_cards import CARDS as VIT_CARDS

_REGISTRY: dict[str, ModelCard] = {}
_ALIASES: dict[str, str] = {}  # earlier name -> registered name

_REMEDIS_SOURCE = (
    "PhysioNet, 'Medical AI Research Foundations' (doi:10.13026/psq3-vj24), credentialed access "
    "after signing its data use agreement; TF2 SavedModel, convert with `medfound convert remedis`"
)
_REMEDIS_LICENCE = (
    "PhysioNet Credentialed Health Data License 1.5.0; non-diagnostic research use only"
)
_BIT_SOURCE = (
    "Google BiT release (big_transfer): the original BiT-{s}-R{arch}.npz file, given by path"
)
_HALF = (0.5, 0.5, 0.5)


def register(card: ModelCard, aliases: tuple[str, ...] = ()) -> ModelCard:
    """Add a card to the registry (with other names it answers to); a name may be registered once."""
    for name in (card.name, *aliases):
        if name in _REGISTRY or name in _ALIASES:
            raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[card.name] = card
    _ALIASES.update(dict.fromkeys(aliases, card.name))
    return card


def list_models(pattern: str | None = None) -> list[ModelCard]:
    """Registered cards in registration order; `pattern` filters names with shell wildcards
    (`resnetv2_50x1_bit.*`, `*remedis_cxr*`), matched against the aliases too."""
    if pattern is None:
        return list(_REGISTRY.values())
    hits = {_ALIASES[a] for a in fnmatch.filter(_ALIASES, pattern)}
    hits |= set(fnmatch.filter(_REGISTRY, pattern))
    return [card for name, card in _REGISTRY.items() if name in hits]


def aliases_of(name: str) -> list[str]:
    """The earlier names a registered model still answers to."""
    return [alias for alias, target in _ALIASES.items() if target == name]


def get_card(name: str) -> ModelCard:
    """The card for a registered name or alias, or one made on the fly for `timm:NAME` /
    `monai:NAME` / `simclr:NAME`."""
    name = _ALIASES.get(name, name)
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith("timm:"):
        from medfound.models.backbones import timm_card

        return timm_card(name)
    if name.startswith("monai:"):
        from medfound.models.backbones import monai_card

        return monai_card(name)
    if name.startswith("simclr:"):
        from medfound.models.resnet_v1 import simclr_card

        return simclr_card(name)
    raise UnknownModelError(
        f"unknown model {name!r}; see `medfound models` for the registered names, "
        "or use timm:NAME / monai:NAME for any timm model or MONAI 3D ResNet/DenseNet, "
        "simclr:r{50,101,152}x{1,2,3,4} for SimCLR's ResNet-v1"
    )


def _bit_card(name: str, width: str, **fields) -> ModelCard:
    """A BiT ResNet-v2 card: 2D, RGB, [0, 1] mapped to [-1, 1] (BiT's native range)."""
    architecture, dim = {
        "50x1": ("resnetv2_50x1_bit", 2048),
        "152x2": ("resnetv2_152x2_bit", 4096),
    }[width]
    return ModelCard(
        name=name,
        family="bit",
        architecture=architecture,
        spatial_dims=2,
        in_channels=3,
        embedding_dim=dim,
        input_mean=_HALF,
        input_std=_HALF,
        **fields,
    )


_DATA = {"s": "ImageNet-1k", "m": "ImageNet-21k"}
_DATA_TAG = {"s": "in1k", "m": "in21k"}
for _modality, _size, _what in (("cxr", 448, "chest X-ray"), ("path", 224, "pathology")):
    for _width in ("50x1", "152x2"):
        for _init in ("s", "m"):
            register(
                _bit_card(
                    f"resnetv2_{_width}_bit.remedis_{_modality}_{_init}",
                    _width,
                    modality=_what,
                    input_size=_size,
                    preset=_modality,
                    description=(
                        f"REMEDIS: BiT-{_init.upper()} ResNet-v2 {_width} ({_DATA[_init]} "
                        f"supervised), then SimCLR-pretrained on unlabeled {_what} images"
                    ),
                    weights_source=_REMEDIS_SOURCE,
                    licence=_REMEDIS_LICENCE,
                ),
                aliases=(f"{_modality}-{_width}-remedis-{_init}",),  # the release's folder names
            )

for _init in ("s", "m"):
    for _width in ("50x1", "152x2"):
        register(
            _bit_card(
                f"resnetv2_{_width}_bit.bit_{_init}_{_DATA_TAG[_init]}",
                _width,
                modality="natural images",
                input_size=224,
                preset="path",
                description=f"BiT-{_init.upper()} ResNet-v2 {_width}, supervised on {_DATA[_init]}",
                weights_source=_BIT_SOURCE.format(s=_init.upper(), arch=_width),
                licence="Apache-2.0",
            ),
            aliases=(f"bit-{_init}-r{_width}",),
        )

register(
    ModelCard(
        name="unet3d_genesis.chest_ct",
        family="genesis",
        architecture="unet3d-genesis",
        modality="CT",
        spatial_dims=3,
        in_channels=1,
        input_size=(64, 64, 32),
        embedding_dim=512,
        preset="ct",
        description=(
            "Models Genesis 3D U-Net encoder, self-supervised by restoring LUNA16 chest CT "
            "sub-volumes (non-linear intensity, local shuffling, in- and out-painting)"
        ),
        weights_source=(
            "Models Genesis release: Genesis_Chest_CT.pt (obtained from its authors' repository "
            "after a request form), given by path"
        ),
        licence="Models Genesis licence: academic research use",
        feature_layout="(C, X, Y, Z) per volume; C = embedding_dim",
    ),
    aliases=("genesis-chest-ct",),
)

register(
    ModelCard(
        name="unet3d_genesis_w8.mri",
        family="genesis",
        architecture="unet3d-genesis-w8",
        modality="CT, MRI",
        spatial_dims=3,
        in_channels=1,
        input_size=(32, 32, 16),
        embedding_dim=128,
        preset="mri",
        description=(
            "The Models Genesis 3D U-Net at a quarter of its width (1.2M parameters instead of "
            "19M): for pretraining and transfer on CPU, as `make demo` does. No released weights"
        ),
        weights_source="none released: pretrain it (medfound pretrain genesis --model ...)",
        licence="Apache-2.0 (architecture)",
        feature_layout="(C, X, Y, Z) per volume; C = embedding_dim",
    ),
    aliases=("genesis-small",),
)

register(
    ModelCard(
        name="unet2d_genesis.resnet18",
        family="genesis2d",
        architecture="unet2d-genesis",
        modality="chest X-ray, CT slices",
        spatial_dims=2,
        in_channels=1,
        input_size=224,
        embedding_dim=512,
        preset="cxr",
        description=(
            "Models Genesis 2D: U-Net on a timm ResNet-18 encoder (segmentation-models-pytorch), "
            "self-supervised by restoring 2D images; embedding = pooled deepest encoder level"
        ),
        weights_source="none published: pretrain with medfound pretrain genesis --dims 2",
        licence="Apache-2.0 (architecture)",
    ),
)

for _card, _aliases in VIT_CARDS:
    register(_card, aliases=_aliases)
