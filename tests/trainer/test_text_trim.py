"""--trim-text (trainer.models.text): the text tower on tokens cut to the batch's longest caption
gives open_clip's own features and gradients, falls back where that would not be exact, and
trains to the same losses, eager and compiled."""

import logging

import open_clip
import pytest
import torch

import trainer.models as models
from tests.trainer.test_train import FAST, losses, run
from trainer.models.text import BUCKET, TrimmedText, for_training, why_not_exact

CAPTIONS = {  # words per caption: all of them short, one medium, one filling clip-tiny's 32
    "short": ["a cat", "dog", "a red circle on a mat"],
    "medium": ["a cat", "a photo of a small brown dog sitting on a red mat in the sun"],
    "full": ["a cat", " ".join(["photo"] * 40)],
}


def _tiny(**text_cfg):
    """A small open_clip CLIP built directly, for text tower settings no registered config has."""
    torch.manual_seed(0)
    vision = {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8}
    text = {"context_length": 20, "width": 32, "heads": 2, "layers": 2, **text_cfg}
    return open_clip.model.CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text, output_dict=True)


# float64 shows the cut is exact; float32 differs by rounding only (other matmul shapes)
TOLERANCE = {torch.float32: (1e-6, 1e-5), torch.float64: (1e-12, 1e-12)}  # features, gradients


