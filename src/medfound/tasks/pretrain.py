"""`medfound pretrain simclr`: contrastive pretraining of a 2D backbone on unlabeled images.

Everything a run does is in its typed config (SimCLRConfig: the loop's settings plus SimCLR's), saved
as RUN_DIR/config.yaml; the trained encoder lands in RUN_DIR/encoder.safetensors with its card, ready
for `medfound embed --weights RUN_DIR/encoder.safetensors`.
"""

import dataclasses
import logging
from pathlib import Path

import torch

from medfound.data import collect_sources
from medfound.data.datasets import KeyedConcat, SliceSampledImageDataset
from medfound.data.tiles import RandomSlideTiles, TileOptions, plan_slides, split_slides
from medfound.engine.config import resolve_run_config
from medfound.engine.distributed import RankFailure, distributed, local_rank, resolve_device
from medfound.engine.loop_config import RESUMABLE_FIELDS
from medfound.engine.trainer import TrainSummary, train
from medfound.errors import ConfigError, skip_message
from medfound.io.presets import get_preset
from medfound.methods.simclr import SimCLR
from medfound.models import load_model
from medfound.tasks.run_inputs import absolute_paths, fingerprint, shareable_provenance
from medfound.tasks.simclr_config import SimCLRConfig

__all__ = ["SimCLRConfig", "fingerprint", "pretrain_simclr", "shareable_provenance"]

log = logging.getLogger(__name__)


def pretrain_simclr(
    run_dir: str | Path,
    config: SimCLRConfig | None = None,
    *,
    config_file: str | Path | None = None,
    overrides: dict | None = None,
    resume: bool = False,
) -> TrainSummary:
    """Run (or with `resume`, continue) SimCLR pretraining into `run_dir`.

    Pass a full `config`, or build one from defaults, `config_file` (YAML) and `overrides`; a resumed
    run takes the config saved in `run_dir` (only devices, logging and checkpoint cadence may change).
    """
    run_dir = Path(run_dir)
    overrides = absolute_paths(overrides or {})
    if config is None:
        config = resolve_run_config(
            SimCLRConfig,
            run_dir,
            config_file=config_file,
            overrides=overrides,
            resume=resume,
            may_change=RESUMABLE_FIELDS,
        )
    config.validate()
    config = dataclasses.replace(
        config, **absolute_paths({"data": config.data, "init": config.init})
    )

    init = None if config.init == "random" else config.init
    encoder = load_model(config.model, init, random_init=init is None, seed=config.seed)
    card = encoder.card
    if card.spatial_dims != 2 or card.in_channels != 3:
        raise ConfigError(
            f"model {card.name!r} takes {card.spatial_dims}D {card.in_channels}-channel input; "
            "SimCLR pretraining here needs a 2D RGB backbone"
        )
    if init is None:
        log.info("%s: initialised randomly (seed %d), as init: random asks", card.name, config.seed)
    views = config.view_config()
    preset = get_preset(config.preset, size=views.image_size)
    sources, problems = collect_sources(config.data)
    if not sources:
        found = "; ".join(skip_message(s, r) for s, r in problems) or "no supported image files"
        raise ConfigError(f"data {config.data}: no images to train on ({found})")
    for source, reason in problems:
        log.warning("skipped %s", skip_message(source, reason))
    # a volume (CT, MR, multi-frame) gives a slice per visit, drawn anew every epoch; a whole
    # slide gives tiles_per_slide random tissue tiles per epoch
    shape = {"spatial_dims": 2, "channels": 3, "native_size": views.image_size}
    slides, images = split_slides(sources)
    dataset = SliceSampledImageDataset(images, preset, seed=config.seed, **shape)
    if slides:
        tiles = RandomSlideTiles(
            _plan_across_ranks(slides, _tile_options(config, views.image_size), problems, config),
            preset,
            _tile_options(config, views.image_size),
            per_slide=config.tiles_per_slide,
            seed=config.seed,
            **shape,
        )
        dataset = KeyedConcat([dataset, tiles])
    if not len(dataset):
        found = "; ".join(skip_message(s, r) for s, r in problems) or "no usable images"
        raise ConfigError(f"data {config.data}: nothing to train on ({found})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # the head's initialisation, identical in every run
        method = _simclr(encoder, views, config, shareable_provenance(config, sources, encoder))
    summary = train(
        method, dataset, config, run_dir, resume=resume, data_fingerprint=fingerprint(sources)
    )
    summary.skipped.update(dict(problems))
    return summary


def _plan_across_ranks(slides: list, options: TileOptions, problems: list, config) -> list:
    """Every slide's tile plan on every rank, each rank planning its share (under torchrun: a
    thousand slides planned once, not once per rank), in the order of `slides`."""
    device = resolve_device(config.device, local_rank())
    with distributed(device) as ctx:
        mine, my_problems, failure = [], [], None
        try:
            mine = plan_slides(slides[ctx.rank :: ctx.world_size], options, my_problems)
        except Exception as exc:  # said on every rank, so that none waits at the gather
            if ctx.world_size == 1:
                raise
            failure = f"rank {ctx.rank} failed planning slides: {type(exc).__name__}: {exc}"
        parts = ctx.gather((mine, my_problems, failure))
    failures = [failure for _, _, failure in parts if failure]
    if failures:
        raise RankFailure(failures[0])
    by_slide = {plan.slide: plan for plans, _, _ in parts for plan in plans}
    problems.extend(problem for _, rank_problems, _ in parts for problem in rank_problems)
    return [by_slide[s.paths[0]] for s in slides if s.paths[0] in by_slide]


def _tile_options(config: SimCLRConfig, size: int) -> TileOptions:
    return TileOptions(
        mpp=config.tile_mpp,
        tile_size=size,
        min_tissue=config.min_tissue,
        slide_mpp=config.slide_mpp,
        reader=config.slide_reader,
    )


def _simclr(encoder, views, config: SimCLRConfig, provenance: dict) -> SimCLR:
    return SimCLR(
        encoder.train(),
        views,
        temperature=config.temperature,
        head_layers=config.head_layers,
        head_hidden_dim=config.head_hidden_dim,
        projection_dim=config.projection_dim,
        provenance=provenance,
    )
