import math

import open_clip
import pytest
import torch
import torch.nn.functional as F

import trainer.models as models
from trainer.loss import ClipLoss, SigLipLoss
from trainer.optim import lr_at, no_decay


def features(n=8, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    txt = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    return img, txt


def test_clip_loss_matches_open_clip_and_its_bounds():
    img, txt = features()
    scale = torch.tensor(1 / 0.07)
    ours = ClipLoss()(img, txt, scale)
    reference = open_clip.loss.ClipLoss()(img, txt, scale)
    assert torch.allclose(ours, reference)
    # scale 0: every logit equal, the loss is ln(batch); aligned pairs at high scale: near 0
    assert math.isclose(ClipLoss()(img, txt, torch.tensor(0.0)).item(), math.log(8), rel_tol=1e-6)
    assert ClipLoss()(img, img, torch.tensor(100.0)).item() < 1e-3


def test_siglip_loss_matches_open_clip():
    img, txt = features(seed=1)
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    ours = SigLipLoss()(img, txt, scale, bias)
    assert torch.allclose(ours, open_clip.loss.SigLipLoss()(img, txt, scale, bias))
    with pytest.raises(ValueError, match="logit bias"):
        SigLipLoss()(img, txt, scale, None)


def test_tiny_configs_are_registered_and_unknown_names_listed():
    assert {"clip-tiny", "clip-nano"} <= set(open_clip.list_models())
    model = models.create("clip-tiny")
    assert models.image_size(model) == 64 and model.context_length == 32
    assert math.isclose(model.logit_scale.exp().item(), 1 / 0.07, rel_tol=1e-5)
    assert models.create("clip-nano", loss="siglip").logit_bias.item() == -10.0
    with pytest.raises(models.UnknownModelError, match="known models: clip-nano, clip-tiny, "):
        models.check_model_name("ViT-Q-99")


def test_weight_decay_groups_and_schedule():
    from trainer.config import TrainConfig

    model = models.create("clip-nano")
    skipped = {n for n, p in model.named_parameters() if no_decay(n, p)}
    assert "logit_scale" in skipped and "visual.ln_post.weight" in skipped
    assert any(n.endswith(".bias") for n in skipped)
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" not in skipped
    cfg = TrainConfig(lr=1e-3, warmup=10, min_lr=1e-5)
    lrs = [lr_at(s, cfg, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] == pytest.approx(1e-5, rel=0.05)
