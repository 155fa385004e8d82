"""Fine-tuning for classification: freezing by block, the zero-initialised head, the masked loss,
the on-device augmentation, and the exported classifier file."""

import math

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


def test_frozen_norms_keep_their_statistics_after_the_ddp_batchnorm_conversion():
    # Under DDP the loop swaps every BatchNorm for a global one after the classifier is built; the
    # swapped-in layers of frozen blocks must stay in eval mode too (no process group needed here:
    # without one a global BatchNorm is a plain one).
    from medfound.engine.global_batchnorm import GlobalBatchNorm, make_global

    classifier = Classifier(_encoder(), 3, freeze=2)
    make_global(classifier, torch.device("cpu"))
    blocks = parameter_blocks(classifier.encoder)
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    _train_steps(classifier, steps=2)
    after = classifier.state_dict()
    converted = [
        name
        for name, m in classifier.encoder.network.named_modules()
        if isinstance(m, GlobalBatchNorm)
    ]
    assert converted
    for name in converted:
        key = f"encoder.network.{name}.running_mean"
        frozen = blocks[f"{name}.weight"] <= 2
        assert torch.equal(before[key], after[key]) == frozen, name


def _blocks_by_execution(model) -> dict[str, int]:
    """Block of each parameterised module that runs, from the order modules run in (not the order
    they are registered in): before stage 1 starts 0, inside stage k k, between stages k and
    k + 1 (or its ending module) k + 1, after the last 4."""
    network = model.network
    stages = list(model.stage_names[-4:])
    events: list[tuple[str, str]] = []
    hooks = []
    for name, module in network.named_modules():
        if name in stages:
            hooks.append(
                module.register_forward_pre_hook(lambda m, a, n=name: events.append(("start", n)))
            )
            hooks.append(
                module.register_forward_hook(lambda m, a, o, n=name: events.append(("end", n)))
            )
        if any(True for _ in module.parameters(recurse=False)):
            hooks.append(
                module.register_forward_hook(lambda m, a, o, n=name: events.append(("ran", n)))
            )
    with torch.no_grad():
        model.eval()(torch.rand(1, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    starts = {n: i for i, (kind, n) in enumerate(events) if kind == "start"}
    ends = {n: i for i, (kind, n) in enumerate(events) if kind == "end"}
    blocks = {}
    for t, (kind, name) in enumerate(events):
        if kind != "ran" or name in starts:
            continue
        inside = [k + 1 for k, s in enumerate(stages) if starts[s] < t < ends[s]]
        later = [k + 1 for k, s in enumerate(stages) if starts[s] > t]
        if t < starts[stages[0]]:
            blocks[name] = 0
        else:
            blocks[name] = inside[0] if inside else later[0] if later else 4
    return blocks


@pytest.mark.parametrize("name", ["timm:resnet10t", "timm:mobilenetv3_small_100"])
def test_layers_between_named_stages_belong_to_the_stage_they_lead_into(name):
    # MobileNetV3's feature_info names blocks 0, 1, 3 and 5: blocks 2 and 4 lead into 3 and 5.
    model = _encoder(name)
    by_execution = _blocks_by_execution(model)
    blocks = parameter_blocks(model)
    assert set(by_execution.values()) == {0, 1, 2, 3, 4}
    modules = dict(model.network.named_modules())
    for module, block in by_execution.items():
        own = [
            f"{module}.{n}".lstrip(".") for n, _ in modules[module].named_parameters(recurse=False)
        ]
        assert {blocks[n] for n in own} == {block}, module


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


def test_unlabelled_batches_are_refused_by_name():
    method = ClassificationMethod(Classifier(_encoder(), 2), "multiclass", ("a", "b"))
    with pytest.raises(ConfigError, match="needs a label"):
        method.prepare(torch.rand(2, 3, 32, 32), 0)


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


@pytest.mark.parametrize("shape", [(16, 1, 12, 10), (6, 2, 8, 6, 10)])
def test_flip_and_crop_of_a_uniform_image_is_that_image(shape):
    # Any crop inside a uniform image is uniform: nothing from outside it may blend in at the edges.
    images = torch.full(shape, 0.7)
    out = flip_and_crop(images, torch.Generator().manual_seed(5), min_scale=0.5)
    torch.testing.assert_close(out, images, atol=1e-6, rtol=0)


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


def test_fine_tuning_rotation_turns_every_image_within_the_range_and_only_in_2d():
    # a bright dot right of the centre: after a rotation by a, it lies at angle a from the x axis
    images = torch.zeros(64, 1, 65, 65)
    images[:, :, 32, 52] = 1.0
    out = flip_and_crop(
        images, torch.Generator().manual_seed(1), min_scale=1.0, flip_axes=(), rotation_degrees=30
    )
    angles = []
    for picture in out[:, 0]:
        y, x = divmod(int(picture.argmax()), 65)
        angles.append(math.degrees(math.atan2(32.0 - y, x - 32.0)))
    assert max(abs(a) for a in angles) <= 31  # never beyond the range
    assert min(abs(a) for a in angles) < 8 and max(abs(a) for a in angles) > 22
    assert sum(a > 2 for a in angles) > 15 and sum(a < -2 for a in angles) > 15  # both ways
    with pytest.raises(ValueError, match="2D images only"):
        flip_and_crop(torch.zeros(1, 1, 4, 4, 4), torch.Generator(), rotation_degrees=10)


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
    (tmp_path / "notes.safetensors").write_text("not a weight file")
    with pytest.raises(WeightsError, match=r"notes\.safetensors: unreadable weight file"):
        load_classifier(tmp_path / "notes.safetensors")


def test_parameters_the_embedding_never_uses_are_frozen_so_ddp_accepts_the_model():
    # timm's MobileNetV3 keeps conv_head for its own classifier: the pooled features skip it.
    classifier = Classifier(_encoder("timm:mobilenetv3_small_050"), 2)
    trainable = {n for n, p in classifier.encoder.network.named_parameters() if p.requires_grad}
    assert not any(n.startswith("conv_head") for n in trainable)
    classifier.train()
    classifier.head.weight.data.normal_()  # a head that passes gradients back
    loss = classifier(torch.rand(2, 3, 64, 64)).pow(2).sum()
    loss.backward()
    missing = [n for n, p in classifier.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
