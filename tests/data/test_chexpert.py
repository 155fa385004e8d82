"""CheXpert on a generated copy of its layout: label policies, view filter, path resolution, patients."""

import re

import numpy as np
import pytest

from medfound.data.chexpert import CHEXPERT_14, CHEXPERT_COMPETITION, read_chexpert
from medfound.data.labels import check_images_exist
from medfound.errors import ConfigError
from tests.data.label_fixtures import ChexpertRow, chexpert_rows, write_chexpert

# The policies written out cell by cell (the reader's table, independently): cell -> value.
POLICY = {
    ("ignore", "negative"): {"1.0": 1.0, "0.0": 0.0, "-1.0": np.nan, "": 0.0},
    ("ignore", "ignore"): {"1.0": 1.0, "0.0": 0.0, "-1.0": np.nan, "": np.nan},
    ("ones", "negative"): {"1.0": 1.0, "0.0": 0.0, "-1.0": 1.0, "": 0.0},
    ("zeros", "negative"): {"1.0": 1.0, "0.0": 0.0, "-1.0": 0.0, "": 0.0},
    ("ones", "ignore"): {"1.0": 1.0, "0.0": 0.0, "-1.0": 1.0, "": np.nan},
}


@pytest.fixture
def released(tmp_path):
    rows = chexpert_rows(seed=3, patients=5)
    return tmp_path, write_chexpert(tmp_path, rows), rows


@pytest.mark.parametrize(("uncertain", "blank"), list(POLICY))
def test_label_policies(released, uncertain, blank):
    _, csv_path, rows = released
    table = read_chexpert(csv_path, uncertain=uncertain, blank=blank, views="all")
    mapping = POLICY[(uncertain, blank)]
    expected = np.array([[mapping[r.cells[o]] for o in CHEXPERT_14] for r in rows], np.float32)
    assert table.kind == "multilabel" and table.classes == CHEXPERT_14
    np.testing.assert_array_equal(table.targets, expected)


def test_views_filter_and_patients(released):
    base, csv_path, rows = released
    for views, keep in (("frontal", [True]), ("lateral", [False]), ("all", [True, False])):
        table = read_chexpert(csv_path, views=views)
        chosen = [r for r in rows if r.frontal in keep]
        assert table.ids == [
            str((base / r.relative("CheXpert-v1.0-small")).resolve()) for r in chosen
        ]
        assert table.patients.tolist() == [f"patient{r.patient:05d}" for r in chosen]
        assert table.splits is None
    assert 0 < sum(not r.frontal for r in rows) < len(rows)  # the fixture has both views
    check_images_exist(read_chexpert(csv_path, views="all"))  # every image found


def test_competition_observations_in_their_order(released):
    _, csv_path, rows = released
    table = read_chexpert(csv_path, observations=CHEXPERT_COMPETITION, uncertain="ones")
    frontal = [r for r in rows if r.frontal]
    expected = [
        [POLICY[("ones", "negative")][r.cells[o]] for o in CHEXPERT_COMPETITION] for r in frontal
    ]
    assert table.classes == CHEXPERT_COMPETITION
    np.testing.assert_array_equal(table.targets, np.array(expected, np.float32))


def test_paths_resolve_for_renamed_folders_and_explicit_roots(tmp_path):
    rows = chexpert_rows(seed=1, patients=2)
    # the dataset folder renamed after download: Path cells still start with CheXpert-v1.0-small
    renamed = write_chexpert(
        tmp_path / "a", rows, folder="chexpert", path_prefix="CheXpert-v1.0-small"
    )
    table = read_chexpert(renamed, views="all")
    assert table.ids[0] == str((tmp_path / "a" / rows[0].relative("chexpert")).resolve())
    check_images_exist(table)
    # the CSV moved away from the images: `root` says where the Path cells start
    csv_path = write_chexpert(tmp_path / "b", rows)
    moved = csv_path.rename(tmp_path / "labels.csv")
    table = read_chexpert(moved, tmp_path / "b", views="all")
    assert table.ids[0] == str((tmp_path / "b" / rows[0].relative("CheXpert-v1.0-small")).resolve())
    check_images_exist(table)


def test_missing_images_are_listed(released):
    base, csv_path, rows = released
    gone = base / rows[0].relative("CheXpert-v1.0-small")
    gone.unlink()
    table = read_chexpert(csv_path, views="all")
    with pytest.raises(
        ConfigError, match=re.escape(f"1 of {len(rows)} images are missing: {gone}")
    ):
        check_images_exist(table)


def test_bad_cells_and_options_are_refused(tmp_path):
    rows = [
        ChexpertRow(1, 1, 1, True, dict.fromkeys(CHEXPERT_14, "0.0")),
        ChexpertRow(1, 1, 2, False, {**dict.fromkeys(CHEXPERT_14, "1.0"), "Edema": "2.0"}),
    ]
    csv_path = write_chexpert(tmp_path, rows)
    with pytest.raises(ConfigError, match=r"line 3 \(Edema='2.0'\)"):
        read_chexpert(csv_path, views="all")
    assert read_chexpert(csv_path, views="frontal").targets.shape == (1, 14)  # that row left out
    with pytest.raises(ConfigError, match="unknown: Effusion"):
        read_chexpert(csv_path, observations=["Edema", "Effusion"])
    with pytest.raises(ConfigError, match="uncertain"):
        read_chexpert(csv_path, uncertain="maybe")
    with pytest.raises(ConfigError, match="blank"):
        read_chexpert(csv_path, blank="zeros")
    with pytest.raises(ConfigError, match="views"):
        read_chexpert(csv_path, views="PA")


def test_a_path_without_a_patient_folder_is_refused(tmp_path):
    csv_path = tmp_path / "CheXpert-v1.0-small" / "valid.csv"
    csv_path.parent.mkdir()
    header = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(CHEXPERT_14)
    csv_path.write_text(
        header + "\n" + "CheXpert-v1.0-small/valid/study1/view1_frontal.jpg,Male,50,Frontal,AP"
        + ",0.0" * 14 + "\n"
    )  # fmt: skip
    with pytest.raises(ConfigError, match="no patientNNNNN folder"):
        read_chexpert(csv_path)
