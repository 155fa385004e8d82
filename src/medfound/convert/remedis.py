"""REMEDIS / BiT SavedModels -> medfound safetensors for the timm BiT ResNet-v2.

Every backbone tensor is mapped exactly once with its shape checked; classifier and projection heads
are kept in the file (under `extra/`) so fine-tuning can start from a head layer; optimiser state is
dropped and reported; anything else left unmapped is an error that lists the names. The width and depth
are read off the checkpoint and checked against the model asked for.
"""

import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medfound.convert.savedmodel import read_savedmodel_variables
from medfound.errors import WeightsError, first_items
from medfound.models import bit_names, build_model, get_card, list_models
from medfound.models.card import ModelCard
from medfound.models.weights import EXTRA_PREFIX, save_safetensors

log = logging.getLogger(__name__)

_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
_HEAD_SCOPES = ("head/", "head_supervised/", "head_contrastive/", "projection_head/", "proj_head/")
_UNIT = re.compile(r"block(\d)/unit(\d+)/")


@dataclass
class BitCheckpoint:
    """A BiT checkpoint mapped onto timm names."""

    architecture: str
    state: dict[str, torch.Tensor]
    extras: dict[str, np.ndarray]


def infer_architecture(arrays: dict[str, np.ndarray], prefix: str) -> str:
    """timm architecture (`resnetv2_{depth}x{width}_bit`) from the root conv and the unit counts."""
    root = arrays[prefix + bit_names.ROOT_KERNEL]
    width, remainder = divmod(root.shape[-1], 64)
    units: dict[int, set[int]] = {}
    for name in arrays:
        match = _UNIT.match(name[len(prefix) :]) if name.startswith(prefix) else None
        if match:
            units.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    counts = tuple(len(units.get(block, ())) for block in (1, 2, 3, 4))
    if remainder or counts not in _DEPTHS:
        raise WeightsError(
            f"not a known BiT ResNet-v2: root conv has {root.shape[-1]} channels, blocks have "
            f"{counts} units (known: {sorted(_DEPTHS)})"
        )
    return f"resnetv2_{_DEPTHS[counts]}x{width}_bit"


