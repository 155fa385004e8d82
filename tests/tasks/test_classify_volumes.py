"""Volumes into 2D classifiers: fine-tuning draws one slice per visit, evaluation and `predict`
score a volume by the mean over its slices."""

import csv

import numpy as np
import pytest
import torch

from medfound.data.labelled import LabelledImageDataset, SliceSampledLabelledDataset
from medfound.data.labels import read_label_csv
from medfound.data.slices import volume_slices
from medfound.io import get_preset, preprocess, read_image
from medfound.methods.classification import load_classifier, probabilities
from medfound.tasks.finetune_classify import finetune_classify
from medfound.tasks.predict import predict
from tests.factories import write_nifti
from tests.tasks.test_finetune_classify import FAST

SLICES = 5


def _volume(rng, lesion: bool) -> np.ndarray:
    """(16, 16, SLICES) noise; with `lesion`, a bright square in every slice, its size by slice."""
    volume = rng.uniform(0, 40, (16, 16, SLICES)).astype(np.float32)
    if lesion:
        for z in range(SLICES):
            half = 2 + z % 3
            volume[8 - half : 8 + half, 8 - half : 8 + half, z] += 100
    return volume


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """labels.csv (path, label, patient) over NIfTI volumes: 'lesion' or 'clear', one per patient."""
    folder = tmp_path_factory.mktemp("volumes")
    rng, rows = np.random.default_rng(0), []
    for p in range(24):
        label = "lesion" if p % 2 else "clear"
        name = f"p{p:02d}.nii.gz"
        write_nifti(folder / name, _volume(rng, p % 2 == 1), spacing=(1.0, 1.0, 3.0))
        rows.append({"path": name, "label": label, "patient": f"patient{p:02d}"})
    with open(folder / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "patient"])
        writer.writeheader()
        writer.writerows(rows)
    return folder / "labels.csv"


SHAPE = {"spatial_dims": 2, "channels": 3, "native_size": 32}


def test_training_draws_one_of_the_chosen_slices_labelled_with_its_volume(volumes):
    table = read_label_csv(volumes)
    preset = get_preset("path", size=32)
    each = SliceSampledLabelledDataset(table, [1], preset, seed=2, slices="each", **SHAPE)
    assert each.keyed_by_epoch
    drawn = [each[(epoch, 0)] for epoch in range(10)]
    assert all(d["tensor"].shape == (3, 32, 32) and "group" not in d for d in drawn)
    assert all(d["target"] == table.targets[1] and d["target"].shape == () for d in drawn)
    assert len({round(float(d["tensor"].mean()), 5) for d in drawn}) >= 3
    assert torch.equal(each[(4, 0)]["tensor"], drawn[4]["tensor"])  # a resume draws the same
    middle = SliceSampledLabelledDataset(table, [1], preset, seed=2, slices="middle", **SHAPE)
    image = read_image(table.images.item_id(1))
    expected = preprocess(volume_slices(image, "middle")[0].image, preset, **SHAPE)
    for epoch in range(4):
        assert torch.equal(middle[(epoch, 0)]["tensor"], expected)


def test_evaluation_reads_a_volume_as_all_its_slices_with_one_target(volumes):
    table = read_label_csv(volumes)
    dataset = LabelledImageDataset(table, [0, 3], get_preset("path", size=32), slices=3, **SHAPE)
    item = dataset[1]
    assert item["tensor"].shape == (3, 3, 32, 32) and item["group"]
    assert item["target"].shape == (1,) and item["target"][0] == table.targets[3]
    assert [row["index"] for row in item["slices"]] == [0, 2, 4]


@pytest.fixture(scope="module")
def run(volumes, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    settings = {**FAST, "data": str(volumes), "epochs": 8, "lr": 3e-3}
    return out, finetune_classify(out, overrides=settings)


def test_fine_tuning_on_volumes_learns_and_evaluates_one_row_per_volume(run):
    out, result = run
    assert result.metrics["macro_auc"]["value"] > 0.85
    with open(out / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == result.counts["test"]
    assert all(row["id"].endswith(".nii.gz") for row in rows)
    _, task = load_classifier(out)
    assert task["slices"] == "each" and task["slice_axis"] is None


def _mean_over_slices(run_dir, path, slices) -> np.ndarray:
    """The classifier's probabilities for each chosen slice of `path`, averaged by hand."""
    classifier, task = load_classifier(run_dir)
    preset = get_preset(task["preset"], size=task["input_size"])
    parts = volume_slices(read_image(path), slices)
    batch = torch.stack([preprocess(p.image, preset, **SHAPE) for p in parts])
    with torch.no_grad():
        return probabilities(classifier(batch), task["kind"]).mean(0).numpy()


@pytest.mark.parametrize(("slices", "count"), [(None, SLICES), ("middle", 1)])
def test_predict_scores_a_volume_by_the_mean_over_its_slices(run, volumes, tmp_path, slices, count):
    out, _ = run
    paths = [volumes.parent / "p01.nii.gz", volumes.parent / "p02.nii.gz"]
    summary = predict(out, paths, tmp_path / "pred", device="cpu", workers=0, slices=slices)
    assert summary.predicted == 2 and not summary.skipped
    with open(tmp_path / "pred" / "predictions.csv") as fh:
        rows = {row["id"]: row for row in csv.DictReader(fh)}
    for path in paths:
        row = rows[str(path.resolve())]
        assert int(row["slices"]) == count
        expected = _mean_over_slices(out, path, slices or "each")
        got = [float(row[c]) for c in ("clear", "lesion")]
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_validation_holds_one_volume_at_a_time_and_scores_it_by_its_slices(volumes):
    from medfound.engine.distributed import DistContext
    from medfound.engine.validation import Validator
    from medfound.methods.classification import ClassificationMethod, Classifier
    from medfound.models import load_model
    from medfound.tasks.classify_config import ClassifyConfig

    table = read_label_csv(volumes)
    preset = get_preset("path", size=32)
    dataset = LabelledImageDataset(table, range(6), preset, slices="each", **SHAPE)
    assert dataset.holds_volumes
    assert not LabelledImageDataset(table, range(6), preset, **SHAPE).holds_volumes  # no slicing
    encoder = load_model("timm:resnet10t", random_init=True)
    method = ClassificationMethod(Classifier(encoder, 2), "multiclass", ("clear", "lesion"))
    config = ClassifyConfig(data="x", model="m", init="random", workers=0, device="cpu")
    validator = Validator(method, dataset, config, DistContext(), torch.device("cpu"), items=4)
    assert [len(chunk) for chunk in validator.loader.batch_sampler.chunks] == [1] * 6
    seen = []
    real = method.predict
    method.predict = lambda model, images: seen.append(len(images)) or real(model, images)
    auc = validator(method.model)
    assert 0 <= auc <= 1 and seen == [4, 1] * 6  # 5 slices in forwards of at most 4, per volume
