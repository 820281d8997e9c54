"""trainer.inference, the one inference API: device grammar, checkpoint loading and its errors,
and image/text embeddings from paths and bytes, checked against the model itself."""

import io

import pytest
import torch

import trainer.models as models
from manifests.config import ConfigError
from tests.trainer.evaluation.helpers import save_checkpoint, solid
from trainer.inference import encode_images, encode_texts, load, pick_device


def test_device_grammar():
    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", "cuda:", "CPU", ""):
        with pytest.raises(ConfigError, match=r"--device must be auto \| cpu \| cuda \| cuda:N"):
            pick_device(bad)
    if not torch.cuda.is_available():
        for device in ("cuda", "cuda:0"):
            with pytest.raises(ConfigError, match="no CUDA device is available"):
                pick_device(device)
    else:
        assert pick_device("cuda:0") == "cuda:0"
        with pytest.raises(ConfigError, match="CUDA device"):
            pick_device(f"cuda:{torch.cuda.device_count()}")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return load(save_checkpoint(tmp_path_factory.mktemp("ckpt") / "latest.pt"), device="cpu")


def test_load_reads_the_checkpoint(loaded, tmp_path):
    assert (loaded.name, loaded.device, loaded.info["step"]) == ("clip-nano", "cpu", 7)
    assert loaded.info["samples_seen"] == 112 and loaded.info["config"]["model"] == "clip-nano"
    assert not loaded.model.training
    # DDP / torch.compile prefixes are stripped; a bare state dict needs its model named
    state = {f"module._orig_mod.{k}": v for k, v in loaded.model.state_dict().items()}
    torch.save(state, tmp_path / "bare.pt")
    with pytest.raises(ConfigError, match="does not name its model; pass --model NAME"):
        load(tmp_path / "bare.pt", "cpu")
    again = load(tmp_path / "bare.pt", "cpu", model_name="clip-nano")
    assert torch.equal(again.model.logit_scale, loaded.model.logit_scale)


def test_load_errors_are_one_line_config_errors(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    torch.save([1, 2], tmp_path / "list.pt")
    ckpt = save_checkpoint(tmp_path / "nano.pt")
    cases = [
        (tmp_path / "missing.pt", None, "does not exist"),
        (tmp_path / "junk.pt", None, "not a readable torch checkpoint"),
        (tmp_path / "list.pt", None, "holds a list, not a checkpoint dict"),
        (ckpt, "no-such-model", "unknown model 'no-such-model'"),
        (ckpt, "clip-tiny", "does not hold clip-tiny weights"),
    ]
    for path, name, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            load(path, "cpu", model_name=name)
        assert "\n" not in str(info.value)


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_encode_images_from_paths_and_bytes(loaded, tmp_path):
    red, blue = solid((250, 10, 10), 40), solid((10, 10, 250), 24)
    red.save(tmp_path / "red.png")
    sources = [tmp_path / "red.png", _png(blue), b"not an image", str(tmp_path / "red.png")]
    feats, ok, bad = encode_images(loaded, sources, batch_size=3)
    assert feats.dtype == torch.float32 and feats.device.type == "cpu"
    assert ok == [0, 1, 3] and bad == [2] and feats.shape[0] == 3
    assert torch.allclose(feats.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(feats[0], feats[2])  # a path and its str are the same image
    # the numbers are the model's own on the eval transform's input
    pre = loaded.preprocess
    with torch.no_grad():
        direct = loaded.model.encode_image(pre.normalize(pre(blue)[None]), normalize=True)
    assert torch.allclose(feats[1], direct[0], atol=1e-5)
    none, ok, bad = encode_images(loaded, [b"junk"])
    assert none.shape[0] == 0 and (ok, bad) == ([], [0])


def test_encode_texts_matches_the_model(loaded):
    texts = ["a red circle", "a blue square", "a cross"]
    feats = encode_texts(loaded, texts, batch_size=2)
    tokens = models.tokenizer("clip-nano")(texts)
    with torch.no_grad():
        direct = loaded.model.encode_text(tokens, normalize=True)
    assert feats.dtype == torch.float32 and torch.allclose(feats, direct, atol=1e-5)
    assert encode_texts(loaded, []).shape[0] == 0
