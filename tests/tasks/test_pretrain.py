"""`medfound pretrain simclr` end to end: learning, exact resume after SIGKILL, bad data, torchrun."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from medfound.engine.checkpoint import list_checkpoints, load_checkpoint
from medfound.errors import ConfigError, ImageReadError, WeightsError
from medfound.io import read_image
from medfound.io.presets import get_preset, preprocess
from medfound.methods.simclr import SimCLR
from medfound.methods.simclr_views import preset_views
from medfound.models import load_model
from medfound.tasks.pretrain import pretrain_simclr
from tests.distributed import torchrun
from tests.factories import tissue_tiles

TINY = {
    "model": "timm:test_resnet",
    "init": "random",
    "batch_size": 8,
    "image_size": 32,
    "warmup_epochs": 1.0,
    "device": "cpu",
    "progress": False,
    "log_every": 1,
}


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiles")
    tissue_tiles(folder)
    return folder


@pytest.fixture(scope="module")
def trained_run(tiles, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "simclr"
    pretrain_simclr(run, overrides={**TINY, "data": [str(tiles)], "max_steps": 4})
    return run


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "medfound.cli.main", *args]


def _cli_args(tiles, run, *extra: str) -> list[str]:
    return _cli(
        "pretrain", "simclr", "--data", str(tiles), "--model", "timm:test_resnet", "--out",
        str(run), "--init", "random", "--batch-size", "8", "--image-size", "32", "--warmup-epochs", "1",
        "--device", "cpu", "--log-every", "1", *extra,
    )  # fmt: skip


def _metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _fixed_view_loss(tiles, state: dict | None) -> float:
    """NT-Xent of a SimCLR model on the same 12 seeded view pairs of every tile."""
    preset = get_preset("path", size=32)
    images = torch.stack(
        [
            preprocess(read_image(p), preset, spatial_dims=2, channels=3, native_size=32)
            for p in sorted(tiles.glob("*.png"))
        ]
    )
    torch.manual_seed(0)
    method = SimCLR(
        load_model("timm:test_resnet", random_init=True), preset_views("path", image_size=32),
        temperature=0.5,
    )  # fmt: skip
    if state is not None:
        method.model.load_state_dict(state)
    method.model.train()
    with torch.no_grad():
        losses = [method.loss(method.model, method.prepare(images, s)).loss for s in range(12)]
    return torch.stack(losses).mean().item()


def test_simclr_learns_on_real_tiles(tiles, tmp_path):
    run = tmp_path / "run"
    overrides = {**TINY, "data": [str(tiles)], "batch_size": 16, "max_steps": 60, "lr": 16.0}
    overrides |= {"temperature": 0.5, "warmup_epochs": 0.0, "workers": 0, "log_every": 10}
    summary = pretrain_simclr(run, overrides=overrides)
    assert summary.step == 60 and summary.images == 60 * 16 and not summary.skipped
    trained = load_checkpoint(list_checkpoints(run)[-1])["model"]
    before, after = _fixed_view_loss(tiles, None), _fixed_view_loss(tiles, trained)
    assert after < before - 0.2, (before, after)
    assert [row["step"] for row in _metrics(run)] == [10, 20, 30, 40, 50, 60]


def test_sigkill_then_resume_repeats_the_uninterrupted_run(tiles, tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    args = _cli_args(tiles, killed, "--max-steps", "30", "--checkpoint-every", "1")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "checkpoints" / "step-00000003.pt").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    last = int(list_checkpoints(killed)[-1].stem.split("-")[1])
    assert 3 <= last < 30

    resumed = pretrain_simclr(killed, overrides={"progress": False}, resume=True)
    assert (resumed.start_step, resumed.step) == (last, 30)
    pretrain_simclr(whole, overrides={**TINY, "data": [str(tiles)], "max_steps": 30})

    a = load_checkpoint(list_checkpoints(killed)[-1])
    b = load_checkpoint(list_checkpoints(whole)[-1])
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["batches_consumed"] == b["batches_consumed"] == 30
    rows_a, rows_b = _metrics(killed), _metrics(whole)
    assert [r["step"] for r in rows_a] == list(range(1, 31))  # redone steps are not logged twice
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    assert [r["lr"] for r in rows_a] == [r["lr"] for r in rows_b]


def test_unreadable_images_are_reported_skipped_and_counted(tiles, tmp_path, caplog):
    data = tmp_path / "data"
    data.mkdir()
    for path in sorted(tiles.glob("*.png"))[:10]:
        (data / path.name).write_bytes(path.read_bytes())
    (data / "corrupt.png").write_bytes(b"not an image")
    (data / "cut.png").write_bytes((tiles / "ihc-00.png").read_bytes()[:60])
    summary = pretrain_simclr(
        tmp_path / "run", overrides={**TINY, "data": [str(data)], "max_steps": 3, "workers": 1}
    )
    assert summary.step == 3
    assert sorted(p.rsplit("/", 1)[1] for p in summary.skipped) == ["corrupt.png", "cut.png"]
    assert all(reason for reason in summary.skipped.values())
    assert "corrupt.png" in caplog.text and "cut.png" in caplog.text


def test_a_dataset_with_nothing_readable_stops_with_a_clear_error(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(8):
        (data / f"bad{i}.png").write_bytes(b"nope")
    with pytest.raises(ImageReadError, match=r"no batch .*\(8 unreadable of 8"):
        pretrain_simclr(
            tmp_path / "run", overrides={**TINY, "data": [str(data)], "max_steps": 2, "workers": 0}
        )


def test_data_without_images_is_refused_by_name(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images to train on"):
        pretrain_simclr(tmp_path / "run", overrides={**TINY, "data": [str(tmp_path / "empty")]})
    with pytest.raises(ConfigError, match="nowhere: no such file"):
        pretrain_simclr(tmp_path / "run2", overrides={**TINY, "data": [str(tmp_path / "nowhere")]})


def test_a_start_that_fails_leaves_the_folder_free_for_the_corrected_command(tiles, tmp_path):
    run = tmp_path / "run"
    overrides = {**TINY, "data": [str(tiles)], "init": str(tmp_path / "missing.safetensors")}
    with pytest.raises(WeightsError, match=r"missing\.safetensors: weight file not found"):
        pretrain_simclr(run, overrides=overrides)
    assert not (run / "config.yaml").exists()
    summary = pretrain_simclr(run, overrides={**TINY, "data": [str(tiles)], "max_steps": 1})
    assert summary.step == 1


def test_the_exported_encoder_holds_the_trained_weights_and_embeds(trained_run, tiles, tmp_path):
    trained = load_checkpoint(list_checkpoints(trained_run)[-1])["model"]
    encoder_file = trained_run / "encoder.safetensors"
    model = load_model("timm:test_resnet", encoder_file)
    for key, value in model.network.state_dict().items():
        assert torch.equal(value, trained[f"encoder.network.{key}"]), key
    with safe_open(str(encoder_file), framework="pt") as fh:
        head_keys = [k for k in fh.keys() if k.startswith("extra/projection_head/")]  # noqa: SIM118
        provenance = json.loads(fh.metadata()["medfound_pretraining"])
    assert len(head_keys) == sum(1 for k in trained if k.startswith("head."))
    assert provenance["method"] == "simclr" and provenance["config"]["max_steps"] == 4

    out = tmp_path / "emb.parquet"
    args = ["embed", str(tiles), "--weights", str(encoder_file), "--out", str(out)]
    done = subprocess.run(_cli(*args, "--device", "cpu"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "32 rows" in done.stderr.replace("\n", " ")


def test_a_new_run_refuses_a_folder_that_holds_one(trained_run, tiles):
    with pytest.raises(ConfigError, match="already holds a run"):
        pretrain_simclr(trained_run, overrides={**TINY, "data": [str(tiles)]})


def test_resume_refuses_a_changed_setting_or_changed_data(trained_run, tiles, tmp_path):
    with pytest.raises(ConfigError, match="lr differ"):
        pretrain_simclr(trained_run, overrides={"lr": 0.1}, resume=True)
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in tiles.glob("*.png"):
        (copy / path.name).write_bytes(path.read_bytes())
    config = (trained_run / "config.yaml").read_text().replace(str(tiles), str(copy))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(config)
    for checkpoint in list_checkpoints(trained_run):
        (run / "checkpoints" / checkpoint.name).write_bytes(checkpoint.read_bytes())
    (copy / "extra.png").write_bytes((tiles / "ihc-00.png").read_bytes())
    with pytest.raises(ConfigError, match="data differ"):
        pretrain_simclr(run, overrides={"progress": False}, resume=True)


def test_cli_names_an_unknown_or_mistyped_config_field(tiles, tmp_path):
    for text, name in (("tempreature: 0.2\n", "tempreature"), ("batch_size: big\n", "batch_size")):
        config = tmp_path / "c.yaml"
        config.write_text(text)
        run = tmp_path / f"run-{name}"
        done = subprocess.run(
            _cli_args(tiles, run, "--config", str(config), "--max-steps", "1"),
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2
        assert name in done.stderr and "Traceback" not in done.stderr


def test_torchrun_two_processes_train_and_export(tiles, trained_run, tmp_path):
    run = tmp_path / "run"
    probed = ["--eval-data", str(_eval_csv(tiles, tmp_path / "eval.csv")), "--validate-every", "3"]
    args = _cli_args(tiles, run, "--max-steps", "3", "--workers", "0", *probed)[
        1:
    ]  # -m medfound.cli.main ...
    done = torchrun(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [row["step"] for row in _metrics(run)] == [1, 2, 3]
    # each rank embedded its share of the labelled images; rank 0 scored them for both
    (probe,) = [json.loads(line) for line in (run / "validation.jsonl").open()]
    assert probe["step"] == 3 and probe["val_knn_auc"] > 0.9
    assert (run / "encoder.safetensors").exists()
    state = load_checkpoint(list_checkpoints(run)[-1])
    assert state["batches_consumed"] == 3
    single = load_checkpoint(list_checkpoints(trained_run)[-1])["model"]
    assert state["model"].keys() == single.keys()  # resumable in one process, and vice versa
    load_model("timm:test_resnet", run / "encoder.safetensors")


@pytest.mark.slow
def test_compiled_training_follows_the_eager_run(tiles, tmp_path):
    overrides = {**TINY, "data": [str(tiles)], "max_steps": 2, "workers": 0}
    eager = pretrain_simclr(tmp_path / "eager", overrides=overrides)
    compiled = pretrain_simclr(tmp_path / "compiled", overrides={**overrides, "compile": True})
    assert compiled.step == eager.step == 2
    losses = [[row["loss"] for row in _metrics(tmp_path / run)] for run in ("eager", "compiled")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)
    load_model("timm:test_resnet", tmp_path / "compiled" / "encoder.safetensors")  # plain names


def _all_text(path) -> str:
    """A file's bytes as text, plus the members of a zip (TorchScript, torch checkpoints)."""
    import zipfile

    text = path.read_bytes().decode("latin-1")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            text += "".join(archive.read(n).decode("latin-1") for n in archive.namelist())
    return text


