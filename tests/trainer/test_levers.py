"""The speed levers of the step (trainer.levers, --loss-chunk): each one's logic on the CPU, the
GPU-only ones as clear errors here, and an exact resume with every lever a CPU can run."""

import contextlib
import sys

import pytest
import torch

import trainer.models as models
from tests.trainer.test_train import FAST, interrupted_and_resumed, losses, run
from trainer import checkpoint, levers
from trainer.config import ConfigError, TrainConfig
from trainer.loss import ClipLoss
from trainer.metrics import read_rows
from trainer.optim import make_optimizer
from trainer.step import train_step


def test_levers_that_cannot_run_here_are_config_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--compile-mode max-autotune needs --compile"):
        TrainConfig(compile_mode="max-autotune")
    with pytest.raises(ConfigError, match="--loss-chunk must not be negative"):
        TrainConfig(loss_chunk=-1)
    with pytest.raises(ConfigError, match="records CUDA graphs and needs a CUDA device"):
        levers.check(TrainConfig(compile=True, compile_mode="reduce-overhead"), "cpu")
    levers.check(TrainConfig(compile=True, compile_mode="max-autotune"), "cpu")  # Inductor's
    argv = ["--synthetic", "--precision", "fp8", "--device", "cpu", "--out", tmp_path, *FAST]
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--precision fp8 needs a CUDA GPU with compute capability 8.9+" in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "latest.pt").exists()


def test_fp8_check_names_the_old_gpu_and_the_missing_torchao(monkeypatch):
    """The CUDA side of the check with the device faked: capability first, then torchao."""
    cfg = TrainConfig(precision="fp8")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA A100")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (8, 0))
    with pytest.raises(ConfigError, match="NVIDIA A100 has 8.0"):
        levers.check(cfg, "cuda:0")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (9, 0))
    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao raises ImportError
    monkeypatch.setitem(sys.modules, "torchao.float8", None)
    with pytest.raises(ConfigError, match=r"pip install 'clipengine\[fp8\]'"):
        levers.check(cfg, "cuda:0")


class _Odd(torch.nn.Module):
    """A model with one Linear float8 can take and one it cannot (10 outputs)."""

    def __init__(self):
        super().__init__()
        self.fits, self.odd = torch.nn.Linear(32, 64), torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.odd(self.fits(x))


def test_fp8_filter_keeps_the_linear_layers_float8_can_take():
    model = models.create("clip-nano")
    keep = levers.fp8_filter(model)
    chosen = sorted(n for n, m in model.named_modules() if keep(m, n))
    blocks = [f"{tower}transformer.resblocks.{i}" for tower in ("", "visual.") for i in (0, 1)]
    assert chosen == sorted(f"{b}.mlp.{layer}" for b in blocks for layer in ("c_fc", "c_proj"))
    # the attention's out_proj is a Linear, but nn.MultiheadAttention never calls its forward
    assert "visual.transformer.resblocks.0.attn.out_proj" not in chosen
    odd = _Odd()
    assert [n for n, m in odd.named_modules() if levers.fp8_filter(odd)(m, n)] == ["fits"]


def test_fp8_conversion_keeps_the_checkpoint_layout_and_trains():
    pytest.importorskip("torchao.float8", reason="the fp8 extra: pip install 'clipengine[fp8]'")
    model = models.create("clip-nano")
    reference = models.create("clip-nano")
    keys = list(model.state_dict())
    names = levers.convert_fp8(model)
    assert len(names) == 8
    converted = {n for n, m in model.named_modules() if type(m).__name__ == "Float8Linear"}
    assert converted == set(names)
    assert list(model.state_dict()) == keys  # loads into a plain open_clip model
    reference.load_state_dict(model.state_dict())
    # torchao emulates float8 on a CPU: slow, but the step runs and stays near fp32
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    tokens = torch.randint(0, 1000, (16, 16))
    fp8, fp32 = (_one_step(m, images, tokens) for m in (model, reference))
    assert fp8 == pytest.approx(fp32, rel=0.05)


def _one_step(model, images, tokens, channels_last=False) -> float:
    optimizer = make_optimizer(model, TrainConfig())
    mean, std = models.mean_std(model)
    loss = train_step(
        model,
        model,
        ClipLoss(),
        optimizer,
        [(images, tokens)],
        mean=mean,
        std=std,
        autocast=contextlib.nullcontext,
        grad_clip=1.0,
        channels_last=channels_last,
    )
    return loss.item()


def test_channels_last_trains_one_step_to_the_same_loss_and_weights():
    g = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (8, 3, 32, 32), generator=g, dtype=torch.uint8)
    tokens = torch.randint(0, 1000, (8, 16), generator=g)
    plain = models.create("clip-nano")
    last = levers.prepare(models.create("clip-nano"), TrainConfig(channels_last=True))
    assert last.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert _one_step(last, images, tokens, True) == pytest.approx(
        _one_step(plain, images, tokens), rel=1e-5
    )
    for (name, a), b in zip(plain.state_dict().items(), last.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name


@pytest.mark.timeout(90)
def test_chunked_loss_with_accumulation_equals_the_big_batch(tmp_path):
    common = ["--synthetic", "--samples", 16 * 4, "--warmup", 2, "--lr", 1e-3, *FAST]
    assert run([*common, "--batch-size", 16, "--out", tmp_path / "big"]) == 0
    chunked = ["--batch-size", 8, "--accum-steps", 2, "--loss-chunk", 5]
    assert run([*common, *chunked, "--out", tmp_path / "acc"]) == 0
    assert losses(tmp_path / "acc") == pytest.approx(losses(tmp_path / "big"), rel=1e-4)


@pytest.mark.slow
@pytest.mark.timeout(420)  # cold, the first torch.compile on a CPU took 60-130 s here
def test_resume_with_every_cpu_lever_is_bit_exact(tmp_path):
    common = [
        *["--synthetic", "--samples", 8 * 2 * 6, "--batch-size", 8, "--accum-steps", 2],
        *["--loss-chunk", 3, "--compile", "--channels-last", "--grad-checkpointing"],
        *["--ema", 0.9, "--color-jitter", 0.3, "--grayscale", 0.2],
        *["--warmup", 2, "--lr", 1e-3, *FAST],
    ]
    full, cut = interrupted_and_resumed(common, tmp_path, stop=3, saved=2)
    assert [r["step"] for r in read_rows(cut / "metrics.csv")] == list(range(1, 7))
    assert losses(cut) == losses(full)  # exactly
    stored = checkpoint.load(cut / "latest.pt")["config"]
    assert stored["loss_chunk"] == 3 and stored["compile"] and stored["channels_last"]
    full_state = checkpoint.load(full / "latest.pt")["state_dict"]
    for key, value in checkpoint.load(cut / "latest.pt")["state_dict"].items():
        assert torch.equal(value, full_state[key]), key
