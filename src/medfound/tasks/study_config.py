"""The config of a label-efficiency study (`medfound study --config STUDY.yaml`): tasks x encoders
x protocols x label fractions x seeds.

No torch at import. A task names its data as `medfound finetune classify|segment` would read them
(`options` holds any further field of ClassifyConfig / SegmentConfig: image_size, format, ...); an
encoder is a model name and its starting weights (`random` for training from scratch); `finetune`
holds the loop settings of every fine-tuning cell.
"""

from dataclasses import dataclass
from typing import Any, Literal

from medfound.engine.config import setting
from medfound.errors import ConfigError

PROTOCOLS = ("knn", "linear_probe", "finetune", "segment")
PROBE_PROTOCOLS = ("knn", "linear_probe")


@dataclass
class StudyTask:
    """One labelled data set and what is learnt from it."""

    name: str = setting("", "Short name (in tables and plots)")
    kind: Literal["classify", "segment"] = setting("classify", "classify or segment")
    data: str = setting("", "What finetune classify|segment --data takes")
    options: dict[str, Any] = setting(dict, "Further ClassifyConfig/SegmentConfig fields")


@dataclass
class StudyEncoder:
    """A starting point: a model and its weights (or random)."""

    name: str = setting("", "Short name (in tables and plots)")
    model: str = setting("", "Any medfound model name")
    init: str = setting("random", "Weight file, or random (training from scratch)")


@dataclass
class StudyConfig:
    """A study: every cell of tasks x encoders x protocols x fractions x seeds."""

    tasks: list[StudyTask] = setting(list, "Labelled data sets")
    encoders: list[StudyEncoder] = setting(list, "Starting points to compare")
    protocols: list[str] = setting(
        lambda: ["knn", "linear_probe", "finetune"],
        "knn, linear_probe, finetune (classification tasks), segment (segmentation tasks)",
    )
    fractions: list[float] = setting(lambda: [0.01, 0.05, 0.1, 0.25, 1.0], "Label fractions")
    seeds: list[int] = setting(lambda: [0, 1, 2], "Seeds: label subsets and training")
    reference: str = setting("scratch", "The encoder label savings are measured against")
    split_seed: int = setting(0, "Seed of the patient-level train/val/test split (fixed)")
    val_fraction: float = setting(0.15, "Share of patients for validation")
    test_fraction: float = setting(0.15, "Share of patients for the test")
    bootstrap: int = setting(1000, "Patient-level bootstrap resamples per cell")
    finetune: dict[str, Any] = setting(dict, "Loop settings of fine-tuning cells (epochs, lr, ...)")
    embed_batch_size: int = setting(32, "Batch size when embedding for the probes")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    workers: int | None = setting(None, "Decoding workers (none: half the cores, <= 8)")
    heatmap_fraction: float | None = setting(None, "Fraction of the heatmap (none: the smallest)")
    keep_checkpoints: bool = setting(
        False, "Keep a finished fine-tuning cell's training checkpoints (its weights are kept)"
    )

    def validate(self) -> None:
        """Refuse an empty or inconsistent grid by field name."""
        for name in ("tasks", "encoders", "protocols", "fractions", "seeds"):
            if not getattr(self, name):
                raise ConfigError(f"study: {name} is empty")
        for group in (self.tasks, self.encoders):
            names = [item.name for item in group]
            if "" in names or len(set(names)) != len(names):
                raise ConfigError(f"study: names must be given and distinct, got {names}")
            if any(not n.replace("_", "").replace("-", "").isalnum() for n in names):
                raise ConfigError(f"study: names may hold letters, digits, - and _: {names}")
        unknown = sorted(set(self.protocols) - set(PROTOCOLS))
        if unknown:
            raise ConfigError(f"study: unknown protocol(s) {unknown}; choose from {PROTOCOLS}")
        for task in self.tasks:
            if not task.data:
                raise ConfigError(f"study task {task.name}: data is empty")
        if any(not 0 < f <= 1 for f in self.fractions):
            raise ConfigError(f"study: fractions must be in (0, 1], got {self.fractions}")
        # Cells and tables name a fraction by its short form (:g): two fractions must differ there.
        for name, values in (
            ("fractions", [f"{f:g}" for f in self.fractions]),
            ("seeds", self.seeds),
            ("protocols", self.protocols),
        ):
            if len(set(values)) != len(values):
                raise ConfigError(f"study: {name} repeat: {getattr(self, name)}")
        if self.heatmap_fraction is not None and self.heatmap_fraction not in self.fractions:
            raise ConfigError(
                f"study: heatmap_fraction {self.heatmap_fraction} is not one of the fractions"
            )
        for name in ("val_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"study: {name} must be in (0, 1), got {getattr(self, name)}")
        if self.bootstrap < 0:
            raise ConfigError(f"study: bootstrap must be >= 0, got {self.bootstrap}")
        if not cells_of(self):
            raise ConfigError(
                "study: no cell to run (classification tasks take knn, linear_probe, finetune; "
                "segmentation tasks take segment)"
            )
        if self.reference not in {e.name for e in self.encoders}:
            raise ConfigError(f"study: reference {self.reference!r} is not one of the encoders")
        for encoder in self.encoders:
            if not encoder.model:
                raise ConfigError(f"study encoder {encoder.name}: model is empty")


@dataclass(frozen=True)
class Cell:
    """One run of the study grid."""

    task: str
    encoder: str
    protocol: str
    fraction: float
    seed: int

    @property
    def id(self) -> str:
        """A folder-safe name: task__encoder__protocol__f0.05__s1."""
        return f"{self.task}__{self.encoder}__{self.protocol}__f{self.fraction:g}__s{self.seed}"


def cells_of(config: StudyConfig) -> list[Cell]:
    """Every cell, in a stable order (probes of a task and encoder first: they share embeddings);
    classification tasks take knn/linear_probe/finetune, segmentation tasks segment."""
    out = []
    for task in config.tasks:
        wanted = ("segment",) if task.kind == "segment" else ("knn", "linear_probe", "finetune")
        protocols = [p for p in config.protocols if p in wanted]
        for encoder in config.encoders:
            for protocol in protocols:
                for fraction in sorted(config.fractions):
                    for seed in config.seeds:
                        out.append(Cell(task.name, encoder.name, protocol, fraction, seed))
    return out
