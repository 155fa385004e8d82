"""Validation in the training loop: held-out loss rows, best weights, early stopping, plateau decay,
items holding several samples, and exact resume of all of it."""

import json

import pytest
import torch

from medfound.engine import trainer
from medfound.engine.checkpoint import list_checkpoints, load_checkpoint
from medfound.engine.loop_config import LoopConfig
from medfound.engine.trainer import best_weights_files, train
from medfound.engine.validation import ValidationTracker, validation_chunks
from medfound.errors import ConfigError
from tests.engine.toy import (
    Classifier,
    LabelledPoints,
    NormRegression,
    Points,
    Regression,
    loop_config,
)


class Exporting(Regression):
    """Regression that records the weights it is asked to export."""

    def export(self, model, run_dir):
        self.exported = {k: v.clone() for k, v in model.state_dict().items()}
        return []


def _diverging(**changes):
    """lr 40 * 16/256 = 2.5 per step, held constant: the fit diverges, each validation worse."""
    return loop_config(lr=40.0, schedule="step", decay_every=1000, **changes)


def _rows(run, name="validation") -> list[dict]:
    return [json.loads(line) for line in (run / f"{name}.jsonl").read_text().splitlines()]


def test_validation_rows_and_the_best_weights_are_exported(tmp_path):
    method = Exporting()
    config = _diverging(max_steps=12, validate_every=4)
    summary = train(method, Points(), config, tmp_path, val_dataset=Points(24))
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == [4, 8, 12]
    losses = [r["val_loss"] for r in rows]
    assert losses[2] > losses[0]  # it did diverge
    (best_file,) = best_weights_files(tmp_path)  # older bests are dropped at checkpoints
    best = load_checkpoint(best_file)
    assert best["step"] == rows[losses.index(min(losses))]["step"] == summary.best_step
    assert torch.equal(method.exported["weight"], best["model"]["weight"])
    last = load_checkpoint(list_checkpoints(tmp_path)[-1])
    assert last["step"] == 12
    assert not torch.equal(method.exported["weight"], last["model"]["weight"])


def test_validation_loss_is_the_mean_over_the_held_out_items(tmp_path):
    method = Regression()
    val = Points(24)
    train(method, Points(), loop_config(max_steps=3, validate_every=3), tmp_path, val_dataset=val)
    with torch.no_grad():
        x = val.x
        expected = (method.model(x).squeeze(1) - x @ torch.tensor([1.0, 2, 3, 4])).pow(2).mean()
    assert _rows(tmp_path)[0]["val_loss"] == pytest.approx(float(expected), rel=1e-5)


def test_early_stopping_ends_the_run_and_a_resume_does_not_continue_it(tmp_path):
    config = _diverging(max_steps=40, validate_every=2, early_stop_patience=3)
    summary = train(Regression(), Points(), config, tmp_path, val_dataset=Points(24))
    assert summary.stopped_early
    assert summary.step == 8  # best at step 2, then three validations without improvement
    again = train(Regression(), Points(), config, tmp_path, resume=True, val_dataset=Points(24))
    assert again.step == 8 and again.start_step == 8


def test_plateau_lowers_the_rate_after_its_patience(tmp_path):
    config = loop_config(
        lr=40.0,
        max_steps=10,
        validate_every=1,
        schedule="plateau",
        plateau_patience=2,
        log_every=1,
    )
    train(Regression(), Points(), config, tmp_path, val_dataset=Points(24))
    factors = [r["lr_factor"] for r in _rows(tmp_path)]
    assert factors[:3] == [1.0, 1.0, 0.5]  # best at 1, two without improvement -> halved
    assert min(factors) < 0.5
    # The logged rate (after each step) follows the factor of the validation before that step.
    rates = {r["step"]: r["lr"] for r in _rows(tmp_path, "metrics")}
    peak = 40.0 * config.batch_size / 256
    for step in range(2, 11):
        assert rates[step] == pytest.approx(peak * factors[step - 2]), step


def test_a_kill_between_a_new_best_and_its_checkpoint_keeps_the_best_exact(tmp_path, monkeypatch):
    config = loop_config(max_steps=8, validate_every=2, checkpoint_every=4, lr=0.8)
    whole_method, killed_method = Exporting(), Exporting()
    whole = train(whole_method, Points(), config, tmp_path / "a", val_dataset=Points(24))
    real_save = trainer.save_checkpoint

    def save_or_die(run_dir, step, state, keep=2):
        if step == 8:  # best-step-8 is written, its checkpoint never is
            raise KeyboardInterrupt("killed")
        return real_save(run_dir, step, state, keep)

    monkeypatch.setattr(trainer, "save_checkpoint", save_or_die)
    with pytest.raises(KeyboardInterrupt):
        train(Exporting(), Points(), config, tmp_path / "b", val_dataset=Points(24))
    assert [p.name for p in best_weights_files(tmp_path / "b")] == [
        "best-step-00000004.pt",  # named by the checkpoint of step 4
        "best-step-00000006.pt",
        "best-step-00000008.pt",
    ]
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    train(killed_method, Points(), config, tmp_path / "b", resume=True, val_dataset=Points(24))
    assert whole.best_step == 8
    assert [p.name for p in best_weights_files(tmp_path / "b")] == ["best-step-00000008.pt"]
    for key, value in whole_method.exported.items():
        assert torch.equal(value, killed_method.exported[key]), key


