import torch

from medfound.methods.projection_head import ProjectionHead


def test_simclr_v2_head_layout():
    head = ProjectionHead(64, out_dim=16, layers=3)
    x = torch.randn(8, 64)
    assert head(x).shape == (8, 16)
    assert head(x, upto=1).shape == (8, 64) and torch.equal(head(x, upto=0), x)
    last_norm = head.blocks[-1][1]
    assert all(block[0].bias is None for block in head.blocks)  # BatchNorm follows every layer
    assert not last_norm.bias.requires_grad
    assert torch.all(head(x, upto=2) >= 0)  # hidden layers end in ReLU


def test_sync_batchnorm_conversion():
    head = torch.nn.SyncBatchNorm.convert_sync_batchnorm(ProjectionHead(32, layers=2))
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in head.modules()) == 2
