"""PatchCamelyon from generated HDF5 files in the released layout: labels, lazy patches, workers."""

import os
import pickle
import re

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from medfound.data.labelled import LabelledImageDataset
from medfound.data.labels import check_images_exist
from medfound.data.pcam import PCAM_CLASSES, read_pcam
from medfound.errors import ConfigError
from medfound.io import get_preset
from tests.data.label_fixtures import write_pcam

h5py = pytest.importorskip("h5py")

SHAPE = {"spatial_dims": 2, "channels": 3, "native_size": 32}


class _OwnHandles(LabelledImageDataset):
    """Items also tell which process read them and whether its handles were opened there."""

    def __getitem__(self, index):
        item = super().__getitem__(index)
        return {**item, "pid": os.getpid(), "own_handles": self.table.images._pid == os.getpid()}


@pytest.fixture
def pcam(tmp_path):
    return tmp_path, write_pcam(tmp_path, {"train": 5, "valid": 3, "test": 2})


def test_labels_splits_and_patches(pcam):
    folder, written = pcam
    table = read_pcam(folder)
    y = np.concatenate([written[s][1].reshape(-1) for s in ("train", "valid", "test")])
    x = np.concatenate([written[s][0] for s in ("train", "valid", "test")])
    assert table.kind == "multiclass" and table.classes == PCAM_CLASSES
    np.testing.assert_array_equal(table.targets, y)
    assert table.splits.tolist() == ["train"] * 5 + ["val"] * 3 + ["test"] * 2
    assert table.ids[5] == f"{folder / 'camelyonpatch_level_2_split_valid_x.h5'}#0"
    assert table.patients.tolist() == table.ids
    for i in (0, 6, 9):
        image = table.images.read(i)
        assert image.array.dtype == np.float32 and image.value_range == (0.0, 255.0)
        np.testing.assert_array_equal(image.array, x[i].transpose(2, 0, 1))
        assert image.source_id == table.ids[i]
    check_images_exist(table)


def test_chosen_splits_and_subsets(pcam):
    folder, written = pcam
    table = read_pcam(folder, splits=("val", "test"))
    assert table.splits.tolist() == ["val"] * 3 + ["test"] * 2
    sub = table.subset([4, 1])
    np.testing.assert_array_equal(
        sub.images.read(0).array, written["test"][0][1].transpose(2, 0, 1)
    )
    np.testing.assert_array_equal(
        sub.images.read(1).array, written["valid"][0][1].transpose(2, 0, 1)
    )
    assert sub.targets.tolist() == [written["test"][1][1, 0, 0, 0], written["valid"][1][1, 0, 0, 0]]


def test_items_read_in_two_workers_after_the_parent_opened_the_file(pcam):
    folder, written = pcam
    table = read_pcam(folder, splits=("train",))
    table.images.read(0)  # the parent now holds an open handle, which forked workers must not use
    dataset = _OwnHandles(table, range(5), get_preset("path", size=32), **SHAPE)
    loader = DataLoader(dataset, batch_size=None, num_workers=2)
    items = sorted(loader, key=lambda item: item["index"])
    assert [item["index"] for item in items] == list(range(5))
    assert all(item["own_handles"] for item in items)
    assert {item["pid"] for item in items} - {os.getpid()} == {item["pid"] for item in items}
    x, y = written["train"]
    for item in items:
        expected = torch.from_numpy(x[item["index"]].transpose(2, 0, 1) / 255.0).float()
        torch.testing.assert_close(item["tensor"], expected, atol=1e-6, rtol=0)
        assert item["target"].item() == y[item["index"], 0, 0, 0]
    state = pickle.dumps(table.images)
    assert b"h5py" not in state  # no handle travels
    table.images.close()


def test_a_bad_patch_read_is_an_error_item(pcam):
    folder, _ = pcam
    table = read_pcam(folder, splits=("test",))
    dataset = LabelledImageDataset(table, [0, 1], get_preset("path", size=32), **SHAPE)
    table.images.entries[1, 1] = 99  # a row the file does not have
    item = dataset[1]
    assert "error" in item and item["source"].endswith("#99")
    assert "tensor" in dataset[0]


def test_missing_compressed_and_malformed_files_are_refused(tmp_path):
    write_pcam(tmp_path, {"train": 2, "valid": 2})
    with pytest.raises(
        ConfigError, match=re.escape("split_test_x.h5, camelyonpatch_level_2_split_test_y.h5")
    ):
        read_pcam(tmp_path)
    (tmp_path / "camelyonpatch_level_2_split_test_x.h5.gz").write_bytes(b"")
    (tmp_path / "camelyonpatch_level_2_split_test_y.h5.gz").write_bytes(b"")
    with pytest.raises(ConfigError, match="decompress them with gunzip"):
        read_pcam(tmp_path)
    with pytest.raises(ConfigError, match="choose distinct ones"):
        read_pcam(tmp_path, splits=("train", "holdout"))
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_valid_y.h5", "w") as fh:
        fh.create_dataset("y", data=np.array([0, 3, 1], np.uint8).reshape(3, 1, 1, 1))
    with pytest.raises(ConfigError, match="labels must be 0 or 1, found 3"):
        read_pcam(tmp_path, splits=("valid",))
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_valid_y.h5", "w") as fh:
        fh.create_dataset("y", data=np.array([0, 0.5, 1], np.float32).reshape(3, 1, 1, 1))
    with pytest.raises(ConfigError, match=r"labels must be 0 or 1, found 0\.5$"):
        read_pcam(tmp_path, splits=("valid",))
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_valid_y.h5", "w") as fh:
        fh.create_dataset("y", data=np.zeros((3, 1, 1, 1), np.uint8))
    with pytest.raises(
        ConfigError, match=re.escape("holds 2 patches, camelyonpatch_level_2_split_valid_y.h5 3")
    ):
        read_pcam(tmp_path, splits=("valid",))
    (tmp_path / "camelyonpatch_level_2_split_train_x.h5").write_bytes(b"not hdf5")
    with pytest.raises(ConfigError, match="not a PCam patch file"):
        read_pcam(tmp_path, splits=("train",))
