"""The segmentation method: aligned flips, Dice + CE, Dice score, learning discs, the exported file."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from medfound.errors import ConfigError, WeightsError
from medfound.methods.segmentation import (
    WEIGHTS_FILE,
    SegmentationMethod,
    load_segmenter,
    random_flips,
)
from medfound.models import load_model
from medfound.models.segmenter import build_segmenter
from medfound.models.weights import save_safetensors


def _discs(n: int, size: int, rng: np.random.Generator):
    """Bright discs of random radius and place on uniform noise: images (n, 1, s, s), masks."""
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        radius = rng.uniform(4, 9)
        cy, cx = rng.uniform(radius, size - radius, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        images.append(rng.uniform(0, 0.5, (size, size)) + 0.5 * mask)
        masks.append(mask)
    return (
        torch.tensor(np.array(images), dtype=torch.float32)[:, None],
        torch.tensor(np.array(masks), dtype=torch.int64),
    )


def _hand_dice(pred: np.ndarray, truth: np.ndarray, cls: int) -> float:
    p, t = pred == cls, truth == cls
    if not p.any() and not t.any():
        return 1.0
    return 2 * np.logical_and(p, t).sum() / (p.sum() + t.sum())


def _method(segmenter, roi, classes=("background", "disc"), **kwargs):
    return SegmentationMethod(
        segmenter, roi_size=roi, num_classes=len(classes), class_names=classes, **kwargs
    )


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return build_segmenter(load_model("timm:test_resnet", random_init=True), 2, in_channels=1)


@pytest.fixture
def one_thread():
    """One intra-op thread: on a few shared cores, more threads wait on each other (the training
    test ran 5-10x slower with two than with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_few_dozen_steps_learn_discs_on_noise(one_thread):
    # timm's test_resnet: a small random-init ResNet, so the steps take seconds on a CPU
    segmenter = build_segmenter(load_model("timm:test_resnet", random_init=True), 2, in_channels=1)
    rng = np.random.default_rng(0)
    method = _method(segmenter, (32, 32))
    optimiser = torch.optim.Adam(method.model.parameters(), lr=3e-3)
    for step in range(30):
        images, masks = _discs(8, 32, rng)
        loss = method.loss(method.model, method.prepare(images, step, masks)).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    images, masks = _discs(6, 32, np.random.default_rng(1))
    predictions = [method.predict(method.model, images[i : i + 1]) for i in range(6)]
    dice = [_hand_dice(p[0].numpy(), m.numpy(), 1) for p, m in zip(predictions, masks, strict=True)]
    assert np.mean(dice) > 0.8
    assert method.score(predictions, list(masks[:, None])) == pytest.approx(np.mean(dice))


def test_flips_move_image_and_mask_together_and_are_seeded():
    images = torch.rand(16, 2, 6, 5, 4)
    masks = torch.randint(0, 3, (16, 6, 5, 4))
    images[:, 1] = masks  # channel 1 is the mask: the two must stay equal
    flipped, flipped_masks = random_flips(images, masks, seed=3)
    torch.testing.assert_close(flipped[:, 1], flipped_masks.float())
    seen = set()
    for i in range(16):
        matches = [
            axes
            for axes in [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]
            if torch.equal(flipped[i], images[i].flip(axes) if axes else images[i])
        ]
        assert len(matches) == 1  # each sample is one of the 8 flips of itself
        seen.add(matches[0])
    assert len(seen) > 2  # the flips vary between samples
    again = random_flips(images, masks, seed=3)
    assert torch.equal(again[0], flipped) and torch.equal(again[1], flipped_masks)
    assert not torch.equal(random_flips(images, masks, seed=4)[0], flipped)


def test_prepare_without_augmentation_or_masks(tiny):
    images, masks = torch.rand(2, 1, 32, 32), torch.randint(0, 2, (2, 32, 32))
    prepared = _method(tiny, (32, 32), augment=False).prepare(images, 0, masks)
    assert prepared[0] is images and prepared[1] is masks
    with pytest.raises(ConfigError, match="needs a mask"):
        _method(tiny, (32, 32)).prepare(images, 0)
    with pytest.raises(ConfigError, match="do not fit"):
        _method(tiny, (32, 32)).prepare(images, 0, masks[:, :16])


def test_the_loss_is_soft_dice_plus_cross_entropy(tiny):
    images, masks = torch.rand(2, 1, 32, 32), torch.randint(0, 2, (2, 32, 32))
    method = _method(tiny, (32, 32))
    loss = method.loss(tiny, (images, masks)).loss
    logits = tiny(images)  # batch statistics again (train mode): the same logits
    probabilities = logits.softmax(dim=1)
    onehot = F.one_hot(masks, 2).permute(0, 3, 1, 2).float()
    overlap = (probabilities * onehot).sum(dim=(2, 3))
    total = probabilities.sum(dim=(2, 3)) + onehot.sum(dim=(2, 3))
    dice_loss = (1 - (2 * overlap + 1e-5) / (total + 1e-5)).mean()
    torch.testing.assert_close(loss, dice_loss + F.cross_entropy(logits, masks))


def test_the_score_is_the_mean_foreground_dice_of_the_cases():
    rng = np.random.default_rng(2)
    predictions = [
        torch.from_numpy(rng.integers(0, 3, (1, 8, 9))).to(torch.uint8) for _ in range(3)
    ]
    truths = [torch.from_numpy(rng.integers(0, 3, (1, 8, 9))) for _ in range(3)]
    truths[1][truths[1] == 2] = 0  # class 2 absent from the truth, predicted: Dice 0
    predictions[2][predictions[2] == 2] = 0
    truths[2][truths[2] == 2] = 0  # absent from both: Dice 1
    expected = np.mean(
        [
            np.mean([_hand_dice(p[0].numpy(), t[0].numpy(), c) for c in (1, 2)])
            for p, t in zip(predictions, truths, strict=True)
        ]
    )
    method = _method(build_segmenter("monai_unet", 3, spatial_dims=2), (16, 16), ("bg", "a", "b"))
    assert method.score(predictions, truths) == pytest.approx(expected)


def test_window_sizes_the_segmenter_cannot_take_are_refused(tiny):
    with pytest.raises(ConfigError, match=r"multiple of 32.*\(32, 32\)"):
        _method(tiny, (48, 32))
    with pytest.raises(ConfigError, match="has 3 axes"):
        _method(tiny, (32, 32, 32))
    with pytest.raises(ConfigError, match="must agree"):
        _method(tiny, (32, 32), ("background", "a", "b"))


def test_a_3d_genesis_segmenter_predicts_whole_volumes_of_any_size():
    segmenter = build_segmenter(load_model("unet3d_genesis.chest_ct", random_init=True), 3)
    method = _method(segmenter, (16, 16, 16), ("background", "a", "b"))
    labels = method.predict(segmenter, torch.rand(1, 1, 20, 18, 9))
    assert labels.shape == (1, 20, 18, 9) and labels.dtype == torch.uint8
    assert labels.device.type == "cpu" and int(labels.max()) < 3


@pytest.mark.parametrize(
    ("name", "roi", "shape"),
    [("timm:test_resnet", (32, 32), (1, 1, 40, 33)), ("unet3d_genesis.chest_ct", (8, 8, 8), None)],
)
def test_export_and_load_give_the_same_network(tmp_path, name, roi, shape):
    model = load_model(name, random_init=True)
    segmenter = build_segmenter(model, 3, in_channels=2 if shape is None else 1)
    with torch.no_grad():  # trained-looking weights, not the seeded initial ones
        for parameter in segmenter.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    classes = ("background", "liver", "tumour")
    method = _method(segmenter, roi, classes, provenance={"seed": 3}, preset="ct", overlap=0.5)
    [path] = method.export(segmenter, tmp_path)
    assert path == tmp_path / WEIGHTS_FILE
    loaded, info = load_segmenter(path)
    assert info["classes"] == list(classes) and info["roi_size"] == roi
    assert info["preset"] == "ct" and info["provenance"] == {"seed": 3}
    assert info["overlap"] == 0.5  # what prediction should slide its windows with
    assert info["card"].name == name and not loaded.training
    # The card says the file is a fine-tuned segmenter, not the starting weights' release.
    assert info["card"].weights_source.startswith("medfound finetune segment")
    assert "liver" in info["card"].description
    image = torch.rand(shape or (1, 2, 12, 9, 10))
    expected = method.predict(segmenter, image)
    torch.testing.assert_close(method.predict(loaded, image), expected)
    with torch.no_grad():
        x = torch.rand(1, segmenter.in_channels, *roi)
        torch.testing.assert_close(loaded(x), segmenter.eval()(x), atol=0, rtol=0)


def test_a_file_that_does_not_match_its_description_names_the_keys(tmp_path, tiny):
    [path] = _method(tiny, (32, 32)).export(tiny, tmp_path)
    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata()
        state = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
    info = json.loads(metadata["medfound_segmenter"])
    info["num_classes"] = 4
    save_file(
        state,
        str(tmp_path / "bad.safetensors"),
        {**metadata, "medfound_segmenter": json.dumps(info)},
    )
    with pytest.raises(WeightsError, match=r"bad\.safetensors.*shape.*head\.weight"):
        load_segmenter(tmp_path / "bad.safetensors")
    # An encoder file (what pretraining exports) is no segmenter.
    encoder = load_model("timm:resnet10t", random_init=True)
    save_safetensors(encoder.network, tmp_path / "encoder.safetensors", encoder.card.to_json())
    with pytest.raises(WeightsError, match="not a segmenter file"):
        load_segmenter(tmp_path / "encoder.safetensors")
