"""One optimizer step, with open_clip's gradient accumulation for contrastive losses.

Accumulating plain per-micro-batch losses would shrink the contrastive batch (each micro-batch
would only see its own negatives). Instead: embed every micro-batch without gradients, then for
each micro-batch recompute its features with gradients and evaluate the loss on the full batch,
the others' features taken from the cache. Summed over micro-batches this is exactly the gradient
of the full-batch loss. The logit scale (and bias) enter the loss directly, so they keep their
gradient in one micro-step only (the last, which is also the one DDP synchronises).
"""

import contextlib
import math

import torch

from trainer.data.image import normalize

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the inverse temperature at 100


def _forward(model, images, tokens, mean, std, channels_last=False):
    pixels = normalize(images, mean, std)
    if channels_last:  # the layout a channels_last conv stem reads without a transposing copy
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    out = model(pixels, tokens)
    return out["image_features"], out["text_features"], out["logit_scale"], out.get("logit_bias")


def _accumulate(model, loss_fn, micro, mean, std, autocast, ddp, channels_last) -> torch.Tensor:
    with torch.no_grad(), autocast():
        # cloned: under --compile-mode reduce-overhead the outputs live in CUDA-graph memory
        # that the next replay of the same graph overwrites ([B, D] each: a negligible copy)
        cached = [
            [t.clone() for t in _forward(model, im, tx, mean, std, channels_last)[:2]]
            for im, tx in micro
        ]
    last = len(micro) - 1
    for j, (images, tokens) in enumerate(micro):
        sync = ddp.no_sync() if ddp is not None and j < last else contextlib.nullcontext()
        with sync, autocast():
            img, txt, scale, bias = _forward(model, images, tokens, mean, std, channels_last)
            all_img = torch.cat(
                [c[0] for c in cached[:j]] + [img] + [c[0] for c in cached[j + 1 :]]
            )
            all_txt = torch.cat(
                [c[1] for c in cached[:j]] + [txt] + [c[1] for c in cached[j + 1 :]]
            )
            if j < last:
                scale = scale.detach()
                bias = bias.detach() if bias is not None else None
            loss = loss_fn(all_img, all_txt, scale, bias)
        loss.backward()
    return loss.detach()


def train_step(
    model,
    raw_model,
    loss_fn,
    optimizer,
    micro,
    *,
    mean,
    std,
    autocast,
    grad_clip: float,
    ddp=None,
    channels_last: bool = False,
    cut_tokens=None,
) -> torch.Tensor:
    """Forward, backward, clip, update, clamp the temperature; returns the loss (a tensor, so
    the caller decides when to synchronise with the device). `ddp` is the DistributedDataParallel
    wrapper when there is one (its no_sync() skips all-reduces between micro-batches);
    `channels_last` hands the model its images in that memory format; `cut_tokens` (from
    trainer.models.text.for_training, with the model that takes cut tokens) trims each token batch
    to its longest caption, once per micro-batch and outside any compiled graph."""
    optimizer.zero_grad(set_to_none=True)
    if cut_tokens is not None:
        micro = [(images, cut_tokens(tokens)) for images, tokens in micro]
    if len(micro) == 1:
        with autocast():
            img, txt, scale, bias = _forward(model, *micro[0], mean, std, channels_last)
            loss = loss_fn(img, txt, scale, bias)
        loss.backward()
        loss = loss.detach()
    else:
        loss = _accumulate(model, loss_fn, micro, mean, std, autocast, ddp, channels_last)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip)
    optimizer.step()
    with torch.no_grad():
        raw_model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    return loss