def test_shared_files_carry_no_path_and_no_identifier(tmp_path):
    """Weight files are made to be shared: no training-data path (MIMIC-style folders are subject
    and study ids), no run folder, no identifying DICOM attribute; paths stay in config.yaml."""
    import numpy as np
    import pydicom

    from medfound.tasks.export import export_model
    from tests.factories import PHI, write_dicom

    data = tmp_path / "files" / "p10" / "p10000032" / "s50414267"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(8):
        pixels = rng.integers(0, 4096, (40, 40)).astype(np.uint16)
        write_dicom(data / f"view{i}.dcm", pixels, modality="CR", bits=12)
    uids = set()
    for path in data.glob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        uids |= {str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)}
    run = tmp_path / "runs" / "subject-p10000032"
    overrides = {**TINY, "data": [str(data)], "max_steps": 2, "tensorboard": True}
    pretrain_simclr(run, overrides=overrides)
    model = load_model("timm:test_resnet", run / "encoder.safetensors")
    exported = [
        export_model(model, tmp_path / "shared" / f"encoder.{suffix}", fmt, image_size=32)
        for fmt, suffix in (("onnx", "onnx"), ("torchscript", "pt"), ("safetensors", "st"))
    ]
    secrets = [str(data), "p10000032", "s50414267", str(tmp_path), *PHI.values(), *uids]
    shared = [p for p in run.rglob("*") if p.is_file() and p.name != "config.yaml"]
    assert {p.name for p in shared} >= {"encoder.safetensors", "metrics.csv", "metrics.jsonl"}
    assert any(p.suffix == ".pt" for p in shared) and any("tfevents" in p.name for p in shared)
    for path in [*shared, *map(Path, exported)]:
        text = _all_text(path)
        found = [s for s in secrets if s in text]
        assert not found, f"{path.name} carries {found}"
    assert str(data) in (run / "config.yaml").read_text()  # the run folder keeps its paths
    with safe_open(str(run / "encoder.safetensors"), framework="pt") as fh:
        provenance = json.loads(fh.metadata()["medfound_pretraining"])
    assert provenance["data"]["images"] == 8 and len(provenance["data"]["fingerprint"]) == 64
    assert provenance["init"] == "random" and "data" not in provenance["config"]


