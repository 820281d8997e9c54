"""The one-shot GPU check's driver (bench/gpu_train.sh runs it; see there for the device run).

    python bench/gpu_check.py [--cpu-smoke] [--work DIR] [--json FILE] [--budget-s 300]

On a CUDA machine: builds >= 20k synthetic 224 px JPEGs as Parquet shards plus their webdataset
tars, trains ViT-B-32 (bf16) with open_clip_train (eager, --torchcompile) and `trainer run`
(eager, --compile, each lever flag `trainer run` has) for a fixed number of steps, runs `pipeline
embed` with the trained checkpoint, the FAISS index on the GPU against the CPU, and the score
stage's CLIP scoring on CUDA, then prints ONE table. Every section is guarded: one that fails or
lacks what it needs (faiss-gpu, a flag not built yet, time) gets its reason in the table and the
others still run. The sections run in priority order (baselines, then the other CUDA paths, then
compiled runs and levers) and stop starting when the time budget is spent, so the whole check
ends within --budget-s.
With --cpu-smoke (what tests/bench/test_gpu_train.py runs): clip-nano, a few hundred images, a
few steps, fp32, one loader worker, on the CPU; CUDA-only sections print why they are skipped.
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import gpu_check_data
import gpu_check_paths as paths
import gpu_check_runs as runs

REPO = Path(__file__).resolve().parent.parent
# H100/H200 SXM bf16 dense tensor-core peak (NVIDIA's datasheet figure). A plain 8192^3 bf16
# matmul reached 769-894 TFLOP/s on this workplace's H200s (device/KINDS.md).
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12}
GPU_DEFAULTS = dict(model="ViT-B-32", images=20_480, batch=512, steps=60, log_every=20)
CPU_DEFAULTS = dict(model="clip-nano", images=320, batch=32, steps=6, log_every=2)
# Time a run needs at least to be worth starting (s): process start, loader start, compilation.
MIN_START = {"cuda": (45, 120), "cpu": (15, 60)}  # (eager, compiled)
PATH_MIN_START = 20  # likewise for embed, FAISS and the scoring
# What the device image lacks (device/KINDS.md lists what it has: torch, torchvision, timm,
# pyarrow, regex, tqdm, huggingface_hub, ...), carried as Python 3.12 wheels. Versions: the
# pyproject's exact pin, else the one installed here (what the tests ran with).
WHEELS = ("open_clip_torch", "ftfy", "wcwidth", "webdataset", "braceexpand", "duckdb", "faiss-cpu")
# For --precision fp8 only: torchao 0.17 is the release built for torch >= 2.11 (the image's).
DEVICE_ONLY_WHEELS = ("torchao==0.17.0",)


class Budget:
    def __init__(self, seconds: float, started: float):
        self.end = started + seconds

    def left(self) -> float:
        return self.end - time.time()


def wheel_specs() -> list[str]:
    """NAME==VERSION of every wheel gpu_train.sh carries (its --fetch-wheels downloads them)."""
    import re
    from importlib.metadata import version

    pyproject = (REPO / "pyproject.toml").read_text()
    specs = []
    for name in WHEELS:
        pin = re.search(rf'"{re.escape(name)}==([^"*,;]+)"', pyproject)
        specs.append(f"{name}=={pin[1] if pin else version(name)}")
    return specs + list(DEVICE_ONLY_WHEELS)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model on the CPU (tests)")
    p.add_argument("--work", help="folder for data, runs and logs (default: a temporary one)")
    p.add_argument("--json", help="also write every row as JSON here")
    p.add_argument("--budget-s", type=float, default=300, help="the whole check's time")
    p.add_argument("--started", type=float, help="epoch seconds the check began (installs)")
    p.add_argument("--gpu-name", default="", help="the GPU's name (nvidia-smi), for MFU's peak")
    for name in GPU_DEFAULTS:
        p.add_argument(f"--{name.replace('_', '-')}", type=type(GPU_DEFAULTS[name]))
    p.add_argument("--compile-on-cpu", action="store_true", help="--cpu-smoke: compiled runs too")
    p.add_argument(
        "--runs",
        help="only the training runs whose name holds one of these comma-separated words "
        "(a retry of the levers the time budget skipped, say); the other sections still run",
    )
    p.add_argument("--wheel-specs", action="store_true", help="print the wheels to carry, end")
    return p.parse_args(argv)


def row(name: str, **figures) -> dict:
    return {"name": name, "status": "ok", **figures}


def skipped(name: str, reason: str) -> dict:
    return {"name": name, "status": "skipped", "reason": reason}


def failed(name: str, reason: str) -> dict:
    return {"name": name, "status": "failed", "reason": reason}


def guarded(name: str, fn) -> dict | list:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one section's failure must not stop the others
        return failed(name, f"{type(exc).__name__}: {exc}".splitlines()[0][:300])


def child_env(work: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    # One compile cache for every run: the later compiles of the same model reuse its kernels.
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(work / "inductor"))
    return env


def train_row(setup, run, budget, env, flops, peak) -> dict:
    eager_min, compiled_min = MIN_START[setup.device]
    need = compiled_min if run.compiles else eager_min
    if budget.left() < need:
        return skipped(run.name, f"time budget: {budget.left():.0f} s left, a run needs {need}")
    record = runs.train_run(setup, run, timeout=budget.left() - 5, env=env)
    if record.get("error"):
        return failed(run.name, record["error"])
    return row(
        run.name,
        rate=record["samples_per_s"],
        unit="samples/s",
        data_wait=record["data_wait"],
        peak_gib=record["peak_bytes"] / 2**30,
        peak_of=record["peak_of"],
        mfu=runs.mfu(record["samples_per_s"], flops, peak),
        loss=record["loss"],
        wall_s=record["wall_s"],
        note=f"{record['timed_steps']} steps timed",
        checkpoint=record.get("checkpoint"),
    )


EMBED = "pipeline embed (trained checkpoint)"
FAISS = "faiss index (CPU and GPU search)"


def score_name(setup) -> str:
    return f"clip score (score stage) on {setup.device.upper()}"


def embed_row(setup, checkpoint, budget, env) -> dict:
    name = EMBED
    if not checkpoint or not Path(checkpoint).exists():
        return skipped(name, "no checkpoint (its `trainer eager` row says why)")
    argv = ["embed", str(setup.data), "--checkpoint", checkpoint, "--device", setup.device]
    record = runs.child("pipeline", argv, setup.work / "embed.log", budget.left() - 5, env)
    if record.get("error"):
        return failed(name, record["error"])
    figures = paths.embed_figures(setup.data)
    return row(name, **figures, peak_gib=record["peak_bytes"] / 2**30, peak_of=record["peak_of"],
               wall_s=record["wall_s"])  # fmt: skip


def faiss_rows(setup, budget, env) -> list[dict]:
    args = {"dataset": str(setup.data), "work": str(setup.work)}
    call = ["gpu_check_paths:faiss_compare", json.dumps(args)]
    record = runs.child("call", call, setup.work / "faiss.log", budget.left() - 5, env)
    if record.get("error"):
        return [failed(FAISS, record["error"])]
    out = []
    for where in ("cpu", "gpu"):
        name = f"faiss {record['factory']} search on {where.upper()}"
        got = record[where]
        if "skipped" in got:
            out.append(skipped(name, got["skipped"]))
            continue
        note = f"recall@10 {got['recall']:.3f}, {record['params']}, {record['vectors']}"
        out.append(row(name, rate=got["qps"], unit="queries/s", recall=got["recall"], note=note))
    return out


def score_row(setup, checkpoint, budget, env) -> dict:
    name = score_name(setup)
    if not checkpoint or not Path(checkpoint).exists():
        return skipped(name, "no checkpoint (its `trainer eager` row says why)")
    shard = str(sorted((setup.data / "shards").glob("*.parquet"))[0])
    args = {"checkpoint": checkpoint, "shard": shard, "device": setup.device, "pairs": 1000}
    call = ["gpu_check_paths:clip_score", json.dumps(args)]
    record = runs.child("call", call, setup.work / "score.log", budget.left() - 5, env)
    if record.get("error"):
        return failed(name, record["error"])
    note = f"{record['pairs']} pairs, mean score {record['mean_score']:.3f}"
    if "max_diff_vs_cpu" in record:
        note += f", max |score - CPU score| {record['max_diff_vs_cpu']:.2e} on the first "
        note += f"{record['compared']}"
    return row(name, rate=record["rate"], unit=record["unit"], note=note,
               peak_gib=record["peak_bytes"] / 2**30, peak_of=record["peak_of"],
               wall_s=record["wall_s"])  # fmt: skip


def _cell(value, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt % value


def table(rows: list[dict]) -> str:
    head = f"{'run':52s} {'rate':>10s} {'unit':10s} {'wait':>6s} {'peak GiB':>9s} {'MFU':>6s} "
    head += f"{'loss':>7s} {'wall s':>7s}  notes"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"{r['name']:52s} {r['status'].upper()}: {r['reason']}")
            continue
        peak = _cell(r.get("peak_gib"), "%.2f") + ("" if r.get("peak_of") != "RSS" else "*")
        wait = None if r.get("data_wait") is None else 100 * r["data_wait"]
        lines.append(
            f"{r['name']:52s} {_cell(r.get('rate'), '%.1f'):>10s} {r.get('unit', ''):10s} "
            f"{_cell(wait, '%.1f%%'):>6s} {peak:>9s} "
            f"{_cell(r.get('mfu'), '%.3f'):>6s} {_cell(r.get('loss'), '%.4f'):>7s} "
            f"{_cell(r.get('wall_s'), '%.0f'):>7s}  {r.get('note', '')}"
        )
    return "\n".join(lines)


def sections(args, setup, budget: Budget, flops: float, peak: float | None) -> list[dict]:
    """Every section in priority order, each guarded; the table's rows in the table's order."""
    env = child_env(setup.work)
    options = runs.trainer_options()
    chosen = [w.strip() for w in (args.runs or "").split(",") if w.strip()]
    results: dict[str, dict | list] = {}
    todo = runs.runs(setup)

    def train(run):
        if chosen and not any(w in run.name for w in chosen):
            return skipped(run.name, f"not selected (--runs {args.runs})")
        reason = runs.missing_option(run, options) if run.kind == "trainer" else None
        if reason:  # a lever not built (yet): said before anything device-specific
            return skipped(run.name, reason)
        if run.cuda_only and not setup.cuda:
            return skipped(run.name, "CUDA only")
        if run.compiles and not setup.cuda and not args.compile_on_cpu:
            return skipped(run.name, "compiled runs are CUDA-path checks (--compile-on-cpu)")
        return guarded(run.name, lambda: train_row(setup, run, budget, env, flops, peak))

    def path(name, fn):
        if budget.left() < PATH_MIN_START:
            return skipped(name, f"time budget: {budget.left():.0f} s left")
        return guarded(name, fn)

    def report(key, value):
        results[key] = value
        for r in value if isinstance(value, list) else [value]:
            status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
            print(f"  {r['name']}: {status}", flush=True)

    for run in todo[:2]:
        report(run.name, train(run))
    checkpoint = results["trainer eager"].get("checkpoint")
    report("embed", path(EMBED, lambda: embed_row(setup, checkpoint, budget, env)))
    report("faiss", path(FAISS, lambda: faiss_rows(setup, budget, env)))
    report("score", path(score_name(setup), lambda: score_row(setup, checkpoint, budget, env)))
    for run in todo[2:]:
        report(run.name, train(run))
    for run in todo[1:]:  # the timed runs' checkpoints (1.7 GB for ViT-B-32); embed used the first
        for ckpt in runs.run_dir(setup, run).glob("run/**/*.pt"):
            ckpt.unlink()
    ordered = [results[r.name] for r in todo] + [results[k] for k in ("embed", "faiss", "score")]
    return [r for item in ordered for r in (item if isinstance(item, list) else [item])]


def print_report(args, setup, flops: float | None, peak: float | None, rows: list[dict]) -> None:
    print()
    print(
        f"GPU check on {args.gpu_name or setup.device}: {setup.model}, batch {setup.batch}, "
        f"{setup.steps} steps ({setup.log_every} warm-up), {setup.workers} loader workers, "
        f"{'bf16' if setup.cuda else 'fp32'}"
    )
    counted = f"{flops / 1e9:.2f} GFLOP" if flops else "n/a GFLOP"
    print(
        f"MFU = samples/s x {counted} per sample (fwd+bwd, torch.utils.flop_counter) / "
        + (f"{peak / 1e12:.0f} TFLOP/s peak" if peak else "peak: n/a (no known accelerator peak)")
    )
    print("wait = share of the timed steps spent waiting for data; * = peak RSS (CPU), not GPU")
    print(table(rows))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.wheel_specs:
        print(" ".join(wheel_specs()))
        return 0
    budget = Budget(args.budget_s, args.started or time.time())
    device = "cpu" if args.cpu_smoke else "cuda"
    size = {
        k: getattr(args, k) or v
        for k, v in (CPU_DEFAULTS if args.cpu_smoke else GPU_DEFAULTS).items()
    }
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    cpus = max(1, len(os.sched_getaffinity(0)))
    workers = 1 if args.cpu_smoke else max(1, cpus - 1)  # one CPU for the training loop
    # open_clip_train makes ceil(ceil(samples / batch) / workers) batches per worker: a step
    # count that is a multiple of the workers gives both trainers the same steps.
    steps = math.ceil(size["steps"] / workers) * workers
    print(f"gpu check: {device}, {cpus} CPUs, work folder {work}", flush=True)
    built = gpu_check_data.build(work / "data", size["images"])
    print(
        f"data: {built['images']} JPEGs (224 px, {built['kb_per_image']:.1f} kB each) in "
        f"{built['shards']} Parquet shards + tars, {built['seconds']:.1f} s on "
        f"{built['processes']} processes",
        flush=True,
    )
    setup = runs.Setup(device, size["model"], size["batch"], steps, size["log_every"], workers,
                       work / "data", built["tars"], work)  # fmt: skip
    try:
        flops = runs.flops_per_sample(setup.model)
    except Exception as exc:  # noqa: BLE001 - MFU is then n/a; the runs do not need it
        print(f"FLOPs per sample not counted: {type(exc).__name__}: {exc}")
        flops = None
    peak = next((v for k, v in PEAK_FLOPS.items() if k in args.gpu_name), None)
    rows = sections(args, setup, budget, flops, peak)
    print_report(args, setup, flops, peak, rows)
    if args.json:
        record = {"device": device, "gpu": args.gpu_name, "flops_per_sample": flops,
                  "peak": peak, "setup": {k: str(v) for k, v in vars(setup).items()},
                  "data": built, "rows": rows}  # fmt: skip
        Path(args.json).write_text(json.dumps(record, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
