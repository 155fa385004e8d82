"""The model zoo: registry of cards, network builders, weight loading."""

import logging
from pathlib import Path

import torch

from medfound.errors import ConfigError, WeightsError
from medfound.models.backbones import build_model
from medfound.models.card import ModelCard
from medfound.models.foundation import FoundationModel
from medfound.models.hub_folder import check_config, recipe_differences, weight_file_in
from medfound.models.registry import get_card, list_models, register
from medfound.models.weights import card_from_metadata, load_state, read_state, weights_digest
from medfound.weight_sources import loadable_weights

log = logging.getLogger(__name__)


def _check_folder(folder: Path, card: ModelCard, network) -> None:
    check_config(folder, card, network)
    for difference in recipe_differences(folder, card):
        log.warning(
            "%s: the folder's preprocessing says %s; medfound follows the card", folder, difference
        )


__all__ = [
    "FoundationModel",
    "ModelCard",
    "build_model",
    "get_card",
    "list_models",
    "load_model",
    "register",
]


def load_model(
    name: str | ModelCard,
    weights: str | Path | None = None,
    *,
    random_init: bool = False,
    device: str = "cpu",
    seed: int = 0,
) -> FoundationModel:
    """Build model `name` (a registered name or a card) and load `weights` into it, in eval mode.

    Weights come only from a local file (safetensors, a PyTorch file, a BiT .npz), a model folder
    as downloaded from a hub (models/hub_folder.py), or a TensorFlow SavedModel directory or
    checkpoint prefix (converted on first use, cached by content hash).
    Without weights
    the call fails unless `random_init=True` is asked for explicitly; the model then records that.
    Initialisation is seeded (`seed`), so a random-init model is the same in every run and rank.
    """
    card = name if isinstance(name, ModelCard) else get_card(name)
    name = card.name if isinstance(name, ModelCard) else name  # messages use the name asked for
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(card)
    if weights is None:
        if not random_init:
            raise WeightsError(
                f"model {name!r} needs weights (--weights FILE); obtain them from: "
                f"{card.weights_source}. Use --random-init to embed with random weights on purpose"
            )
        model.random_init = True
        return model.to(device)
    if random_init:
        raise ConfigError("give either weights or random_init, not both")
    # A TensorFlow SavedModel or checkpoint (a REMEDIS download, a SimCLR release) is converted once
    # and cached by convert/, which registers itself in weight_sources (models/ does not import it).
    path = loadable_weights(Path(weights), name)
    if path.is_dir() and not (path / "saved_model.pb").exists():  # a model folder from a hub
        _check_folder(path, card, model.network)
        path = weight_file_in(path, card)
    elif card.family == "vit" and path.is_file():  # a file of such a folder: its folder's configs
        _check_folder(path.parent, card, model.network)
    state, metadata = read_state(path, model.network)
    file_card = card_from_metadata(metadata)
    if file_card and file_card.get("architecture") != card.architecture:
        raise WeightsError(
            f"{path}: holds a {file_card.get('architecture')!r} network "
            f"(model {file_card.get('name')!r}), but {name!r} is a {card.architecture!r}"
        )
    load_state(model.network, state, path, card.weight_layouts)
    published = "vit" in (card.family, file_card.get("family") if file_card else None)
    if file_card and published and file_card.get("name") != card.name:
        # published transformers share architectures (UNI and Phikon-v2 are both ViT-L/16, with
        # the same shapes): the model a medfound file was made for must be the one asked for
        raise WeightsError(
            f"{path}: holds weights of {file_card.get('name')!r}, not of {card.name!r} (the same "
            "architecture, another model's weights and preprocessing)"
        )
    if file_card and "input_mean" in file_card:
        # A converted or trained checkpoint records the input scaling it was trained with.
        model.set_input_contract(file_card.get("input_mean"), file_card.get("input_std"))
    model.weights_sha256 = weights_digest(path)
    model.weights_path = str(path)
    return model.to(device)
