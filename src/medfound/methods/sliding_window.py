"""Whole-image inference of a segmenter of any input size: MONAI's sliding-window inference."""

from collections.abc import Sequence

import torch
from torch import nn

from medfound.errors import ConfigError


def sliding_window_predict(
    net: nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    overlap: float = 0.25,
    sw_batch_size: int = 4,
    mode: str = "gaussian",
) -> torch.Tensor:
    """Class probabilities of `image` (B, C, *spatial), or (C, *spatial) for one image.

    `net` maps windows (N, C, *roi_size) to logits (N, K, *roi_size); each window's softmax is
    blended into the whole (`mode` "gaussian": weights falling off towards window edges, or
    "constant"), windows overlapping by `overlap`. An image smaller than `roi_size` along an axis
    is padded with zeros to it (by MONAI) and the result cropped back. Runs without gradients and
    with `net` in eval mode (its mode is restored afterwards); the result is float32 on `image`'s
    device, shaped (B, K, *spatial) or (K, *spatial).
    """
    from monai.inferers import sliding_window_inference

    roi_size = tuple(int(s) for s in roi_size)
    single = image.ndim == len(roi_size) + 1
    batch = image[None] if single else image
    if batch.ndim != len(roi_size) + 2:
        raise ConfigError(
            f"sliding-window input of shape {tuple(image.shape)} does not fit a "
            f"{len(roi_size)}D window {roi_size}"
        )
    if mode not in ("gaussian", "constant"):
        raise ConfigError(f"sliding-window mode {mode!r}: choose 'gaussian' or 'constant'")

    def probabilities(windows: torch.Tensor) -> torch.Tensor:
        return torch.softmax(net(windows).float(), dim=1)  # softmax in float32 under autocast

    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = sliding_window_inference(
                batch, roi_size, sw_batch_size, probabilities, overlap=overlap, mode=mode
            )
    finally:
        net.train(was_training)
    out = out.as_tensor() if hasattr(out, "as_tensor") else out  # a plain tensor, not a MetaTensor
    return out[0] if single else out
