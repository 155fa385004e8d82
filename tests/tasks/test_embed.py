import csv
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from medfound.errors import ConfigError
from medfound.tasks import embed as embed_module
from medfound.tasks.embed import EmbedOptions, embed
from tests.distributed import torchrun
from tests.factories import PHI, image_folder, write_dicom, write_nifti

TINY = "timm:resnet18"


def _options(**kw):
    base = {"image_size": 32, "batch_size": 2, "workers": 0, "progress": False}
    return EmbedOptions(**{**base, **kw})


def _table(path):
    return pq.read_table(path).to_pydict()


def test_folder_with_bad_files_embeds_the_rest(tmp_path):
    image_folder(tmp_path / "imgs", n=4)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (tmp_path / "imgs" / "empty.dcm").write_bytes(b"")
    (tmp_path / "imgs" / "text.dcm").write_text("not dicom")
    write_nifti(tmp_path / "imgs" / "nan.nii.gz", np.full((4, 4, 1), np.nan))
    out = tmp_path / "e.parquet"
    summary = embed([tmp_path / "imgs"], out, model_name=TINY, random_init=True, options=_options())
    table = _table(out)
    assert summary.embedded == 4 and len(table["path"]) == 4
    skipped = dict(summary.skipped)
    assert set(map(os.path.basename, skipped)) == {
        "broken.png",
        "empty.dcm",
        "text.dcm",
        "nan.nii.gz",
    }
    assert "empty file" in skipped[str(tmp_path / "imgs" / "empty.dcm")]
    assert "NaN" in skipped[str(tmp_path / "imgs" / "nan.nii.gz")]
    assert not summary.ok
    assert all(len(e) == 512 for e in table["embedding"])
    assert set(table["model"]) == {TINY} and table["random_init"] == [True] * 4
    assert set(table["preset"]) == {"path"}
    meta = pq.read_schema(out).metadata
    assert b"medfound_card" in meta and b"medfound_preset" in meta


