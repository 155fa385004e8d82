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
from medfound.data.crops import CropSpec
from medfound.data.datasets import KeyedConcat
from medfound.data.labelled import IndexedTargets, LabelledImageDataset
from medfound.data.labels import check_images_exist, read_label_csv
from medfound.data.sources import patient_groups
from medfound.data.tiles import RandomSlideTiles, TileOptions, plan_slides, split_slides
from medfound.data.view_pairs import ViewPairDataset
from medfound.engine.config import resolve_run_config
from medfound.engine.distributed import RankFailure, distributed, local_rank, resolve_device
from medfound.engine.loop_config import RESUMABLE_FIELDS
from medfound.engine.trainer import TrainSummary, train
from medfound.errors import ConfigError, skip_message
from medfound.evaluation.pretraining_probe import ProbeTask
from medfound.io.presets import get_preset
from medfound.methods.simclr import ProbedSimCLR, SimCLR
from medfound.models import load_model
from medfound.tasks.run_inputs import absolute_paths, fingerprint, shareable_provenance
from medfound.tasks.simclr_config import VIEW_FIELDS, SimCLRConfig

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
    if resume:
        _check_recipe_version(run_dir)
    if config is None:
        config = resolve_run_config(
            SimCLRConfig,
            run_dir,
            config_file=config_file,
            overrides=overrides,
            resume=resume,
            may_change=RESUMABLE_FIELDS,
        )
    if config.eval_data and config.validate_every is None:  # probed at every checkpoint
        config = dataclasses.replace(config, validate_every=config.checkpoint_every)
    config.validate()
    config = dataclasses.replace(
        config,
        **absolute_paths({"data": config.data, "init": config.init, "eval_data": config.eval_data}),
    )
    # the preset's view settings written into the run's config: a later change of a preset's
    # defaults cannot change what a resumed run does
    resolved = config.view_config()
    config = dataclasses.replace(config, **{n: getattr(resolved, n) for n in VIEW_FIELDS})

    # one process group for planning and training (destroying and re-creating it between the
    # two is a known NCCL hazard)
    with distributed(resolve_device(config.device, local_rank())) as ctx:
        return _pretrain(run_dir, config, resume, ctx)


def _pretrain(run_dir: Path, config: SimCLRConfig, resume: bool, ctx) -> TrainSummary:
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
    # crops are cut in the workers from each image as decoded, then resized once (data/crops.py)
    views = dataclasses.replace(config.view_config(), crop_in_worker=True)
    crops = CropSpec(views.image_size, views.crop_scale, views.crop_ratio)
    preset = get_preset(config.preset, size=views.image_size)
    # the labelled images first: a set the probe cannot score is refused before any slide is planned
    probe = _probe_data(config, preset, views.image_size) if config.eval_data else None
    sources, problems = collect_sources(config.data)
    if not sources:
        found = "; ".join(skip_message(s, r) for s, r in problems) or "no supported image files"
        raise ConfigError(f"data {config.data}: no images to train on ({found})")
    for source, reason in problems:
        log.warning("skipped %s", skip_message(source, reason))
    # a volume (CT, MR, multi-frame) gives a slice per visit, drawn anew every epoch; a whole
    # slide gives tiles_per_slide random tissue tiles per epoch; with MICLe, items are patients
    shape = {"spatial_dims": 2, "channels": 3, "native_size": views.image_size}
    slides, images = split_slides(sources)
    groups = patient_groups(config.data, images) if config.micle_p > 0 else None
    if groups is not None:
        several = sum(len(g) > 1 for g in groups)
        log.info("MICLe: %d patients, %d with several images", len(groups), several)
        if not several:
            log.warning(
                "MICLe: no patient has several images (do the CSV's paths match the data?); "
                "every pair is two crops of one image"
            )
    dataset = ViewPairDataset(
        images, preset, crops, seed=config.seed, groups=groups, micle_p=config.micle_p
    )
    if slides:
        options = _tile_options(config, views.image_size)
        tiles = RandomSlideTiles(
            _plan_across_ranks(ctx, slides, options, problems),
            preset,
            options,
            per_slide=config.tiles_per_slide,
            seed=config.seed,
            views=crops,
            **shape,
        )
        dataset = KeyedConcat([dataset, tiles])
    if not len(dataset):
        found = "; ".join(skip_message(s, r) for s, r in problems) or "no usable images"
        raise ConfigError(f"data {config.data}: nothing to train on ({found})")
    provenance = shareable_provenance(config, sources, encoder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # the head's initialisation, identical in every run
        method = _simclr(encoder, views, config, provenance, probe)
    summary = train(
        method,
        dataset,
        config,
        run_dir,
        resume=resume,
        data_fingerprint=fingerprint(sources),
        val_dataset=None if probe is None else probe["dataset"],
    )
    summary.skipped.update(dict(problems))
    return summary


# Settings that runs started before the REMEDIS recipe (projection head with biases, cxr views at
# 448 with rotation, crops on the device, every norm left out of LARS) did not save.
_RECIPE_FIELD = "lars_exclude"


def _check_recipe_version(run_dir: Path) -> None:
    """Refuse to resume a run started before the REMEDIS recipe: its head, views and LARS rule
    differ from what this version would run (and its checkpoints would not load)."""
    import yaml

    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return  # the run folder check says what is missing
    fields = yaml.safe_load(saved.read_text()) or {}
    if isinstance(fields, dict) and _RECIPE_FIELD not in fields:
        raise ConfigError(
            f"--resume: {run_dir} was started by an earlier medfound (projection head with "
            "biases, cxr views at 448 with rotation, crops on the device, every norm left out of "
            "LARS); this version runs REMEDIS's recipe and cannot continue it: finish it with the "
            "version that started it, or start a new run"
        )


def _plan_across_ranks(ctx, slides: list, options: TileOptions, problems: list) -> list:
    """Every slide's tile plan on every rank, each rank planning its share (under torchrun: a
    thousand slides planned once, not once per rank), in the order of `slides`."""
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


def _simclr(encoder, views, config: SimCLRConfig, provenance: dict, probe) -> SimCLR:
    settings = {
        "temperature": config.temperature,
        "head_layers": config.head_layers,
        "head_hidden_dim": config.head_hidden_dim,
        "projection_dim": config.projection_dim,
        "provenance": provenance,
    }
    if probe is None:
        return SimCLR(encoder.train(), views, **settings)
    return ProbedSimCLR(
        encoder.train(), views, probe=probe["task"], patients=probe["patients"], **settings
    )


def _probe_data(config: SimCLRConfig, preset, size: int) -> dict:
    """The labelled images probed while pretraining: their dataset (targets tagged with the item
    index), the probe task and each item's patient; checked before training that both halves
    of the patient split can be scored."""
    table = read_label_csv(config.eval_data)
    check_images_exist(table)
    task = ProbeTask(table.kind, tuple(table.classes), seed=config.seed)
    task.check(table.targets, table.patients, f"eval_data {config.eval_data}")
    shape = {"spatial_dims": 2, "channels": 3, "native_size": size}
    # a volume is probed by its middle slice
    items = LabelledImageDataset(table, range(len(table)), preset, slices="middle", **shape)
    log.info("probing the encoder on %d labelled images (%s)", len(table), table.kind)
    return {"dataset": IndexedTargets(items), "task": task, "patients": table.patients}
