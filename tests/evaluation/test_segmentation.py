"""Segmentation metrics against MONAI (Dice, IoU), hand-computed HD95, the documented empty-mask
conventions, and the Genesis mean IoU against torchmetrics' two-class Jaccard index."""

import warnings

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, MeanIoU
from monai.networks.utils import one_hot
from torchmetrics.classification import MulticlassJaccardIndex

from medfound.evaluation.segmentation import genesis_mean_iou, segmentation_metrics


def _monai(metric_cls, pred, true, num_classes):
    as_onehot = lambda a: one_hot(torch.from_numpy(a)[None, None], num_classes)  # noqa: E731
    metric = metric_cls(include_background=False, reduction="none")
    return metric(as_onehot(pred), as_onehot(true))[0].numpy()


@pytest.mark.parametrize("shape", [(24, 20), (10, 12, 8)])
def test_dice_and_iou_against_monai(shape):
    rng = np.random.default_rng(len(shape))
    num_classes = 4
    true = rng.integers(0, num_classes, shape)
    pred = np.where(rng.random(shape) < 0.7, true, rng.integers(0, num_classes, shape))
    m = segmentation_metrics(pred, true, num_classes, classes=("bg", "a", "b", "c"))
    dice = _monai(DiceMetric, pred, true, num_classes)
    iou = _monai(MeanIoU, pred, true, num_classes)
    assert list(m["per_class"]) == ["a", "b", "c"]
    for c, name in enumerate(("a", "b", "c")):
        assert m["per_class"][name]["dice"] == pytest.approx(dice[c], rel=1e-5)
        assert m["per_class"][name]["iou"] == pytest.approx(iou[c], rel=1e-5)
        assert m["per_class"][name]["true_voxels"] == np.sum(true == c + 1)
        assert m["per_class"][name]["hd95"] is not None
    assert m["mean_dice"] == pytest.approx(dice.mean(), rel=1e-5)
    assert m["mean_iou"] == pytest.approx(iou.mean(), rel=1e-5)


def test_hd95_of_shifted_squares_by_hand_with_spacing():
    true = np.zeros((32, 32), np.int64)
    true[8:16, 8:16] = 1
    pred = np.roll(true, 3, axis=0)  # every boundary point 3 rows from the other mask's boundary
    assert segmentation_metrics(pred, true, 2)["per_class"]["1"]["hd95"] == pytest.approx(3.0)
    m = segmentation_metrics(pred, true, 2, spacing=(2.0, 0.5))
    assert m["per_class"]["1"]["hd95"] == pytest.approx(6.0)  # 3 rows of 2 mm
    assert m["mean_hd95"] == pytest.approx(6.0)
    # 3D, shifted along the last axis with its spacing 1.5
    cube = np.zeros((12, 12, 12), np.int64)
    cube[3:8, 3:8, 2:7] = 1
    m3 = segmentation_metrics(np.roll(cube, 2, axis=2), cube, 2, spacing=(1.0, 1.0, 1.5))
    assert m3["per_class"]["1"]["hd95"] == pytest.approx(3.0)


def test_empty_masks_follow_the_documented_convention():
    empty = np.zeros((16, 16), np.int64)
    some = empty.copy()
    some[4:8, 4:8] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no MONAI warning about empty masks: never called on them
        both = segmentation_metrics(empty, empty, 2)["per_class"]["1"]
        missed = segmentation_metrics(empty, some, 2)["per_class"]["1"]
        invented = segmentation_metrics(some, empty, 2)
    assert both == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "true_voxels": 0, "pred_voxels": 0}
    assert (missed["dice"], missed["iou"], missed["hd95"]) == (0.0, 0.0, None)
    assert invented["per_class"]["1"]["hd95"] is None and invented["mean_hd95"] is None
    assert invented["mean_dice"] == 0.0


def test_torch_inputs_and_bad_inputs():
    true = torch.zeros(8, 8, dtype=torch.long)
    true[2:5, 2:5] = 1
    assert segmentation_metrics(true.clone(), true, 2)["mean_dice"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        segmentation_metrics(np.zeros((4, 4)), np.zeros((4, 5)), 2)
    with pytest.raises(ValueError, match="lie in"):
        segmentation_metrics(np.full((4, 4), 2), np.zeros((4, 4)), 2)
    with pytest.raises(ValueError, match="spacing"):
        segmentation_metrics(true, true, 2, spacing=(1.0, 1.0, 1.0))


@pytest.mark.parametrize("shape", [(16, 16), (8, 8, 6)])
def test_genesis_mean_iou_against_torchmetrics(shape):
    rng = np.random.default_rng(7)
    truth = (rng.random(shape) < 0.3).astype(np.int64)
    probabilities = 0.3 * truth + 0.7 * rng.random(shape)  # overlapping classes
    jaccard = MulticlassJaccardIndex(num_classes=2, average="macro")
    expected = np.mean(
        [
            jaccard(
                torch.from_numpy((probabilities > t).astype(np.int64)).flatten(),
                torch.from_numpy(truth).flatten(),
            ).item()
            for t in (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
        ]
    )
    assert genesis_mean_iou(probabilities, truth) == pytest.approx(expected, rel=1e-6)
    # inflated by the easy background class: above the foreground IoU at threshold 0.5
    foreground = segmentation_metrics((probabilities > 0.5).astype(int), truth, 2)["mean_iou"]
    assert genesis_mean_iou(probabilities, truth) > foreground


def test_genesis_mean_iou_leaves_out_a_class_absent_from_both():
    truth = np.zeros((4, 4), np.int64)
    assert genesis_mean_iou(np.full((4, 4), 0.3), truth) == 1.0  # background only, all right
    truth[0, 0] = 1
    # nothing predicted: foreground IoU 0, background 15/16 at every threshold
    assert genesis_mean_iou(np.zeros((4, 4)), truth) == pytest.approx((0 + 15 / 16) / 2)
    with pytest.raises(ValueError, match="binary"):
        genesis_mean_iou(np.zeros((4, 4)), truth * 2)
