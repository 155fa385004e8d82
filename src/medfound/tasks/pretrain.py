"""`medfound pretrain simclr`: contrastive pretraining of a 2D backbone on unlabeled images.

Everything a run does is in its typed config (SimCLRConfig: the loop's settings plus SimCLR's), saved
as RUN_DIR/config.yaml; the trained encoder lands in RUN_DIR/encoder.safetensors with its card, ready
for `medfound embed --weights RUN_DIR/encoder.safetensors`.
"""

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from medfound.data import ImageDataset, collect_sources
from medfound.engine.config import CONFIG_NAME, resolve_run_config, save_config
from medfound.engine.runtime import init_distributed, local_rank, resolve_device
from medfound.engine.trainer import RESUMABLE_FIELDS, LoopConfig, TrainSummary, train
from medfound.errors import ConfigError, skip_message
from medfound.io.presets import get_preset
from medfound.methods.simclr import SimCLR
from medfound.methods.simclr_views import preset_views
from medfound.models import load_model

log = logging.getLogger(__name__)


@dataclass
class SimCLRConfig(LoopConfig):
    """A SimCLR run: data, model, augmentation, objective and the loop (defaults: REMEDIS)."""

    data: list[str] = field(default_factory=list)  # folders, files, CSVs with a `path` column
    model: str = "bit-m-r50x1"  # REMEDIS starts from BiT-M; any 2D RGB model of the registry
    init: str = "random"  # a weight file to start from (as --weights takes), or "random"
    preset: Literal["path", "cxr"] = "path"  # reading and augmentation defaults
    image_size: int | None = None  # None: the preset's (path 224, cxr 448)
    temperature: float = 0.1
    head_layers: int = 3
    head_hidden_dim: int | None = None  # None: the encoder's embedding width
    projection_dim: int = 128
    color_strength: float | None = None  # None: the preset's (1.0)
    rotation_degrees: float | None = None  # None: the preset's (path 0, cxr 20)
    equalize_p: float | None = None  # None: the preset's (path 0, cxr 0.5)
    elastic_p: float | None = None  # None: the preset's (path 0, cxr 0.5)
    blur_p: float | None = None  # None: the preset's (0.5)

    def validate(self) -> None:
        """The loop's checks plus SimCLR's."""
        super().validate()
        if not self.data:
            raise ConfigError("data: no images given (--data FOLDER|CSV|FILE)")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.image_size is not None and self.image_size < 16:
            raise ConfigError(f"image_size must be >= 16, got {self.image_size}")

    def view_config(self):
        """The augmentation settings: the preset's, with this config's explicit values on top."""
        names = (
            "image_size",
            "color_strength",
            "rotation_degrees",
            "equalize_p",
            "elastic_p",
            "blur_p",
        )
        overrides = {n: getattr(self, n) for n in names if getattr(self, n) is not None}
        return preset_views(self.preset, **overrides)


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
    overrides = _absolute_paths(overrides or {})
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
        config, **_absolute_paths({"data": config.data, "init": config.init})
    )
    ctx = init_distributed(resolve_device(config.device, local_rank()))

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
    dataset = ImageDataset(
        sources, preset, spatial_dims=2, channels=3, native_size=views.image_size
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # the head's initialisation, identical in every run
        method = _simclr(encoder, views, config)
    if ctx.is_main:  # saved once everything checked out: a failed start leaves the folder free
        save_config(config, run_dir / CONFIG_NAME)
    summary = train(
        method, dataset, config, run_dir, resume=resume, data_fingerprint=fingerprint(sources)
    )
    summary.skipped.update(dict(problems))
    return summary


def _simclr(encoder, views, config: SimCLRConfig) -> SimCLR:
    return SimCLR(
        encoder.train(),
        views,
        temperature=config.temperature,
        head_layers=config.head_layers,
        head_hidden_dim=config.head_hidden_dim,
        projection_dim=config.projection_dim,
        provenance={"init": config.init, "config": dataclasses.asdict(config)},
    )


def fingerprint(sources) -> str:
    """A digest of the image set (resolved paths, order-free): what an exact resume requires."""
    paths = sorted(str(p.resolve()) for s in sources for p in s.paths)
    return hashlib.sha256("\n".join(paths).encode()).hexdigest()


def _absolute_paths(fields: dict) -> dict:
    """`data` and `init` as absolute paths, so that a run can be resumed from any folder."""
    fields = dict(fields)
    if fields.get("data"):
        fields["data"] = [str(Path(p).absolute()) for p in fields["data"]]
    if fields.get("init") not in (None, "random"):
        fields["init"] = str(Path(fields["init"]).absolute())
    return fields
