"""BiT variable naming <-> timm ResNet-v2 parameter names, in both directions.

timm ships a BiT .npz loader, but it ignores names it does not use and fails with a bare KeyError on
a missing one; medfound needs a strict, reusable map (the TF SavedModel converter uses it too) that
reports every unmapped or missing tensor by name.
"""

import re

import numpy as np

_BLOCK = re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)")
_UNIT_PART = {
    "downsample.conv.weight": "a/proj/standardized_conv2d/kernel",
    "conv1.weight": "a/standardized_conv2d/kernel",
    "conv2.weight": "b/standardized_conv2d/kernel",
    "conv3.weight": "c/standardized_conv2d/kernel",
    "norm1.weight": "a/group_norm/gamma",
    "norm1.bias": "a/group_norm/beta",
    "norm2.weight": "b/group_norm/gamma",
    "norm2.bias": "b/group_norm/beta",
    "norm3.weight": "c/group_norm/gamma",
    "norm3.bias": "c/group_norm/beta",
}
_TOP = {
    "stem.conv.weight": "root_block/standardized_conv2d/kernel",
    "norm.weight": "group_norm/gamma",
    "norm.bias": "group_norm/beta",
    "head.fc.weight": "head/conv2d/kernel",
    "head.fc.bias": "head/conv2d/bias",
}
ROOT_KERNEL = _TOP["stem.conv.weight"]


def bit_name(timm_key: str) -> str:
    """BiT name (without prefix) of a timm ResNet-v2 parameter; KeyError if it has none."""
    if timm_key in _TOP:
        return _TOP[timm_key]
    match = _BLOCK.fullmatch(timm_key)
    if match and match.group(3) in _UNIT_PART:
        stage, block, part = int(match.group(1)), int(match.group(2)), match.group(3)
        return f"block{stage + 1}/unit{block + 1:02d}/{_UNIT_PART[part]}"
    raise KeyError(f"no BiT name for timm parameter {timm_key!r}")


def hwio_to_oihw(array: np.ndarray) -> np.ndarray:
    """TensorFlow conv kernel (H, W, in, out) -> PyTorch (out, in, H, W); other arrays unchanged."""
    return np.ascontiguousarray(array.transpose(3, 2, 0, 1)) if array.ndim == 4 else array


def oihw_to_hwio(array: np.ndarray) -> np.ndarray:
    """PyTorch conv weight (out, in, H, W) -> TensorFlow (H, W, in, out); others unchanged."""
    return np.ascontiguousarray(array.transpose(2, 3, 1, 0)) if array.ndim == 4 else array


def find_bit_prefix(names: list[str]) -> str:
    """The scope in front of BiT names (e.g. 'resnet/'), found from the root conv's kernel."""
    for name in names:
        if name.endswith(ROOT_KERNEL):
            return name[: -len(ROOT_KERNEL)]
    raise KeyError(f"no '{ROOT_KERNEL}' among the names: not BiT naming")


def state_to_bit(state: dict, prefix: str = "resnet/") -> dict[str, np.ndarray]:
    """timm ResNet-v2 state dict -> {BiT name: array} as in the original BiT .npz files."""
    return {
        prefix + bit_name(key): oihw_to_hwio(value.detach().cpu().numpy())
        for key, value in state.items()
    }
