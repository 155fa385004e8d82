"""Fine-tuning an encoder for classification (REMEDIS's fine-tuning stage, Models Genesis's target
classification tasks) as a method for the training loop.

`Classifier` = any medfound encoder (FoundationModel: BiT/REMEDIS, SimCLR, Genesis, timm, MONAI) +
a head on its pooled embedding: one linear layer, zero-initialised by default as BiT and REMEDIS do
(`zero_init_logits_layer`), or for 3D Genesis encoders the Genesis head (Linear(512, 1024) -> ReLU ->
Linear). `freeze_until` is REMEDIS's `fine_tune_after_block` (models/blocks.py). Multi-class tasks
use softmax cross-entropy, multi-label tasks a sigmoid cross-entropy masked where a label is unknown
(NaN), each with optional class weights. Validation scores the macro ROC AUC.
"""

import json
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from medfound.errors import ConfigError, WeightsError
from medfound.methods.base import MethodOutput
from medfound.methods.pretrained_file import save_pretrained
from medfound.methods.supervised_augment import flip_and_crop
from medfound.models import FoundationModel, load_model
from medfound.models.blocks import STAGES, freeze_until, frozen_norms
from medfound.models.weights import CARD_KEY

WEIGHTS_FILE = "classifier.safetensors"
HEAD_PREFIX = "extra/classifier_head/"
TASK_KEY = "medfound_classifier"  # the file's metadata: classes, kind, head

Kind = Literal["multiclass", "multilabel"]


class Classifier(nn.Module):
    """Encoder + head: [0, 1] images (B, C, ...) -> logits (B, outputs)."""

    def __init__(
        self,
        encoder: FoundationModel,
        outputs: int,
        *,
        head: Literal["auto", "linear", "genesis"] = "auto",
        zero_init: bool = True,
        freeze: int = -1,
    ):
        super().__init__()
        self.encoder = encoder
        self.head_kind = resolve_head(head, encoder)
        dim = encoder.card.embedding_dim
        if self.head_kind == "genesis":
            last = nn.Linear(1024, outputs)
            self.head: nn.Module = nn.Sequential(nn.Linear(dim, 1024), nn.ReLU(), last)
        else:
            last = self.head = nn.Linear(dim, outputs)
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.freeze = freeze
        freeze_until(encoder, freeze)
        self.train(encoder.training)  # frozen norms in eval mode from the start

    def train(self, mode: bool = True) -> "Classifier":
        """Training mode, except what is frozen: its normalisation statistics stay as loaded.

        The frozen norms are found anew each time: under DDP the loop replaces every BatchNorm
        module (global statistics) after this classifier was built."""
        super().train(mode)
        if mode and self.freeze == STAGES:
            self.encoder.eval()
        for module in frozen_norms(self.encoder.network):
            module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def resolve_head(head: str, encoder: FoundationModel) -> str:
    """'auto' is the Genesis head for 3D Genesis encoders and a linear layer otherwise."""
    if head == "auto":
        return "genesis" if encoder.card.family == "genesis" else "linear"
    if head not in ("linear", "genesis"):
        raise ConfigError(f"head must be auto, linear or genesis, got {head!r}")
    return head


