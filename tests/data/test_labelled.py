"""LabelledImageDataset: the tensors are the images' pixels mapped to [0, 1], targets follow the table,
a bad image becomes an error item."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from medfound.data.labelled import LabelledImageDataset
from medfound.data.labels import read_label_csv
from medfound.io import get_preset
from tests.data.label_fixtures import write_csv, write_gray

SHAPE = {"spatial_dims": 2, "channels": 1, "native_size": 16}


def _table(tmp_path, kind):
    paths = [write_gray(tmp_path / f"{i}.png", seed=i) for i in range(4)]
    if kind == "multiclass":
        rows = [[str(p), "ab"[i % 2]] for i, p in enumerate(paths)]
        return read_label_csv(write_csv(tmp_path / "l.csv", ["path", "y"], rows)), paths
    cells = [["1", ""], ["0", "1"], ["", "0"], ["1", "1"]]
    rows = [[str(p), *c] for p, c in zip(paths, cells, strict=True)]
    return read_label_csv(write_csv(tmp_path / "l.csv", ["path", "u", "v"], rows)), paths


def test_multiclass_items_hold_pixels_over_255_and_int_targets(tmp_path):
    table, paths = _table(tmp_path, "multiclass")
    dataset = LabelledImageDataset(table, [3, 0], get_preset("cxr", size=16), **SHAPE)
    assert len(dataset) == 2
    item = dataset[0]
    assert item["index"] == 0
    assert item["source"] == str(paths[3].resolve())
    expected = np.asarray(Image.open(paths[3]), dtype=np.float32)[None] / 255.0
    np.testing.assert_allclose(item["tensor"].numpy(), expected, atol=1e-6)
    assert item["target"].dtype == torch.int64 and item["target"].shape == ()
    assert item["target"].item() == 1  # "b"
    assert dataset[1]["target"].item() == 0


def test_multilabel_targets_are_float_vectors_with_nan(tmp_path):
    table, _ = _table(tmp_path, "multilabel")
    dataset = LabelledImageDataset(table, range(4), get_preset("cxr", size=16), **SHAPE)
    targets = torch.stack([dataset[i]["target"] for i in range(4)])
    assert targets.dtype == torch.float32
    expected = torch.tensor([[1, np.nan], [0, 1], [np.nan, 0], [1, 1]], dtype=torch.float32)
    torch.testing.assert_close(targets, expected, equal_nan=True)


def test_resized_to_the_model_and_channels_repeated(tmp_path):
    table, paths = _table(tmp_path, "multiclass")
    shape = {"spatial_dims": 2, "channels": 3, "native_size": 8}
    dataset = LabelledImageDataset(table, [1], get_preset("cxr", size=12), **shape)
    # a size given to the preset wins over the model's native size
    assert dataset[0]["tensor"].shape == (3, 12, 12)
    dataset = LabelledImageDataset(table, [1], get_preset("auto"), **shape)
    tensor = dataset[0]["tensor"]
    assert tensor.shape == (3, 8, 8)
    pixels = torch.from_numpy(np.asarray(Image.open(paths[1]), dtype=np.float32) / 255.0)
    reference = torch.nn.functional.interpolate(
        pixels[None, None], size=(8, 8), mode="bilinear", antialias=True
    )[0, 0]
    for channel in tensor:
        torch.testing.assert_close(channel, reference, atol=1e-5, rtol=0)


def test_a_bad_image_is_an_error_item_not_an_exception(tmp_path):
    table, paths = _table(tmp_path, "multiclass")
    paths[2].write_bytes(b"not a png")
    paths[0].unlink()
    dataset = LabelledImageDataset(table, [0, 1, 2], get_preset("cxr", size=16), **SHAPE)
    items = [dataset[i] for i in range(3)]
    assert set(items[0]) == {"index", "source", "error"}
    assert "no such file" in items[0]["error"] and items[0]["source"] == str(paths[0].resolve())
    assert "tensor" in items[1]
    assert "not a readable image" in items[2]["error"] and items[2]["index"] == 2


def test_pickles_for_workers_and_rejects_out_of_range_indices(tmp_path):
    table, _ = _table(tmp_path, "multiclass")
    dataset = LabelledImageDataset(table, [1, 2], get_preset("cxr", size=16), **SHAPE)
    again = pickle.loads(pickle.dumps(dataset))
    torch.testing.assert_close(again[1]["tensor"], dataset[1]["tensor"])
    with pytest.raises(IndexError):
        LabelledImageDataset(table, [0, 4], get_preset("cxr", size=16), **SHAPE)
