"""An encoder's parameters by block, for REMEDIS-style partial fine-tuning (`fine_tune_after_block`).

Block 0 is the stem (everything before the first stage), blocks 1-4 the four stages, and what follows
the last stage in the encoder (BiT's final GroupNorm) counts as block 4. Parts of the network that the
encoder never runs (the decoder and head of a Genesis U-Net) have no block: they are unused by
classification and stay frozen. `--freeze-until B` freezes blocks 0..B: -1 trains everything, 4 only
what sits on top of the encoder.
"""

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
    """Block (0-4) of each parameter of `model.network` by name; None for unused parts."""
    names = [name for name, _ in model.network.named_parameters()]
    stages, unused = _stage_prefixes(model)

    def matches(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    blocks: dict[str, int | None] = {}
    seen_stage = False
    for name in names:
        if any(matches(name, prefix) for prefix in unused):
            blocks[name] = None
            continue
        stage = next((k + 1 for k, p in enumerate(stages) if matches(name, p)), None)
        if stage is not None:
            seen_stage = True
            blocks[name] = stage
        else:
            blocks[name] = STAGES if seen_stage else 0
    if len(stages) < STAGES or not any(b == STAGES for b in blocks.values()):
        raise ConfigError(f"model {model.card.name!r}: could not find its 4 stages {stages}")
    return blocks


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
    for name, parameter in model.network.named_parameters():
        b = blocks[name]
        parameter.requires_grad_(not (b is None or b <= block))
    frozen_norms = []
    for module in model.network.modules():
        params = list(module.parameters(recurse=False))
        is_norm = isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm)
        if is_norm and params and not any(p.requires_grad for p in params):
            frozen_norms.append(module)
    return frozen_norms


def _safe_blocks(model: FoundationModel) -> dict[str, int | None]:
    """parameter_blocks, or 'no unused parts' when the model's blocks are not known."""
    try:
        return parameter_blocks(model)
    except ConfigError:
        return {n: 0 for n, _ in model.network.named_parameters()}
