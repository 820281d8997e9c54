import csv
import math
import os
import shutil
import subprocess
import sys

import open_clip
import pytest
import torch

from pipeline.testing.toydata import COLOURS, SHAPES, draw
from trainer import checkpoint
from trainer.cli import main
from trainer.data.image import eval_image, normalize
from trainer.metrics import COLUMNS, read_rows

FAST = ["--model", "clip-nano", "--threads", "1", "--log-every", "1"]


def run(argv) -> int:
    return main(["run", *map(str, argv)])


def interrupted_and_resumed(common: list, tmp_path, stop: int, saved: int):
    """(full, cut): the run `common` uninterrupted, and the same run cut after step `stop` with a
    checkpoint every `saved` steps, resumed from the last one saved: a crash after step `stop`
    was logged but before it was saved."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run([*common, "--out", full]) == 0
    assert run([*common, "--out", cut, "--stop-after", stop, "--save-every", saved]) == 0
    last = stop // saved * saved
    shutil.copy(cut / "checkpoints" / f"step_{last:08d}.pt", cut / "latest.pt")
    assert run([*common, "--out", cut, "--resume"]) == 0
    return full, cut


def losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_rows(run_dir / "metrics.csv")]


def retrieval_top1(model, size: int, seed: int = 99) -> float:
    """Image->text top-1 over the 24 captions, on shapes drawn afresh."""
    import random

    import trainer.models as models

    rng = random.Random(seed)
    captions = [f"a {c} {s}" for c in COLOURS for s in SHAPES]
    images = [draw(c, s, rng) for c in COLOURS for s in SHAPES]
    mean, std = models.mean_std(model)
    batch = normalize(torch.stack([eval_image(_png(img), size) for img in images]), mean, std)
    with torch.no_grad():
        out = model(batch, models.tokenizer("clip-nano")(captions))
    sims = out["image_features"] @ out["text_features"].T
    return (sims.argmax(1) == torch.arange(len(captions))).float().mean().item()


def _png(img) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.timeout(240)
def test_learns_shapes_and_writes_the_run_folder(shapes_dataset, tmp_path):
    out = tmp_path / "run"
    argv = [
        "--data",
        shapes_dataset,
        "--out",
        out,
        "--samples",
        16 * 250,
        "--batch-size",
        16,
        "--workers",
        0,
        "--lr",
        2e-3,
        "--warmup",
        20,
        "--save-every",
        100,
        "--keep",
        2,
        "--shuffle-buffer",
        64,
        *FAST,
        "--log-every",
        10,
    ]
    assert run(argv) == 0
    with open(out / "metrics.csv") as fh:
        assert (
            next(csv.reader(fh))[:7]
            == COLUMNS[:7]
            == ["step", "samples_seen", "loss", "lr", "logit_scale", "samples_per_s", "data_wait"]
        )
    rows = read_rows(out / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(10, 251, 10))
    final = sum(r["loss"] for r in rows[-3:]) / 3
    assert final < 0.45 * math.log(16), f"loss {final:.3f} did not fall well below ln(16)"
    assert rows[-1]["samples_seen"] == 16 * 250
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_00000200.pt",
        "step_00000250.pt",
    ]
    ckpt = checkpoint.load(out / "latest.pt")
    assert ckpt["step"] == 250 and ckpt["config"]["batch_size"] == 16
    # open_clip loads the trainer's checkpoint after the registration import
    model = open_clip.create_model("clip-nano", pretrained=str(out / "latest.pt"), output_dict=True)
    assert torch.equal(model.logit_scale, ckpt["state_dict"]["logit_scale"])
    assert retrieval_top1(model.eval(), 32) > 0.25  # chance: 1/24; an untrained model fails
    assert main(["plot", str(out)]) == 0
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.timeout(180)
def test_resume_reproduces_the_uninterrupted_run(shapes_dataset, tmp_path):
    common = [
        "--data",
        shapes_dataset,
        "--samples",
        8 * 14,
        "--batch-size",
        8,
        "--workers",
        2,
        "--shuffle-buffer",
        40,
        "--warmup",
        3,
        *FAST,
    ]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run([*common, "--out", full]) == 0
    assert run([*common, "--out", cut, "--stop-after", 9, "--save-every", 4]) == 0
    assert len(losses(cut)) == 9
    # a crash after step 9 was logged but before it was saved: latest.pt is still step 8
    os.unlink(cut / "latest.pt")
    shutil.copy(cut / "checkpoints" / "step_00000008.pt", cut / "latest.pt")
    assert run([*common, "--out", cut, "--resume"]) == 0
    assert [r["step"] for r in read_rows(cut / "metrics.csv")] == list(range(1, 15))
    assert losses(cut) == losses(full)  # exactly: same data, same augmentation, same updates
    full_ckpt, cut_ckpt = (checkpoint.load(p / "latest.pt") for p in (full, cut))
    for key, value in full_ckpt["state_dict"].items():
        assert torch.equal(value, cut_ckpt["state_dict"][key]), key


@pytest.mark.timeout(60)
def test_accumulation_equals_the_big_batch(tmp_path):
    common = ["--synthetic", "--samples", 16 * 6, "--warmup", 2, "--lr", 1e-3, *FAST]
    assert run([*common, "--batch-size", 16, "--out", tmp_path / "big"]) == 0
    assert run([*common, "--batch-size", 8, "--accum-steps", 2, "--out", tmp_path / "acc"]) == 0
    assert losses(tmp_path / "acc") == pytest.approx(losses(tmp_path / "big"), rel=1e-4)


@pytest.mark.timeout(180)
def test_two_gloo_processes_match_one_with_the_doubled_batch(tmp_path):
    common = ["--synthetic", "--samples", 16 * 8, "--warmup", 2, "--lr", 1e-3, *FAST]
    assert run([*common, "--batch-size", 16, "--out", tmp_path / "one"]) == 0
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "trainer",
        "run",
        *map(str, common),
        "--batch-size",
        "8",
        "--out",
        str(tmp_path / "two"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    config = (tmp_path / "two" / "config.json").read_text()
    assert '"world_size": 2' in config and '"global_batch": 16' in config
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-4)


@pytest.mark.timeout(60)
def test_siglip_loss_trains(tmp_path):
    argv = [
        "--synthetic",
        "--loss",
        "siglip",
        "--samples",
        32 * 40,
        "--batch-size",
        32,
        "--lr",
        2e-3,
        "--warmup",
        4,
        "--out",
        tmp_path,
        *FAST,
    ]
    assert run(argv) == 0
    values = losses(tmp_path)
    assert all(math.isfinite(v) for v in values) and values[-1] < 0.5 * values[0]
    assert "logit_bias" in checkpoint.load(tmp_path / "latest.pt")["state_dict"]


def test_cli_errors_are_one_line(shapes_dataset, tmp_path, capsys):
    base = ["--out", tmp_path / "r", "--threads", "1"]
    cases = [
        (["--data", shapes_dataset, "--where", "caption = 'x'", *base], "selects no samples"),
        (["--data", shapes_dataset, "--model", "ViT-Q-99", *base], "known models: clip-nano"),
        (
            ["--data", shapes_dataset, "--model", "clip-nano", "--batch-size", 500, *base],
            "larger than the subset (192 samples)",
        ),
        (["--data", tmp_path, *base], "is not a dataset folder"),
        (["--data", tmp_path / "missing", *base], "does not exist"),
        (["--synthetic", "--bogus", *base], "unrecognized arguments: --bogus"),
        (["--synthetic", "--batch-size", "many", *base], "invalid int value"),
        (["--synthetic", "--loss", "triplet", *base], "invalid choice: 'triplet'"),
        ([*base], "--data DIR is required"),
    ]
    for argv, message in cases:
        assert run(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and err.startswith("trainer run: error:"), (argv, err)
        assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert main(["eval", "--no-such-option"]) == 2  # built or not, a one-line error
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err


def test_existing_run_needs_resume_and_same_options(tmp_path, capsys):
    argv = ["--synthetic", "--samples", 8, "--batch-size", 4, "--out", tmp_path, *FAST]
    assert run(argv) == 0
    assert run(argv) == 2
    assert "pass --resume to continue it" in capsys.readouterr().err
    assert run([*argv, "--resume", "--batch-size", 8]) == 2
    assert "--batch-size 8 (the run has 4)" in capsys.readouterr().err
    assert run([*argv, "--resume"]) == 0
    assert "already finished at step 2" in capsys.readouterr().out
    assert run([*argv, "--resume", "--samples", 16]) == 0  # a longer schedule continues
    assert [r["step"] for r in read_rows(tmp_path / "metrics.csv")] == [1, 2, 3, 4]


@pytest.mark.timeout(240)
def test_periodic_zero_shot_is_logged_beside_the_losses(shapes_dataset, tmp_path):
    import random

    rng = random.Random(5)
    evalset = tmp_path / "shapes-eval"
    for colour in list(COLOURS)[:3]:
        for shape in SHAPES[:2]:
            folder = evalset / f"{colour}_{shape}"
            folder.mkdir(parents=True)
            draw(colour, shape, rng).save(folder / "0.png")
    out = tmp_path / "run"
    argv = [
        "--data",
        shapes_dataset,
        "--out",
        out,
        "--samples",
        96,
        "--batch-size",
        16,
        "--workers",
        0,
        "--eval-set",
        evalset,
        "--eval-every",
        3,
        "--eval-templates",
        "plain",
        *FAST,
    ]
    assert run(argv) == 0
    rows = read_rows(out / "eval.csv")
    assert [r["step"] for r in rows] == [3, 6]
    top1 = rows[-1]["zeroshot/shapes-eval/top1"]
    assert 0.0 <= top1 <= 1.0
    assert len(losses(out)) == 6  # the metrics rows are untouched
