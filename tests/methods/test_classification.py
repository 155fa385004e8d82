"""Fine-tuning for classification: freezing by block, the zero-initialised head, the masked loss,
the on-device augmentation, and the exported classifier file."""

import pytest
import torch
import torch.nn.functional as F

from medfound.errors import ConfigError, WeightsError
from medfound.methods.classification import (
    ClassificationMethod,
    Classifier,
    classification_loss,
    load_classifier,
)
from medfound.methods.supervised_augment import flip_and_crop
from medfound.models import load_model
from medfound.models.blocks import parameter_blocks


def _encoder(name="timm:resnet10t"):
    return load_model(name, random_init=True)


def _train_steps(classifier, steps=3):
    method = ClassificationMethod(classifier, "multiclass", ("a", "b", "c"))
    params = [p for p in classifier.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.5)
    classifier.train()
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        images = torch.rand(4, 3, 32, 32, generator=generator)
        targets = torch.tensor([0, 1, 2, step % 3])
        loss = method.loss(classifier, method.prepare(images, step, targets)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return method


@pytest.mark.parametrize("block", [-1, 0, 2, 4])
def test_frozen_blocks_are_unchanged_by_training_and_the_rest_moves(block):
    classifier = Classifier(_encoder(), 3, freeze=block)
    blocks = parameter_blocks(classifier.encoder)
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    _train_steps(classifier)
    after = classifier.state_dict()
    for name, b in blocks.items():
        key = f"encoder.network.{name}"
        frozen = block == 4 or b <= block
        assert torch.equal(before[key], after[key]) == frozen, (name, b)
    # Frozen BatchNorm layers keep their running statistics too.
    for key in before:
        if "running_mean" in key:
            layer = key.removeprefix("encoder.network.").removesuffix(".running_mean")
            frozen = block == 4 or blocks[f"{layer}.weight"] <= block
            assert torch.equal(before[key], after[key]) == frozen, key
    assert not torch.equal(before["head.weight"], after["head.weight"])


def test_the_head_is_zero_at_step_0_so_every_class_starts_equally_likely():
    classifier = Classifier(_encoder(), 3)
    assert classifier.head.weight.abs().sum() == 0 and classifier.head.bias.abs().sum() == 0
    logits = classifier.eval()(torch.rand(2, 3, 32, 32))
    assert torch.equal(logits, torch.zeros(2, 3))
    random = Classifier(_encoder(), 3, zero_init=False)
    assert random.head.weight.abs().sum() > 0


def test_genesis_encoders_get_the_genesis_head_and_leave_the_decoder_frozen():
    encoder = load_model("unet3d_genesis.chest_ct", random_init=True)
    classifier = Classifier(encoder, 2)
    layers = [m for m in classifier.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in layers] == [(512, 1024), (1024, 2)]
    trainable = {n for n, p in classifier.encoder.network.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("encoder.") for n in trainable)
    assert classifier(torch.rand(1, 1, 16, 16, 16)).shape == (1, 2)


def test_freeze_until_refuses_blocks_out_of_range():
    with pytest.raises(ConfigError, match="freeze_until"):
        Classifier(_encoder(), 2, freeze=5)


def test_masked_multilabel_loss_ignores_unknown_labels():
    logits = torch.randn(4, 3)
    targets = torch.tensor([[1, 0, float("nan")], [0, float("nan"), 1], [1, 1, 1], [0, 0, 0.0]])
    loss = classification_loss(logits, targets, "multilabel")
    known = ~targets.isnan()
    expected = F.binary_cross_entropy_with_logits(logits[known], targets[known])
    assert loss == pytest.approx(float(expected), rel=1e-6)
    # The unknown entry's logit changes nothing.
    logits2 = logits.clone()
    logits2[0, 2] += 10
    assert classification_loss(logits2, targets, "multilabel") == pytest.approx(float(loss))


def test_class_weights_weight_the_cross_entropy():
    logits, targets = torch.randn(6, 2), torch.tensor([0, 0, 0, 0, 1, 1])
    weights = torch.tensor([1.0, 2.0])
    expected = F.cross_entropy(logits, targets, weight=weights)
    assert classification_loss(logits, targets, "multiclass", weights) == pytest.approx(
        float(expected)
    )


def test_flip_and_crop_at_full_scale_only_flips():
    images = torch.rand(8, 1, 12, 10)
    out = flip_and_crop(images, torch.Generator().manual_seed(3), min_scale=1.0)
    for image, result in zip(images, out, strict=True):
        assert torch.allclose(result, image, atol=1e-5) or torch.allclose(
            result, image.flip(-1), atol=1e-5
        )
    flipped = sum(not torch.allclose(r, i, atol=1e-5) for r, i in zip(out, images, strict=True))
    assert 0 < flipped < 8


def test_flip_and_crop_crops_inside_the_image_in_3d():
    # A ramp along each axis: a crop of side s at a shift stays within the ramp's range.
    ramp = torch.linspace(0, 1, 16)
    volume = (ramp[:, None, None] + 0 * ramp[None, :, None] + 0 * ramp[None, None, :])[None, None]
    out = flip_and_crop(
        volume.repeat(6, 1, 1, 1, 1), torch.Generator().manual_seed(1), min_scale=0.5
    )
    assert out.shape == (6, 1, 16, 16, 16)
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6
    spans = out.amax(dim=(1, 2, 3, 4)) - out.amin(dim=(1, 2, 3, 4))
    assert (spans < 0.99).any()  # some crops are smaller than the whole ramp
    assert not torch.equal(out[0], out[1])


def test_the_exported_classifier_loads_back_identically(tmp_path):
    classifier = Classifier(_encoder(), 3, zero_init=False).eval()
    method = ClassificationMethod(classifier, "multiclass", ("a", "b", "c"))
    (path,) = method.export(classifier, tmp_path)
    loaded, task = load_classifier(tmp_path)
    assert task == {"kind": "multiclass", "classes": ["a", "b", "c"], "head": "linear"}
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded(images), classifier(images))
    # The file is also an encoder file: `medfound embed --weights` takes it.
    encoder = load_model("timm:resnet10t", path)
    torch.testing.assert_close(encoder(images), classifier.encoder(images))


def test_a_file_without_a_head_is_not_a_classifier(tmp_path):
    from medfound.methods.pretrained_file import save_pretrained

    path = save_pretrained(
        _encoder(), tmp_path / "enc.safetensors", method="x", description="x", provenance={}
    )
    with pytest.raises(WeightsError, match="not a medfound classifier"):
        load_classifier(path)
