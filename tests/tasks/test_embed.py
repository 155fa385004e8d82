import csv
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from medfound.errors import ConfigError
from medfound.io import get_preset
from medfound.models import get_card
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


def _uids(folder):
    import pydicom

    found = set()
    for path in folder.glob("*.dcm"):
        if path.name.startswith("bad"):
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        found |= {str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)}
    return found


def test_no_patient_identifier_or_uid_in_outputs_or_logs(tmp_path, caplog):
    folder = tmp_path / "dicom"
    folder.mkdir()
    write_dicom(folder / "a.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8), modality="CR")
    (folder / "bad.dcm").write_bytes(b"DICM" * 10)
    out = tmp_path / "e.parquet"
    with caplog.at_level(logging.DEBUG, logger="medfound"):
        summary = embed([folder], out, model_name=TINY, random_init=True, options=_options())
    assert summary.embedded == 1
    secrets = [*PHI.values(), *_uids(folder)]
    blobs = [out.read_bytes().decode("latin-1"), repr(_table(out)), caplog.text, repr(summary)]
    blobs.append(repr(pq.read_schema(out).metadata))
    for secret in secrets:
        assert not any(secret in blob for blob in blobs), secret
    source_id = _table(out)["source_id"][0]
    assert re.fullmatch(re.escape(str(folder / "a.dcm")) + r"#sop=[0-9a-f]{24}", source_id)


def test_uid_hashes_are_stable_keyed_and_kept_only_when_asked(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    write_dicom(tmp_path / "d" / "a.dcm", np.ones((8, 8), np.uint16), modality="CR")
    ids = {}
    for name, keep in (("first", False), ("again", False), ("kept", True)):
        out = tmp_path / f"{name}.parquet"
        embed(
            [tmp_path / "d"],
            out,
            model_name=TINY,
            random_init=True,
            options=_options(keep_uids=keep),
        )
        ids[name] = _table(out)["source_id"][0]
    assert ids["first"] == ids["again"]  # the installation salt is stable: resume and joins work
    import pydicom

    sop = str(pydicom.dcmread(tmp_path / "d" / "a.dcm").SOPInstanceUID)
    assert ids["kept"].endswith(f"#sop={sop}") and sop not in ids["first"]
    monkeypatch.setenv("MEDFOUND_UID_SALT", "another-salt-of-this-site")

    def embed_default(out):
        return embed([tmp_path / "d"], out, model_name=TINY, random_init=True, options=_options())

    with pytest.raises(ConfigError, match="holds embeddings of another run"):
        embed_default(tmp_path / "first.parquet")  # made with the installation's salt
    embed_default(tmp_path / "salted.parquet")
    salted = _table(tmp_path / "salted.parquet")["source_id"][0]
    assert salted != ids["first"] and sop not in salted


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
    (path,) = _table(out)["path"]
    assert re.fullmatch(re.escape(str(tmp_path / "s")) + r"#series=[0-9a-f]{24}", path)
    assert series not in path


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


@pytest.mark.parametrize(
    ("model", "change"),
    [
        ("timm:resnet34", {}),
        (TINY, {"precision": "bf16"}),
        (TINY, {"dicom_series": True}),
        (TINY, {"keep_uids": True}),
    ],
)
def test_resume_refuses_rows_computed_another_way(tmp_path, model, change):
    image_folder(tmp_path / "imgs", n=2)
    out = tmp_path / "e.parquet"
    embed([tmp_path / "imgs"], out, model_name=TINY, random_init=True, options=_options())
    with pytest.raises(ConfigError, match="holds embeddings of another run"):
        embed(
            [tmp_path / "imgs"],
            out,
            model_name=model,
            random_init=True,
            options=_options(**change),
        )


def test_resume_from_another_folder_or_with_absolute_paths_finds_what_is_done(
    tmp_path, monkeypatch
):
    image_folder(tmp_path / "data" / "imgs", n=3)
    monkeypatch.chdir(tmp_path / "data")
    out = tmp_path / "e.parquet"
    embed(["imgs"], out, model_name=TINY, random_init=True, options=_options())
    monkeypatch.chdir(tmp_path)
    again = embed(["data/imgs"], out, model_name=TINY, random_init=True, options=_options())
    absolute = embed(
        [tmp_path / "data" / "imgs"], out, model_name=TINY, random_init=True, options=_options()
    )
    assert again.embedded == absolute.embedded == 0
    assert again.already_done == absolute.already_done == 3
    assert len(_table(out)["path"]) == 3
    assert all(os.path.isabs(p) for p in _table(out)["path"])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("chunk_rows", 0, "--chunk-rows must be >= 1"),
        ("image_size", -32, "--image-size must be >= 1"),
        ("batch_size", 0, "--batch-size must be >= 1"),
    ],
)
def test_impossible_options_are_refused_by_name(tmp_path, field, value, message):
    with pytest.raises(ConfigError, match=message):
        embed(
            [tmp_path],
            tmp_path / "e.parquet",
            model_name=TINY,
            random_init=True,
            options=_options(**{field: value}),
        )


