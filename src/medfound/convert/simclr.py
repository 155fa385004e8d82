"""SimCLR v1/v2 TensorFlow checkpoints (ResNet-v1 + BatchNorm) -> medfound safetensors.

Keras names layers by creation order with one counter per layer type (`conv2d`, `conv2d_1`, ...,
`batch_normalization_N`), so the mapping is positional: SimCLR's ResNet creates the stem conv and BN,
then per block the projection shortcut (conv, BN) when the block has one, before the block's three
convs and BNs. The backbone is the scope holding the stem (e.g. `base_model/`); heads elsewhere
(`head_contrastive/`, `head_supervised/`) are kept under `extra/`. EMA and optimiser copies are dropped.
"""

import logging
import re
from pathlib import Path

import numpy as np
import torch

from medfound.convert.savedmodel import read_savedmodel_variables
from medfound.errors import WeightsError, first_items
from medfound.models import build_model, get_card
from medfound.models.bit_names import hwio_to_oihw
from medfound.models.card import ModelCard
from medfound.models.resnet_v1 import DEPTHS
from medfound.models.weights import EXTRA_PREFIX, save_safetensors

log = logging.getLogger(__name__)

_CONV = re.compile(r"(.*?)conv2d(?:_(\d+))?/kernel")
_BN = re.compile(
    r"(.*?)(?:sync_)?batch_normalization(?:_(\d+))?/(gamma|beta|moving_mean|moving_variance)"
)
_BN_FIELDS = {
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}


def creation_order(depth: int) -> tuple[list[str], list[str]]:
    """timm module names of the convs and of the BNs, in the order SimCLR's ResNet creates them."""
    convs, norms = ["conv1"], ["bn1"]
    for stage, blocks in enumerate(DEPTHS[depth], start=1):
        for block in range(blocks):
            scope = f"layer{stage}.{block}"
            if block == 0:  # the projection shortcut is created before the block's first conv
                convs.append(f"{scope}.downsample.0")
                norms.append(f"{scope}.downsample.1")
            convs += [f"{scope}.conv1", f"{scope}.conv2", f"{scope}.conv3"]
            norms += [f"{scope}.bn1", f"{scope}.bn2", f"{scope}.bn3"]
    return convs, norms


def _indexed(
    arrays: dict[str, np.ndarray], pattern: re.Pattern, scope: str
) -> dict[int, list[str]]:
    """{layer index: [variable names]} for names of `pattern` directly in `scope`."""
    found: dict[int, list[str]] = {}
    for name in arrays:
        match = pattern.fullmatch(name)
        if match and match.group(1) == scope:
            found.setdefault(int(match.group(2) or 0), []).append(name)
    return found


def map_simclr_names(arrays: dict[str, np.ndarray], where: str) -> tuple[int, int, dict, dict]:
    """(depth, width, timm state dict, extras) of a SimCLR ResNet-v1 checkpoint."""
    scopes: dict[str, int] = {}
    for name in arrays:
        match = _CONV.fullmatch(name)
        if match:
            scopes[match.group(1)] = scopes.get(match.group(1), 0) + 1
    if not scopes:
        raise WeightsError(f"{where}: no conv2d kernels: not a SimCLR ResNet checkpoint")
    scope = max(scopes, key=scopes.get)
    convs = _indexed(arrays, _CONV, scope)
    norms = _indexed(arrays, _BN, scope)
    by_count = {1 + 3 * sum(blocks) + 4: depth for depth, blocks in DEPTHS.items()}
    if len(convs) not in by_count or len(norms) != len(convs):
        raise WeightsError(
            f"{where}: {len(convs)} convs and {len(norms)} batch norms under {scope!r}: not a plain "
            f"ResNet-v1 50/101/152 ({sorted(by_count)} convs; selective-kernel models are not supported)"
        )
    depth = by_count[len(convs)]
    stem = arrays[convs[min(convs)][0]]
    width = stem.shape[-1] // 64
    conv_names, norm_names = creation_order(depth)
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for module, index in zip(conv_names, sorted(convs), strict=True):
        (name,) = convs[index]
        state[f"{module}.weight"] = torch.from_numpy(hwio_to_oihw(arrays[name]).astype(np.float32))
        used.add(name)
    for module, index in zip(norm_names, sorted(norms), strict=True):
        for name in norms[index]:
            field = _BN_FIELDS[name.rsplit("/", 1)[1]]
            state[f"{module}.{field}"] = torch.from_numpy(np.asarray(arrays[name], np.float32))
            used.add(name)
        state[f"{module}.num_batches_tracked"] = torch.tensor(0)
    extras = {
        name: arrays[name] for name in arrays if name not in used and not name.startswith(scope)
    }
    leftover = sorted(n for n in arrays if n not in used and n.startswith(scope))
    if leftover:
        raise WeightsError(
            f"{where}: backbone variables left unmapped: {first_items(leftover, 12)}"
        )
    return depth, width, state, extras


def convert_simclr(src: str | Path, out: str | Path, model: str | None = None) -> ModelCard:
    """Convert a SimCLR TF checkpoint prefix or SavedModel into medfound weights; returns the card."""
    src = Path(src)
    variables = read_savedmodel_variables(src)
    if variables.skipped:
        log.info("%s: %d EMA/optimiser/bookkeeping variables left out", src, len(variables.skipped))
    depth, width, state, extras = map_simclr_names(variables.arrays, str(src))
    inferred = f"simclr:r{depth}x{width}"
    card = get_card(model or inferred)
    if card.family != "simclr" or card.architecture != inferred.removeprefix("simclr:"):
        raise WeightsError(f"{src}: the checkpoint is a {inferred}, but --model is {card.name!r}")
    network = build_model(card).network
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:  # shapes inconsistent with the inferred widths
        raise WeightsError(f"{src}: checkpoint does not fit {inferred}: {exc}") from exc
    save_safetensors(
        network,
        Path(out),
        card.to_json(),
        extra={"converted_from": Path(src).name},
        extra_tensors={
            EXTRA_PREFIX + k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in extras.items()
        },
    )
    return card
