"""`medfound demo --smoke`: every stage of the story on the bundled real images, a few steps each;
tables printed, studies and report written, splits by slab and by tile block, the embedding map,
and a second run that reuses everything."""

import csv
import re

import pytest
from typer.testing import CliRunner

from medfound.cli.main import app
from medfound.tasks.demo import BRAIN_SLABS, SMOKE


def _rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    result = CliRunner().invoke(app, ["demo", "--smoke", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_the_demo_prints_both_tables_and_says_what_they_are(demo):
    out, printed = demo
    assert "ihc_dab: test macro_auc" in printed and "brain_tissue: test mean_dice" in printed
    for protocol, encoder in [
        ("knn", "scratch"),
        ("linear_probe", "simclr"),
        ("finetune", "simclr"),
        ("segment", "genesis"),
        ("segment", "scratch"),
    ]:
        assert re.search(rf"^{protocol}\s+{encoder}\s+\d\.\d{{3}}", printed, re.M), protocol
    assert "not clinical results" in printed
    assert str(out / "studies" / "2d" / "report.html") in printed


def test_each_study_compares_the_pretrained_encoder_with_scratch_on_the_same_cells(demo):
    out, _ = demo
    for name, pretrained, protocols in [
        ("2d", "simclr", {"knn", "linear_probe", "finetune"}),
        ("3d", "genesis", {"segment"}),
    ]:
        results = _rows(out / "studies" / name / "results.csv")
        cells = {(r["encoder"], r["protocol"], r["fraction"], r["seed"]) for r in results}
        ours = {c[1:] for c in cells if c[0] == pretrained}
        assert ours == {c[1:] for c in cells if c[0] == "scratch"}
        assert {c[0] for c in ours} == protocols
        assert (out / "studies" / name / "report.html").is_file()
    assert (out / "runs" / "simclr" / "encoder.safetensors").is_file()
    assert (out / "runs" / "genesis" / "genesis.safetensors").is_file()


def test_the_brain_is_split_by_slab_and_the_tiles_by_block(demo):
    out, _ = demo
    slabs = _rows(out / "studies" / "3d" / "subsets.csv")
    assert len({r["patient"] for r in slabs}) == len(slabs) == BRAIN_SLABS
    assert sorted(r["split"] for r in slabs) == ["test"] * 2 + ["train"] * 5 + ["val"]
    tiles = _rows(out / "studies" / "2d" / "subsets.csv")
    blocks: dict[str, set] = {}
    for r in tiles:
        blocks.setdefault(r["patient"], set()).add(r["split"])
        assert re.search(r"tile_r(\d)_c(\d)", r["id"])
    assert len(blocks) == 16 and all(len(splits) == 1 for splits in blocks.values())
    assert sum(s == {"test"} for s in blocks.values()) == 4


def test_the_embedding_map_shows_every_pretraining_tile_by_source(demo):
    out, printed = demo
    tiles = _rows(out / "data" / "pretrain" / "tiles.csv")
    points = _rows(out / "embedding_map.csv")
    assert len(points) == len(tiles) > 150
    assert {p["value"] for p in points} == {"histology IHC", "brain MRI T1", "fundus", "CT", "MR"}
    assert str(out / "embedding_map.png") in printed


def test_a_second_run_reuses_every_stage(demo):
    out, _ = demo
    kept = [
        out / "runs" / "genesis" / "genesis.safetensors",
        out / "runs" / "simclr" / "encoder.safetensors",
    ]
    kept += sorted((out / "studies").glob("*/cells/*/result.json"))
    before = [p.stat().st_mtime_ns for p in kept]
    again = CliRunner().invoke(app, ["demo", "--smoke", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert [p.stat().st_mtime_ns for p in kept] == before and len(kept) == 2 + 12 + 4
    assert len(SMOKE.seeds) == 1 and "mean +- SD over 1 seed" in again.output


def test_a_folder_of_another_scale_is_refused_and_a_cut_data_part_is_written_again(demo, tmp_path):
    import dataclasses

    from medfound.errors import ConfigError
    from medfound.tasks import demo as demo_module

    out, _ = demo
    with pytest.raises(ConfigError, match="holds a demo run at another scale"):
        demo_module.run_demo(out, dataclasses.replace(SMOKE, name="other", simclr_steps=3))

    def dying(folder):
        (folder / "fundus").mkdir(parents=True)
        raise KeyboardInterrupt("cut")

    real = demo_module._write_pretrain_tiles
    demo_module._write_pretrain_tiles = dying
    try:
        with pytest.raises(KeyboardInterrupt):
            demo_module.write_demo_data(tmp_path / "data")
    finally:
        demo_module._write_pretrain_tiles = real
    assert not (tmp_path / "data" / "pretrain").exists()  # no half-written part taken as done
    data = demo_module.write_demo_data(tmp_path / "data")
    assert len(_rows(data.pretrain_tiles)) == len(_rows(out / "data" / "pretrain" / "tiles.csv"))
