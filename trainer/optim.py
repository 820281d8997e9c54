"""AdamW with CLIP's parameter groups and a warmup + cosine learning-rate schedule."""

import math


def no_decay(name: str, param) -> bool:
    """Gains, biases, norms, embeddings' 1-d vectors and the logit scale/bias are not decayed
    (open_clip's rule): decaying them only pulls useful scales towards zero."""
    return (
        param.ndim < 2
        or "bn" in name
        or "ln" in name
        or "bias" in name
        or "logit_scale" in name
        or "gain" in name
    )


def make_optimizer(model, cfg):
    import torch

    decay, rest = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (rest if no_decay(name, param) else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    # The fused kernel runs on CPU and CUDA and is several times faster than the per-tensor loop
    # (on CPU it is what makes the 49k x width token embedding cheap to update).
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=True
    )


def lr_at(step: int, cfg, total_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup to cfg.lr, then cosine
    decay to cfg.min_lr at the last step."""
    warmup = cfg.warmup_steps(total_steps)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    span = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)
