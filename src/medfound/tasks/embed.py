"""`medfound embed`: images -> one Parquet row per image with its embedding.

Decoding and preprocessing run in DataLoader workers; the model runs in inference mode, channels-last,
optionally under bf16 autocast and torch.compile (with inductor freezing). Under torchrun each rank
embeds its shard and rank 0 merges. Output is resumable and crash-safe (see tasks/store.py).
"""

import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import DataLoader

from medfound import __version__
from medfound.data import ImageDataset, collate_items, collect_sources
from medfound.data.datasets import worker_init
from medfound.engine.progress import progress_bar
from medfound.engine.runtime import default_workers, init_distributed, local_rank, resolve_device
from medfound.errors import ConfigError, skip_message
from medfound.io.presets import get_preset
from medfound.models import FoundationModel, load_model
from medfound.tasks.store import ParquetStore

log = logging.getLogger(__name__)


@dataclass
class EmbedOptions:
    """Options of an embedding run (the CLI flags of `medfound embed`)."""

    batch_size: int = 8
    device: str = "auto"
    workers: int | None = None  # None: half the cores, at most 8
    pool: Literal["avg", "none"] = "avg"
    preset: str | None = None  # None: the model card's preset
    image_size: int | None = None
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    dicom_series: bool | None = None  # None: group series into volumes for 3D models only
    chunk_rows: int = 256  # rows per crash-safe chunk
    progress: bool = True

    def validate(self) -> None:
        """Refuse impossible values with the option's name."""
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.pool not in ("avg", "none"):
            raise ConfigError(f"--pool must be avg or none, got {self.pool!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"--precision must be fp32 or bf16, got {self.precision!r}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.workers}")