def map_bit_names(arrays: dict[str, np.ndarray], where: str) -> BitCheckpoint:
    """Map TensorFlow BiT names (any scope prefix) onto the timm network they describe."""
    try:
        prefix = bit_names.find_bit_prefix(list(arrays))
    except KeyError as exc:
        raise WeightsError(f"{where}: {exc.args[0]}") from exc
    architecture = infer_architecture(arrays, prefix)
    with torch.device("meta"):
        template = build_model(_card_for(architecture)).network.state_dict()
    state, used, problems = {}, set(), []
    for key, value in template.items():
        name = prefix + bit_names.bit_name(key)
        if name not in arrays:
            problems.append(f"missing {name}")
            continue
        array = bit_names.hwio_to_oihw(arrays[name])
        if tuple(array.shape) != tuple(value.shape):
            problems.append(f"{name}: shape {array.shape} vs {tuple(value.shape)}")
        state[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        used.add(name)
    extras = {}
    for name in sorted(set(arrays) - used):
        local = name[len(prefix) :] if name.startswith(prefix) else name
        if local.startswith(_HEAD_SCOPES) or any(f"/{s}" in name for s in _HEAD_SCOPES):
            extras[name] = arrays[name]
        else:
            problems.append(f"unmapped {name}")
    if problems:
        shown = first_items(problems, 12, sep="; ")
        raise WeightsError(f"{where}: checkpoint does not map onto {architecture}: {shown}")
    return BitCheckpoint(architecture=architecture, state=state, extras=extras)


def _card_for(architecture: str) -> ModelCard:
    for card in list_models():
        if card.architecture == architecture:
            return card
    return get_card(f"timm:{architecture}")


def choose_card(src: Path, architecture: str, model: str | None) -> ModelCard:
    """The card to convert for: `model` if given (checked), else the one SRC's folder is named after."""
    name = model or src.name
    try:
        card = get_card(name)
    except Exception as exc:
        if model is not None:
            raise
        raise WeightsError(
            f"{src}: cannot tell which model this is from the folder name; pass --model "
            f"(one of the {architecture} models in `medfound models`)"
        ) from exc
    if card.architecture != architecture:
        raise WeightsError(
            f"{src}: the checkpoint is a {architecture}, but {card.name!r} is a {card.architecture}"
        )
    return card


def _input_from_graph(src: Path, card: ModelCard) -> tuple[str, str, ModelCard]:
    """Without TensorFlow: read the input transform off saved_model.pb, else assume BiT's [-1, 1]."""
    from medfound.convert.graph_probe import probe_input_transform

    transform = probe_input_transform(src)
    if transform is None:
        source = (
            "assumed (BiT default; no input transform found in the graph, TensorFlow not installed)"
        )
        log.warning("%s: network input range %s", src, source)
        return "symmetric", source, card
    scale, shift = np.broadcast_to(transform.scale, 3), np.broadcast_to(transform.shift, 3)
    source = (
        f"read from the SavedModel graph: x -> {scale.tolist()} * x + {shift.tolist()} "
        "before the first convolution"
    )
    network_input = transform.network_input()
    if network_input is None:  # any other affine map, e.g. ImageNet mean/std inside the model
        card = dataclasses.replace(
            card,
            input_mean=tuple(float(v) for v in -shift / scale),
            input_std=tuple(float(v) for v in 1 / scale),
        )
        network_input = "affine"
    return network_input, source, card


def convert_remedis(
    src: str | Path,
    out: str | Path,
    model: str | None = None,
    network_input: str = "auto",
) -> ModelCard:
    """Convert a REMEDIS/BiT SavedModel directory into a medfound safetensors file; returns its card.

    `network_input` is the range the converted network consumes: "symmetric" ([-1, 1]: medfound maps
    its [0, 1] images with 2x - 1, as for BiT), "unit" ([0, 1] as is), or "auto": with TensorFlow
    installed, the SavedModel is called as REMEDIS documents it (images in [0, 1]) and the range that
    reproduces its output is chosen, which also cross-checks the conversion: "symmetric" when the
    SavedModel scales to [-1, 1] inside, "unit" when it passes [0, 1] on. Without TensorFlow, the
    transform before the first convolution is read off saved_model.pb and evaluated (graph_probe);
    only if none is found is BiT's "symmetric" assumed. The decision and how it was made are stored
    in the file's metadata.
    """
    from medfound.convert.tf_comparison import detect_input_range, tensorflow_available

    if network_input not in ("auto", "unit", "symmetric"):
        raise WeightsError(f"network input must be auto, unit or symmetric, got {network_input!r}")
    src = Path(src)
    variables = read_savedmodel_variables(src)
    if variables.skipped:
        log.info("%s: %d optimiser/bookkeeping variables left out", src, len(variables.skipped))
    checkpoint = map_bit_names(variables.arrays, str(src))
    card = choose_card(src, checkpoint.architecture, model)
    converted = build_model(card)
    converted.network.load_state_dict(checkpoint.state)
    source = "given"
    if network_input == "auto":
        if tensorflow_available():
            network_input, error = detect_input_range(src, converted)
            source = f"measured against TensorFlow (relative error {error:.1e})"
        else:
            network_input, source, card = _input_from_graph(src, card)
    if network_input == "unit":
        card = dataclasses.replace(card, input_mean=None, input_std=None)
    extras = {
        EXTRA_PREFIX + k: torch.from_numpy(np.ascontiguousarray(v))
        for k, v in checkpoint.extras.items()
    }
    save_safetensors(
        converted.network,
        Path(out),
        card.to_json(),
        extra={
            "converted_from": Path(src).name,
            "network_input": network_input,
            "network_input_source": source,
        },
        extra_tensors=extras,
    )
    return card
