"""The GPU check's training runs: open_clip_train and `trainer run` on the same shards, one process
each (bench/gpu_check_child.py), and what their own logs say about the timed steps.

Both train for the same number of steps, with the same batch, learning rate (5e-4, 5 warmup
steps, cosine), AdamW betas/eps/decay and gradient clipping (1.0), and log every `log_every`
steps. The first log window is the warm-up (process start, loader start, compilation, CUDA graph
capture); the rate is the samples of the later windows over their time, the data wait the share
of that time the training loop waited for its next batch, the loss the last step's.
"""

import csv
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
# open_clip_train's log line; the counts are cumulative samples, Data/Batch (t) means over the
# window since the previous line (its meters are reset after each line).
OPENCLIP_LINE = re.compile(
    r"Train Epoch: \d+ \[\s*(\d+)/\d+ .*?\] Data \(t\): ([\d.]+) Batch \(t\): ([\d.]+),"
    r".*? Loss: ([\d.naife+-]+) "
)


@dataclass
class Setup:
    """What every training run of one check shares."""

    device: str  # "cuda" or "cpu"
    model: str
    batch: int
    steps: int
    log_every: int
    workers: int
    data: Path  # the dataset folder (shards/*.parquet and shards/*.tar)
    tars: str  # brace pattern of the tars
    work: Path  # run folders and logs go here

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"


@dataclass
class Run:
    name: str
    kind: str  # "openclip" | "trainer"
    flags: list[str] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)  # trainer options (or option=choice) it uses
    cuda_only: bool = False
    compiles: bool = False  # slow start: later in the order, and a longer time allowance
    batch_div: int = 1  # the run's batch is Setup.batch / this (accumulation keeps the total)