@dataclass
class EmbedSummary:
    """What a run did: counts, the skipped items with reasons, where the output is."""

    out: Path
    embedded: int = 0
    already_done: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    total_rows: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing was skipped."""
        return not self.skipped


def embed(
    inputs: Iterable[str | Path],
    out: str | Path,
    model: FoundationModel | None = None,
    *,
    model_name: str | None = None,
    weights: str | Path | None = None,
    random_init: bool = False,
    options: EmbedOptions | None = None,
) -> EmbedSummary:
    """Embed every image in `inputs` into the Parquet file `out` (resuming what is there).

    Pass a loaded `model`, or `model_name` (+ `weights` or `random_init=True`), or just `weights`
    when they are a medfound .safetensors file (its card names the model).
    """
    options = options or EmbedOptions()
    options.validate()
    out = Path(out)
    device = resolve_device(options.device, local_rank())
    ctx = init_distributed(device)
    if model is None:
        model_name = model_name or _name_from_weights(weights)
        model = load_model(model_name, weights, random_init=random_init, device="cpu")
    card = model.card
    preset_overrides = {"size": options.image_size} if options.image_size else {}
    preset = get_preset(options.preset or card.preset, **preset_overrides)

    identity = {
        "model": card.name,
        "weights_sha256": model.weights_sha256 or "random-init",
        "pool": options.pool,
        "preset": preset.to_json(),
    }
    store = ParquetStore(out, identity, rank=ctx.rank)
    started = time.perf_counter()
    summary = EmbedSummary(out=out)
    group = options.dicom_series if options.dicom_series is not None else card.spatial_dims == 3
    sources, problems = collect_sources(inputs, group_series=group)
    done = store.done_ids()
    ctx.barrier()  # every rank has read what is done before any rank writes
    todo = [s for s in sources if s.id not in done]
    summary.already_done = len(sources) - len(todo)
    mine = todo[ctx.rank :: ctx.world_size]
    summary.skipped.extend(problems if ctx.is_main else [])

    dataset = ImageDataset(
        mine,
        preset,
        spatial_dims=card.spatial_dims,
        channels=card.in_channels,
        native_size=card.input_size,
    )
    runner = _Runner(model, device, options)
    metadata = {"medfound_card": card.to_json(), "medfound_preset": preset.to_json()}
    rows: list[dict] = []
    with progress_bar(len(mine), "embedding", enabled=options.progress and ctx.is_main) as advance:
        for batch in _loader(dataset, options, device):
            for source, reason in batch["errors"]:
                log.warning("skipped %s", skip_message(source, reason))
            summary.skipped.extend(batch["errors"])
            if batch["tensor"] is not None:
                outputs = runner(batch["tensor"])
                rows.extend(_rows(batch["items"], outputs, model, options.pool))
                summary.embedded += len(batch["items"])
            if len(rows) >= options.chunk_rows:
                store.write_chunk(rows, metadata)
                rows = []
            advance(len(batch["items"]) + len(batch["errors"]))
    store.write_chunk(rows, metadata)

    ctx.barrier()
    per_rank = ctx.gather((summary.embedded, summary.skipped))
    if ctx.world_size > 1:
        summary.embedded = sum(n for n, _ in per_rank)
        summary.skipped = [s for _, skipped in per_rank for s in skipped]
    if ctx.is_main:
        summary.total_rows = store.merge()
    ctx.barrier()
    summary.seconds = time.perf_counter() - started
    return summary


def _name_from_weights(weights: str | Path | None) -> str:
    """The model a medfound weight file was made for (its card), when no name is given."""
    from medfound.models.weights import card_in_file

    card = card_in_file(weights) if weights is not None else None
    if card is None or "name" not in card:
        raise ConfigError(
            "give --model NAME (only medfound .safetensors files name their model themselves)"
        )
    return card["name"]


def _loader(dataset: ImageDataset, options: EmbedOptions, device: torch.device) -> DataLoader:
    workers = default_workers() if options.workers is None else options.workers
    workers = min(workers, max(len(dataset), 0))
    return DataLoader(
        dataset,
        batch_size=options.batch_size,
        num_workers=workers,
        collate_fn=collate_items,
        pin_memory=device.type == "cuda",
        worker_init_fn=worker_init if workers else None,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )


class _Runner:
    """The model on its device, in the fastest form the options allow; returns CPU float32."""

    def __init__(self, model: FoundationModel, device: torch.device, options: EmbedOptions):
        self.device = device
        self.batch_size = options.batch_size
        self.memory_format = (
            torch.channels_last if model.card.spatial_dims == 2 else torch.channels_last_3d
        )
        model = model.to(device).eval().to(memory_format=self.memory_format)
        forward = model if options.pool == "avg" else model.forward_features
        self.compiled = options.compile
        if options.compile:
            # On CPU, max-autotune adds inductor's C++ GEMM templates: 0.83 of the GEMM rate for
            # BiT-R50x1 at 448 here, against 0.77 for the default mode (at a longer compile).
            mode = "max-autotune" if device.type == "cpu" else None
            forward = torch.compile(forward, mode=mode, dynamic=False)
        self.forward = forward
        self.autocast = options.precision == "bf16"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        n = batch.shape[0]
        if self.compiled and n < self.batch_size:
            # A fixed batch shape avoids recompiling for the last, smaller batch.
            pad = batch[-1:].expand(self.batch_size - n, *batch.shape[1:])
            batch = torch.cat([batch, pad])
        batch = batch.to(self.device, non_blocking=True).contiguous(
            memory_format=self.memory_format
        )
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if self.autocast
            else contextlib.nullcontext()
        )
        if self.compiled:
            # Freezing (weights folded as constants) applies under no_grad, not inference_mode:
            # measured here, 0.78 vs 0.70 of the GEMM rate for BiT-R50x1 at 448.
            grad_mode, freezing = torch.no_grad(), _inductor_freezing()
        else:
            grad_mode, freezing = torch.inference_mode(), contextlib.nullcontext()
        with grad_mode, autocast, freezing:
            out = self.forward(batch)
        return out[:n].float().cpu()


def _inductor_freezing():
    """Inductor's freezing folds weights into the graph: the fastest CPU inference it offers."""
    import torch._inductor.config as inductor_config

    return inductor_config.patch(freezing=True)


def _rows(items: list[dict], outputs: torch.Tensor, model: FoundationModel, pool: str):
    for item, output in zip(items, outputs, strict=True):
        row = {
            "path": item["source"],
            "source_id": item["source_id"],
            "modality": item["modality"] or "",
            "preset": item["preset"],
            "embedding": output.reshape(-1).tolist() if pool == "none" else output.tolist(),
        }
        if pool == "none":
            row["shape"] = list(output.shape)
        row.update(
            {
                "model": model.card.name,
                "weights_sha256": model.weights_sha256 or "",
                "random_init": model.random_init,
                "medfound_version": __version__,
            }
        )
        yield row
