"""Views cut from the image as decoded: the crop boxes, native detail, pairs and MICLe's patients."""

import numpy as np
import pytest
import torch

from medfound.data.crops import CropSpec, crop_box, crop_resized
from medfound.data.sources import collect_sources
from medfound.data.view_pairs import ViewPairDataset
from medfound.io import get_preset
from tests.factories import write_nifti, write_png

SPEC = CropSpec(size=32)


def test_crop_boxes_cover_the_asked_areas_and_aspects_inside_the_image():
    rng = np.random.default_rng(0)
    boxes = [crop_box(1500, 2000, rng, CropSpec(224)) for _ in range(2000)]
    areas = np.array([h * w for _, _, h, w in boxes]) / (1500 * 2000)
    aspects = np.array([w / h for _, _, h, w in boxes])
    assert all(
        t >= 0 and left >= 0 and t + h <= 1500 and left + w <= 2000 for t, left, h, w in boxes
    )
    assert 0.075 < areas.min() < 0.09 and areas.max() <= 1.0
    assert aspects.min() > 0.74 and aspects.max() < 1.34
    # U[0.08, 1] less the large boxes whose aspect does not fit in 1500 px (redrawn)
    assert 0.35 < np.median(areas) < 0.5 and areas.max() > 0.95


def test_the_fallback_is_the_centre_of_the_nearest_allowed_aspect():
    never = CropSpec(8, scale=(2.0, 3.0))  # no box of twice the image fits: every attempt fails
    assert crop_box(100, 400, np.random.default_rng(0), never) == (0, 133, 100, 133)
    assert crop_box(90, 100, np.random.default_rng(0), never) == (0, 0, 90, 100)


def _high_frequency_share(image: torch.Tensor) -> float:
    """The share of the spectrum's energy above a quarter of the Nyquist frequency."""
    spectrum = torch.fft.rfft2(image - image.mean()).abs() ** 2
    fy = torch.fft.fftfreq(image.shape[-2]).abs()[:, None]
    fx = torch.fft.rfftfreq(image.shape[-1])[None, :]
    high = (torch.maximum(fy, fx) > 0.125).float()
    return float((spectrum * high).sum() / spectrum.sum())


def test_the_smallest_crop_of_a_large_image_keeps_its_native_detail():
    # fine texture (a 3-px period) everywhere on a 2000 x 1500 image
    rng = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.arange(1500.0), torch.arange(2000.0), indexing="ij")
    image = (0.5 + 0.25 * torch.sin(2 * torch.pi * (x + y) / 3.0))[None]
    image = (image + 0.05 * torch.rand(image.shape, generator=rng)).clamp(0, 1)
    side = int((0.08 * 1500 * 2000) ** 0.5)  # the smallest crop: 8% of the area, square
    native = crop_resized(image, (100, 100, side, side), 224)  # cut, then resized once
    # what stretching to 224 first and cropping 8% of that gives (the former path)
    stretched = torch.nn.functional.interpolate(
        image[None], size=(224, 224), mode="bilinear", antialias=True
    )[0]
    small = round(224 * 0.08**0.5)
    upsampled = torch.nn.functional.interpolate(
        stretched[None, :, 10 : 10 + small, 10 : 10 + small], size=(224, 224), mode="bicubic"
    )[0].clamp(0, 1)
    assert native.shape == upsampled.shape == (1, 224, 224)
    assert _high_frequency_share(native) > 5 * _high_frequency_share(upsampled)