def test_embeddings_match_the_python_api(tmp_path):
    from medfound.io import get_preset
    from medfound.models import load_model

    paths = image_folder(tmp_path / "imgs", n=3)
    model = load_model(TINY, random_init=True)
    out = tmp_path / "e.parquet"
    embed([tmp_path / "imgs"], out, model=model, options=_options())
    table = _table(out)
    expected = model.embed(paths, preset=get_preset("path", size=32))
    got = np.asarray([table["embedding"][table["path"].index(str(p))] for p in paths])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_resume_after_a_crash_embeds_only_the_rest(tmp_path, monkeypatch):
    image_folder(tmp_path / "imgs", n=7)
    out = tmp_path / "e.parquet"
    reference = tmp_path / "ref.parquet"
    embed([tmp_path / "imgs"], reference, model_name=TINY, random_init=True, options=_options())

    calls = {"n": 0}
    real_call = embed_module._Runner.__call__

    def crashing(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated crash")
        return real_call(self, batch)

    monkeypatch.setattr(embed_module._Runner, "__call__", crashing)
    with pytest.raises(KeyboardInterrupt):
        embed(
            [tmp_path / "imgs"],
            out,
            model_name=TINY,
            random_init=True,
            options=_options(chunk_rows=2),
        )
    assert not out.exists()
    assert len(list((tmp_path / "e.parquet.parts").glob("*.parquet"))) == 2  # 4 rows kept
    monkeypatch.setattr(embed_module._Runner, "__call__", real_call)

    summary = embed([tmp_path / "imgs"], out, model_name=TINY, random_init=True, options=_options())
    assert summary.already_done == 4 and summary.embedded == 3
    table, ref = _table(out), _table(reference)
    assert sorted(table["path"]) == sorted(ref["path"]) and len(set(table["path"])) == 7
    by_path = dict(zip(ref["path"], ref["embedding"], strict=True))
    for path, vector in zip(table["path"], table["embedding"], strict=True):
        np.testing.assert_allclose(vector, by_path[path], rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "e.parquet.parts").exists()


def test_resume_with_another_model_is_refused(tmp_path):
    image_folder(tmp_path / "imgs", n=2)
    out = tmp_path / "e.parquet"
    embed([tmp_path / "imgs"], out, model_name=TINY, random_init=True, options=_options())
    with pytest.raises(ConfigError, match="holds embeddings of another run"):
        embed(
            [tmp_path / "imgs"],
            out,
            model_name="timm:resnet34",
            random_init=True,
            options=_options(),
        )


def test_pool_none_keeps_feature_maps(tmp_path):
    image_folder(tmp_path / "imgs", n=2)
    out = tmp_path / "maps.parquet"
    embed(
        [tmp_path / "imgs"],
        out,
        model_name=TINY,
        random_init=True,
        options=_options(pool="none", image_size=64),
    )
    table = _table(out)
    assert table["shape"][0] == [512, 2, 2]
    assert len(table["embedding"][0]) == 512 * 2 * 2


def test_csv_input(tmp_path):
    paths = image_folder(tmp_path / "imgs", n=3)
    with open(tmp_path / "list.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows([[f"imgs/{p.name}", 1] for p in paths[:2]])
    out = tmp_path / "e.parquet"
    embed([tmp_path / "list.csv"], out, model_name=TINY, random_init=True, options=_options())
    assert sorted(_table(out)["path"]) == sorted(str(p) for p in paths[:2])
    (tmp_path / "bad.csv").write_text("file\nx.png\n")
    with pytest.raises(ConfigError, match=r"bad\.csv: needs a 'path' column"):
        embed([tmp_path / "bad.csv"], out, model_name=TINY, random_init=True, options=_options())


def test_no_patient_identifier_in_outputs_or_logs(tmp_path, caplog):
    folder = tmp_path / "dicom"
    folder.mkdir()
    write_dicom(folder / "a.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8), modality="CR")
    (folder / "bad.dcm").write_bytes(b"DICM" * 10)
    out = tmp_path / "e.parquet"
    with caplog.at_level(logging.INFO, logger="medfound"):
        summary = embed([folder], out, model_name=TINY, random_init=True, options=_options())
    assert summary.embedded == 1
    blob = out.read_bytes().decode("latin-1") + caplog.text + repr(summary)
    for value in PHI.values():
        assert value not in blob
    assert "a.dcm#1." in _table(out)["source_id"][0]  # path + SOPInstanceUID


def test_ct_volume_with_genesis(tmp_path):
    volume = np.random.default_rng(0).uniform(-1000, 1000, (20, 20, 10))
    write_nifti(tmp_path / "ct.nii.gz", volume, spacing=(0.7, 0.7, 2.0))
    out = tmp_path / "g.parquet"
    options = _options(image_size=16)
    embed(
        [tmp_path / "ct.nii.gz"],
        out,
        model_name="genesis-chest-ct",
        random_init=True,
        options=options,
    )
    table = _table(out)
    assert len(table["embedding"][0]) == 512 and table["preset"] == ["ct"]


def test_dicom_series_folder_is_one_volume_for_3d_models(tmp_path):
    from pydicom.uid import generate_uid

    series = generate_uid()
    (tmp_path / "s").mkdir()
    for i in range(4):
        write_dicom(
            tmp_path / "s" / f"{i}.dcm",
            np.full((8, 8), 1000 + i, np.uint16),
            SeriesInstanceUID=series,
            ImagePositionPatient=[0, 0, float(i)],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            RescaleSlope=1,
            RescaleIntercept=-1024,
        )
    out = tmp_path / "g.parquet"
    embed(
        [tmp_path / "s"],
        out,
        model_name="genesis-chest-ct",
        random_init=True,
        options=_options(image_size=8),
    )
    assert _table(out)["path"] == [f"{tmp_path / 's'}#series={series}"]


def _cli(*args):
    return [sys.executable, "-m", "medfound.cli.main", *args]


def _embed_args(folder, out, *options):
    """`medfound embed` arguments for the tiny random-init model at 32 px."""
    return [
        "embed",
        str(folder),
        "-m",
        TINY,
        "--random-init",
        "-o",
        str(out),
        "--image-size",
        "32",
        *options,
    ]


def test_sigkill_mid_run_then_resume(tmp_path):
    image_folder(tmp_path / "imgs", n=24, size=64)
    out = tmp_path / "k.parquet"
    args = _cli(
        "embed",
        str(tmp_path / "imgs"),
        "--model",
        TINY,
        "--random-init",
        "--out",
        str(out),
        "--batch-size",
        "1",
        "--chunk-rows",
        "1",
        "--workers",
        "0",
        "--image-size",
        "64",
    )
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "k.parquet.parts"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("*.parquet"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = len(list(parts.glob("*.parquet")))
    assert 3 <= kept < 24
    for chunk in parts.glob("*.parquet"):
        pq.read_table(chunk)  # every chunk on disk is complete and readable
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"already done {kept}" in done.stderr.replace("\n", " ")
    table = _table(out)
    assert len(table["path"]) == 24 == len(set(table["path"]))


def test_cli_exit_code_and_summary_when_files_are_skipped(tmp_path):
    image_folder(tmp_path / "imgs", n=1)
    (tmp_path / "imgs" / "bad.png").write_bytes(b"nope")
    out = tmp_path / "c.parquet"
    result = subprocess.run(
        _cli(*_embed_args(tmp_path / "imgs", out, "--workers", "1")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "skipped 1" in result.stderr and "bad.png" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(_table(out)["path"]) == 1


def test_torchrun_two_ranks_shard_and_merge(tmp_path):
    image_folder(tmp_path / "imgs", n=5)
    out = tmp_path / "d.parquet"
    result = torchrun(
        "-m",
        "medfound.cli.main",
        *_embed_args(tmp_path / "imgs", out, "--workers", "0", "--device", "cpu"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = _table(out)
    assert sorted(table["path"]) == sorted(str(p) for p in (tmp_path / "imgs").glob("*.png"))
