"""--color-jitter and --grayscale: torchvision's formulas on the device batch, draws that a resume
replays, and a run that asks for neither untouched bit for bit."""

import pytest
import torch
import torchvision.transforms.v2.functional as F

from tests.trainer.test_train import FAST, interrupted_and_resumed, losses, run
from trainer import checkpoint
from trainer.augment import colour, for_run, generator
from trainer.config import ConfigError, TrainConfig, merge_for_resume


def batch(n=6, size=12, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return images.contiguous(memory_format=torch.channels_last)  # as the loader hands it over


def test_jitter_is_torchvisions_brightness_contrast_saturation():
    images = batch()
    out = colour(images, generator(0, 5, 0, 0), jitter=0.4)
    g = generator(0, 5, 0, 0)  # the same draws, in the same order: b, c, s for the batch
    b, c, s = (torch.empty(len(images)).uniform_(0.6, 1.4, generator=g) for _ in range(3))
    for i, image in enumerate(images):
        ref = F.adjust_brightness(image.float() / 255, b[i].item())
        ref = F.adjust_contrast(ref, c[i].item())
        ref = F.adjust_saturation(ref, s[i].item())
        ref = (ref * 255).round()
        assert (ref - out[i].float()).abs().max() <= 1  # rounding of the luma only
    assert out.dtype == torch.uint8 and out.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(out, images)


def test_grayscale_turns_the_drawn_share_gray_and_leaves_the_rest():
    images = batch(n=400, size=4)
    out = colour(images, generator(1, 0, 0, 0), grayscale=0.25)
    gray = (out[:, 0] == out[:, 1]).all((1, 2)) & (out[:, 1] == out[:, 2]).all((1, 2))
    assert 0.18 < gray.float().mean() < 0.32
    assert torch.equal(out[~gray], images[~gray])
    luma = (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]).round()
    assert (out[gray][:, 0].float() - luma[gray]).abs().max() <= 1
    assert colour(images, generator(1, 0, 0, 0), grayscale=1.0).unique(dim=1).shape[1] == 1


def test_draws_follow_seed_step_rank_and_micro_batch_only():
    images = batch()
    cfg = TrainConfig(synthetic=True, color_jitter=0.3, grayscale=0.5, seed=7)
    augment = for_run(cfg, rank=0)
    assert torch.equal(augment(images, 3, 0), augment(images.clone(), 3, 0))
    others = [augment(images, 4, 0), augment(images, 3, 1), for_run(cfg, rank=1)(images, 3, 0)]
    assert all(not torch.equal(o, augment(images, 3, 0)) for o in others)
    assert for_run(TrainConfig(synthetic=True), rank=0) is None  # off: the batch is untouched
    assert colour(images, generator(0, 0, 0, 0)) is images


@pytest.mark.parametrize(
    "option, message",
    [
        ({"color_jitter": 1.5}, r"--color-jitter must be in \[0, 1\]"),
        ({"color_jitter": -0.1}, r"--color-jitter must be in \[0, 1\]"),
        ({"grayscale": 2.0}, r"--grayscale must be a probability"),
    ],
)
def test_out_of_range_options_are_config_errors(option, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(synthetic=True, **option)


def test_a_run_stored_before_the_options_resumes_without_colour_changes():
    stored = {k: v for k, v in TrainConfig(synthetic=True).to_dict().items()}
    for name in ("color_jitter", "grayscale"):
        stored.pop(name)
    assert merge_for_resume(stored, {"color_jitter": 0.0})["samples"] == stored["samples"]
    with pytest.raises(ConfigError, match="--color-jitter 0.4 .the run has 0.0"):
        merge_for_resume(stored, {"color_jitter": 0.4})


@pytest.mark.timeout(120)
def test_colour_augmented_run_resumes_bit_exactly_and_differs_from_a_plain_one(tmp_path):
    common = [
        *["--synthetic", "--samples", 8 * 6, "--batch-size", 8, "--warmup", 2, "--lr", 1e-3],
        *FAST,
    ]
    augmented = [*common, "--color-jitter", 0.4, "--grayscale", 0.3]
    full, cut = interrupted_and_resumed(augmented, tmp_path, stop=3, saved=2)
    assert losses(cut) == losses(full)  # exactly
    full_state = checkpoint.load(full / "latest.pt")["state_dict"]
    for key, value in checkpoint.load(cut / "latest.pt")["state_dict"].items():
        assert torch.equal(value, full_state[key]), key
    stored = checkpoint.load(full / "latest.pt")["config"]
    assert stored["color_jitter"] == 0.4 and stored["grayscale"] == 0.3
    assert run([*common, "--out", tmp_path / "plain"]) == 0
    assert losses(tmp_path / "plain")[0] != losses(full)[0]  # step 1 saw other colours
