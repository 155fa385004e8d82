"""`medfound study` on generated data: two tasks, two encoders, two fractions, two seeds; killed
and resumed without recomputing finished cells; nested per-patient subsets; every output."""

import csv
import re

import numpy as np
import pytest

from medfound.engine.config import from_dict
from medfound.errors import ConfigError
from medfound.models import load_model
from medfound.tasks import study as study_module
from medfound.tasks.study import run_study
from medfound.tasks.study_config import StudyConfig, cells_of
from tests.data.seg_fixtures import disc_pair, save
from tests.tasks.classify_fixtures import write_labelled_images


def _pairs(folder, count=12):
    rng = np.random.default_rng(0)
    for n in range(count):
        centre = tuple(int(v) for v in rng.integers(9, 23, 2))
        image, mask = disc_pair((32, 32), centre=centre, radius=6, seed=n)
        save(folder / f"case{n:02d}.png", image)
        save(folder / f"case{n:02d}_mask.png", mask * 255)
    return folder


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("study_data")
    labels = write_labelled_images(root / "images", patients=16)
    pairs = _pairs(root / "pairs")
    other = root / "other.safetensors"
    from medfound.methods.pretrained_file import save_pretrained

    save_pretrained(
        load_model("timm:resnet10t", random_init=True, seed=7),
        other,
        method="test",
        description="another start",
        provenance={},
    )
    data = {
        "tasks": [
            {
                "name": "bright",
                "kind": "classify",
                "data": str(labels),
                "options": {"image_size": 32},
            },
            {"name": "discs", "kind": "segment", "data": str(pairs), "options": {"patch": "32,32"}},
        ],
        "encoders": [
            {"name": "scratch", "model": "timm:resnet10t", "init": "random"},
            {"name": "other", "model": "timm:resnet10t", "init": str(other)},
        ],
        "protocols": ["knn", "linear_probe", "finetune", "segment"],
        "fractions": [0.5, 1.0],
        "seeds": [0, 1],
        "bootstrap": 20,
        "val_fraction": 0.25,
        "test_fraction": 0.25,
        "finetune": {
            "max_steps": 2,
            "batch_size": 4,
            "validate_every": 2,
            "optimizer": "adamw",
            "lr": 1e-3,
            "tensorboard": False,
            "early_stop_patience": None,
        },
        "device": "cpu",
        "workers": 0,
    }
    return from_dict(StudyConfig, data)


@pytest.fixture(scope="module")
def finished(config, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "out"
    real = study_module._run_cell
    calls = []

    def dying(config_, cell, out_):
        if len(calls) == 5:
            raise KeyboardInterrupt("killed")
        calls.append(cell.id)
        return real(config_, cell, out_)

    study_module._run_cell = dying
    try:
        with pytest.raises(KeyboardInterrupt):
            run_study(config, out)
    finally:
        study_module._run_cell = real
    resumed = run_study(config, out)
    return out, calls, resumed


def test_a_killed_study_resumes_without_recomputing_finished_cells(config, finished):
    _, before_kill, resumed = finished
    cells = cells_of(config)
    assert len(cells) == 2 * 3 * 2 * 2 + 2 * 1 * 2 * 2
    assert resumed.reused == len(before_kill) == 5
    assert not set(resumed.computed) & set(before_kill)
    assert len(resumed.computed) + resumed.reused == len(cells)


def test_results_summary_comparisons_savings_plots_and_report(config, finished):
    out, _, resumed = finished
    with open(out / "results.csv") as fh:
        results = list(csv.DictReader(fh))
    assert {(r["task"], r["protocol"]) for r in results} == {
        ("bright", "knn"),
        ("bright", "linear_probe"),
        ("bright", "finetune"),
        ("discs", "segment"),
    }
    metrics = {r["metric"] for r in results}
    assert {"macro_auc", "mean_dice"} <= metrics
    for row in results:
        if row["ci_low"]:
            assert float(row["ci_low"]) <= float(row["value"]) <= float(row["ci_high"])
    with open(out / "summary.csv") as fh:
        summary = list(csv.DictReader(fh))
    auc = [r for r in summary if r["metric"] == "macro_auc"]
    assert all(r["n_seeds"] == "2" for r in auc)
    assert (out / "comparisons.csv").is_file() and (out / "label_saving.csv").is_file()
    assert list((out / "plots").glob("*.svg")) and list((out / "plots").glob("*.png"))
    html = resumed.report.read_text()
    assert "<table" in html and "http://" not in html and "https://" not in html


def test_label_subsets_are_nested_per_patient_and_never_touch_held_out_patients(finished):
    out, _, _ = finished
    with open(out / "subsets.csv") as fh:
        rows = list(csv.DictReader(fh))
    for task in {r["task"] for r in rows}:
        for seed in {r["seed"] for r in rows}:
            chosen = [r for r in rows if r["task"] == task and r["seed"] == seed]
            half = {r["id"] for r in chosen if r["in_0.5"] == "1"}
            full = {r["id"] for r in chosen if r["in_1.0"] == "1"}
            assert half and half < full  # nested and smaller
            assert all(r["split"] == "train" for r in chosen if r["id"] in full)
            patients_half = {r["patient"] for r in chosen if r["id"] in half}
            for r in chosen:  # a patient is in a subset with all its items, or not at all
                assert (r["id"] in half) == (r["patient"] in patients_half)


def test_the_same_subset_is_given_to_every_encoder(finished, config):
    out, _, _ = finished
    with open(out / "results.csv") as fh:
        results = list(csv.DictReader(fh))
    n_train = {}
    for r in results:
        if r["protocol"] == "finetune":
            n_train.setdefault((r["fraction"], r["seed"]), set()).add(r["n_train"])
    assert n_train and all(len(v) == 1 for v in n_train.values())


def test_another_config_in_the_same_folder_is_refused(config, finished):
    out, _, _ = finished
    import dataclasses

    with pytest.raises(ConfigError, match="another study"):
        run_study(dataclasses.replace(config, seeds=[5]), out)


def test_report_reproduces_the_html_from_results_alone(finished):
    from medfound.tasks.study_report import render_report

    out, _, resumed = finished
    before = resumed.report.read_text()
    assert render_report(out).read_text() == before


def test_two_ranks_share_the_cells_and_rank_0_aggregates_the_same_results(config, tmp_path):
    import dataclasses

    import yaml

    from tests.distributed import torchrun

    small = dataclasses.replace(
        config, tasks=config.tasks[:1], protocols=["knn"], seeds=[0], fractions=[0.5, 1.0]
    )
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(dataclasses.asdict(small)))
    one = run_study(small, tmp_path / "one")
    done = torchrun(
        "-m", "medfound.cli.main", "study", "--config", str(path), "--out", str(tmp_path / "two")
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^knn\s+scratch\s+\d\.\d{3}\s+\d\.\d{3}$", done.stdout, re.M), done.stdout
    assert (tmp_path / "two" / "results.csv").read_text() == (
        tmp_path / "one" / "results.csv"
    ).read_text()
    assert one.cells == 4 and (tmp_path / "two" / "report.html").is_file()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seeds": [0, 0]}, "seeds repeat"),
        ({"protocols": ["knn", "knn"]}, "protocols repeat"),
        ({"fractions": [0.1, 0.1000001]}, "fractions repeat"),
        ({"heatmap_fraction": 0.3}, "heatmap_fraction"),
        ({"protocols": ["segment"], "tasks": []}, "tasks is empty"),
    ],
)
def test_grids_that_would_mix_or_lose_results_are_refused(config, changes, message):
    import dataclasses

    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(config, **changes).validate()


