"""NT-Xent, the SimCLR contrastive loss, with negatives gathered from every rank.

Layout and value follow the original (REFERENCE.md section 2): the batch is [all view-1; all view-2];
embeddings are L2-normalised (hidden_norm); each anchor of view 1 is scored against every view-2
embedding of the global batch (its positive among them) and every other view-1 embedding (its own
pair masked out); likewise for view 2; the loss is the sum of the two directions' cross-entropies,
each a mean over the local batch. lightly's NTXentLoss averages the two directions: half this value.

Across ranks the embeddings are gathered with an autograd-aware all_gather, whose backward sums each
rank's gradient into the owner's local part, so a run on N ranks with DDP's gradient averaging computes
the same gradient as one process with the whole batch (tested with 2 gloo processes).
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

LARGE_NUM = 1e9  # what the original subtracts from the self-similarity logits


@dataclass
class ContrastiveOutput:
    """The loss and what the original logs beside it."""

    loss: torch.Tensor
    accuracy: torch.Tensor  # fraction of view-1 anchors whose argmax over logits_ab is the positive
    entropy: torch.Tensor  # mean entropy of softmax(logits_ab)


def gather_with_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate `tensor` from all ranks (gradients flow back to each owner); returns it and the
    offset of this rank's rows. Outside a process group: the tensor itself and 0."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor, 0
    from torch.distributed.nn.functional import all_gather

    parts = all_gather(tensor.contiguous())
    return torch.cat(parts), dist.get_rank() * tensor.shape[0]


def nt_xent(
    embeddings: torch.Tensor, temperature: float = 0.1, hidden_norm: bool = True
) -> ContrastiveOutput:
    """NT-Xent of a local batch laid out as [view-1; view-2] (shape (2B, d))."""
    if embeddings.shape[0] % 2:
        raise ValueError(
            f"expected [view-1; view-2] with an even number of rows, got {embeddings.shape[0]}"
        )
    if hidden_norm:
        embeddings = F.normalize(embeddings, dim=1)
    h1, h2 = embeddings.chunk(2)
    h1_all, offset = gather_with_grad(h1)
    h2_all, _ = gather_with_grad(h2)
    batch = h1.shape[0]
    labels = torch.arange(batch, device=h1.device) + offset
    self_mask = F.one_hot(labels, h1_all.shape[0]).to(h1.dtype) * LARGE_NUM
    logits_aa = h1 @ h1_all.T / temperature - self_mask
    logits_bb = h2 @ h2_all.T / temperature - self_mask
    logits_ab = h1 @ h2_all.T / temperature
    logits_ba = h2 @ h1_all.T / temperature
    loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa], dim=1), labels)
    loss_b = F.cross_entropy(torch.cat([logits_ba, logits_bb], dim=1), labels)
    with torch.no_grad():
        accuracy = (logits_ab.argmax(dim=1) == labels).float().mean()
        probs = logits_ab.softmax(dim=1)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=1).mean()
    return ContrastiveOutput(loss=loss_a + loss_b, accuracy=accuracy, entropy=entropy)
