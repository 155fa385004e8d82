"""`medfound embed`: images -> one Parquet row per image with its embedding.

Decoding and preprocessing run in DataLoader workers; the model runs in inference mode, channels-last,
optionally under bf16 autocast and torch.compile (with inductor freezing). Under torchrun each rank
embeds its shard and rank 0 merges. Output is resumable and crash-safe (see tasks/parquet_writer.py):
a re-run continues only with the same identity (model, weights, pooling, preprocessing, precision,
DICOM series grouping, UID policy), and sources are identified by resolved paths, so a resume from
another folder or with absolute paths finds what is done. DICOM UIDs appear as keyed hashes unless
`keep_uids` (privacy.py).
"""

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import ConcatDataset, Dataset

from medfound import __version__
from medfound.data import ImageDataset, collect_sources
from medfound.data.slices import FRAME_MARK, parse_slices
from medfound.data.sources import may_be_volume
from medfound.data.tiles import TILE_MARK, TileOptions, split_slides
from medfound.engine.distributed import distributed, local_rank, resolve_device
from medfound.engine.loader import autocast, build_loader
from medfound.engine.progress import progress_bar
from medfound.errors import ConfigError, skip_message
from medfound.io.presets import get_preset
from medfound.models import FoundationModel, load_model
from medfound.privacy import uid_policy
from medfound.tasks.inference import rebatched
from medfound.tasks.parquet_writer import ResumableParquetWriter

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
    keep_uids: bool = False  # DICOM UIDs as they are, instead of keyed hashes (privacy.py)
    slices: str | int = "each"  # volumes into 2D models: each, middle or N slices (data/slices.py)
    slice_axis: int | None = None  # None: the acquisition axis
    # whole slides (data/tiles.py): tiles of image_size (else the model's) px at tile_mpp (None:
    # the model's recommended magnification, else 0.5)
    tile_mpp: float | None = None
    tile_overlap: float = 0.0
    min_tissue: float = 0.5
    slide_mpp: float | None = None  # level-0 um/px over what slides state
    slide_reader: str = "auto"  # auto, tiffslide or openslide (io/slide.py)
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
        if self.chunk_rows < 1:
            raise ConfigError(f"--chunk-rows must be >= 1, got {self.chunk_rows}")
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError(f"--image-size must be >= 1, got {self.image_size}")
        self.slices = parse_slices(self.slices)
        if self.slice_axis not in (None, 0, 1, 2):
            raise ConfigError(f"--slice-axis must be 0, 1 or 2, got {self.slice_axis}")


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
    with distributed(device) as ctx:
        if model is None:
            model_name = model_name or _name_from_weights(weights)
            model = load_model(model_name, weights, random_init=random_init, device="cpu")
        return _embed(inputs, out, model, options, ctx, device)


