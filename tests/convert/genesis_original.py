"""A re-implementation of the original Models Genesis PyTorch module tree, for tests only.

Written from REFERENCE.md section 3 (not from the original code): its module names (`down_tr64`,
`ops.N.conv1/bn1`, `up_tr256.up_conv`, `out_tr.final_conv`), its (upsampled, skip) concatenation,
max-pool after the first three encoder levels only, and its BatchNorm that always normalises with
batch statistics. `save_release` writes a checkpoint laid out as `Genesis_Chest_CT.pt` is.
"""

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


class _BatchStatisticsNorm(nn.BatchNorm3d):
    """The original's BatchNorm: batch statistics in train and eval mode alike."""

    def forward(self, x):
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


class _Op(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1)
        self.bn1 = _BatchStatisticsNorm(cout)

    def forward(self, x):
        return torch.relu(self.bn1(self.conv1(x)))


class _Down(nn.Module):
    def __init__(self, cin, cmid, cout):
        super().__init__()
        self.ops = nn.Sequential(_Op(cin, cmid), _Op(cmid, cout))

    def forward(self, x):
        return self.ops(x)


class _Up(nn.Module):
    def __init__(self, cin, cskip, cout):
        super().__init__()
        self.up_conv = nn.ConvTranspose3d(cin, cin, 2, stride=2)
        self.ops = nn.Sequential(_Op(cin + cskip, cout), _Op(cout, cout))

    def forward(self, x, skip):
        return self.ops(torch.cat((self.up_conv(x), skip), 1))


class _Out(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.final_conv = nn.Conv3d(cin, cout, 1)

    def forward(self, x):
        return torch.sigmoid(self.final_conv(x))


class OriginalGenesisUNet3D(nn.Module):
    """The original's module tree and forward; 106 state-dict entries."""

    def __init__(self, out_channels: int = 1):
        super().__init__()
        self.down_tr64 = _Down(1, 32, 64)
        self.down_tr128 = _Down(64, 64, 128)
        self.down_tr256 = _Down(128, 128, 256)
        self.down_tr512 = _Down(256, 256, 512)
        self.up_tr256 = _Up(512, 256, 256)
        self.up_tr128 = _Up(256, 128, 128)
        self.up_tr64 = _Up(128, 64, 64)
        self.out_tr = _Out(64, out_channels)

    def forward(self, x):
        skip64 = self.down_tr64(x)
        skip128 = self.down_tr128(F.max_pool3d(skip64, 2))
        skip256 = self.down_tr256(F.max_pool3d(skip128, 2))
        deepest = self.down_tr512(F.max_pool3d(skip256, 2))
        y = self.up_tr256(deepest, skip256)
        y = self.up_tr128(y, skip128)
        return self.out_tr(self.up_tr64(y, skip64))


def randomised(seed: int = 0, out_channels: int = 1) -> OriginalGenesisUNet3D:
    """An original network with every tensor random, BatchNorm's too, so a mix-up shows."""
    torch.manual_seed(seed)
    net = OriginalGenesisUNet3D(out_channels)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(1234)
    return net.eval()


def save_release(net: nn.Module, path: Path, state: dict | None = None) -> Path:
    """Write `net` (or `state`) as the released checkpoint is laid out: DataParallel keys, epoch and
    optimiser state beside the state dict."""
    state = net.state_dict() if state is None else state
    optimizer = {"state": {}, "param_groups": [{"lr": 1.0, "momentum": 0.9, "params": [0, 1]}]}
    torch.save(
        {
            "state_dict": {f"module.{k}": v for k, v in state.items()},
            "epoch": 3,
            "optimizer_state_dict": optimizer,
        },
        path,
    )
    return path
