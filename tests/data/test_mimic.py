"""MIMIC-CXR-JPG on a generated copy of its layout: the study join, view filter, policies, splits."""

import gzip
import logging
import re

import numpy as np
import pytest

from medfound.data.chexpert import CHEXPERT_14, CHEXPERT_COMPETITION
from medfound.data.labels import check_images_exist
from medfound.data.mimic import read_mimic_cxr
from medfound.errors import ConfigError
from tests.data.label_fixtures import write_csv, write_mimic

CELL = {"1.0": 1.0, "0.0": 0.0}
UNCERTAIN = {"ignore": np.nan, "ones": 1.0, "zeros": 0.0}
BLANK = {"negative": 0.0, "ignore": np.nan}


def _expected(fixture, images, observations, uncertain, blank):
    """Targets looked up study by study in the fixture's own label dict."""
    values = {**CELL, "-1.0": UNCERTAIN[uncertain], "": BLANK[blank]}
    return np.array(
        [[values[fixture.labels[i.study_id][o]] for o in observations] for i in images], np.float32
    )


@pytest.fixture
def mimic(tmp_path):
    return write_mimic(tmp_path / "mimic-cxr-jpg" / "2.0.0", seed=2, subjects=5)


def _read(fixture, **kwargs):
    return read_mimic_cxr(fixture.chexpert_csv, fixture.metadata_csv, fixture.root, **kwargs)


def test_join_on_study_with_view_filter_and_patients(mimic, caplog):
    with caplog.at_level(logging.WARNING, logger="medfound"):
        table = _read(mimic)
    kept = [i for i in mimic.images if i.view in ("PA", "AP") and i.study_id in mimic.labels]
    assert 0 < len(kept) < len(mimic.images)
    assert table.ids == [
        str(
            mimic.root / "files" / f"p{i.subject_id[:2]}" / f"p{i.subject_id}" / f"s{i.study_id}"
            / f"{i.dicom_id}.jpg"
        )
        for i in kept
    ]  # fmt: skip
    assert table.patients.tolist() == [i.subject_id for i in kept]
    np.testing.assert_array_equal(
        table.targets, _expected(mimic, kept, CHEXPERT_14, "ignore", "negative")
    )
    assert table.classes == CHEXPERT_14  # in our order, whatever the CSV's
    assert table.splits is None
    check_images_exist(table)
    # the image of the study without labels is counted in a warning
    assert "1 image(s) of studies without labels" in caplog.text


@pytest.mark.parametrize(("uncertain", "blank"), [("ones", "negative"), ("zeros", "ignore")])
def test_policies_and_every_view(mimic, uncertain, blank):
    table = _read(
        mimic, observations=CHEXPERT_COMPETITION, uncertain=uncertain, blank=blank, views="all"
    )
    kept = [i for i in mimic.images if i.study_id in mimic.labels]
    assert _read(mimic, views=["ALL"]).ids == table.ids
    assert table.ids[-1].endswith(f"{kept[-1].dicom_id}.jpg")
    np.testing.assert_array_equal(
        table.targets, _expected(mimic, kept, CHEXPERT_COMPETITION, uncertain, blank)
    )


def test_lateral_only_and_split_csv(mimic):
    table = _read(mimic, views=["lateral"], split_csv=mimic.split_csv)
    kept = [i for i in mimic.images if i.view == "LATERAL" and i.study_id in mimic.labels]
    assert len(table) == len(kept) > 0
    expected = {"train": "train", "validate": "val", "test": "test"}
    assert table.splits.tolist() == [expected[i.split] for i in kept]


def test_split_csv_must_cover_every_kept_image(mimic, tmp_path):
    first = mimic.images[0]
    partial = write_csv(tmp_path / "split.csv", ["dicom_id", "split"], [[first.dicom_id, "train"]])
    with pytest.raises(ConfigError, match=r"image\(s\) have no split"):
        _read(mimic, views="all", split_csv=partial)


def test_a_subject_that_differs_between_the_csvs_is_refused(mimic):
    with gzip.open(mimic.metadata_csv, "rt") as fh:
        text = fh.read()
    victim = next(i for i in mimic.images if i.view == "PA" and i.study_id in mimic.labels)
    text = text.replace(f"{victim.dicom_id},{victim.subject_id}", f"{victim.dicom_id},19999999")
    with gzip.open(mimic.metadata_csv, "wt") as fh:
        fh.write(text)
    with pytest.raises(
        ConfigError, match=re.escape(f"subject 19999999 here, {victim.subject_id} in")
    ):
        _read(mimic)


def test_a_study_labelled_twice_and_no_matching_views_are_refused(mimic, tmp_path):
    with gzip.open(mimic.chexpert_csv, "rt") as fh:
        lines = fh.read().splitlines()
    doubled = tmp_path / "chexpert.csv"
    doubled.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(ConfigError, match=f"line {len(lines) + 1} \\(study"):
        read_mimic_cxr(doubled, mimic.metadata_csv, mimic.root)
    with pytest.raises(ConfigError, match="no labelled images with ViewPosition LL"):
        _read(mimic, views=("LL",))