def _embed(inputs, out: Path, model: FoundationModel, options: EmbedOptions, ctx, device):
    card = model.card
    preset_overrides = {"size": options.image_size} if options.image_size else {}
    preset = get_preset(options.preset or card.preset, **preset_overrides)
    _check_input_size(card, preset)
    # Rank 0's policy for every rank: nodes without a shared home would each make their own salt.
    uids = ctx.on_main(lambda: uid_policy(keep=options.keep_uids))
    group = options.dicom_series if options.dicom_series is not None else card.spatial_dims == 3
    recorded_preset = _resolved(preset, card).to_json()
    identity = {
        "model": card.name,
        "weights_sha256": model.weights_sha256 or "random-init",
        "pool": options.pool,
        "preset": recorded_preset,
        "precision": options.precision,
        "dicom_series": group,
        "uids": uids.identity,
    }
    if card.resize is not None:  # a published recipe: its interpolation and crop are part of it
        identity["resize"] = dataclasses.asdict(card.resize)
    if card.spatial_dims == 2:  # which slices of a volume and which tiles of a slide are rows
        identity["slices"] = {"mode": options.slices, "axis": options.slice_axis}
        identity["tiles"] = _tile_options(options, card).grid()
    metadata = {
        "medfound_card": card.to_json(),
        "medfound_preset": recorded_preset,
    }
    writer = ResumableParquetWriter(out, identity, _schema(options.pool, metadata), ctx.rank)
    started = time.perf_counter()
    summary = EmbedSummary(out=out)
    sources, problems = collect_sources(inputs, group_series=group, uids=uids)
    # read once, by rank 0, before any rank writes: the rows done and the volumes/slides complete
    done, complete = ctx.on_main(lambda: _written(writer))
    todo = [s for s in sources if s.id not in done and s.id not in complete]
    summary.already_done = len(sources) - len(todo)
    mine = todo[ctx.rank :: ctx.world_size]
    summary.skipped.extend(problems if ctx.is_main else [])

    slides, images = split_slides(mine)
    dataset = ImageDataset(
        images,
        preset,
        **card.preprocess_args(),
        uids=uids,
        slices=options.slices,
        slice_axis=options.slice_axis,
    )
    if slides:
        tiles = _slide_tiles(slides, out, card, preset, options, summary, done)
        dataset = ConcatDataset([dataset, tiles])
    runner = _Runner(model, device, options)
    # A volume's slices make one item of any size: the loader then takes one item at a time (its
    # workers hold a volume each, not a batch of volumes) and `rebatched` joins items into model
    # batches. Folders of plain image files keep whole loader batches.
    volumes = card.spatial_dims == 2 and any(may_be_volume(s) for s in images)
    loader = build_loader(
        dataset, device, options.workers, batch_size=1 if volumes else options.batch_size
    )
    if volumes:
        loader = rebatched(loader, options.batch_size)
    pending = _Rows(model, options.pool, skip=done)
    with progress_bar(
        len(dataset), "embedding", enabled=options.progress and ctx.is_main
    ) as advance:
        for batch in loader:
            for source, reason in batch["errors"]:
                log.warning("skipped %s", skip_message(source, reason))
            summary.skipped.extend(batch["errors"])
            if batch["tensor"] is not None:
                summary.embedded += pending.add(batch["items"], runner(batch["tensor"]))
            if len(pending) >= options.chunk_rows:
                pending.flush_into(writer)
            advance(len(batch["items"]) + len(batch["errors"]))
    pending.flush_into(writer)

    ctx.barrier()
    per_rank = ctx.gather((summary.embedded, summary.skipped))
    if ctx.world_size > 1:
        summary.embedded = sum(n for n, _ in per_rank)
        summary.skipped = [s for _, skipped in per_rank for s in skipped]
    summary.total_rows = ctx.on_main(writer.merge)
    summary.seconds = time.perf_counter() - started
    return summary


def _written(writer: ResumableParquetWriter) -> tuple[set[str], set[str]]:
    """The rows written by earlier runs (their paths), and the volumes (slices) and slides (tiles)
    whose every row is among them."""
    table = writer.read_columns(["path", "slice_count", "tile_count"])
    rows: dict[str, set[str]] = {}
    wanted: dict[str, int] = {}
    for path, slices, tiles in zip(
        table["path"], table["slice_count"], table["tile_count"], strict=True
    ):
        count, mark = (slices, FRAME_MARK) if slices is not None else (tiles, TILE_MARK)
        if count is not None:
            base = path.rsplit(mark, 1)[0]
            rows.setdefault(base, set()).add(path)  # distinct: a merge cut short repeats rows
            wanted[base] = count
    complete = {base for base, paths in rows.items() if len(paths) >= wanted[base]}
    return set(table["path"]), complete


def _resolved(preset, card):
    """The preset with the model's size and fit filled in: what a run records (the same record as
    before presets left the size to the model)."""
    size = preset.size
    if size is None and preset.name in ("cxr", "path"):  # the two presets that carried a size
        size = card.input_size
    fit = preset.fit or (card.resize.fit if card.resize else "stretch")
    return dataclasses.replace(preset, size=size, fit=fit)