def test_a_grid_without_any_cell_is_refused(config):
    import dataclasses

    only_classify = dataclasses.replace(config, tasks=config.tasks[:1], protocols=["segment"])
    with pytest.raises(ConfigError, match="no cell to run"):
        only_classify.validate()


def test_settings_that_change_no_result_may_change_when_continuing(config, finished):
    import dataclasses

    out, _, _ = finished
    again = run_study(dataclasses.replace(config, embed_batch_size=7), out)
    assert not again.computed


def test_each_fine_tuning_cell_trained_on_its_subset_and_kept_only_its_weights(finished):
    out, _, _ = finished
    with open(out / "subsets.csv") as fh:
        subsets = list(csv.DictReader(fh))
    cells = [
        c for c in (out / "cells").iterdir() if "__finetune__" in c.name or "__segment__" in c.name
    ]
    assert len(cells) == 2 * 2 * 2 * 2
    for cell in cells:
        task, _, _, fraction, seed = cell.name.split("__")
        fraction, seed = fraction[1:], seed[1:]
        column = f"in_{float(fraction)}"
        expected = {
            r["id"]: ("train" if r[column] == "1" else "unused")
            if r["split"] == "train"
            else r["split"]
            for r in subsets
            if r["task"] == task and r["seed"] == seed
        }
        with open(cell / "run" / "splits.csv") as fh:
            used = {r["id"]: r["split"] for r in csv.DictReader(fh)}
        assert used == expected, cell.name
        assert not (cell / "run" / "checkpoints").exists()  # dropped once the result was written
        assert list((cell / "run").glob("*.safetensors"))


def _one_fine_tuning_cell(config: StudyConfig, **changes) -> StudyConfig:
    import dataclasses

    return dataclasses.replace(
        config,
        tasks=config.tasks[:1],
        encoders=config.encoders[:1],
        protocols=["finetune"],
        fractions=[1.0],
        seeds=[0],
        **changes,
    )


def test_checkpoints_are_kept_when_asked(config, tmp_path):
    run_study(_one_fine_tuning_cell(config, keep_checkpoints=True), tmp_path / "kept")
    (cell,) = (tmp_path / "kept" / "cells").iterdir()
    assert list((cell / "run" / "checkpoints").glob("*.pt"))


def test_a_fine_tuning_cell_cut_mid_run_resumes_from_its_checkpoint(config, tmp_path, caplog):
    import logging

    from medfound.engine import trainer

    one_cell = _one_fine_tuning_cell(
        config,
        finetune={
            **config.finetune,
            "max_steps": 4,
            "checkpoint_every": 1,
            "validate_every": 4,
            "log_every": 1,
        },
    )
    real, steps = trainer._Loop._step, []

    def cut(self, *args):
        if len(steps) == 2:
            raise KeyboardInterrupt("cut")
        steps.append(1)
        return real(self, *args)

    trainer._Loop._step = cut
    try:
        with pytest.raises(KeyboardInterrupt):
            run_study(one_cell, tmp_path / "cut")
    finally:
        trainer._Loop._step = real
    (cell,) = (tmp_path / "cut" / "cells").iterdir()
    assert not (cell / "result.json").exists()
    with caplog.at_level(logging.INFO, logger="medfound.engine.trainer"):
        again = run_study(one_cell, tmp_path / "cut")
    assert again.computed == [cell.name]
    assert any(
        "resumed from" in r.getMessage() and "step-00000002" in r.getMessage()
        for r in caplog.records
    )
    with open(cell / "run" / "metrics.csv") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4]
