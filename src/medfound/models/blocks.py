"""An encoder's parameters by block, for REMEDIS-style partial fine-tuning (`fine_tune_after_block`).

Block 0 is the stem (everything before the first stage), blocks 1-4 the four stages, and what follows
the last stage in the encoder (BiT's final GroupNorm) counts as block 4. A stage is named by the
module that ends it (timm's `feature_info`), so layers between two named modules (EfficientNet's and
MobileNet's unnamed block groups, DenseNet's transitions) belong to the stage they lead into. Parts
of the network that the encoder never runs (the decoder and head of a Genesis U-Net) have no block:
they are unused by classification and stay frozen. `--freeze-until B` freezes blocks 0..B: -1
trains everything, 4 only what sits on top of the encoder.
"""

import torch
from torch import nn

from medfound.errors import ConfigError
from medfound.models.foundation import FoundationModel

STAGES = 4


def _stage_prefixes(model: FoundationModel) -> tuple[list[str], tuple[str, ...]]:
    """(the module-name prefixes of the 4 stages within model.network, prefixes of unused parts)."""
    family = model.card.family
    if family == "genesis":  # UNet3D: encoder.0..3 are the four levels (no separate stem)
        return [f"encoder.{i}" for i in range(STAGES)], ("decoder", "head")
    if family == "genesis2d":  # an smp U-Net on a timm encoder
        stages = [f"unet.encoder.model.{name}" for name in model.network.stage_names[-STAGES:]]
        return stages, ("unet.decoder", "unet.segmentation_head")
    if family == "monai" and hasattr(model.network, "layer4"):
        return [f"layer{i}" for i in range(1, STAGES + 1)], ()
    if family in ("bit", "timm", "simclr"):
        return list(model.stage_names[-STAGES:]), ()
    raise ConfigError(
        f"model {model.card.name!r}: its blocks are not known, so only --freeze-until -1 "
        "(train everything) or 4 (train only the head) apply"
    )


def parameter_blocks(model: FoundationModel) -> dict[str, int | None]:
    """Block (0-4) of each parameter of `model.network` by name; None for unused parts.

    Modules are taken in the network's (registration) order: parameters before the first stage
    are the stem (0), those after stage k and before stage k + 1 lead into stage k + 1, those
    after the last stage count as 4. A stage module without parameters (an activation or identity
    that timm names as a stage's end) still marks where its stage ends."""
    stages, unused = _stage_prefixes(model)

    def within(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    # (parameter name, its block if known now) and stage-end markers (None, k), in module order.
    sequence: list[tuple[str | None, int | None]] = []
    found = set()
    for module_name, module in model.network.named_modules():
        if module_name in stages:
            found.add(stages.index(module_name) + 1)
            sequence.append((None, stages.index(module_name) + 1))
        prefix = f"{module_name}." if module_name else ""
        for name, _ in module.named_parameters(recurse=False):
            full = prefix + name
            if any(within(full, p) for p in unused):
                sequence.append((full, None))
            else:  # -1: between stages, resolved below
                stage = next((k + 1 for k, p in enumerate(stages) if within(full, p)), -1)
                sequence.append((full, stage))
    if len(stages) < STAGES or found != set(range(1, STAGES + 1)):
        raise ConfigError(f"model {model.card.name!r}: could not find its 4 stages {stages}")
    blocks: dict[str, int | None] = {}
    following = STAGES  # walking backwards: the stage that what comes before leads into
    for name, block in reversed(sequence):
        if name is None:
            following = block
        else:
            blocks[name] = following if block == -1 else block
    first = next(i for i, (name, _) in enumerate(sequence) if name is None)
    for name, block in sequence[:first]:  # before the first stage starts: the stem
        if block == -1:
            blocks[name] = 0
    return {name: blocks[name] for name, _ in model.network.named_parameters()}


def freeze_until(model: FoundationModel, block: int) -> list[nn.Module]:
    """Freeze the encoder's blocks 0..`block` (and its unused parts) in place.

    Returns the normalisation modules (BatchNorm, GroupNorm, ...) all of whose parameters are frozen:
    the caller keeps them in eval mode so that their running statistics stay as loaded too.
    """
    if not -1 <= block <= STAGES:
        raise ConfigError(f"freeze_until must be in -1..{STAGES}, got {block}")
    if block == STAGES:
        blocks: dict[str, int | None] = {n: STAGES for n, _ in model.network.named_parameters()}
        blocks |= {n: b for n, b in _safe_blocks(model).items() if b is None}
    else:
        blocks = parameter_blocks(model) if block >= 0 else _safe_blocks(model)
    unused = unused_by_embedding(model)
    for name, parameter in model.network.named_parameters():
        b = blocks[name]
        parameter.requires_grad_(not (b is None or b <= block or name in unused))
    return frozen_norms(model.network)


_PROBE_SIZE = {2: 64, 3: 32}  # spatial size of the gradient-probing pass


def unused_by_embedding(model: FoundationModel) -> set[str]:
    """Names of `model.network`'s parameters that the pooled embedding does not depend on (a
    Genesis U-Net's decoder, the `conv_head` some timm models keep for their own classifier): they
    get no gradient, and DDP refuses parameters that train without one. Found by one backward pass
    on a small zero input in eval mode (running statistics untouched), at the card's input size for
    models that take no other (ViTs)."""
    dims, channels = model.card.spatial_dims, model.card.in_channels
    was_training = model.training
    model.eval()
    saved = {n: p.requires_grad for n, p in model.network.named_parameters()}
    try:
        for parameter in model.network.parameters():
            parameter.requires_grad_(True)
            parameter.grad = None
        try:
            output = model(torch.zeros(1, channels, *(_PROBE_SIZE[dims],) * dims))
        except (AssertionError, RuntimeError, ValueError):
            native = model.card.input_size
            size = (native,) * dims if isinstance(native, int) else tuple(native)
            output = model(torch.zeros(1, channels, *size))
        output.float().sum().backward()
        return {n for n, p in model.network.named_parameters() if p.grad is None}
    finally:
        for name, parameter in model.network.named_parameters():
            parameter.grad = None
            parameter.requires_grad_(saved[name])
        model.train(was_training)


def frozen_norms(module: nn.Module) -> list[nn.Module]:
    """The normalisation modules (BatchNorm, GroupNorm, LayerNorm) in `module` all of whose
    parameters are frozen. Looked up anew on every call: DDP's BatchNorm conversion
    (engine/global_batchnorm.py) replaces the module objects after freezing."""
    norms = nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm
    found = []
    for child in module.modules():
        params = list(child.parameters(recurse=False))
        if isinstance(child, norms) and params and not any(p.requires_grad for p in params):
            found.append(child)
    return found


def _safe_blocks(model: FoundationModel) -> dict[str, int | None]:
    """parameter_blocks, or 'no unused parts' when the model's blocks are not known."""
    try:
        return parameter_blocks(model)
    except ConfigError:
        return {n: 0 for n, _ in model.network.named_parameters()}
