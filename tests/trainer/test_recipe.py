"""The small-data recipe levers: --crop-scale (how much of an image a training crop may cut away)
and --ema (an average of the weights for evaluation and inference)."""

import random

import pytest
import torch

import trainer.models as models
from tests.trainer.test_data import items_dataset, stream  # noqa: F401 - a fixture
from tests.trainer.test_train import FAST, interrupted_and_resumed, losses
from trainer import checkpoint, inference
from trainer.config import ConfigError, TrainConfig
from trainer.data import resolve
from trainer.data.image import crop_box
from trainer.ema import WeightAverage
from trainer.metrics import read_rows


@pytest.mark.parametrize("low", [0.9, 0.35])
def test_crop_box_keeps_a_share_of_the_area_in_the_range(low):
    rng = random.Random(3)
    shares = []
    for _ in range(400):
        left, top, right, bottom = crop_box(200, 150, rng, (low, 1.0))
        assert 0 <= left < right <= 200 and 0 <= top < bottom <= 150
        shares.append((right - left) * (bottom - top) / (200 * 150))
    assert min(shares) >= low - 0.02  # rounding a side to whole pixels
    assert min(shares) < low + 0.05  # the range is used down to its low end


def test_a_deeper_crop_is_cut_from_a_larger_decode():
    import io

    import numpy as np
    from PIL import Image

    from trainer.data.image import decode, decode_size

    assert decode_size(64) == decode_size(64, (0.9, 1.0)) == 64
    assert decode_size(64, (0.3, 1.0)) == 111  # ceil(64 * sqrt(0.9 / 0.3))
    buf = io.BytesIO()
    Image.fromarray(np.zeros((512, 512, 3), np.uint8)).save(buf, format="JPEG")
    assert decode(buf.getvalue(), decode_size(64)).shape[1:] == (64, 64)  # DCT scale 1/8
    assert decode(buf.getvalue(), decode_size(64, (0.3, 1.0))).shape[1:] == (128, 128)  # 1/4


def test_crop_scale_reaches_the_loaders_crops(items_dataset):  # noqa: F811 - fixture
    index = resolve(items_dataset)

    def first_batch(**kw):
        images, tokens, _ = next(iter(stream(index, **kw)))
        return images.clone(), tokens

    default, tokens = first_batch()
    assert torch.equal(first_batch(crop_scale=0.9)[0], default)  # 0.9 is the default
    stronger, same_tokens = first_batch(crop_scale=0.2)
    assert torch.equal(same_tokens, tokens)  # same samples in the same order, other crops
    assert not torch.equal(stronger, default)


@pytest.mark.parametrize(
    "option, message",
    [({"crop_scale": 0.0}, "--crop-scale must be in (0, 1]"), ({"ema": 1.0}, "--ema must be 0")],
)
def test_recipe_options_out_of_range_are_config_errors(option, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("]", r"\]")):
        TrainConfig(synthetic=True, **option)


def test_weight_average_warms_up_its_decay_and_copies_integer_buffers():
    model = torch.nn.BatchNorm1d(3)  # weights, biases and an integer batch counter
    ema = WeightAverage(model, decay=0.99)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
        model.num_batches_tracked += 5
    ema.update(model, step=1)
    d = 2 / 11  # min(0.99, (1 + 1) / (10 + 1))
    assert torch.allclose(ema.model.weight, d * start + (1 - d) * model.weight)
    assert ema.model.num_batches_tracked.item() == 5
    assert ema.decay_at(10_000) == 0.99
    assert not ema.model.weight.requires_grad


@pytest.mark.timeout(120)
def test_ema_resumes_exactly_and_inference_uses_the_average(tmp_path):
    common = [
        *["--synthetic", "--samples", 8 * 6, "--batch-size", 8, "--warmup", 2, "--lr", 1e-3],
        *["--ema", 0.9, *FAST],
    ]
    full, cut = interrupted_and_resumed(common, tmp_path, stop=3, saved=2)
    assert [r["step"] for r in read_rows(cut / "metrics.csv")] == list(range(1, 7))
    assert losses(cut) == losses(full)
    full_ckpt, cut_ckpt = (checkpoint.load(p / "latest.pt") for p in (full, cut))
    for weights in ("state_dict", "ema_state_dict"):
        for key, value in full_ckpt[weights].items():
            assert torch.equal(value, cut_ckpt[weights][key]), (weights, key)
    trained, average = full_ckpt["state_dict"], full_ckpt["ema_state_dict"]
    assert not torch.equal(trained["logit_scale"], average["logit_scale"])

    loaded = inference.load(full / "latest.pt", device="cpu")
    assert loaded.info["weights"] == "ema"
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, average[key]), key


def test_a_checkpoint_without_an_average_loads_its_trained_weights(tmp_path):
    model = models.create("clip-nano", "clip", seed=0)
    torch.save({"state_dict": model.state_dict(), "model_name": "clip-nano"}, tmp_path / "c.pt")
    loaded = inference.load(tmp_path / "c.pt", device="cpu")
    assert loaded.info["weights"] == "trained"
    assert torch.equal(loaded.model.logit_scale, model.logit_scale)
