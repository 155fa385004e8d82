"""Names of the original Models Genesis PyTorch release <-> medfound's UNet3D names.

The release's 106 state-dict entries (REFERENCE.md section 3) follow its module tree: encoder
`down_tr64/128/256/512`, decoder `up_tr256/128/64` (each with `up_conv`), head `out_tr.final_conv`;
every level holds `ops.0` and `ops.1`, each a `conv1` (Conv3d) and a `bn1` (BatchNorm). The map is
built from that table, level by level, onto medfound's `encoder.N.convs.M.{0,1}`,
`decoder.N.{up,convs.M.{0,1}}` and `head`. Both concatenate (upsampled, skip) in the same order, so
the weights carry over unchanged.

Any mismatch is fatal, in the encoder and in the decoder alike: the original code's users' top
complaint is layers silently left at random initialisation. Errors name keys by their ORIGINAL names,
the ones a user can find in their file.
"""

from medfound.errors import WeightsError

WRAPPER = "module."  # DataParallel's prefix, which the released checkpoint carries

# (original module, medfound module, is the encoder)
_LEVELS = (
    ("down_tr64", "encoder.0", True),
    ("down_tr128", "encoder.1", True),
    ("down_tr256", "encoder.2", True),
    ("down_tr512", "encoder.3", True),
    ("up_tr256", "decoder.0", False),
    ("up_tr128", "decoder.1", False),
    ("up_tr64", "decoder.2", False),
)
_CONV = ("weight", "bias")
_NORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# within a level: (original block, medfound block, tensors), for ops.0 and ops.1
_BLOCK = (("conv1", "0", _CONV), ("bn1", "1", _NORM))
_ORIGINAL_ROOTS = {original for original, _, _ in _LEVELS} | {"out_tr"}


def _build() -> dict[str, str]:
    names = {}
    for original, ours, is_encoder in _LEVELS:
        if not is_encoder:
            names.update({f"{original}.up_conv.{t}": f"{ours}.up.{t}" for t in _CONV})
        for op in (0, 1):
            for orig_block, our_block, tensors in _BLOCK:
                for t in tensors:
                    names[f"{original}.ops.{op}.{orig_block}.{t}"] = (
                        f"{ours}.convs.{op}.{our_block}.{t}"
                    )
    names.update({f"out_tr.final_conv.{t}": f"head.{t}" for t in _CONV})
    return names


ORIGINAL_TO_MEDFOUND: dict[str, str] = _build()
MEDFOUND_TO_ORIGINAL: dict[str, str] = {v: k for k, v in ORIGINAL_TO_MEDFOUND.items()}


def strip_wrapper(state: dict) -> dict:
    """`state` without DataParallel's `module.` prefix, when every key carries it."""
    if state and all(k.startswith(WRAPPER) for k in state):
        return {k[len(WRAPPER) :]: v for k, v in state.items()}
    return state


def is_original_layout(state: dict) -> bool:
    """True when `state` (with or without `module.`) uses the original release's module names."""
    return any(k.split(".", 1)[0] in _ORIGINAL_ROOTS for k in strip_wrapper(state))


def is_encoder(original_name: str) -> bool:
    """Whether an original key belongs to the encoder (`down_tr*`)."""
    return original_name.startswith("down_tr")


def original_name(medfound_name: str) -> str:
    """The original release's name of a medfound UNet3D key (the key itself if it has none)."""
    return MEDFOUND_TO_ORIGINAL.get(medfound_name, medfound_name)


def to_medfound(state: dict) -> dict:
    """Rename an original-layout state dict to medfound's names (`module.` stripped).

    Keys the map does not know keep their original name, so a strict load reports them as
    unexpected under the name the file uses; use `check` to report everything at once.
    """
    return {ORIGINAL_TO_MEDFOUND.get(k, k): v for k, v in strip_wrapper(state).items()}


def check(state: dict, expected_shapes: dict[str, tuple], where: str) -> None:
    """Refuse a state dict renamed by `to_medfound` that does not match a UNet3D, naming every
    missing, unexpected and mis-shaped key by its ORIGINAL name in one WeightsError.

    `expected_shapes` is keyed by medfound names (`{k: v.shape for k, v in net.state_dict().items()}`).
    Encoder and decoder mismatches are both fatal.
    """
    missing = [original_name(k) for k in expected_shapes if k not in state]
    unexpected = sorted(original_name(k) for k in state if k not in expected_shapes)
    wrong = [
        f"{original_name(k)}: file {tuple(state[k].shape)} vs model {tuple(shape)}"
        for k, shape in expected_shapes.items()
        if k in state and tuple(state[k].shape) != tuple(shape)
    ]
    problems = [
        f"{len(keys)} {label}: {', '.join(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
        if keys
    ]
    if problems:
        encoder = sum(is_encoder(k) for k in missing + unexpected + wrong)
        raise WeightsError(
            f"{where}: original Models Genesis checkpoint does not match the model "
            f"({len(expected_shapes)} tensors expected; {encoder} problem(s) in the encoder "
            "(down_tr*), the rest in the decoder (up_tr*, out_tr); both must match): "
            + "; ".join(problems)
        )
