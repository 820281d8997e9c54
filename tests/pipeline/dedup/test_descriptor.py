import os
from pathlib import Path

import numpy as np
import pytest

from manifests.config import ConfigError
from pipeline.dedup import descriptor as desc
from pipeline.testing.edits import EDITS, composite
from tests.pipeline.dedup.images import drawing, jpeg, scene

TINY = desc.DescriptorConfig(size=32, widths=(8, 16), dim=16)
# Trained weights (bench/train_descriptor.py --out); not shipped in the repository, so the test
# that needs them runs only where the file is named.
WEIGHTS = os.environ.get("CLIPENGINE_DESCRIPTOR_WEIGHTS")


def _pairs(seed: int, n: int = 8):
    rng = np.random.default_rng(seed)
    while True:
        out = []
        for _ in range(n):
            image = drawing(int(rng.integers(0, 1 << 30)))
            out.append((image, jpeg(image, int(rng.integers(30, 90)))))
        yield out


def test_tiny_model_trains_a_few_steps():
    import torch

    torch.set_num_threads(1)
    d = desc.create(TINY)
    before = [p.detach().clone() for p in d.model.parameters()]
    cfg = desc.TrainConfig(batch=8, lr=1e-2)
    desc.train(d, _pairs(0), cfg, steps=6)
    assert len(cfg.history) == 6
    assert all(np.isfinite(loss) for _, _, loss in cfg.history)
    assert any(not torch.equal(a, b) for a, b in zip(before, d.model.parameters(), strict=True))
    assert not d.model.training  # embed-ready


def test_train_needs_one_budget():
    with pytest.raises(ConfigError):
        desc.train(desc.create(TINY), _pairs(0), desc.TrainConfig(), steps=1, seconds=1.0)


def test_embed_is_deterministic_and_unit_length(tmp_path):
    d = desc.create(TINY)
    images = [drawing(1), scene(2), composite(drawing(3)).resize((50, 80))]
    a = d.embed(images)
    assert a.dtype == np.float32 and a.shape == (3, TINY.dim)
    np.testing.assert_array_equal(a, d.embed(images))
    np.testing.assert_allclose(d.embed(images, batch=2), a, atol=1e-6)  # batching: rounding only
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    both = d.embed(images, mirror=True)
    assert both.shape == (6, TINY.dim)
    np.testing.assert_allclose(both[:3], a, atol=1e-6)
    d.save(tmp_path / "d.pt")
    loaded = desc.load(tmp_path / "d.pt")
    assert loaded.config == TINY
    np.testing.assert_allclose(loaded.embed(images), a, atol=1e-2)  # weights stored as float16


def test_prepare_composites_alpha_and_keeps_aspect():
    from PIL import Image

    clear = Image.new("RGBA", (40, 20), (255, 0, 0, 0))
    arr = desc.prepare(clear, 32)
    assert arr.shape == (3, 32, 32)
    np.testing.assert_allclose(arr, 1.0)  # transparent -> white background, padding white too
    bar = Image.new("RGB", (40, 20), (0, 0, 0))
    arr = desc.prepare(bar, 32)
    assert arr[:, 16, 16].max() == -1.0  # the black content in the middle
    assert arr[:, 2, 16].min() == 1.0  # letterboxed: white above it


def test_bad_weights_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        desc.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="unreadable"):
        desc.load(tmp_path / "junk.pt")
    with pytest.raises(ConfigError):
        desc.DescriptorConfig(size=30, widths=(8, 16))


@pytest.mark.skipif(not WEIGHTS, reason="CLIPENGINE_DESCRIPTOR_WEIGHTS names no trained weights")
def test_trained_copy_is_nearer_its_original():
    d = desc.load(Path(WEIGHTS))
    rng = np.random.default_rng(0)
    originals = [drawing(s) for s in range(12)]
    emb = d.embed(originals)
    for name in ("crop", "pad", "rotate", "jpeg", "screenshot", "rotate+crop"):
        copies = d.embed([EDITS[name](composite(im), rng, True) for im in originals])
        sim = copies @ emb.T
        assert np.mean(sim.argmax(axis=1) == np.arange(len(originals))) >= 0.75, name
