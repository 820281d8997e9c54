"""Benchmark: `trainer run` against open_clip_train, side by side on the CPU, same model, same data.

Both train the same open_clip model config (trainer/models/configs/clip-tiny.json; open_clip_train
gets it through `open_clip.add_model_config` before `open_clip_train.main.main(argv)`) on the same
224 px photo-like JPEGs (bench_loader's `build`): our Parquet shards for `trainer run --data DIR`,
the same rows exported as webdataset tars (pipeline.shards.ShardWriter) for
`open_clip_train --dataset-type webdataset`. Batch 128, fp32, one DataLoader worker each, the same
torch thread count (OMP_NUM_THREADS), AdamW with gradient clipping 1.0 for both.

Runs alternate A B A B (ours, open_clip_train, ...) so a change in the machine's load hits both
alike. Each run logs every step; its rate is taken between the end of step --warmup-steps and the
end of the last step, from the tool's own per-step records (our metrics.csv `elapsed_s`;
open_clip_train's per-step `Batch (t)`), so process start, model build, the loaders' start and the
first steps are left out. Beside it, samples per CPU-second of the process and its loader worker
over the same steps (/proc, polled): less distorted by other load on a shared machine. Data
wait: the share of the timed span the training loop waited for batches.

    .venv/bin/python bench/bench_train_vs_openclip.py [--images 2000] [--steps 16] [--rounds 2] [--threads 1]
"""

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BATCH = 128
MODEL = "clip-tiny"
TICKS = os.sysconf("SC_CLK_TCK")
CONFIG = Path(__file__).resolve().parent.parent / "trainer/models/configs" / f"{MODEL}.json"
# open_clip_train's main, with our model config registered first (it has no flag for one).
OPENCLIP_RUNNER = (
    "import sys, open_clip; open_clip.add_model_config(sys.argv[1]); "
    "from open_clip_train.main import main; main(sys.argv[2:])"
)
# open_clip_train's per-step line: "Train Epoch: 0 [ 256/3840 (7%)] Data (t): 0.105 Batch (t):
# 0.391, 327.4/s, ..." (Data and Batch: means over the log window, here one step).
STEP_LINE = re.compile(
    r"Train Epoch: \d+ \[\s*(\d+)/\d+ .*?\] Data \(t\): ([\d.]+) Batch \(t\): [\d.]+, ([\d.e+]+)/s"
)


@dataclass
class Result:
    samples_per_s: float
    per_cpu_s: float  # samples per CPU-second of the trainer and its loader worker, same span
    data_wait: float  # fraction of the timed span spent waiting for the next batch
    wall_s: float  # the whole process, start to exit


def export_tars(shards: Path, out: Path) -> str:
    """The Parquet shards' rows as webdataset tars (one per shard, same keys order); returns the
    brace pattern open_clip_train's --train-data takes."""
    import pyarrow.parquet as pq

    from pipeline.images.process import ProcessedImage
    from pipeline.shards import ShardWriter, write_webdataset_sizes

    paths = sorted(shards.glob("*.parquet"))
    for index, path in enumerate(paths):
        rows = pq.read_table(path, columns=["jpg", "caption", "url", "uid"]).to_pylist()
        with ShardWriter(out, index, "jpg", webdataset=True) as writer:
            for row in rows:
                image = ProcessedImage("kept", image=row["jpg"], width=224, height=224)
                writer.write(row["uid"], row["url"], row["caption"], image)
    write_webdataset_sizes(out)
    return str(out / f"{{00000..{len(paths) - 1:05d}}}.tar")


def _env(threads: int) -> dict:
    # Same intra-op threads for both (open_clip_train has no flag; torch reads OMP_NUM_THREADS);
    # 0 leaves each its own default (ours: trainer.train.training_threads; theirs: torch's).
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    env.pop("OMP_NUM_THREADS", None)
    return {**env, "OMP_NUM_THREADS": str(threads)} if threads else env


