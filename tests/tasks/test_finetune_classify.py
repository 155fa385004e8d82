"""`finetune classify` end to end on generated images: learning, outputs, splits, resume, errors."""

import csv
import json

import pytest
import torch

from medfound.errors import ConfigError
from medfound.methods.classification import load_classifier
from medfound.tasks.finetune_classify import finetune_classify
from tests.tasks.classify_fixtures import write_labelled_images

FAST = {
    "model": "timm:resnet10t",
    "init": "random",
    "image_size": 32,
    "batch_size": 8,
    "optimizer": "adamw",
    "lr": 3e-3,
    "epochs": 4,
    "validate_every": 3,
    "early_stop_patience": None,
    "val_fraction": 0.25,
    "test_fraction": 0.25,
    "bootstrap": 50,
    "device": "cpu",
    "workers": 0,
    "progress": False,
    "tensorboard": False,
}


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    return write_labelled_images(tmp_path_factory.mktemp("images"), patients=24)


seen_sizes: set[tuple[int, ...]] = set()  # the input sizes the classifier of `run` was given


@pytest.fixture(scope="module")
def run(labels, tmp_path_factory):
    from medfound.methods.classification import Classifier

    out = tmp_path_factory.mktemp("run") / "run"
    forward = Classifier.forward

    def recording(self, x, *args, **kwargs):
        seen_sizes.add(tuple(x.shape[2:]))
        return forward(self, x, *args, **kwargs)

    Classifier.forward = recording
    try:
        return out, finetune_classify(out, overrides={**FAST, "data": str(labels)})
    finally:
        Classifier.forward = forward


def test_images_are_read_at_the_asked_size_not_the_presets(run):
    assert seen_sizes == {(32, 32)}  # timm:resnet10t's path preset would read them at 224


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_validation_auc_rises_from_the_zero_head_and_the_test_auc_is_high(run):
    out, result = run
    aucs = [r["val_macro_auc"] for r in _rows(out / "validation.jsonl")]
    assert max(aucs) > 0.9  # the untrained, zero-initialised head scores 0.5 exactly
    auc = result.metrics["macro_auc"]
    assert auc["value"] > 0.9
    assert auc["low"] <= auc["value"] <= auc["high"]
    assert auc["n_resamples"] == 50
    assert set(result.metrics["per_class"]) == {"bright", "dark"}