def test_a_malformed_uid_is_never_echoed_by_pydicom(tmp_path, caplog, capfd):
    """Real PACS exports carry UIDs pydicom finds invalid; its warning would quote them."""
    import warnings

    bad_uids = ("1.2.03.4.9999", "1.2.03.4.8888")
    (tmp_path / "d").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_dicom(
            tmp_path / "d" / "a.dcm",
            np.ones((8, 8), np.uint16),
            modality="CR",
            SOPInstanceUID=bad_uids[0],
            SeriesInstanceUID=bad_uids[1],
        )
    capfd.readouterr()
    caplog.clear()  # what writing the file said
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        summary = embed(
            [tmp_path / "d"], tmp_path / "e.parquet", model_name=TINY, random_init=True,
            options=_options(dicom_series=True),
        )  # fmt: skip
    assert summary.embedded == 1
    said = caplog.text + capfd.readouterr().err + " ".join(str(w.message) for w in caught)
    said += repr(_table(tmp_path / "e.parquet"))
    assert not any(uid in said for uid in bad_uids)


def test_volumes_embed_slice_by_slice_with_a_2d_model_and_resume_per_slice(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "vols").mkdir()
    write_nifti(tmp_path / "vols" / "a.nii.gz", rng.uniform(0, 100, (12, 10, 5)), (0.7, 0.7, 2.5))
    write_nifti(tmp_path / "vols" / "b.nii.gz", rng.uniform(0, 100, (12, 10, 3)), (0.7, 0.7, 2.5))
    out = tmp_path / "s.parquet"
    summary = embed([tmp_path / "vols"], out, model_name=TINY, random_init=True, options=_options())
    table = _table(out)
    assert summary.embedded == 8 and len(table["path"]) == 8
    a = str((tmp_path / "vols" / "a.nii.gz").resolve())
    rows = {p: i for i, p in enumerate(table["path"])}
    assert [table["slice_index"][rows[f"{a}#frame={k}"]] for k in range(5)] == list(range(5))
    assert {table["slice_count"][rows[f"{a}#frame={k}"]] for k in range(5)} == {5}
    positions = [table["slice_position_mm"][rows[f"{a}#frame={k}"]] for k in range(5)]
    np.testing.assert_allclose(np.diff(positions), 2.5)  # the slices' spacing, in mm
    ids = zip(table["source_id"], table["slice_index"], strict=True)
    assert all(s.endswith(f"#frame={k}") for s, k in ids)

    # a run cut after some slices of a: only the missing slices are embedded again
    import pyarrow as pa

    full = pq.read_table(out)
    keep = [not (p.startswith(a) and p.endswith(("#frame=3", "#frame=4"))) for p in table["path"]]
    pq.write_table(full.filter(pa.array(keep)), out)
    again = embed([tmp_path / "vols"], out, model_name=TINY, random_init=True, options=_options())
    resumed = _table(out)
    assert again.embedded == 2 and again.already_done == 1  # b was complete
    assert sorted(resumed["path"]) == sorted(table["path"])
    for path, vector in zip(resumed["path"], resumed["embedding"], strict=True):
        np.testing.assert_allclose(vector, table["embedding"][rows[path]], rtol=1e-5, atol=1e-6)

    middle = embed(
        [tmp_path / "vols"],
        tmp_path / "m.parquet",
        model_name=TINY,
        random_init=True,
        options=_options(slices="middle"),
    )
    assert middle.embedded == 2
    assert sorted(_table(tmp_path / "m.parquet")["slice_index"]) == [1, 2]