def test_the_pretraining_views_of_a_large_image_are_cut_from_it_as_decoded(tmp_path):
    # a 2000 x 1500 image of texture with an 8-px period; the smallest crops, through the dataset
    y, x = np.mgrid[0:1500, 0:2000]
    texture = 128 + 90 * np.sin(2 * np.pi * (x + y) / 8.0)
    write_png(tmp_path / "big.png", texture.astype(np.uint8))
    sources, _ = collect_sources([tmp_path / "big.png"])
    smallest = CropSpec(224, scale=(0.08, 0.08), ratio=(1.0, 1.0))
    pair = ViewPairDataset(sources, get_preset("path", size=224), smallest)[(0, 0)]["tensor"]
    # the former path: stretched to 224 first (the texture falls below a pixel and is filtered
    # out), then the same share cut and upsampled
    stretched = torch.nn.functional.interpolate(
        torch.from_numpy(texture / 255.0)[None, None].float(),
        size=(224, 224),
        antialias=True,
        mode="bilinear",
    )[0]
    small = round(224 * 0.08**0.5)
    upsampled = torch.nn.functional.interpolate(
        stretched[None, :, :small, :small], size=(224, 224), mode="bicubic"
    )[0].clamp(0, 1)
    for view in pair:  # the texture survives (a 4-px period at 224) with most of its contrast
        assert float(view[0].std()) > 0.15 and float(upsampled.std()) < 0.01


@pytest.fixture
def patients(tmp_path):
    """Images of three patients: A (3 images), B (1), C (a volume)."""
    rows = ["path,patient"]
    for name, patient, level in (
        ("a0", "A", 10),
        ("a1", "A", 60),
        ("a2", "A", 110),
        ("b0", "B", 160),
    ):
        write_png(tmp_path / f"{name}.png", np.full((40, 50), level, np.uint8))
        rows.append(f"{name}.png,{patient}")
    volume = np.random.default_rng(0).uniform(0, 100, (20, 24, 5)).astype(np.float32)
    write_nifti(tmp_path / "c.nii.gz", volume)
    rows.append("c.nii.gz,C")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "data.csv"


def test_without_micle_an_item_is_two_crops_of_one_image(patients):
    sources, _ = collect_sources([patients])
    dataset = ViewPairDataset(sources, get_preset("path", size=32), SPEC, seed=1)
    assert len(dataset) == 5 and dataset.keyed_by_epoch
    for index in range(5):
        item = dataset[(0, index)]
        assert item["tensor"].shape == (2, 3, 32, 32) and item["group"]
        assert item["pair"][0] == item["pair"][1] == sources[index].id
    again = dataset[(3, 4)]
    assert torch.equal(again["tensor"], dataset[(3, 4)]["tensor"])  # a resume cuts the same
    assert not torch.equal(again["tensor"], dataset[(4, 4)]["tensor"])  # another epoch, others


def test_micle_pairs_two_images_of_one_patient_and_never_a_patient_twice(patients):
    from medfound.data.sources import patient_groups

    sources, _ = collect_sources([patients])
    groups = patient_groups([patients], sources)
    assert [len(g) for g in groups] == [3, 1, 1]
    dataset = ViewPairDataset(
        sources, get_preset("path", size=32), SPEC, seed=1, groups=groups, micle_p=1.0
    )
    assert len(dataset) == 3  # items are patients: a batch holds each at most once
    for epoch in range(5):
        item = dataset[(epoch, 0)]
        a, b = item["pair"]
        assert a != b and {a, b} <= {s.id for s in sources[:3]}  # two files of patient A
        means = item["tensor"].mean(dim=(1, 2, 3))
        assert abs(float(means[0] - means[1])) > 0.1  # different images, not two crops of one
        lonely = dataset[(epoch, 1)]
        assert lonely["pair"][0] == lonely["pair"][1]  # B has one image: two crops of it
    half = ViewPairDataset(
        sources, get_preset("path", size=32), SPEC, seed=1, groups=groups, micle_p=0.5
    )
    kinds = {half[(epoch, 0)]["pair"][0] == half[(epoch, 0)]["pair"][1] for epoch in range(20)}
    assert kinds == {True, False}


def test_a_patient_column_is_required_and_named_for_micle(tmp_path):
    from medfound.data.sources import patient_groups
    from medfound.errors import ConfigError

    write_png(tmp_path / "x.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "d.csv").write_text("path,label\nx.png,1\n")
    sources, _ = collect_sources([tmp_path / "d.csv"])
    with pytest.raises(ConfigError, match=r"d\.csv: MICLe needs a 'patient' or 'study' column"):
        patient_groups([tmp_path / "d.csv"], sources)
    with pytest.raises(ConfigError, match="MICLe needs the data as a CSV"):
        patient_groups([tmp_path], sources)
