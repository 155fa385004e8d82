"""SimCLR (REMEDIS's contrastive stage) as a method for the training loop: views, model, loss, export.

The trained module is the encoder (a FoundationModel, which applies its own input normalisation)
followed by the SimCLR v2 projection head; the loss is NT-Xent over the projections of both views.
Export writes the encoder alone, with its card, in medfound's safetensors format (the head is kept in
the same file under `extra/projection_head/` for fine-tuning from a head layer).
"""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from medfound.errors import ConfigError
from medfound.evaluation.pretraining_probe import ProbeTask, probe_figures
from medfound.methods.base import MethodOutput
from medfound.methods.nt_xent import nt_xent
from medfound.methods.pretrained_file import save_pretrained
from medfound.methods.projection_head import ProjectionHead
from medfound.methods.simclr_views import SimCLRViews, ViewConfig
from medfound.models import FoundationModel

ENCODER_FILE = "encoder.safetensors"


class SimCLRModel(nn.Module):
    """Encoder then projection head: [0, 1] views -> projections."""

    def __init__(self, encoder: FoundationModel, head: ProjectionHead):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(views))


class SimCLR:
    """The SimCLR method (see engine/trainer.py's Method)."""

    def __init__(
        self,
        encoder: FoundationModel,
        views: ViewConfig,
        *,
        temperature: float = 0.1,
        head_layers: int = 2,
        head_hidden_dim: int | None = None,
        projection_dim: int = 128,
        provenance: dict | None = None,
    ):
        head = ProjectionHead(
            encoder.card.embedding_dim, projection_dim, head_hidden_dim, head_layers
        )
        self.model = SimCLRModel(encoder, head).to(memory_format=torch.channels_last)
        self.views = SimCLRViews(views)
        # views cut in the workers come as pairs: two rows of a batch per image
        self.rows_per_item = 2 if views.crop_in_worker else 1
        self.temperature = temperature
        self.provenance = provenance or {}

    def prepare(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        """Two augmented views per image (or per pair of crops cut in the workers), laid out
        [view-1; view-2], channels-last."""
        return self.views(images, seed=seed).contiguous(memory_format=torch.channels_last)

    def loss(self, model: nn.Module, views: torch.Tensor) -> MethodOutput:
        """NT-Xent of the projections (computed in float32 even under bf16 autocast)."""
        projections = model(views).float()
        out = nt_xent(projections, temperature=self.temperature)
        return MethodOutput(
            loss=out.loss,
            metrics={"contrastive_accuracy": out.accuracy, "contrastive_entropy": out.entropy},
        )

    def export(self, model: SimCLRModel, run_dir: Path) -> list[Path]:
        """RUN_DIR/encoder.safetensors: the encoder with its card; the head under extra/."""
        head = {f"extra/projection_head/{k}": v for k, v in model.head.state_dict().items()}
        path = save_pretrained(
            model.encoder,
            Path(run_dir) / ENCODER_FILE,
            method="simclr",
            description="SimCLR-pretrained with medfound",
            provenance=self.provenance,
            extra_tensors=head,
        )
        return [path]


class ProbedSimCLR(SimCLR):
    """SimCLR whose validation probes the encoder on labelled images (SimCLR TF2's
    `lineareval_while_pretraining`): their embeddings, a k-NN and a linear probe fitted on one half
    of their patients and scored on the other (evaluation/pretraining_probe.py). The validation
    figure is the k-NN's macro AUC (early stopping watches it); the linear probe's and the
    accuracies are logged beside it. The encoder exported is the last one.
    Targets come as IndexedTargets packs them (the item index last); `patients` is per item."""

    score_name = "knn_auc"
    higher_is_better = True
    export_best = False  # a monitor: the encoder exported is the last, not the best probed

    def __init__(self, *args, probe: ProbeTask, patients: np.ndarray, **kwargs):
        super().__init__(*args, **kwargs)
        self.probe, self.patients = probe, np.asarray(patients)

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The encoder's embeddings (B, D) on the CPU (the projection head is not probed)."""
        encoder = getattr(model, "module", model).encoder  # under DDP: the wrapped model's
        return encoder(images.contiguous(memory_format=torch.channels_last)).float().cpu()

    def score(self, outputs: list, targets: list) -> dict:
        """The probes' figures on the test half, {knn_auc, linear_auc, ...}."""
        embeddings = torch.cat(outputs).numpy()
        if not np.isfinite(embeddings).all():
            raise ConfigError(
                "the encoder's embeddings of the evaluation data are not finite: training "
                "diverged (lower --lr, or clip gradients with --clip-grad-norm)"
            )
        packed = torch.cat([t.cpu() for t in targets]).numpy()
        items = packed[:, -1].astype(np.int64)
        labels = (
            packed[:, 0].astype(np.int64) if self.probe.kind == "multiclass" else packed[:, :-1]
        )
        # a figure that is undefined (unreadable items left a class out of a half) is None: the
        # validation is logged and not counted
        return probe_figures(embeddings, labels, self.patients[items], self.probe)