def test_resume_with_validation_repeats_the_uninterrupted_run(tmp_path):
    config = loop_config(max_steps=12, validate_every=3, checkpoint_every=4, lr=0.8)
    val = Points(24)
    whole = train(NormRegression(), Points(), config, tmp_path / "a", val_dataset=val)
    with pytest.raises(KeyboardInterrupt):
        train(NormRegression(fail_at_step=7), Points(), config, tmp_path / "b", val_dataset=val)
    method = NormRegression()
    resumed = train(method, Points(), config, tmp_path / "b", resume=True, val_dataset=val)
    assert resumed.start_step == 4
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")
    assert whole.best_step == resumed.best_step
    best_a, best_b = (load_checkpoint(best_weights_files(tmp_path / r)[0]) for r in "ab")
    for key in best_a["model"]:
        assert torch.equal(best_a["model"][key], best_b["model"][key]), key


class Groups(torch.utils.data.Dataset):
    """Items of 4 samples each, keyed by (epoch, index) as data/cubes.py's volumes are."""

    keyed_by_epoch = True
    samples_per_item = 4

    def __init__(self):
        self.keys: list = []

    def __len__(self):
        return 16

    def __getitem__(self, key):
        self.keys.append(key)
        epoch, index = key
        x = torch.randn(4, 4, generator=torch.Generator().manual_seed(index * 100 + epoch))
        return {"index": index, "source": f"volume{index}", "tensor": x, "group": True}


def test_items_with_several_samples_fill_the_batch_with_their_samples(tmp_path):
    data = Groups()
    summary = train(Regression(), data, loop_config(batch_size=16, max_steps=6), tmp_path)
    assert summary.images == 6 * 16  # 4 items of 4 samples per step
    assert {epoch for epoch, _ in data.keys} == {0, 1}  # 4 steps per epoch
    assert len(data.keys) == 6 * 4


def test_a_batch_that_is_not_a_multiple_of_the_samples_per_item_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="multiple of the 4 samples"):
        train(Regression(), Groups(), loop_config(batch_size=10, max_steps=2), tmp_path)


def test_validation_chunks_partition_the_items_across_ranks():
    parts = [validation_chunks(23, 5, rank, 2) for rank in range(2)]
    assert parts[0] == [list(range(0, 5)), list(range(10, 15)), list(range(20, 23))]
    flat = sorted(i for part in parts for chunk in part for i in chunk)
    assert flat == list(range(23))


def test_tracker_counts_patience_and_decays():
    config = LoopConfig(
        schedule="plateau", validate_every=1, plateau_patience=2, early_stop_patience=3
    )
    tracker = ValidationTracker()
    outcomes = [tracker.update(v, s, config) for s, v in enumerate([3.0, 2.0, 2.5, 2.1, 2.2])]
    assert outcomes == [True, True, False, False, False]
    assert (tracker.best, tracker.best_step, tracker.lr_factor) == (2.0, 1, 0.5)
    assert tracker.stopped


def test_a_diverged_validation_is_an_error_not_a_silent_non_improvement(tmp_path):
    config = loop_config(lr=4e4, max_steps=40, validate_every=20, schedule="step", decay_every=99)
    with pytest.raises(ConfigError, match="training diverged"):
        train(Regression(), Points(), config, tmp_path, val_dataset=Points(24))


class Unreadable(Points):
    def __getitem__(self, i):
        if i == 3:
            return {"index": i, "source": "point3", "error": "point3: unreadable"}
        return super().__getitem__(i)


def test_unreadable_validation_items_are_reported(tmp_path):
    config = loop_config(max_steps=2, validate_every=2)
    summary = train(Regression(), Points(), config, tmp_path, val_dataset=Unreadable(24))
    assert summary.skipped == {"point3": "point3: unreadable"}


def test_labelled_items_pass_their_targets_to_the_method(tmp_path):
    method = Classifier()
    data = LabelledPoints()
    train(method, data, loop_config(max_steps=2, batch_size=8), tmp_path)
    expected = {int(data[i]["target"]) for i in range(len(data))}
    assert all(t.shape == (8,) and t.dtype == torch.int64 for t in method.targets_seen)
    assert {int(v) for t in method.targets_seen for v in t} <= expected


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_a_scored_method_is_validated_on_the_whole_set_and_its_best_kept(
    tmp_path, higher_is_better
):
    method = Classifier(higher_is_better)
    config = loop_config(max_steps=12, validate_every=3, batch_size=8, lr=4.0)
    summary = train(method, LabelledPoints(), config, tmp_path, val_dataset=LabelledPoints(20))
    name = f"val_{method.score_name}"
    rows = _rows(tmp_path)
    values = [r[name] for r in rows]
    best = max(values) if higher_is_better else min(values)
    assert rows[-1][f"best_{name}"] == best
    assert summary.best_step == rows[values.index(best)]["step"]
    assert method.scored == [20] * 4  # every item once, the short last chunk included
    assert load_checkpoint(best_weights_files(tmp_path)[0])[name] == best


def test_tracker_for_scores_keeps_the_highest():
    tracker = ValidationTracker(higher_is_better=True)
    config = LoopConfig(validate_every=1)
    assert [tracker.update(v, s, config) for s, v in enumerate([0.5, 0.7, 0.6])] == [
        True,
        True,
        False,
    ]
    assert (tracker.best, tracker.best_step, tracker.since_best) == (0.7, 1, 1)


def test_a_scored_method_refuses_validation_data_without_labels(tmp_path):
    config = loop_config(max_steps=2, validate_every=2, batch_size=8)
    with pytest.raises(ConfigError, match="without labels cannot be scored"):
        train(Classifier(), LabelledPoints(), config, tmp_path, val_dataset=Points(8))