def _check_input_size(card, preset) -> None:
    """A transformer with fixed position embeddings takes its own size only: refuse another up
    front, not at the first batch."""
    if card.family != "vit" or preset.size in (None, card.input_size):
        return
    if not card.architecture_args.get("dynamic_img_size"):
        raise ConfigError(
            f"model {card.name!r} takes {card.input_size} px images only (fixed position "
            f"embeddings); --image-size {preset.size} cannot be used with it"
        )


def _tile_options(options: EmbedOptions, card) -> TileOptions:
    size = options.image_size or card.input_size
    size = int(size if isinstance(size, int) else size[0])
    if card.resize is not None and card.resize.fit == "crop":
        # a recipe that resizes, then crops (Prov-GigaPath: 256 -> 224): tiles of the size it
        # resizes to (as preprocess does), so the crop sees the magnification it was trained at
        size = card.resize.resized_side(size)
    return TileOptions(
        mpp=options.tile_mpp if options.tile_mpp is not None else (card.mpp or 0.5),
        tile_size=size,
        overlap=options.tile_overlap,
        min_tissue=options.min_tissue,
        slide_mpp=options.slide_mpp,
        reader=options.slide_reader,
    )


def _slide_tiles(slides, out: Path, card, preset, options: EmbedOptions, summary, done) -> Dataset:
    """The tissue tiles of `slides` not yet in `done`, as a dataset (thumbnails written beside OUT);
    slides that cannot be opened or planned are reported and skipped."""
    from medfound.data.tiles import SlideTileDataset, draw_thumbnail, plan_slides
    from medfound.tasks.tile import thumbnail_path

    tile_options = _tile_options(options, card)
    tile_options.validate()
    if card.spatial_dims != 2 or card.in_channels != 3:
        reason = f"a whole slide needs a 2D RGB model; {card.name} is not one"
        summary.skipped.extend((source.id, reason) for source in slides)
        slides = []

    def thumbnail(plan) -> None:
        draw_thumbnail(plan, thumbnail_path(out, plan.slide))

    plans = plan_slides(slides, tile_options, summary.skipped, on_plan=thumbnail)
    plans = [plan.without(done) for plan in plans]
    return SlideTileDataset(plans, preset, tile_options, **card.preprocess_args())


def _name_from_weights(weights: str | Path | None) -> str:
    """The model a medfound weight file was made for (its card), when no name is given."""
    from medfound.models.weights import card_in_file

    card = card_in_file(weights) if weights is not None else None
    if card is None or "name" not in card:
        raise ConfigError(
            "give --model NAME (only medfound .safetensors files name their model themselves)"
        )
    return card["name"]


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
        self.precision = options.precision

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[0] > self.batch_size:  # the slices of volumes: at most a batch per forward
            return torch.cat([self(part) for part in batch.split(self.batch_size)])
        n = batch.shape[0]
        if self.compiled and n < self.batch_size:
            # A fixed batch shape avoids recompiling for the last, smaller batch.
            pad = batch[-1:].expand(self.batch_size - n, *batch.shape[1:])
            batch = torch.cat([batch, pad])
        batch = batch.to(self.device, non_blocking=True).contiguous(
            memory_format=self.memory_format
        )
        if self.compiled:
            # Freezing (weights folded as constants) applies under no_grad, not inference_mode:
            # measured here, 0.78 vs 0.70 of the GEMM rate for BiT-R50x1 at 448.
            grad_mode, freezing = torch.no_grad(), _inductor_freezing()
        else:
            grad_mode, freezing = torch.inference_mode(), contextlib.nullcontext()
        with grad_mode, autocast(self.device, self.precision), freezing:
            out = self.forward(batch)
        return out[:n].float().cpu()


def _inductor_freezing():
    """Inductor's freezing folds weights into the graph: the fastest CPU inference it offers."""
    import torch._inductor.config as inductor_config

    return inductor_config.patch(freezing=True)


