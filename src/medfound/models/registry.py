"""The one place that names every model (as timm's registry does): name -> ModelCard.

Registered cards are plain data; no network is built until `build_backbone` is called. Names of the
form `timm:NAME` and `monai:NAME` reach any timm model and MONAI's 3D ResNet/DenseNet families.
"""

from medfound.errors import UnknownModelError
from medfound.models.card import ModelCard

_REGISTRY: dict[str, ModelCard] = {}

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


def register(card: ModelCard) -> ModelCard:
    """Add a card to the registry; a name may be registered once."""
    if card.name in _REGISTRY:
        raise ValueError(f"model {card.name!r} is registered twice")
    _REGISTRY[card.name] = card
    return card


def list_models() -> list[ModelCard]:
    """Every registered card, in registration order."""
    return list(_REGISTRY.values())


def get_card(name: str) -> ModelCard:
    """The card for a registered name, or one made on the fly for `timm:NAME` / `monai:NAME`."""
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
for _modality, _size, _what in (("cxr", 448, "chest X-ray"), ("path", 224, "pathology")):
    for _width in ("50x1", "152x2"):
        for _init in ("s", "m"):
            register(
                _bit_card(
                    f"{_modality}-{_width}-remedis-{_init}",
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
                )
            )

for _init in ("s", "m"):
    for _width in ("50x1", "152x2"):
        register(
            _bit_card(
                f"bit-{_init}-r{_width}",
                _width,
                modality="natural images",
                input_size=224,
                preset="path",
                description=f"BiT-{_init.upper()} ResNet-v2 {_width}, supervised on {_DATA[_init]}",
                weights_source=_BIT_SOURCE.format(s=_init.upper(), arch=_width),
                licence="Apache-2.0",
            )
        )

register(
    ModelCard(
        name="genesis-chest-ct",
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
    )
)
