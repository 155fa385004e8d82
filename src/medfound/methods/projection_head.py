"""SimCLR's projection head: d -> d (BN, ReLU) ... -> out (BN without beta); no linear layer has a
bias, as in the original, where every layer is followed by BatchNorm, whose shift makes it redundant.
REMEDIS used 2 layers (`num_nlh_layers=1`), SimCLR v2 3."""

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """`layers` linear layers, hidden width `hidden_dim` (default: the input width), output `out_dim`.

    Every layer is followed by BatchNorm; all but the last by ReLU; no layer has a bias (BatchNorm
    follows each), and the last BatchNorm has no shift, as in SimCLR v2. `forward(x, upto=k)`
    returns the output of layer k (0 is the input itself): what fine-tuning from a head layer (the
    original's `ft_proj_selector`) starts from.
    Under DDP, `nn.SyncBatchNorm.convert_sync_batchnorm` turns these into global BatchNorms.
    """

    def __init__(
        self, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None, layers: int = 3
    ):
        super().__init__()
        if layers < 1:
            raise ValueError(f"a projection head needs at least one layer, got {layers}")
        hidden = hidden_dim or in_dim
        blocks = []
        for i in range(layers):
            last = i == layers - 1
            width_in, width_out = in_dim if i == 0 else hidden, out_dim if last else hidden
            norm = nn.BatchNorm1d(width_out, affine=True)
            if last:  # no shift on the output (SimCLR v2: center=False)
                norm.bias.requires_grad_(False)
            modules = [nn.Linear(width_in, width_out, bias=False), norm]
            if not last:
                modules.append(nn.ReLU(inplace=True))
            blocks.append(nn.Sequential(*modules))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """The projection (or the output of block `upto`)."""
        for block in self.blocks[: upto if upto is not None else len(self.blocks)]:
            x = block(x)
        return x