def test_whole_slides_pretrain_on_random_tissue_tiles(tmp_path, caplog):
    from tests.factories import write_slide

    (tmp_path / "data").mkdir()
    write_slide(tmp_path / "data" / "a.tiff", size=1024, tissue=(256, 256, 768, 768))
    write_slide(tmp_path / "data" / "glass.tiff", size=512, tissue=(0, 0, 0, 0))  # no tissue
    overrides = {**TINY, "data": [str(tmp_path / "data")], "max_steps": 2, "workers": 0}
    overrides |= {"tiles_per_slide": 8, "tile_mpp": 1.0}
    summary = pretrain_simclr(tmp_path / "run", overrides=overrides)
    assert summary.step == 2 and summary.images == 16
    assert list(summary.skipped) == [str((tmp_path / "data" / "glass.tiff").resolve())]

    with pytest.raises(ConfigError, match=r"nothing to train on.*no tissue"):
        pretrain_simclr(
            tmp_path / "glass",
            overrides={**overrides, "data": [str(tmp_path / "data" / "glass.tiff")]},
        )


PLAN_ON_RANKS = """
import json, os, sys
from medfound.data import tiles

planned = []
real = tiles.plan_tiles
tiles.plan_tiles = lambda slide, options: planned.append(slide.path.name) or real(slide, options)
from medfound.tasks.pretrain import pretrain_simclr

overrides = {
    "data": [sys.argv[1]], "model": "timm:test_resnet", "init": "random", "batch_size": 4,
    "image_size": 32, "max_steps": 2, "tile_mpp": 1.0, "tiles_per_slide": 2, "device": "cpu",
    "workers": 0, "progress": False, "tensorboard": False, "warmup_epochs": 0.0,
}
summary = pretrain_simclr(os.path.join(sys.argv[2], "run"), overrides=overrides)
out = {"planned": planned, "step": summary.step, "skipped": sorted(summary.skipped)}
with open(os.path.join(sys.argv[2], os.environ["RANK"] + ".json"), "w") as fh:
    json.dump(out, fh)
"""


