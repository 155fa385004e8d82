"""`medfound pretrain genesis`: Models Genesis restorative pretraining on whole CT/MRI scans (or 2D).

Cubes are cut on the fly from the volumes (data/cubes.py), corrupted on the device
(methods/genesis) and restored by the Genesis U-Net (methods/restoration.py) on the one training loop
(engine/trainer.py). Everything a run does is in its typed config (GenesisConfig), saved as
RUN_DIR/config.yaml; the trained network lands in RUN_DIR/genesis.safetensors with its card.
"""

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from medfound.data import CubeDataset, collect_sources
from medfound.data.sources import ImageSource
from medfound.engine.config import resolve_run_config
from medfound.engine.loop_config import RESUMABLE_FIELDS
from medfound.engine.trainer import TrainSummary, train
from medfound.errors import ConfigError, ImageReadError, first_items, skip_message
from medfound.io.dicom import uneven_slice_steps
from medfound.io.presets import get_preset
from medfound.io.raster import RASTER_SUFFIXES
from medfound.methods.genesis.corrupt import CorruptionConfig
from medfound.methods.restoration import GenesisRestoration
from medfound.models import load_model
from medfound.tasks.genesis_config import (
    MODALITY_PRESETS,
    RECIPES,
    GenesisConfig,
)
from medfound.tasks.run_inputs import absolute_paths, fingerprint, shareable_provenance

__all__ = ["GenesisConfig", "pretrain_genesis"]

log = logging.getLogger(__name__)


def pretrain_genesis(
    run_dir: str | Path,
    config: GenesisConfig | None = None,
    *,
    config_file: str | Path | None = None,
    overrides: dict | None = None,
    resume: bool = False,
) -> TrainSummary:
    """Run (or with `resume`, continue) Genesis pretraining into `run_dir`.

    Pass a full `config` (used as it is: build one for a recipe with `GenesisConfig.for_recipe`),
    or build one from defaults, the recipe, `config_file` (YAML) and `overrides`; a resumed run
    takes the config saved in `run_dir`.
    """
    run_dir = Path(run_dir)
    if config is None:
        config = _resolve_config(run_dir, config_file, absolute_paths(overrides or {}), resume)
    config.validate()
    if config.compat_batchnorm and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Several ranks make BatchNorm global; the original's local batch statistics are 1-process.
        raise ConfigError("compat_batchnorm reproduces a single-process original: run one process")
    fields = {"data": config.data, "val_data": config.val_data, "init": config.init}
    config = dataclasses.replace(config, **absolute_paths(fields))

    model = _load_network(config)
    sources, problems = collect_sources(config.data, group_series=True)
    for source, reason in problems:
        log.warning("skipped %s", skip_message(source, reason))
    if not sources:
        found = "; ".join(skip_message(s, r) for s, r in problems) or "no supported volume files"
        raise ConfigError(f"data {config.data}: no volumes to train on ({found})")
    if config.dims == 3:
        _refuse_images(sources)
        _refuse_uneven_series(sources)
    train_sources, val_sources, val_problems = _split(sources, config)
    problems += val_problems
    per_epoch = len(train_sources) // (config.batch_size // config.cubes_per_volume)
    config = _with_epoch_settings(config, max(per_epoch, 1))

    dataset = _cubes(train_sources, config)
    val_dataset = _cubes(val_sources, config) if val_sources else None
    if config.compat_batchnorm:
        from medfound.models.unet3d import use_batch_statistics

        use_batch_statistics(model.network)
    corruption = CorruptionConfig(**config.corruption_fields())
    provenance = shareable_provenance(config, train_sources + val_sources, model)
    method = GenesisRestoration(model.train(), corruption, provenance=provenance)
    summary = train(
        method,
        dataset,
        config,
        run_dir,
        resume=resume,
        data_fingerprint=fingerprint(train_sources + val_sources),
        val_dataset=val_dataset,
    )
    summary.skipped.update(dict(problems))
    return summary


def _resolve_config(run_dir: Path, config_file, overrides: dict, resume: bool) -> GenesisConfig:
    """Defaults, the recipe, the file, the flags; a resumed run's saved config."""
    arguments = {"config_file": config_file, "overrides": overrides, "resume": resume}
    config = resolve_run_config(GenesisConfig, run_dir, may_change=RESUMABLE_FIELDS, **arguments)
    if resume or config.recipe == "medfound":  # the medfound recipe is the class's defaults
        return config
    return resolve_run_config(
        GenesisConfig,
        run_dir,
        may_change=RESUMABLE_FIELDS,
        base=RECIPES[config.recipe],
        **arguments,
    )


