"""Metrics, bootstrap intervals, probes, tables and figures shared by every task that reports a
figure. Heavy dependencies (scikit-learn, MONAI, matplotlib) are imported inside the functions."""

from medfound.evaluation.bootstrap import (
    Figure,
    PatientResampler,
    bootstrap_ci,
    bootstrap_figure,
    bootstrap_figures,
)
from medfound.evaluation.classification import (
    ResampledFigures,
    classification_metrics,
    flat_figures,
    headline_metric,
)
from medfound.evaluation.probe import Probe, fit_knn, fit_logistic
from medfound.evaluation.segmentation import genesis_mean_iou, segmentation_metrics

__all__ = [
    "Figure",
    "PatientResampler",
    "Probe",
    "ResampledFigures",
    "bootstrap_ci",
    "bootstrap_figure",
    "bootstrap_figures",
    "classification_metrics",
    "fit_knn",
    "fit_logistic",
    "flat_figures",
    "genesis_mean_iou",
    "headline_metric",
    "segmentation_metrics",
]