_SCALARS = ("path", "source_id", "modality", "preset")
# Slices of a volume given to a 2D model (null for images): index, position along the slice axis,
# and how many slices its volume gives (so that resume knows a volume is complete).
_SLICE_COLUMNS = {
    "slice_index": pa.int32(),
    "slice_position_mm": pa.float64(),
    "slice_count": pa.int32(),
}
# Tiles of a whole slide (null otherwise): where the tile lies, at which resolution, and how many
# tiles its slide gives (for resume).
_TILE_COLUMNS = {
    "slide": pa.string(),
    "level": pa.int32(),
    "x": pa.int64(),
    "y": pa.int64(),
    "tile_mpp": pa.float64(),
    "tile_count": pa.int32(),
}


def _schema(pool: str, metadata: dict[str, str]) -> pa.Schema:
    """The output's columns (see the README's layout); `shape` only with --pool none."""
    fields = [pa.field(name, pa.string()) for name in _SCALARS]
    fields += [pa.field(name, kind) for name, kind in (_SLICE_COLUMNS | _TILE_COLUMNS).items()]
    fields.append(pa.field("embedding", pa.list_(pa.float32())))
    if pool == "none":
        fields.append(pa.field("shape", pa.list_(pa.int32())))
    fields += [pa.field(name, pa.string()) for name in ("model", "weights_sha256")]
    fields += [pa.field("random_init", pa.bool_()), pa.field("medfound_version", pa.string())]
    return pa.schema(fields, metadata={k.encode(): v.encode() for k, v in metadata.items()})


class _Rows:
    """Rows waiting for the next chunk: small columns as lists, embeddings as NumPy blocks (a Python
    float per value would cost ~30x the memory with --pool none)."""

    def __init__(self, model: FoundationModel, pool: str, skip: set[str] = frozenset()):
        self.pool = pool
        self.skip = skip  # rows written by an earlier run (slices of a volume cut short)
        self.run = {
            "model": model.card.name,
            "weights_sha256": model.weights_sha256 or "",
            "random_init": model.random_init,
            "medfound_version": __version__,
        }
        self._reset()

    def _reset(self) -> None:
        self.columns: dict[str, list] = {
            name: [] for name in (*_SCALARS, *_SLICE_COLUMNS, *_TILE_COLUMNS)
        }
        self.blocks: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.columns["path"])

    def add(self, items: list[dict], outputs: torch.Tensor) -> int:
        """One batch's items and model outputs (CPU float32), a row per image or slice; returns
        the rows added (slices already written are left out)."""
        keep = []
        for item in items:
            for part in item.get("slices") or [None]:
                mark = "" if part is None else f"{FRAME_MARK}{part['index']}"
                keep.append(item["source"] + mark not in self.skip)
                if not keep[-1]:
                    continue
                self.columns["path"].append(item["source"] + mark)
                self.columns["source_id"].append(item["source_id"] + mark)
                self.columns["modality"].append(item["modality"] or "")
                self.columns["preset"].append(item["preset"])
                for column, key in zip(
                    _SLICE_COLUMNS, ("index", "position_mm", "count"), strict=True
                ):
                    self.columns[column].append(None if part is None else part[key])
                tile = item.get("tile") or {}
                for column in _TILE_COLUMNS:
                    self.columns[column].append(tile.get(column))
        self.blocks.append(outputs.numpy()[np.asarray(keep, dtype=bool)])
        return sum(keep)

    def flush_into(self, writer: ResumableParquetWriter) -> None:
        """Write the waiting rows as one chunk and start anew."""
        n = len(self)
        if n == 0:
            return
        outputs = np.concatenate(self.blocks)
        vectors = {"embedding": outputs.reshape(n, -1).astype(np.float32, copy=False)}
        if self.pool == "none":
            vectors["shape"] = np.tile(np.asarray(outputs.shape[1:], np.int32), (n, 1))
        columns = self.columns | {key: [value] * n for key, value in self.run.items()}
        writer.write_chunk(columns, vectors)
        self._reset()