def _with_epoch_settings(config: GenesisConfig, steps_per_epoch: int) -> GenesisConfig:
    """The settings the config counts in epochs, as steps (the loop counts steps)."""
    filled = {
        name: count * steps_per_epoch
        for name, count in config.epoch_settings().items()
        if getattr(config, name) is None
    }
    return dataclasses.replace(config, **filled)


def _load_network(config: GenesisConfig):
    init = None if config.init == "random" else config.init
    model = load_model(config.model_name(), init, random_init=init is None, seed=config.seed)
    card = model.card
    if card.spatial_dims != config.dims or not hasattr(model.network, "encode"):
        raise ConfigError(
            f"model {card.name!r} is not a {config.dims}D restoration network; Genesis "
            f"pretraining takes unet3d_genesis.* (--dims 3) or unet2d_genesis.* (--dims 2)"
        )
    if init is None:
        log.info("%s: initialised randomly (seed %d), as init: random asks", card.name, config.seed)
    return model


def _refuse_images(sources: list[ImageSource]) -> None:
    """2D image files given for 3D cubes: said before training (their suffix tells), not per step."""
    images = [
        s.id for s in sources if not s.series and s.paths[0].suffix.lower() in RASTER_SUFFIXES
    ]
    if images:
        raise ConfigError(
            f"{len(images)} 2D image file(s) where volumes are needed for 3D cubes: "
            f"{first_items(images, 3)}; remove them, or pretrain on 2D images with --dims 2"
        )


def _refuse_uneven_series(sources: list[ImageSource]) -> None:
    """DICOM series with uneven slice steps (a missing slice): their cubes would be stretched where
    the slice is missing, so they are refused before training (headers only are read)."""
    uneven = []
    for source in (s for s in sources if s.series):
        try:
            steps = uneven_slice_steps(source.paths)
        except ImageReadError:
            continue  # unreadable: reported per item when the volume is read
        if steps is not None:
            uneven.append(f"{source.id} ({steps[0]:.3g} to {steps[1]:.3g} mm)")
    if uneven:
        raise ConfigError(
            f"{len(uneven)} DICOM series with uneven slice steps (a missing slice?): "
            f"{first_items(uneven, 3)}; cubes need one spacing: remove or complete them"
        )


def _split(sources: list[ImageSource], config: GenesisConfig):
    """(training, validation) volumes and the problems of --val-data: --val-data when given, else a
    seeded share of --data when validating, else all for training."""
    if config.validate_every is None and not config.epoch_settings():
        return sources, [], []
    if config.val_data:
        val, problems = collect_sources(config.val_data, group_series=True)
        for source, reason in problems:
            log.warning("skipped %s", skip_message(source, reason))
        held = {s.id for s in val}
        overlap = [s.id for s in sources if s.id in held]
        if overlap:
            raise ConfigError(f"val_data overlaps data: {overlap[:3]} are in both")
        if not val:
            raise ConfigError(f"val_data {config.val_data}: no volumes found")
        return sources, val, problems
    if len(sources) < 2:
        raise ConfigError("validation needs at least 2 volumes (one held out), or --val-data")
    count = min(len(sources) - 1, max(1, round(config.val_fraction * len(sources))))
    held = set(np.random.default_rng([config.seed, 11]).permutation(len(sources))[:count])
    return (
        [s for i, s in enumerate(sources) if i not in held],
        [s for i, s in enumerate(sources) if i in held],
        [],
    )


def _cubes(sources: list[ImageSource], config: GenesisConfig) -> CubeDataset:
    return CubeDataset(
        sources,
        get_preset(MODALITY_PRESETS[config.modality]),
        cube=config.cube_size(),
        cubes_per_volume=config.cubes_per_volume,
        target_spacing=config.spacing(),
        foreground_threshold=config.foreground_threshold,
        foreground_fraction=config.foreground_fraction,
        small=config.small_volumes,
        cache_mb=config.cache_mb,
        seed=config.seed,
        dims=config.dims,
    )