def runs(setup: Setup) -> list[Run]:
    """Every training run, in the order they run: the four baselines, then the levers."""
    chunk = max(1, setup.batch // 4)
    return [
        Run("trainer eager", "trainer"),
        Run("open_clip_train eager", "openclip"),
        Run("trainer --compile", "trainer", ["--compile"], compiles=True),
        Run("open_clip_train --torchcompile", "openclip", ["--torchcompile"], compiles=True),
        # the levers, the likely bottleneck first (at ~8k samples/s: the CPUs' JPEG decoding)
        Run("trainer --decode gpu", "trainer", ["--decode", "gpu"], ["decode=gpu"], cuda_only=True),
        Run(
            f"trainer --loss-chunk {chunk}", "trainer", ["--loss-chunk", str(chunk)], ["loss_chunk"]
        ),
        Run("trainer --channels-last", "trainer", ["--channels-last"], ["channels_last"]),
        Run(
            "trainer --accum-steps 2 (half batches)",
            "trainer",
            ["--accum-steps", "2"],
            ["accum_steps"],
            batch_div=2,
        ),
        Run(
            "trainer --compile --compile-mode reduce-overhead",
            "trainer",
            ["--compile", "--compile-mode", "reduce-overhead"],
            ["compile_mode=reduce-overhead"],
            cuda_only=True,
            compiles=True,
        ),
        Run(
            "trainer --compile --precision fp8",
            "trainer",
            ["--compile", "--precision", "fp8"],
            ["precision=fp8"],
            cuda_only=True,
            compiles=True,
        ),
    ]


def trainer_options() -> dict[str, tuple | None]:
    """`trainer run`'s options: {dest: choices or None}, read from its argument parser."""
    from trainer.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001 - argparse
    return {a.dest: (tuple(a.choices) if a.choices else None) for a in sub.choices["run"]._actions}


def missing_option(run: Run, options: dict) -> str | None:
    """Why `trainer run` cannot take this run's flags (None: it can)."""
    for need in run.needs:
        dest, _, choice = need.partition("=")
        if dest not in options:
            return f"`trainer run` has no --{dest.replace('_', '-')}"
        if choice and choice not in (options[dest] or ()):
            return f"`trainer run --{dest.replace('_', '-')}` has no choice {choice!r}"
    return None


def openclip_argv(setup: Setup, run: Run, out: Path) -> list[str]:
    precision = "amp_bf16" if setup.cuda else "fp32"
    return [
        "--train-data", setup.tars,
        "--dataset-type", "webdataset",
        "--dataset-resampled",  # sample shards with replacement: any worker count, no epoch end
        "--train-num-samples", str(setup.batch * setup.steps),
        "--epochs", "1",
        "--batch-size", str(setup.batch),
        "--model", setup.model,
        "--precision", precision,
        "--device", setup.device,
        "--workers", str(setup.workers),
        "--lr", "5e-4", "--warmup", "5", "--wd", "0.2", "--beta1", "0.9", "--beta2", "0.98",
        "--eps", "1e-6", "--grad-clip-norm", "1.0",
        "--seed", "0",
        "--log-every-n-steps", str(setup.log_every),
        "--save-frequency", "0",
        "--logs", str(out), "--name", "run",
        *run.flags,
    ]  # fmt: skip


def trainer_argv(setup: Setup, run: Run, out: Path) -> list[str]:
    batch = setup.batch // run.batch_div
    return [
        "run",
        "--data", str(setup.data),
        "--model", setup.model,
        "--batch-size", str(batch),
        "--samples", str(setup.batch * setup.steps),
        "--precision", "bf16" if setup.cuda else "fp32",
        "--device", setup.device,
        "--workers", str(setup.workers),
        "--lr", "5e-4", "--warmup", "5", "--grad-clip", "1.0", "--seed", "0",
        "--log-every", str(setup.log_every),
        "--save-every", str(setup.steps),
        "--out", str(out / "run"),
        *run.flags,
    ]  # fmt: skip


def child(kind: str, argv: list[str], log: Path, timeout: float, env: dict | None = None) -> dict:
    """Run one child process (gpu_check_child.py); its result record, with `log` its output."""
    result = log.with_suffix(".result.json")
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(HERE / "gpu_check_child.py"), kind, str(result), "--", *argv]
    started = time.perf_counter()
    with open(log, "w") as fh:
        try:
            proc = subprocess.run(
                cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, env=env or os.environ
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s", "wall_s": timeout}
    if not result.exists():  # killed before it could write (out of memory, a segfault)
        return {"error": f"died with status {rc}, no result; see {log}", "wall_s": 0.0}
    record = json.loads(result.read_text())
    record.setdefault("wall_s", time.perf_counter() - started)
    if record.get("error") is None and record.get("rc"):
        record["error"] = f"exit status {record['rc']}"
    if record.get("error"):
        record["error"] += f"; {_last_line(log)} (log: {log})"
    return record


def _last_line(log: Path) -> str:
    """The log's last line that says something (a CLI's one-line error, a traceback's end)."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def parse_openclip(text: str, batch: int, warm_steps: int) -> dict:
    """Rate, data wait and last loss from open_clip_train's log lines (steps after warm_steps)."""
    samples = time_s = wait_s = 0.0
    previous, loss, timed = 0, None, 0
    for match in OPENCLIP_LINE.finditer(text):
        count, data_t, batch_t = int(match[1]), float(match[2]), float(match[3])
        steps_now, window = count // batch, count // batch - previous
        if previous >= warm_steps and window > 0:
            samples += window * batch
            time_s += window * batch_t
            wait_s += window * data_t
            timed += window
        previous, loss = steps_now, float(match[4])
    return _figures(samples, time_s, wait_s, loss, timed)


def parse_trainer(metrics_csv: Path, warm_steps: int) -> dict:
    """The same figures from our metrics.csv (one row per log window)."""
    samples = time_s = wait_s = 0.0
    previous_step, previous_seen, loss, timed = 0, 0, None, 0
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            step, seen = int(float(row["step"])), int(float(row["samples_seen"]))
            window = step - previous_step
            if previous_step >= warm_steps and window > 0:
                span = (seen - previous_seen) / float(row["samples_per_s"])
                samples += seen - previous_seen
                time_s += span
                wait_s += span * float(row["data_wait"])
                timed += window
            previous_step, previous_seen, loss = step, seen, float(row["loss"])
    return _figures(samples, time_s, wait_s, loss, timed)


def _figures(samples, time_s, wait_s, loss, timed) -> dict:
    if not timed or time_s <= 0:
        return {"error": "no timed steps in the log (fewer steps than the warm-up?)"}
    return {
        "samples_per_s": samples / time_s,
        "data_wait": wait_s / time_s,
        "loss": loss,
        "timed_steps": timed,
    }


def run_dir(setup: Setup, run: Run) -> Path:
    return setup.work / re.sub(r"[^a-z0-9]+", "-", run.name.lower()).strip("-")


def train_run(setup: Setup, run: Run, timeout: float, env: dict | None = None) -> dict:
    """One training run: its figures, or {"error": ...}."""
    out = run_dir(setup, run)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "output.log"
    if run.kind == "openclip":
        record = child("openclip", openclip_argv(setup, run, out), log, timeout, env)
        if record.get("error"):
            return record
        logs = sorted(out.glob("run/out.log")) or [log]
        figures = parse_openclip(logs[0].read_text(), setup.batch, setup.log_every)
    else:
        record = child("trainer", trainer_argv(setup, run, out), log, timeout, env)
        if record.get("error"):
            return record
        figures = parse_trainer(out / "run" / "metrics.csv", setup.log_every)
        record["checkpoint"] = str(out / "run" / "latest.pt")
    return {**record, **figures}


def flops_per_sample(model_name: str) -> float:
    """FLOPs of one training sample (forward + backward of both towers, at batch 2), counted by
    torch.utils.flop_counter on the CPU; the contrastive loss's B x B logits are left out (at
    batch 512 and width 512 they add under 0.1%)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import trainer.models as models

    model = models.create(model_name)
    size = models.image_size(model)
    images = torch.rand(2, 3, size, size)
    tokens = torch.randint(0, 1000, (2, model.context_length))
    with FlopCounterMode(display=False) as counter:
        out = model(images, tokens)
        (out["image_features"].sum() + out["text_features"].sum()).backward()
    return counter.get_total_flops() / 2


def mfu(samples_per_s: float, flops: float | None, peak: float | None) -> float | None:
    """Model FLOPs utilisation; None without a known peak (the CPU, an unlisted GPU) or count."""
    return samples_per_s * flops / peak if peak and flops and math.isfinite(samples_per_s) else None