def _tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its living descendants (the loader worker)."""
    total, todo = 0.0, [pid]
    while todo:
        pid = todo.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):  # ended meanwhile
            continue
    return total


def _run(cmd: list[str], threads: int, log: Path, done_steps, marks: tuple[int, int]):
    """Run `cmd` to its end; returns (wall seconds, CPU seconds of the process tree between the
    moments `done_steps()` first reached marks[0] and marks[1], polled every 20 ms)."""
    t0, cpu = time.perf_counter(), {}
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env(threads))
        while proc.poll() is None:
            time.sleep(0.02)
            step = done_steps()
            for mark in marks:
                if step >= mark and mark not in cpu:
                    cpu[mark] = _tree_cpu_s(proc.pid)
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        sys.exit(f"{cmd[:4]} failed (exit {proc.returncode}); {log}:\n" + "\n".join(tail))
    if len(cpu) < 2:
        sys.exit(f"{log}: the steps went by unseen; raise --steps")
    return time.perf_counter() - t0, cpu[marks[1]] - cpu[marks[0]]


def _csv_steps(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def run_ours(data: Path, out: Path, args) -> Result:
    steps = args.warmup_steps + args.steps
    cmd = [sys.executable, "-m", "trainer", "run", "--data", str(data), "--out", str(out)]
    cmd += ["--model", MODEL, "--batch-size", str(BATCH), "--samples", str(steps * BATCH)]
    cmd += ["--precision", "fp32", "--device", "cpu", "--workers", "1"]
    cmd += ["--threads", str(args.threads), "--lr", "5e-4", "--warmup", "2", "--log-every", "1"]
    cmd += ["--save-every", str(steps + 1)]  # only the closing checkpoint, after the last step
    metrics = out / "metrics.csv"
    marks = (args.warmup_steps, steps)
    wall, cpu = _run(
        cmd, args.threads, out.parent / f"{out.name}.log", lambda: _csv_steps(metrics), marks
    )
    with open(metrics, newline="") as fh:
        rows = {int(float(r["step"])): r for r in csv.DictReader(fh)}
    first, last = rows[args.warmup_steps], rows[steps]
    span = float(last["elapsed_s"]) - float(first["elapsed_s"])
    # data_wait of a row is the share of its own step (log_every 1): weight by the step's time
    ends = [float(rows[s]["elapsed_s"]) for s in range(args.warmup_steps, steps + 1)]
    waits = [
        float(rows[s]["data_wait"]) * (ends[i + 1] - ends[i])
        for i, s in enumerate(range(args.warmup_steps + 1, steps + 1))
    ]
    return Result(args.steps * BATCH / span, args.steps * BATCH / cpu, sum(waits) / span, wall)


def run_openclip(tars: str, logs: Path, args) -> Result:
    steps = args.warmup_steps + args.steps
    argv = ["--train-data", tars, "--dataset-type", "webdataset"]
    argv += ["--train-num-samples", str(steps * BATCH), "--epochs", "1", "--model", MODEL]
    argv += ["--batch-size", str(BATCH), "--precision", "fp32", "--device", "cpu"]
    argv += ["--workers", "1", "--lr", "5e-4", "--warmup", "2", "--grad-clip-norm", "1.0"]
    argv += ["--log-every-n-steps", "1", "--logs", str(logs), "--name", "run"]
    argv += ["--save-frequency", "0", "--zeroshot-frequency", "0", "--val-frequency", "0"]
    log = logs.parent / f"{logs.name}.log"
    cmd = [sys.executable, "-c", OPENCLIP_RUNNER, str(CONFIG), *argv]
    marks = (args.warmup_steps, steps)
    wall, cpu = _run(cmd, args.threads, log, lambda: len(STEP_LINE.findall(log.read_text())), marks)
    per_step = {}  # step -> (data seconds, step seconds)
    for match in STEP_LINE.finditer(log.read_text()):
        samples, data_s, rate = int(match[1]), float(match[2]), float(match[3])
        per_step[samples // BATCH] = (data_s, BATCH / rate)
    timed = [per_step[s] for s in range(args.warmup_steps + 1, steps + 1)]
    span = sum(step_s for _, step_s in timed)
    return Result(
        args.steps * BATCH / span, args.steps * BATCH / cpu, sum(d for d, _ in timed) / span, wall
    )


def build_data(root: Path, images: int) -> tuple[Path, str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_loader import build  # the loader bench's photo-like 224 px JPEG shards

    t0 = time.perf_counter()
    data, sizes = root / "data", root / "tars" / "sizes.json"
    if sizes.exists():  # a finished dataset of an earlier run in --out: reused as it is
        counts = json.loads(sizes.read_text())
        images, tars = (
            sum(counts.values()),
            str(sizes.parent / f"{{00000..{len(counts) - 1:05d}}}.tar"),
        )
    else:
        build(data, images)
        tars = export_tars(data / "shards", root / "tars")
    print(
        f"dataset: {images} JPEGs, 224 px, as Parquet shards ({data}) and webdataset tars "
        f"({tars}), {time.perf_counter() - t0:.0f} s to write"
    )
    return data, tars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="JPEGs in the dataset")
    parser.add_argument("--steps", type=int, default=16, help="timed steps per run")
    parser.add_argument("--warmup-steps", type=int, default=4, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=2, help="A B pairs")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of each trainer; 0: each one's default (ours: the CPUs its loader "
        "worker leaves free; open_clip_train: torch's, every CPU)",
    )
    parser.add_argument(
        "--out", help="working folder (default: a temporary one); its dataset is reused"
    )
    args = parser.parse_args()
    if min(args.images, args.steps, args.warmup_steps, args.rounds) < 1 or args.threads < 0:
        parser.error("--images, --steps, --warmup-steps and --rounds must be >= 1, --threads >= 0")
    if args.images < BATCH:
        parser.error(f"--images must be at least the batch ({BATCH})")
    root = Path(args.out or tempfile.mkdtemp(prefix="bench_train_vs_openclip_"))
    data, tars = build_data(root, args.images)
    print(
        f"{MODEL}, batch {BATCH}, fp32, CPU, 1 loader worker, "
        f"{args.threads or 'default'} torch thread(s); "
        f"{args.steps} steps timed after {args.warmup_steps}; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"{'run':>4} {'tool':16} {'samples/s':>10} {'per CPU-s':>10} {'data wait':>10} {'process s':>10}"
    )
    results = {"ours": [], "open_clip_train": []}
    for i in range(args.rounds):
        for tool in results:
            out = root / f"{tool}{i}"
            shutil.rmtree(out, ignore_errors=True)  # an earlier invocation's run in --out
            result = run_ours(data, out, args) if tool == "ours" else run_openclip(tars, out, args)
            shutil.rmtree(out)  # checkpoints: ~100 MB a run; the run's log stays beside it
            results[tool].append(result)
            print(
                f"{sum(map(len, results.values())):>4} {tool:16} {result.samples_per_s:10.1f} "
                f"{result.per_cpu_s:10.1f} {result.data_wait:10.1%} {result.wall_s:10.1f}",
                flush=True,
            )
    _summary(results, root)


def _summary(results: dict, root: Path) -> None:
    means = {}
    for tool, runs in results.items():
        rates = [r.samples_per_s for r in runs]
        means[tool] = (statistics.mean(rates), statistics.mean(r.per_cpu_s for r in runs))
        print(
            f"mean {tool:16} {means[tool][0]:10.1f} {means[tool][1]:10.1f}  "
            f"(samples/s of the runs {min(rates):.1f}..{max(rates):.1f})"
        )
    (ours, ours_cpu), (theirs, theirs_cpu) = means["ours"], means["open_clip_train"]
    print(
        f"ratio ours / open_clip_train: {ours / theirs:.2f}x samples/s (goal >= 1.5x), "
        f"{ours_cpu / theirs_cpu:.2f}x samples per CPU-second -- work folder {root}"
    )


if __name__ == "__main__":
    main()
