"""Contrastive losses with the rank and world size passed in, never read from globals.

Both use the *local* loss of open_clip: each rank scores its own B images and texts against the
gathered features of all ranks (B x B*world logits, memory linear in the global batch), and the
gather keeps the gradient, so summed over ranks (DDP averages) the gradient equals that of one
process holding the whole batch.
"""

import torch
import torch.nn.functional as F


def gather_with_grad(features: torch.Tensor, world_size: int) -> torch.Tensor:
    """[B, D] per rank -> [B * world_size, D], rank order; backward sums the gradients of every
    rank's loss into the owner's slice."""
    if world_size == 1:
        return features
    import torch.distributed as dist

    try:  # newer torch: the differentiable functional collective (backward: reduce-scatter)
        from torch.distributed._functional_collectives import all_gather_single
    except ImportError:  # older torch: the autograd all_gather of torch.distributed.nn
        import torch.distributed.nn

        return torch.cat(torch.distributed.nn.all_gather(features), dim=0)
    return all_gather_single(features.contiguous(), 0, dist.group.WORLD)


class ClipLoss(torch.nn.Module):
    """Symmetric InfoNCE (Radford et al., 2021): cross-entropy of image->text and text->image
    softmax over the global batch, averaged."""

    def __init__(self, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.rank, self.world_size = rank, world_size

    def forward(self, image_features, text_features, logit_scale, logit_bias=None):
        all_images = gather_with_grad(image_features, self.world_size)
        all_texts = gather_with_grad(text_features, self.world_size)
        logits_per_image = logit_scale * image_features @ all_texts.T  # [B, B*world]
        logits_per_text = logit_scale * text_features @ all_images.T
        batch = image_features.shape[0]
        labels = torch.arange(batch, device=image_features.device) + batch * self.rank
        return (
            F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)
        ) / 2


class SigLipLoss(torch.nn.Module):
    """Pairwise sigmoid loss (Zhai et al., 2023): every (image, text) pair is a binary
    match/non-match decision; summed over the global texts, averaged over local images."""

    def __init__(self, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.rank, self.world_size = rank, world_size

    def forward(self, image_features, text_features, logit_scale, logit_bias=None):
        if logit_bias is None:
            raise ValueError(
                "SigLIP needs a model with a logit bias (create it with loss='siglip')"
            )
        all_texts = gather_with_grad(text_features, self.world_size)
        logits = logit_scale * image_features @ all_texts.T + logit_bias  # [B, B*world]
        batch = image_features.shape[0]
        signs = -torch.ones_like(logits)
        columns = torch.arange(batch, device=logits.device) + batch * self.rank
        signs[torch.arange(batch, device=logits.device), columns] = 1.0
        return -F.logsigmoid(signs * logits).sum() / batch


def build(name: str, rank: int, world_size: int) -> torch.nn.Module:
    losses = {"clip": ClipLoss, "siglip": SigLipLoss}
    if name not in losses:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(losses)}")
    return losses[name](rank=rank, world_size=world_size)