@pytest.mark.parametrize("dtype", sorted(TOLERANCE, key=str))
@pytest.mark.parametrize("name", sorted(CAPTIONS))
def test_features_and_gradients_equal_open_clips_own(name, dtype):
    model = models.create("clip-tiny").to(dtype)
    tokens = models.tokenizer("clip-tiny")(CAPTIONS[name])
    wrapper = TrimmedText(model)
    cut = wrapper.cut(tokens)
    last = int(tokens.argmax(dim=1).max()) + 1  # the EOT token is the largest id
    assert cut.shape[1] == min(-(-last // BUCKET) * BUCKET, 32)
    assert cut.shape[1] < 32 if name != "full" else cut.shape[1] == 32
    assert torch.equal(cut, tokens[:, : cut.shape[1]])
    weights = torch.randn(len(tokens), 128, generator=torch.Generator().manual_seed(1))
    runs = []
    for encode, batch in ((model.encode_text, tokens), (wrapper.encode_text, cut)):
        model.zero_grad()
        features = encode(batch, normalize=True)
        (features * weights.to(dtype)).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        runs.append((features.detach(), grads))
    (own, own_grads), (trimmed, trimmed_grads) = runs
    features_tol, grads_tol = TOLERANCE[dtype]
    assert torch.allclose(trimmed, own, rtol=0, atol=features_tol)
    assert own_grads.keys() == trimmed_grads.keys()
    assert "transformer.resblocks.0.attn.in_proj_weight" in own_grads
    for key, value in own_grads.items():  # relative to the tensor's largest entry
        error = (trimmed_grads[key] - value).abs().max() / value.abs().max()
        assert error <= grads_tol, (key, error.item())


def test_the_cut_is_bucketed_but_never_longer_than_the_context():
    model = _tiny()  # context 20: not a multiple of 8
    wrapper = TrimmedText(model)
    tokens = open_clip.tokenize(["a cat", " ".join(["dog"] * 30)], context_length=20)
    assert wrapper.cut(tokens).shape[1] == 20
    assert wrapper.cut(tokens[:1]).shape[1] == 8  # [start, a, cat, end]
    nine = open_clip.tokenize([" ".join(["dog"] * 7)], context_length=20)  # end at position 8
    assert wrapper.cut(nine).shape[1] == 16
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        own, trimmed = model(images, tokens), wrapper(images, wrapper.cut(tokens[:1]).expand(2, -1))
    assert own.keys() == trimmed.keys() == {"image_features", "text_features", "logit_scale"}
    assert torch.equal(own["image_features"], trimmed["image_features"])
    own_text = model.encode_text(tokens[:1], normalize=True)
    assert torch.allclose(trimmed["text_features"][0], own_text[0], atol=1e-6)


def test_eos_pooling_cuts_at_the_eos_id():
    model = _tiny(pool_type="eos", eos_id=500)  # a tokenizer whose end token is not the largest id
    assert why_not_exact(model) is None
    tokens = torch.zeros(2, 20, dtype=torch.long)
    tokens[0, :4] = torch.tensor([49406, 320, 2368, 500])
    tokens[1, :6] = torch.tensor([49406, 320, 1125, 539, 2368, 500])
    tokens[0, 12] = 49407  # after the end; argmax pooling would look there
    wrapper = TrimmedText(model)
    cut = wrapper.cut(tokens)
    assert cut.shape[1] == 8
    with torch.no_grad():
        expected = model.encode_text(tokens, normalize=True)
        assert torch.allclose(wrapper.encode_text(cut, normalize=True), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("text_cfg", "reason"),
    [
        ({"no_causal_mask": True}, "no causal attention mask"),
        ({"pool_type": "last"}, "text pooling 'last'"),
        ({"embed_cls": True}, "class token"),
    ],
)
def test_models_where_the_cut_is_not_exact_keep_their_own_text_tower(text_cfg, reason, caplog):
    model = _tiny(**text_cfg)
    assert reason in why_not_exact(model)
    with pytest.raises(ValueError, match=reason):
        TrimmedText(model)
    with caplog.at_level(logging.INFO, logger="trainer.models.text"):
        assert for_training(model, True) == (model, None)
    assert any("--trim-text: off" in r.message for r in caplog.records)
    assert for_training(models.create("clip-nano"), False)[1] is None


def test_other_model_classes_keep_their_own_text_tower():
    class Derived(open_clip.model.CLIP):
        def encode_text(self, text, normalize=False):
            return super().encode_text(text, normalize)

    assert "not open_clip's CLIP" in why_not_exact(torch.nn.Linear(2, 2))
    model = _tiny()
    model.__class__ = Derived
    assert "Derived is not open_clip's CLIP" in why_not_exact(model)


@pytest.mark.timeout(120)
def test_training_with_and_without_the_cut_gives_the_same_losses(tmp_path):
    # synthetic captions are [start, word, end]: cut from 16 tokens to 8
    common = ["--synthetic", "--samples", 16 * 4, "--batch-size", 8, "--accum-steps", 2]
    common += ["--warmup", 2, "--lr", 1e-3, *FAST]
    assert run([*common, "--out", tmp_path / "cut"]) == 0
    assert run([*common, "--no-trim-text", "--out", tmp_path / "full"]) == 0
    assert '"trim_text": true' in (tmp_path / "cut" / "config.json").read_text()  # the default
    assert '"trim_text": false' in (tmp_path / "full" / "config.json").read_text()
    assert losses(tmp_path / "cut") == pytest.approx(losses(tmp_path / "full"), rel=1e-5)


@pytest.mark.slow
@pytest.mark.timeout(420)  # cold, the first torch.compile on a CPU takes a minute or two
def test_compiled_wrapper_takes_every_cut_length_in_three_graphs():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # graphs compiled by earlier tests count there too
    model = models.create("clip-tiny")
    wrapper = TrimmedText(model)
    compiled = torch.compile(wrapper)
    tokenize = models.tokenizer("clip-tiny")
    images = torch.rand(2, 3, 64, 64)
    lengths = []
    for words in (1, 9, 20, 40, 1, 20):  # cut to 8, 16, 24, 32 (all of it), 8, 24 tokens
        tokens = tokenize(["a cat", " ".join(["dog"] * words)])
        cut = wrapper.cut(tokens)
        lengths.append(cut.shape[1])
        out = compiled(images, cut)
        _total(out).backward()
        got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        expected = model(images, tokens)
        _total(expected).backward()
        assert torch.allclose(out["text_features"], expected["text_features"], atol=1e-5)
        assert got.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
        for name, p in model.named_parameters():
            if p.grad is not None:
                assert torch.allclose(got[name], p.grad, atol=1e-5), name
        model.zero_grad()
    assert lengths == [8, 16, 24, 32, 8, 24]
    # the first length, then one graph with the length dynamic, then the uncut context
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 3


def _total(out: dict) -> torch.Tensor:
    return out["image_features"].sum() + out["text_features"].sum() + out["logit_scale"]
