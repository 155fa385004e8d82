"""`medfound export`: a model as ONNX, TorchScript or safetensors, with its card as metadata.

The ONNX and TorchScript artefacts take a [0, 1] image batch (normalisation is inside) and return the
pooled embedding followed by the per-stage feature maps: what TF Hub's `default` and `endpoints`
outputs gave REMEDIS users.
"""

import json
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from medfound.errors import ConfigError
from medfound.files import atomic_write
from medfound.models import FoundationModel
from medfound.models.weights import save_safetensors

FORMATS = ("onnx", "torchscript", "safetensors")


class EmbeddingAndStages(nn.Module):
    """Returns (embedding, stage_1, ..., stage_n)."""

    def __init__(self, model: FoundationModel):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        embedding, stages = self.model.embedding_and_stages(image)
        return (embedding, *stages)


def output_names(model: FoundationModel) -> list[str]:
    """'embedding' then one name per stage (dots made ONNX-friendly)."""
    return ["embedding", *(name.replace(".", "_") for name in model.stage_names)]


def _metadata(model: FoundationModel) -> dict[str, str]:
    card = model.card.to_dict()
    # The contract actually in force (a converted checkpoint may differ from the registry's card).
    card["input_mean"] = model.input_mean.flatten().tolist()
    card["input_std"] = model.input_std.flatten().tolist()
    return {
        "medfound_card": json.dumps(card, sort_keys=True),
        "weights_sha256": model.weights_sha256 or "random-init",
        "outputs": json.dumps(output_names(model)),
    }


def export_model(
    model: FoundationModel,
    out: str | Path,
    fmt: Literal["onnx", "torchscript", "safetensors"],
    image_size: int | tuple[int, ...] | None = None,
) -> Path:
    """Write `model` to `out` in `fmt` (atomically); returns the path."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {FORMATS}, got {fmt!r}")
    out = Path(out)
    model = model.eval().cpu()
    metadata = _metadata(model)
    if fmt == "safetensors":
        save_safetensors(model.network, out, metadata["medfound_card"], extra=metadata)
        return out
    card = model.card
    size = image_size or card.input_size
    spatial = (size,) * card.spatial_dims if isinstance(size, int) else tuple(size)
    example = torch.rand(1, card.in_channels, *spatial)
    wrapper = EmbeddingAndStages(model).eval()
    if fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(wrapper, example, check_trace=False)
        extra = {"medfound_metadata.json": json.dumps(metadata)}
        atomic_write(out, lambda tmp: torch.jit.save(traced, str(tmp), _extra_files=extra))
        return out
    atomic_write(out, lambda tmp: _export_onnx(wrapper, example, tmp, model, metadata))
    return out


def _export_onnx(wrapper, example, path: Path, model: FoundationModel, metadata: dict) -> None:
    from medfound._optional import require

    onnx = require("onnx", "export", "ONNX export")
    require("onnxscript", "export", "ONNX export")
    dims = {0: torch.export.Dim("batch", min=1, max=4096)}
    program = torch.onnx.export(
        wrapper,
        (example,),
        input_names=["image"],
        output_names=output_names(model),
        dynamic_shapes=(dims,),
        dynamo=True,
        verbose=False,
    )
    proto = program.model_proto
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