def test_whole_slides_embed_tile_by_tile_with_coordinates_and_resume_per_slide(tmp_path):
    # workers=0 (the _options default): reads happen in this process, where they are counted
    from tests.factories import write_slide

    (tmp_path / "in").mkdir()
    write_slide(tmp_path / "in" / "s.svs", size=1024, tissue=(256, 256, 768, 512))
    write_slide(tmp_path / "in" / "glass.svs", size=512, tissue=(0, 0, 0, 0))
    image_folder(tmp_path / "in", n=1)
    out = tmp_path / "w.parquet"
    options = _options(image_size=64)  # tiles of 64 px at 0.5 um: 128 level-0 px of 0.25 um
    summary = embed([tmp_path / "in"], out, model_name=TINY, random_init=True, options=options)
    table = _table(out)
    tiles = [i for i, s in enumerate(table["slide"]) if s]
    assert len(tiles) == 8 and len(table["path"]) == 9
    ((glass, reason),) = summary.skipped  # said, not silently left out
    assert glass.endswith("glass.svs") and "no tissue" in reason
    assert {(table["x"][i], table["y"][i]) for i in tiles} == {
        (x, y) for x in range(256, 768, 128) for y in (256, 384)
    }
    assert {table["level"][i] for i in tiles} == {1} and {
        table["tile_count"][i] for i in tiles
    } == {8}
    assert all(table["path"][i].endswith(f"#tile={table['x'][i]},{table['y'][i]}") for i in tiles)
    assert len(list((tmp_path / "w.thumbnails").glob("*.png"))) == 2

    # cut short after some tiles: only the missing tiles are embedded again
    import pyarrow as pa

    full = pq.read_table(out)
    keep = [i not in tiles[5:] for i in range(len(table["path"]))]
    pq.write_table(full.filter(pa.array(keep)), out)
    from medfound.data import tiles as tiles_module

    real, reads = tiles_module.read_tile, []
    tiles_module.read_tile = lambda *args: reads.append(args[2]) or real(*args)
    try:
        again = embed([tmp_path / "in"], out, model_name=TINY, random_init=True, options=options)
    finally:
        tiles_module.read_tile = real
    assert again.embedded == 3 and again.already_done == 1
    assert len(reads) == 3  # only the missing tiles are read again
    assert sorted(_table(out)["path"]) == sorted(table["path"])


def test_volume_items_are_loaded_one_at_a_time_and_joined_into_model_batches():
    import torch

    def batch(n, errors=()):
        return {
            "tensor": torch.zeros(n, 3, 2, 2) if n else None,
            "items": [{"source": f"{n}-{k}"} for k in range(1 if n else 0)],
            "errors": list(errors),
        }

    loader = [batch(3), batch(0, [("bad", "why")]), batch(1), batch(5), batch(2)]
    from medfound.tasks.inference import rebatched

    joined = list(rebatched(iter(loader), 4))
    assert [b["tensor"].shape[0] for b in joined] == [4, 5, 2]
    assert joined[0]["errors"] == [("bad", "why")]
    assert [i["source"] for b in joined for i in b["items"]] == ["3-0", "1-0", "5-0", "2-0"]


def test_runs_record_the_preset_as_runs_did_before_presets_left_the_size_to_the_model():
    from medfound.io.presets import Preset
    from medfound.tasks.embed import _resolved

    # what an embedding made before this change recorded, so that it still resumes
    before = Preset("cxr", intensity="range", colour="gray", size=448, fit="stretch")
    assert (
        _resolved(get_preset("cxr"), get_card("cxr-50x1-remedis-m")).to_json() == before.to_json()
    )
    assert json.loads(_resolved(get_preset("path"), get_card("uni")).to_json())["fit"] == "crop"
    # presets that never carried a size still record none
    ct = Preset("ct", intensity="window", colour="gray", fit="stretch")
    assert _resolved(get_preset("ct"), get_card("genesis-chest-ct")).to_json() == ct.to_json()


@pytest.mark.parametrize(
    ("name", "tile_size", "mpp"),
    [
        ("prov-gigapath", 256, 0.5),
        ("uni", 224, 0.5),
        ("ctranspath", 224, 0.5),
        ("phikon", 224, 0.5),
    ],
)
def test_slide_tiles_take_the_models_magnification_and_resize(name, tile_size, mpp):
    from medfound.tasks.embed import _tile_options

    # Prov-GigaPath resizes to 256 and crops 224: tiles of 256 px keep its 0.5 um/px
    options = _tile_options(EmbedOptions(), get_card(name))
    assert (options.tile_size, options.mpp) == (tile_size, mpp)
    assert _tile_options(EmbedOptions(tile_mpp=1.0), get_card(name)).mpp == 1.0


def test_slide_tiles_follow_the_cards_mpp_and_its_resize_with_any_size():
    import dataclasses

    from medfound.tasks.embed import _tile_options

    at_40x = dataclasses.replace(get_card("uni"), mpp=0.25)
    assert _tile_options(EmbedOptions(), at_40x).mpp == 0.25
    # the model's own size given explicitly: still resized to 256 and cropped, so 256 px tiles
    assert _tile_options(EmbedOptions(image_size=224), get_card("prov-gigapath")).tile_size == 256


def test_a_transformer_with_fixed_position_embeddings_refuses_another_size_up_front(tmp_path):
    image_folder(tmp_path / "imgs", n=1, size=32)
    options = EmbedOptions(image_size=448, progress=False)
    with pytest.raises(ConfigError, match="takes 224 px images only"):
        embed(
            [tmp_path / "imgs"],
            tmp_path / "e.parquet",
            model_name="phikon",
            random_init=True,
            options=options,
        )
