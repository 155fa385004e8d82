"""The weight file a pretraining method exports: the trained network with its model's card, the
input contract it was trained with, and how it was made (without any path)."""

import dataclasses
import json
from pathlib import Path

import torch

from medfound.models import FoundationModel
from medfound.models.weights import save_safetensors


def save_pretrained(
    model: FoundationModel,
    path: Path,
    *,
    method: str,
    description: str,
    provenance: dict,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    extra_metadata: dict[str, str] | None = None,
) -> Path:
    """Write `model.network` to `path` with its card: `description` appended, the input scaling
    the model applied (a converted starting point may have its own), provenance under
    `medfound_pretraining`, and any `extra_metadata` (e.g. a fine-tuned head's classes)."""
    mean, std = _input_contract(model)
    card = dataclasses.replace(
        model.card,
        description=f"{model.card.description}; {description}",
        # No path here: a weight file is made to be shared, and run folders can name patients.
        weights_source=f"medfound pretrain {method} (provenance in medfound_pretraining)",
        input_mean=mean,
        input_std=std,
    )
    save_safetensors(
        model.network,
        Path(path),
        card.to_json(),
        extra={
            "medfound_pretraining": json.dumps({"method": method, **provenance}),
            **(extra_metadata or {}),
        },
        extra_tensors=extra_tensors,
    )
    return Path(path)


def _input_contract(model: FoundationModel):
    """(mean, std) the model normalised its input with; (None, None) when it fed [0, 1] as is and
    its card says so."""
    mean = tuple(model.input_mean.flatten().tolist())
    std = tuple(model.input_std.flatten().tolist())
    identity = set(mean) == {0.0} and set(std) == {1.0}
    if identity and model.card.input_mean is None:
        return None, None
    return mean, std