class ClassificationMethod:
    """Supervised classification for engine/trainer.py (methods/base.py's ScoredMethod)."""

    score_name = "macro_auc"
    higher_is_better = True

    def __init__(
        self,
        classifier: Classifier,
        kind: Kind,
        classes: tuple[str, ...],
        *,
        class_weights: torch.Tensor | None = None,
        augment: bool = True,
        min_crop_scale: float = 0.8,
        rotation_degrees: float = 0.0,
        provenance: dict | None = None,
        reading: dict | None = None,
    ):
        """`reading`: how inputs were read ({"preset": name, "input_size": ...}), stored in the
        exported file so that prediction reads new images the same way."""
        if kind not in ("multiclass", "multilabel"):
            raise ConfigError(f"kind must be multiclass or multilabel, got {kind!r}")
        if class_weights is not None and len(class_weights) != len(classes):
            raise ConfigError(
                f"{len(class_weights)} class weights for {len(classes)} classes {list(classes)}"
            )
        self.model = classifier
        self.kind, self.classes = kind, tuple(classes)
        self.class_weights = class_weights
        self.augment, self.min_crop_scale = augment, min_crop_scale
        self.rotation_degrees = rotation_degrees
        self.provenance = provenance or {}
        self.reading = reading or {}

    def prepare(self, images: torch.Tensor, seed: int, targets: torch.Tensor | None = None):
        """(augmented images, targets): flips, a small crop and (when asked) a rotation, seeded
        per step."""
        if targets is None:
            raise ConfigError("classification training needs a label for every training image")
        if self.augment:
            generator = torch.Generator().manual_seed(seed)
            images = flip_and_crop(
                images,
                generator,
                min_scale=self.min_crop_scale,
                rotation_degrees=self.rotation_degrees,
            )
        return images, targets

    def loss(self, model: nn.Module, inputs) -> MethodOutput:
        """Softmax or masked sigmoid cross-entropy (float32 even under bf16 autocast)."""
        images, targets = inputs
        logits = model(images).float()
        return MethodOutput(loss=classification_loss(logits, targets, self.kind, self._weights()))

    def _weights(self) -> torch.Tensor | None:
        if self.class_weights is None:
            return None
        return self.class_weights.to(next(self.model.parameters()).device)

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, K) on the CPU."""
        return probabilities(model(images).float(), self.kind).cpu()

    def score(self, outputs: list, targets: list) -> float:
        """Macro ROC AUC over the classes defined in the validation set."""
        from medfound.evaluation.classification import classification_metrics

        scores = torch.cat(outputs).numpy()
        truth = torch.cat([t.cpu() for t in targets]).numpy()
        metrics = classification_metrics(truth, scores, self.kind, self.classes)
        if metrics["macro_auc"] is None:
            raise ConfigError(
                "validation AUC is undefined: no class has both positive and negative items in "
                "the validation split (add validation data, or change the split fractions)"
            )
        return metrics["macro_auc"]

    def export(self, model: Classifier, run_dir: Path) -> list[Path]:
        """RUN_DIR/classifier.safetensors: the fine-tuned encoder with its card (usable by
        `medfound embed`), the head under extra/classifier_head/, classes and kind in metadata."""
        head = {f"{HEAD_PREFIX}{k}": v for k, v in model.head.state_dict().items()}
        task = {"kind": self.kind, "classes": list(self.classes), "head": model.head_kind}
        task |= self.reading
        path = save_pretrained(
            model.encoder,
            Path(run_dir) / WEIGHTS_FILE,
            method="finetune-classify",
            description=f"fine-tuned with medfound for {self.kind} {list(self.classes)}",
            provenance=self.provenance,
            extra_tensors=head,
            extra_metadata={TASK_KEY: json.dumps(task)},
        )
        return [path]


def classification_loss(
    logits: torch.Tensor, targets: torch.Tensor, kind: Kind, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy (multiclass: int targets (B,)) or sigmoid cross-entropy over the known labels
    (multilabel: float targets (B, K), NaN = unknown), weighted per class when `weights` is given
    (multiclass: CE class weights; multilabel: positive-class weights)."""
    if kind == "multiclass":
        return F.cross_entropy(logits, targets.long(), weight=weights)
    known = ~torch.isnan(targets)
    per_label = F.binary_cross_entropy_with_logits(
        logits, torch.where(known, targets, 0.0), pos_weight=weights, reduction="none"
    )
    # Averaged over the known labels only: an unknown label neither pulls nor dilutes.
    return (per_label * known).sum() / known.sum().clamp(min=1)


def probabilities(logits: torch.Tensor, kind: Kind) -> torch.Tensor:
    """Softmax (multiclass) or sigmoid (multilabel) of logits."""
    return logits.softmax(1) if kind == "multiclass" else logits.sigmoid()


def load_classifier(path: str | Path, device: str = "cpu") -> tuple[Classifier, dict]:
    """A fine-tuned classifier from its classifier.safetensors (or the run folder holding it), in
    eval mode, and its task ({kind, classes, head} and how inputs were read: preset, input_size)."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise WeightsError(f"{path}: no fine-tuned classifier here (medfound finetune classify)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            head = {
                k.removeprefix(HEAD_PREFIX): fh.get_tensor(k)
                for k in fh.keys()  # noqa: SIM118 (safe_open is not a dict)
                if k.startswith(HEAD_PREFIX)
            }
    except Exception as exc:  # safetensors' own error types: not a safetensors file
        raise WeightsError(f"{path}: unreadable weight file ({type(exc).__name__}: {exc})") from exc
    if TASK_KEY not in metadata or CARD_KEY not in metadata or not head:
        raise WeightsError(f"{path}: not a medfound classifier (no head or classes in the file)")
    try:
        task = json.loads(metadata[TASK_KEY])
        name = json.loads(metadata[CARD_KEY])["name"]
        classes, head_kind = task["classes"], task["head"]
    except (ValueError, TypeError, KeyError) as exc:
        raise WeightsError(f"{path}: unreadable classifier metadata ({exc})") from exc
    encoder = load_model(name, path)
    classifier = Classifier(encoder, len(classes), head=head_kind, zero_init=False)
    try:
        classifier.head.load_state_dict(head)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: the classifier head does not match: {exc}") from exc
    return classifier.to(device).eval(), task
