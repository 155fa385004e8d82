"""The model zoo: registry of cards, network builders, weight loading."""

from pathlib import Path

import torch

from medfound.errors import ConfigError, WeightsError
from medfound.files import file_sha256
from medfound.models.backbones import build_model
from medfound.models.card import ModelCard
from medfound.models.foundation import FoundationModel
from medfound.models.registry import get_card, list_models, register
from medfound.models.weights import card_from_metadata, load_state, read_state
from medfound.weight_sources import loadable_weights

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
    name: str,
    weights: str | Path | None = None,
    *,
    random_init: bool = False,
    device: str = "cpu",
    seed: int = 0,
) -> FoundationModel:
    """Build model `name` and load `weights` into it, in eval mode.

    Weights come only from a local file (safetensors, a PyTorch file, a BiT .npz) or a TensorFlow
    SavedModel directory or checkpoint prefix (converted on first use, cached by content hash).
    Without weights
    the call fails unless `random_init=True` is asked for explicitly; the model then records that.
    Initialisation is seeded (`seed`), so a random-init model is the same in every run and rank.
    """
    card = get_card(name)
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
    state, metadata = read_state(path, model.network)
    file_card = card_from_metadata(metadata)
    if file_card and file_card.get("architecture") != card.architecture:
        raise WeightsError(
            f"{path}: holds a {file_card.get('architecture')!r} network "
            f"(model {file_card.get('name')!r}), but {name!r} is a {card.architecture!r}"
        )
    load_state(model.network, state, path)
    if file_card and "input_mean" in file_card:
        # A converted or trained checkpoint records the input scaling it was trained with.
        model.set_input_contract(file_card.get("input_mean"), file_card.get("input_std"))
    model.weights_sha256 = file_sha256(path)
    model.weights_path = str(path)
    return model.to(device)