def test_two_ranks_plan_each_slide_once_then_train_on_every_plan(tmp_path):
    from tests.distributed import torchrun
    from tests.factories import write_slide

    (tmp_path / "data").mkdir()
    for name in ("a", "b", "c"):
        write_slide(tmp_path / "data" / f"{name}.tiff", size=512, tissue=(128, 128, 384, 384))
    write_slide(tmp_path / "data" / "glass.tiff", size=512, tissue=(0, 0, 0, 0))
    script = tmp_path / "plan.py"
    script.write_text(PLAN_ON_RANKS)
    done = torchrun(str(script), str(tmp_path / "data"), str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    planned = ranks[0]["planned"] + ranks[1]["planned"]
    assert sorted(planned) == ["a.tiff", "b.tiff", "c.tiff", "glass.tiff"]  # each once
    for rank in ranks:  # both trained (one process group throughout), and both know the glass
        assert rank["step"] == 2
        assert [Path(p).name for p in rank["skipped"]] == ["glass.tiff"]
    assert (tmp_path / "run" / "encoder.safetensors").is_file()


def test_micle_from_a_patient_csv_pairs_two_files_of_one_patient(tiles, tmp_path, monkeypatch):
    from medfound.data.view_pairs import ViewPairDataset

    paths = sorted(tiles.glob("*.png"))
    patient = {p: f"P{i // 4}" for i, p in enumerate(paths)}  # 8 patients of 4 tiles
    rows = ["path,patient", *(f"{p},{patient[p]}" for p in paths)]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    pairs = []
    real = ViewPairDataset.__getitem__
    monkeypatch.setattr(
        ViewPairDataset, "__getitem__", lambda self, key: pairs.append(real(self, key)) or pairs[-1]
    )
    overrides = {**TINY, "data": [str(tmp_path / "data.csv")], "max_steps": 2, "workers": 0}
    summary = pretrain_simclr(tmp_path / "run", overrides={**overrides, "micle_p": 1.0})
    assert summary.step == 2 and summary.images == 2 * 8  # a batch of 8 patients
    assert len(pairs) == 16
    by_path = {str(p.resolve()): patient[p] for p in paths}
    for item in pairs:
        a, b = item["pair"]
        assert a != b and by_path[a] == by_path[b]  # two files, one patient
    batch = [by_path[item["pair"][0]] for item in pairs[:8]]
    assert len(set(batch)) == 8  # never one patient twice in a batch
    (tmp_path / "plain.csv").write_text("path\n" + "\n".join(map(str, paths)) + "\n")
    with pytest.raises(ConfigError, match="MICLe needs a 'patient' or 'study' column"):
        pretrain_simclr(
            tmp_path / "r2",
            overrides={**overrides, "data": [str(tmp_path / "plain.csv")], "micle_p": 0.5},
        )


def _eval_csv(tiles, path, label=lambda p: p.name.split("-")[0]) -> Path:
    rows = ["path,label,patient"]
    rows += [f"{p},{label(p)},{p.stem}" for p in sorted(tiles.glob("*.png"))]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_the_encoder_is_probed_while_it_pretrains(tiles, tmp_path, caplog):
    assert {p.name.split("-")[0] for p in tiles.glob("*.png")} == {"ihc", "retina"}
    eval_data = _eval_csv(tiles, tmp_path / "eval.csv")
    overrides = {**TINY, "data": [str(tiles)], "max_steps": 4, "workers": 0}
    overrides |= {"eval_data": str(eval_data), "validate_every": 2}
    with caplog.at_level("INFO"):
        pretrain_simclr(tmp_path / "run", overrides=overrides)
    rows = [json.loads(line) for line in (tmp_path / "run" / "validation.jsonl").open()]
    assert [r["step"] for r in rows] == [2, 4]
    for row in rows:
        names = {"val_knn_auc", "val_linear_auc", "val_knn_accuracy", "val_linear_accuracy"}
        assert names <= set(row)
        assert row["val_knn_auc"] > 0.9  # immunohistochemistry against fundus: any encoder tells
        assert 0 <= row["val_linear_accuracy"] <= 1
    assert any("knn_auc" in r.message and "linear_auc" in r.message for r in caplog.records)
    # a monitor: the encoder exported is the last one, whichever step probed best
    last = load_checkpoint(list_checkpoints(tmp_path / "run")[-1])["model"]
    with safe_open(str(tmp_path / "run" / "encoder.safetensors"), framework="pt") as fh:
        key = next(k for k in fh.keys() if not k.startswith("extra/"))  # noqa: SIM118
        torch.testing.assert_close(
            fh.get_tensor(key), last[f"encoder.network.{key}"], rtol=0, atol=0
        )
    # early stopping on the probe, evaluated at every checkpoint when no cadence is given
    stopping = {**overrides, "max_steps": 12, "checkpoint_every": 2, "early_stop_patience": 1}
    del stopping["validate_every"]
    stopped = pretrain_simclr(tmp_path / "stop", overrides=stopping)
    assert stopped.stopped_early and stopped.step < 12
    one_class = _eval_csv(tiles, tmp_path / "one.csv", label=lambda p: "tissue")
    with pytest.raises(ConfigError, match=r"one\.csv: the train half of its 32 patients"):
        pretrain_simclr(tmp_path / "r2", overrides={**overrides, "eval_data": str(one_class)})


def test_a_run_started_before_the_remedis_recipe_is_not_resumed(trained_run, tmp_path):
    import shutil

    import yaml

    old = tmp_path / "old"
    shutil.copytree(trained_run, old)
    fields = yaml.safe_load((old / "config.yaml").read_text())
    del fields["lars_exclude"]
    (old / "config.yaml").write_text(yaml.safe_dump(fields))
    with pytest.raises(ConfigError, match="started by an earlier medfound"):
        pretrain_simclr(old, overrides={"progress": False}, resume=True)


def test_the_run_config_holds_the_presets_view_settings(trained_run):
    import yaml

    fields = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert fields["image_size"] == 32 and fields["rotation_degrees"] == 0.0
    assert fields["equalize_p"] == 0.0 and fields["blur_p"] == 0.5  # the path preset's
