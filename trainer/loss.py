"""Contrastive losses with the rank and world size passed in, never read from globals.

Both use the *local* loss of open_clip: each rank scores its own B images and texts against the
gathered features of all ranks (B x B*world logits, memory linear in the global batch), and the
gather keeps the gradient, so summed over ranks (DDP averages) the gradient equals that of one
process holding the whole batch.

With `chunk` > 0 neither loss materialises its B x B*world logits: they are computed in chunk x
chunk tiles (the rows' log-sum-exp kept online, as Inf-CL does, Wang et al., 2024) by autograd
Functions whose backward recomputes the tiles, so the loss needs O(chunk^2 + B*world*D) memory,
not O(B * B*world). The positive pairs need no tile: rank r's own slice of the gathered features
is its local features, so a positive logit is a row-wise dot product of the local ones.
"""

import math

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


def _tiles(rows: int, cols: int, chunk: int):
    for i in range(0, rows, chunk):
        for j in range(0, cols, chunk):
            yield slice(i, min(i + chunk, rows)), slice(j, min(j + chunk, cols))


def _fp32(*tensors):
    """At least float32 (float64 stays: the tests compare in it)."""
    return [t.to(torch.promote_types(t.dtype, torch.float32)) for t in tensors]


class _TiledLogSumExp(torch.autograd.Function):
    """logsumexp_j(scale * q_i . k_j) for every row i of q, in tiles. fp32 inside (autocast off):
    the tiles are as exact as a full fp32 loss, and cheap beside the model's matmuls."""

    @staticmethod
    def forward(ctx, q, k, scale, chunk: int):
        with torch.autocast(q.device.type, enabled=False):
            q32, k32, s = _fp32(q, k, scale)
            lse = q32.new_full((q.shape[0],), -math.inf)
            for rows, cols in _tiles(q.shape[0], k.shape[0], chunk):
                tile = s * (q32[rows] @ k32[cols].T)
                lse[rows] = torch.logaddexp(lse[rows], tile.logsumexp(dim=1))
        ctx.save_for_backward(q, k, scale, lse)
        ctx.chunk = chunk
        return lse

    @staticmethod
    def backward(ctx, grad_lse):
        q, k, scale, lse = ctx.saved_tensors
        q32, k32, s, g = _fp32(q, k, scale, grad_lse)
        dq, dk, ds = torch.zeros_like(q32), torch.zeros_like(k32), torch.zeros_like(s)
        for rows, cols in _tiles(q.shape[0], k.shape[0], ctx.chunk):
            dots = q32[rows] @ k32[cols].T
            # d lse_i / d logit_ij = softmax_ij, recomputed from the saved row lse
            weight = torch.exp(s * dots - lse[rows, None]) * g[rows, None]
            dq[rows] += s * (weight @ k32[cols])
            dk[cols] += s * (weight.T @ q32[rows])
            ds += (weight * dots).sum()
        return dq.to(q.dtype), dk.to(k.dtype), ds.to(scale.dtype), None


class _TiledSoftplusSum(torch.autograd.Function):
    """sum_ij softplus(scale * q_i . k_j + bias) (every pair scored as a non-match), in tiles."""

    @staticmethod
    def forward(ctx, q, k, scale, bias, chunk: int):
        with torch.autocast(q.device.type, enabled=False):
            q32, k32, s, b = _fp32(q, k, scale, bias)
            total = q32.new_zeros(())
            for rows, cols in _tiles(q.shape[0], k.shape[0], chunk):
                total = total + F.softplus(s * (q32[rows] @ k32[cols].T) + b).sum()
        ctx.save_for_backward(q, k, scale, bias)
        ctx.chunk = chunk
        return total

    @staticmethod
    def backward(ctx, grad_total):
        q, k, scale, bias = ctx.saved_tensors
        q32, k32, s, b, g = _fp32(q, k, scale, bias, grad_total)
        dq, dk = torch.zeros_like(q32), torch.zeros_like(k32)
        ds, db = torch.zeros_like(s), torch.zeros_like(b)
        for rows, cols in _tiles(q.shape[0], k.shape[0], ctx.chunk):
            dots = q32[rows] @ k32[cols].T
            weight = torch.sigmoid(s * dots + b) * g  # softplus' = sigmoid
            dq[rows] += s * (weight @ k32[cols])
            dk[cols] += s * (weight.T @ q32[rows])
            ds += (weight * dots).sum()
            db += weight.sum()
        return dq.to(q.dtype), dk.to(k.dtype), ds.to(scale.dtype), db.to(bias.dtype), None


def _positive_logits(image_features, text_features, logit_scale):
    image_features, text_features, logit_scale = _fp32(image_features, text_features, logit_scale)
    return logit_scale * (image_features * text_features).sum(dim=1)


class ClipLoss(torch.nn.Module):
    """Symmetric InfoNCE (Radford et al., 2021): cross-entropy of image->text and text->image
    softmax over the global batch, averaged."""

    def __init__(self, rank: int = 0, world_size: int = 1, chunk: int = 0):
        super().__init__()
        self.rank, self.world_size, self.chunk = rank, world_size, chunk

    def forward(self, image_features, text_features, logit_scale, logit_bias=None):
        all_images = gather_with_grad(image_features, self.world_size)
        all_texts = gather_with_grad(text_features, self.world_size)
        if self.chunk:  # cross-entropy = log-sum-exp of the row - its positive logit
            positive = _positive_logits(image_features, text_features, logit_scale)
            per_image = _TiledLogSumExp.apply(image_features, all_texts, logit_scale, self.chunk)
            per_text = _TiledLogSumExp.apply(text_features, all_images, logit_scale, self.chunk)
            return ((per_image - positive).mean() + (per_text - positive).mean()) / 2
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

    def __init__(self, rank: int = 0, world_size: int = 1, chunk: int = 0):
        super().__init__()
        self.rank, self.world_size, self.chunk = rank, world_size, chunk

    def forward(self, image_features, text_features, logit_scale, logit_bias=None):
        if logit_bias is None:
            raise ValueError(
                "SigLIP needs a model with a logit bias (create it with loss='siglip')"
            )
        all_texts = gather_with_grad(text_features, self.world_size)
        batch = image_features.shape[0]
        if self.chunk:  # -logsigmoid(z) = softplus(-z) = softplus(z) - z for the B positives
            negatives = _TiledSoftplusSum.apply(
                image_features, all_texts, logit_scale, logit_bias, self.chunk
            )
            positive = _positive_logits(image_features, text_features, logit_scale) + logit_bias
            return (negatives - positive.sum()) / batch
        logits = logit_scale * image_features @ all_texts.T + logit_bias  # [B, B*world]
        signs = -torch.ones_like(logits)
        columns = torch.arange(batch, device=logits.device) + batch * self.rank
        signs[torch.arange(batch, device=logits.device), columns] = 1.0
        return -F.logsigmoid(signs * logits).sum() / batch


def build(name: str, rank: int, world_size: int, chunk: int = 0) -> torch.nn.Module:
    """The loss `name`; chunk > 0: tiled, at most chunk x chunk logits at a time (--loss-chunk)."""
    losses = {"clip": ClipLoss, "siglip": SigLipLoss}
    if name not in losses:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(losses)}")
    return losses[name](rank=rank, world_size=world_size, chunk=chunk)