def test_outputs_a_person_can_read(run):
    out, result = run
    for name in ("metrics.json", "roc.png", "predictions.csv", "splits.csv", "config.yaml"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["split_counts"] == result.counts
    assert saved["classes"] == ["bright", "dark"]
    with open(out / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == result.counts["test"]
    for row in rows:
        assert float(row["bright"]) + float(row["dark"]) == pytest.approx(1, abs=1e-4)


def test_splits_never_put_a_patient_in_two_splits(run):
    out, _ = run
    with open(out / "splits.csv") as fh:
        rows = list(csv.DictReader(fh))
    by_patient = {}
    for row in rows:
        by_patient.setdefault(row["patient"], set()).add(row["split"])
    assert all(len(s) == 1 for s in by_patient.values())
    assert {r["split"] for r in rows} == {"train", "val", "test"}


def test_the_exported_classifier_is_the_best_validated_one(run):
    out, result = run
    classifier, _ = load_classifier(out)
    best = torch.load(sorted((out / "checkpoints").glob("best-step-*.pt"))[0], weights_only=True)
    assert best["step"] == result.training.best_step
    state = classifier.state_dict()
    for key, value in best["model"].items():
        assert torch.equal(state[key], value), key


def test_a_killed_run_resumes_exactly(labels, tmp_path, monkeypatch):
    settings = {**FAST, "data": str(labels), "epochs": 2, "checkpoint_every": 3}
    whole = finetune_classify(tmp_path / "whole", overrides=settings)
    from medfound.engine import trainer

    real_step = trainer._Loop._step

    def dying(self, images, targets):
        if self.state.step == 4:
            raise KeyboardInterrupt("killed")
        return real_step(self, images, targets)

    monkeypatch.setattr(trainer._Loop, "_step", dying)
    with pytest.raises(KeyboardInterrupt):
        finetune_classify(tmp_path / "killed", overrides=settings)
    monkeypatch.setattr(trainer._Loop, "_step", real_step)
    resumed = finetune_classify(tmp_path / "killed", resume=True)
    assert resumed.training.start_step == 3
    a, _ = load_classifier(tmp_path / "whole")
    b, _ = load_classifier(tmp_path / "killed")
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert whole.metrics == resumed.metrics


def test_no_silent_random_start(labels, tmp_path):
    settings = {**FAST, "data": str(labels)}
    del settings["init"]
    with pytest.raises(ConfigError, match="--init random"):
        finetune_classify(tmp_path / "r", overrides=settings)


def test_bad_labels_are_refused_before_training(labels, tmp_path):
    bad = labels.parent / "bad.csv"
    bad.write_text("path,label,patient\np000_0.png,dark,a\nmissing.png,bright,b\n")
    with pytest.raises(ConfigError, match=r"missing\.png"):
        finetune_classify(tmp_path / "r", overrides={**FAST, "data": str(bad)})
    assert not (tmp_path / "r").exists()


def test_predict_on_new_files_gives_the_evaluations_probabilities(run, labels, tmp_path):
    from medfound.tasks.predict import predict

    out, _ = run
    with open(out / "predictions.csv") as fh:
        evaluated = {row["id"]: row for row in csv.DictReader(fh)}
    (tmp_path / "broken.png").write_bytes(b"not an image")
    summary = predict(out, [*evaluated, tmp_path / "broken.png"], tmp_path / "pred", workers=0)
    assert summary.predicted == len(evaluated)
    assert [s for s, _ in summary.skipped] == [str(tmp_path / "broken.png")]
    with open(tmp_path / "pred" / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        expected = evaluated[row["id"]]
        for name in ("bright", "dark"):
            assert float(row[name]) == pytest.approx(float(expected[name]), abs=1e-5)
        assert row["predicted"] == max(("bright", "dark"), key=lambda c: float(row[c]))


def test_two_ranks_fine_tune_like_one_process_and_one_rank_evaluates(labels, tmp_path):
    from tests.distributed import torchrun

    settings = {**FAST, "data": str(labels), "epochs": 2, "bootstrap": 20}
    one = finetune_classify(tmp_path / "one", overrides=settings)
    flags = []
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{flag[2:]}")
        elif value is not None:
            flags += [flag, str(value)]
    done = torchrun(
        "-m", "medfound.cli.main", "finetune", "classify", "--out", str(tmp_path / "two"), *flags
    )
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["split_counts"] == one.counts
    rows = {run: _rows(tmp_path / run / "validation.jsonl") for run in ("one", "two")}
    assert [r["step"] for r in rows["one"]] == [r["step"] for r in rows["two"]]
    for a, b in zip(rows["one"], rows["two"], strict=True):  # global BatchNorm: the same run
        assert a["val_macro_auc"] == pytest.approx(b["val_macro_auc"], abs=0.02)


def test_a_validation_split_without_both_labels_is_refused_before_training(tmp_path):
    labels = write_labelled_images(tmp_path / "images", patients=6)
    rows = labels.read_text().splitlines()
    given = [rows[0] + ",split"] + [
        f"{row},{'val' if row.split(',')[1] == 'dark' and i < 4 else 'train'}"
        for i, row in enumerate(rows[1:])
    ]
    labels.write_text("\n".join(given) + "\n")
    with pytest.raises(ConfigError, match="validation AUC is undefined"):
        finetune_classify(tmp_path / "r", overrides={**FAST, "data": str(labels)})
    assert not (tmp_path / "r").exists()


def test_a_label_subset_smaller_than_a_batch_trains_with_a_smaller_batch(labels, tmp_path):
    import yaml

    settings = {**FAST, "data": str(labels), "epochs": 1, "label_fraction": 0.1}
    result = finetune_classify(tmp_path / "run", overrides=settings)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert result.counts["train"] < FAST["batch_size"]
    assert saved["batch_size"] == result.counts["train"]
    assert result.counts["unused"] > 0


def test_predict_takes_images_and_volumes_together_and_says_which_were_sliced(run, tmp_path):
    from medfound.tasks.predict import predict
    from tests.factories import write_nifti

    out, _ = run
    import numpy as np

    volume = write_nifti(tmp_path / "v.nii.gz", np.ones((8, 8, 4)))
    with open(out / "predictions.csv") as fh:
        first = next(csv.DictReader(fh))["id"]
    summary = predict(out, [first, volume], tmp_path / "pred", workers=0)
    assert summary.predicted == 2 and not summary.skipped
    with open(tmp_path / "pred" / "predictions.csv") as fh:
        slices = {row["id"]: row["slices"] for row in csv.DictReader(fh)}
    assert slices == {first: "", str(volume.resolve()): "4"}
