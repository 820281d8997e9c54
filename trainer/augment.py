"""Colour augmentation of a training batch, on the device it trains on: brightness, contrast and
saturation jitter and a random grayscale, per image (open_clip's `--aug-cfg color_jitter=...
gray_scale_prob=...`, with torchvision's blend formulas, hue left alone: for many concepts the hue is
what names them, a red and a blue heart).

It runs on the uint8 batch after the loader (CPU or `--decode gpu` alike) and gives uint8 back,
as a PIL pipeline would. Its draws come from (seed, step, rank, micro-batch) alone, so a resumed
run replays them exactly, whatever the loader workers did.
"""

import numpy as np
import torch

GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL's convert('L') (torchvision: 0.2989)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """float [N, 3, H, W] -> its luma [N, 1, H, W]."""
    r, g, b = x.unbind(1)
    return (GRAY[0] * r + GRAY[1] * g + GRAY[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's _blend: factor * x + (1 - factor) * other, clamped to [0, 1]."""
    return (factor * x + (1 - factor) * other).clamp_(0, 1)


def generator(seed: int, step: int, rank: int, micro: int) -> torch.Generator:
    """A CPU generator for one micro-batch's draws (small [N] tensors, moved to the device)."""
    state = np.random.SeedSequence([seed, step, rank, micro]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def colour(
    images: torch.Tensor, gen: torch.Generator, jitter: float = 0.0, grayscale: float = 0.0
) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> uint8, same shape and device. `jitter`: brightness, contrast and
    saturation factors each drawn uniformly from [max(0, 1 - jitter), 1 + jitter] per image,
    applied in that order (torchvision's ColorJitter shuffles the order per image);
    `grayscale`: the probability an image becomes gray (after jitter)."""
    n = images.shape[0]
    if n == 0 or not (jitter or grayscale):
        return images
    # Every draw on the CPU first, in a fixed order, then one copy to the device: one small
    # transfer per micro-batch instead of a device sync per factor.
    lo, hi = max(0.0, 1 - jitter), 1 + jitter
    draws = [torch.empty(n).uniform_(lo, hi, generator=gen) for _ in range(3 if jitter else 0)]
    if grayscale:
        draws.append((torch.rand(n, generator=gen) < grayscale).float())
    draws = torch.stack(draws).view(len(draws), n, 1, 1, 1)
    if images.is_cuda:
        draws = draws.pin_memory().to(images.device, non_blocking=True)
    x = images.float().div_(255)
    if jitter:
        brightness, contrast, saturation = draws[:3]
        x = _blend(x, torch.zeros_like(x[:, :1]), brightness)
        x = _blend(x, _gray(x).mean((1, 2, 3), keepdim=True), contrast)
        x = _blend(x, _gray(x), saturation)
    if grayscale:
        x = torch.where(draws[-1] > 0, _gray(x).expand_as(x), x)
    out = torch.empty_like(images)  # the input's memory format (channels_last from the loader)
    return out.copy_(x.mul_(255).round_())


def for_run(cfg, rank: int):
    """The augmentation a run's config asks for, as f(images, step, micro) -> images; None when
    it asks for none (the batch is then untouched, bit for bit)."""
    if not (cfg.color_jitter or cfg.grayscale):
        return None

    def augment(images: torch.Tensor, step: int, micro: int) -> torch.Tensor:
        gen = generator(cfg.seed, step, rank, micro)
        return colour(images, gen, cfg.color_jitter, cfg.grayscale)

    return augment
