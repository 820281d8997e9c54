"""pipeline.embed.encode: the pipeline's embedding helpers on trainer.inference."""

import io

import numpy as np
import pytest
from PIL import Image

from manifests.config import ConfigError
from pipeline.embed.encode import embed_images, embed_pairs, embed_texts, load_model
from tests.trainer.evaluation.helpers import save_checkpoint


def _png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_pairs_are_embedded_and_scored(tmp_path):
    loaded = load_model(str(save_checkpoint(tmp_path / "m.pt")), device="cpu")
    images = [_png((255, 0, 0)), b"broken", _png((0, 0, 255))]
    captions = ["a red square", "anything", "a blue square"]
    emb = embed_pairs(loaded, images, captions, batch_size=2)
    dim = emb.text.shape[1]
    assert emb.image.shape == (3, dim) and emb.image.dtype == np.float32
    assert np.isnan(emb.image[1]).all() and np.isnan(emb.score[1])
    ok = [0, 2]
    assert np.allclose(np.linalg.norm(emb.image[ok], axis=1), 1.0, atol=1e-5)
    assert np.allclose(emb.score[ok], (emb.image[ok] * emb.text[ok]).sum(axis=1), atol=1e-5)
    assert np.allclose(embed_texts(loaded, captions[:1]), emb.text[:1], atol=1e-6)
    assert embed_texts(loaded, []).shape == (0, dim)
    assert embed_images(loaded, []).shape == (0, dim)


def test_an_image_with_several_captions_is_embedded_once(tmp_path, monkeypatch):
    import trainer.inference as inference

    loaded = load_model(str(save_checkpoint(tmp_path / "m.pt")), device="cpu")
    red, blue = _png((255, 0, 0)), _png((0, 0, 255))
    images = [red, red, blue, red, b"broken", b"broken"]
    captions = ["a red square", "red", "a blue square", "a red square", "x", "y"]
    seen = []
    real_images, real_texts = inference.encode_images, inference.encode_texts
    monkeypatch.setattr(
        inference,
        "encode_images",
        lambda m, xs, **kw: seen.append(len(xs)) or real_images(m, xs, **kw),
    )
    monkeypatch.setattr(
        inference, "encode_texts", lambda m, xs, *a: seen.append(len(xs)) or real_texts(m, xs, *a)
    )
    emb = embed_pairs(loaded, images, captions, batch_size=4)
    assert seen == [3, 5]  # red, blue, broken; five distinct captions
    one_by_one = [embed_pairs(loaded, [i], [c]) for i, c in zip(images, captions, strict=True)]
    for row, alone in enumerate(one_by_one):
        assert np.allclose(emb.image[row], alone.image[0], atol=1e-5, equal_nan=True)
        assert np.allclose(emb.score[row], alone.score[0], atol=1e-5, equal_nan=True)
    assert np.isnan(emb.score[4:]).all()


def test_bad_checkpoint_or_device_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_model(str(tmp_path / "none.pt"))
    with pytest.raises(ConfigError, match="--device must be"):
        load_model(str(save_checkpoint(tmp_path / "m.pt")), device="gpu0")
