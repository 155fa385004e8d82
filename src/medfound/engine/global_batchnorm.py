"""BatchNorm over the global batch of all ranks, on any device.

SimCLR normalises with statistics of the whole cross-replica batch. PyTorch's SyncBatchNorm does this
only for CUDA tensors (DDP refuses it on CPU), so CPU runs under gloo use GlobalBatchNorm, written here:
each rank sums x and x^2 per channel, one autograd-aware all_reduce makes them global, and the gradient
flows back to every rank's part (tested: 2 ranks with half the batch each = 1 process with all of it).
On CUDA, `make_global` uses PyTorch's fused SyncBatchNorm.
"""

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class GlobalBatchNorm(_BatchNorm):
    """A BatchNorm of any dimensionality whose training statistics span all ranks."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.ndim < 2:
            raise ValueError(f"expected (N, C, ...) input, got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not (self.training and distributed):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(x)
        dtype = torch.promote_types(x.dtype, torch.float32)  # bf16 activations: fp32 statistics
        xf, channels = x.to(dtype), x.shape[1]
        dims = [0, *range(2, x.ndim)]
        count = torch.full((1,), xf.numel() / channels, dtype=dtype, device=x.device)
        stats = all_reduce(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels : 2 * channels] / total - mean * mean).clamp_min(0)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), total.item())
        shape = (1, channels) + (1,) * (x.ndim - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: float) -> None:
        self.num_batches_tracked += 1
        factor = self.momentum if self.momentum is not None else 1 / self.num_batches_tracked.item()
        unbiased = var * count / max(count - 1, 1)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)


def make_global(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm in `module` normalised over all ranks (same parameters and state names)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _to_global(module)


def _to_global(module: nn.Module) -> nn.Module:
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats,
        )  # fmt: skip
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        if module.track_running_stats:
            converted.running_mean, converted.running_var = module.running_mean, module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, _to_global(child))
    return module
