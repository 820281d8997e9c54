"""Benchmark: end-to-end images/s per core, our `pipeline build` against `img2dataset.download`.

Both tools read the same URL list (parquet: url, caption) of N distinct JPEGs served by this
script's own loopback server, and write 256 px border-resized JPEG (quality 95) Parquet shards on
the same number of cores. Each run is a fresh Python process timed from spawn to exit, so the
figures include interpreter start, imports, Ray start-up and shutdown, as a user's command would.

    .venv/bin/python bench/bench_images.py [--count 2000] [--sizes 64,512] [--cores 1]
        [--executor auto|ray|local] [--repeats 2] [--threads 32] [--profile]

- The server (aiohttp, files held in memory, no robots.txt: 404 means allow all) runs in its own
  process. Where the machine has more CPUs than --cores, the tools are pinned to the first
  --cores CPUs and the server to the others (os.sched_setaffinity), so it does not share them.
- Ours runs as `pipeline build` would by default (--executor auto): in-process when it may use
  one CPU (the tools are pinned to --cores CPUs), else Ray with that many CPUs. --executor ray
  forces Ray with exactly --cores CPUs (ray.init(num_cpus=...)). img2dataset gets
  processes_count=--cores. Both split the list into parts of --part-size rows (img2dataset:
  number_sample_per_shard).
- Repeats alternate which tool goes first; the table shows each tool's fastest run and the load
  average. "cpu s" is user+sys CPU of every process the run started (Ray's daemons and workers
  included; less load-dependent than wall time); "srv cpu s" is the server's.
- --profile adds one cProfile run of ours per size on the local executor (not in the table) and
  prints where its time goes: the main thread (event loop, stages) and, apart, the resize
  threads (check, resize, hash of each fetched body).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "grey", "brown", "pink", "teal"]
SHAPES = ["squares", "blocks", "stripes", "tiles", "panels"]


# --- data ----------------------------------------------------------------------------------------


def make_jpeg(size: int, seed: int) -> bytes:
    """A distinct photo-sized JPEG: colour gradient, random flat blocks, pixel noise (quality 85:
    about 1.8 KB at 64 px and 46 KB at 512 px)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    c0, c1, c2 = rng.uniform(0, 255, (3, 3)).astype(np.float32)
    img = c0 + (c1 - c0) * ramp[None, :, None] + (c2 - c0) * ramp[:, None, None]
    img = img.astype(np.int16)
    for _ in range(rng.integers(4, 12)):
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(max(1, size // 16), size // 2, 2)
        img[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, 3)
    img += rng.integers(-12, 13, img.shape, dtype=np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


def write_dataset(root: Path, size: int, count: int) -> tuple[int, float]:
    """JPEGs under root/<size>/ (seeded; distinct bytes) → (files, mean bytes)."""
    folder = root / str(size)
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(count):
        data = make_jpeg(size, seed=size * 1_000_003 + i)
        (folder / f"{i:06d}.jpg").write_bytes(data)
        total += len(data)
    return count, total / max(1, count)


def write_url_list(path: Path, base: str, size: int, count: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    urls = [f"{base}{size}/{i:06d}.jpg" for i in range(count)]
    captions = [
        f"a photo of {COLOURS[i % 10]} {SHAPES[(i // 10) % 5]} on a painted wall, number {i}"
        for i in range(count)
    ]
    pq.write_table(pa.table({"url": urls, "caption": captions}), path)


# --- server --------------------------------------------------------------------------------------


def _serve(root: str, cpus: list[int] | None, conn) -> None:
    """Server process: GET /<size>/<name>.jpg from memory; /_stats gives request counts."""
    import asyncio

    from aiohttp import web

    if cpus:
        os.sched_setaffinity(0, cpus)
    files = {f"/{p.parent.name}/{p.name}": p.read_bytes() for p in Path(root).glob("*/*.jpg")}
    counts = {"requests": 0}

    async def image(request: web.Request) -> web.Response:
        counts["requests"] += 1
        body = files.get(request.path)
        if body is None:  # robots.txt included: 404 means no rules
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="image/jpeg")

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(counts)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/_stats", stats)
        app.router.add_get("/{tail:.*}", image)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        conn.send(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


class Server:
    def __init__(self, root: Path, cpus: list[int] | None):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(str(root), cpus, child), daemon=True)
        self.proc.start()
        if not parent.poll(120):
            self.proc.kill()
            raise RuntimeError("the image server did not start within 120 s")
        self.port = parent.recv()
        self.base = f"http://127.0.0.1:{self.port}/"

    def requests(self) -> int:
        import urllib.request

        with urllib.request.urlopen(self.base + "_stats", timeout=10) as r:
            return json.loads(r.read())["requests"]

    def cpu_seconds(self) -> float:
        return _cpu_ticks(self.proc.pid)[1] / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.join(10)


# --- one timed run (a child process) ------------------------------------------------------------


def _child(spec: dict) -> None:
    if spec["cpus"]:
        os.sched_setaffinity(0, spec["cpus"])
    os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
    # wandb (imported by img2dataset, in both tools) leaves empty temp folders: keep them in our
    # work dir. Ray's session folder stays in /tmp (its socket paths have a length limit).
    os.environ["TMPDIR"], os.environ["RAY_TMPDIR"] = spec["tmp"], tempfile.gettempdir()
    if spec["tool"] == "img2dataset":
        _run_img2dataset(spec)
    elif spec.get("profile"):
        _profile_ours(spec)
    else:
        _run_ours(spec)


def _profile_ours(spec: dict) -> None:
    """cProfile of the main thread, and one per resize thread (a profiler sees only the thread
    that enabled it) around pipeline.stages.images._outcome, merged."""
    import cProfile
    import pstats
    import threading

    from pipeline.stages import images

    outcome, local, workers = images._outcome, threading.local(), []

    def profiled_outcome(*args):
        if not hasattr(local, "prof"):
            local.prof = cProfile.Profile()
            workers.append(local.prof)
        return local.prof.runcall(outcome, *args)

    images._outcome = profiled_outcome
    prof = cProfile.Profile()
    prof.runcall(_run_ours, spec)
    prof.dump_stats(spec["profile"])
    print("=== main thread ===")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
    pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    if workers:
        print(f"=== resize threads ({len(workers)}), merged ===")
        stats = pstats.Stats(*workers)
        stats.sort_stats("cumulative").print_stats(25)
        stats.sort_stats("tottime").print_stats(15)


def _run_ours(spec: dict) -> None:
    import logging

    from pipeline.build import run_build
    from pipeline.buildconfig import BuildConfig

    config = BuildConfig.of(
        out=spec["out"],
        url_list=spec["url_list"],
        allow_network=["127.0.0.1/32"],
        executor=spec["executor"],
        image_size=256,
        resize_mode="border",
        encode_format="jpg",
        encode_quality=95,
        rows_per_part=spec["part_size"],
        shard_size=spec["part_size"],
        per_host_concurrency=spec["per_host_concurrency"],
        timeout=10.0,
    )
    ray = None
    if spec["executor"] == "ray":
        import ray

        # Our own init, to give Ray exactly --cores CPUs; the executor reuses a running runtime.
        # (auto starts Ray itself, with the CPUs this process may use: --cores, when pinned.)
        ray.init(num_cpus=spec["cores"], include_dashboard=False, logging_level=logging.WARNING)
    try:
        run_build(config)
    finally:
        if ray is not None:
            ray.shutdown()


def _run_img2dataset(spec: dict) -> None:
    from img2dataset import download

    download(
        url_list=spec["url_list"],
        output_folder=spec["out"],
        output_format="parquet",
        input_format="parquet",
        url_col="url",
        caption_col="caption",
        image_size=256,
        resize_mode="border",
        encode_format="jpg",
        encode_quality=95,
        processes_count=spec["cores"],
        thread_count=spec["threads"],
        number_sample_per_shard=spec["part_size"],
        distributor="multiprocessing",
        timeout=10,
        retries=0,
        enable_wandb=False,
    )


def become_subreaper() -> None:
    """Adopt orphaned descendants (Ray workers outlive the raylet), so the sampler still sees them
    and reap_orphans() can wait for them."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _children_of(pid: int) -> set[int]:
    pids = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in (task / "children").read_text().split())
    return pids


def _cpu_ticks(pid: int) -> tuple[str, int]:
    """(start time, utime + stime) of a process, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[19], int(fields[11]) + int(fields[12])


def reap_orphans(keep: set[int], grace_s: float = 30.0) -> int:
    """Wait for the descendants a run left behind (not `keep`); kill them by pid after grace_s.
    Returns how many had to be killed."""
    deadline, killed = time.monotonic() + grace_s, 0
    while left := _children_of(os.getpid()) - keep:
        for pid in left:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            for pid in left:
                os.kill(pid, 9)
            killed, deadline = len(left), float("inf")
        time.sleep(0.05)
    return killed


class CpuSampler:
    """CPU seconds of every process a run starts, polled from /proc every 0.1 s: Ray's raylet
    reaps its workers without passing their time up, so RUSAGE_CHILDREN alone misses them."""

    def __init__(self, exclude: set[int]):
        import threading

        self.exclude, self.ticks = exclude, {}  # (pid, start time) -> CPU ticks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            stack = [os.getpid()]
            while stack:
                for child in _children_of(stack.pop()) - self.exclude:
                    stack.append(child)
                    with contextlib.suppress(OSError, IndexError, ValueError):
                        start, ticks = _cpu_ticks(child)
                        self.ticks[child, start] = max(self.ticks.get((child, start), 0), ticks)

    def seconds(self) -> float:
        return sum(self.ticks.values()) / os.sysconf("SC_CLK_TCK")


def timed_run(spec: dict, log_path: Path) -> dict:
    """Run one tool in a fresh process; wall seconds and CPU seconds of what it started."""
    keep = _children_of(os.getpid())
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with open(log_path, "w") as log, CpuSampler(keep) as sampler:
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[1],
            timeout=spec["timeout"],
            check=False,
        )
    wall = time.perf_counter() - started
    if killed := reap_orphans(keep):
        print(f"  note: killed {killed} process(es) {spec['tool']} left running after 30 s")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{spec['tool']} exited with {proc.returncode}; log tail:\n{tail}")
    reaped = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # Each undercounts: polling misses a process's last 0.1 s, rusage misses Ray's workers.
    cpu = max(reaped, sampler.seconds())
    return {"wall": wall, "cpu": cpu, "load": load}


# --- checks --------------------------------------------------------------------------------------


def shard_successes(folder: Path) -> tuple[int, int]:
    """(sum of `successes` over *_stats.json, rows in the Parquet shards) of one output folder."""
    import pyarrow.parquet as pq

    successes = sum(json.loads(p.read_text())["successes"] for p in folder.glob("*_stats.json"))
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in folder.glob("*.parquet"))
    return successes, rows


def ours_stage_seconds(out: Path) -> dict:
    stages = {}
    for path in sorted((out / "stats").glob("*.json")):
        record = json.loads(path.read_text())
        stages[record["stage"]] = (record.get("wall_seconds"), record.get("seconds"))
    return stages


def check_output(tool: str, out: Path) -> int:
    folder = out / "shards" if tool == "ours" else out
    successes, rows = shard_successes(folder)
    if successes != rows:
        raise RuntimeError(f"{tool}: _stats.json says {successes} successes, shards hold {rows}")
    return rows


# --- driver --------------------------------------------------------------------------------------


def cpu_split(cores: int) -> tuple[list[int] | None, list[int] | None]:
    """(tool CPUs, server CPUs): disjoint when the machine has CPUs to spare, else unpinned."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) <= cores:
        return None, None
    return cpus[:cores], cpus[cores:]


def one_run(spec: dict, work: Path, server: Server, rep: int) -> dict:
    """One timed, checked run of spec['tool']; its output folder is removed afterwards."""
    out = Path(spec["out"])
    srv_cpu, srv_requests = server.cpu_seconds(), server.requests()
    run = timed_run(spec, work / f"log-{out.name}.txt")
    run.update(
        images=check_output(spec["tool"], out),
        srv_cpu=server.cpu_seconds() - srv_cpu,
        requests=server.requests() - srv_requests,
    )
    if spec["tool"] == "ours":
        run["stages"] = ours_stage_seconds(out)
    print(
        f"  {spec['size']:>4} px {spec['tool']:<11} run {rep + 1}: {run['images']} images, "
        f"{run['wall']:.2f} s wall, {run['cpu']:.2f} s cpu, {run['requests']} requests, "
        f"load {run['load']:.2f}",
        flush=True,
    )
    shutil.rmtree(out, ignore_errors=True)
    return run


def profile_run(base: dict, work: Path) -> None:
    """cProfile of ours on the local executor (the main thread: the resize threads show as the
    event loop's wait in select/epoll), with the stage seconds."""
    size = base["size"]
    spec = {
        **base,
        "tool": "ours",
        "executor": "local",
        "out": str(work / "out-profile"),
        "profile": str(work / f"ours-{size}.prof"),
    }
    run = timed_run(spec, work / f"profile-{size}.txt")
    print(f"\n--- cProfile of ours, {size} px, local executor ({run['wall']:.2f} s wall) ---")
    print((work / f"profile-{size}.txt").read_text()[-20_000:])
    print("stage seconds (wall, summed over parts):", ours_stage_seconds(Path(spec["out"])))
    shutil.rmtree(spec["out"], ignore_errors=True)


def bench_size(args, size: int, work: Path, server: Server, tool_cpus) -> list[dict]:
    """Repeats of both tools on one size (alternating who goes first); each tool's fastest run."""
    url_list = work / f"urls-{size}.parquet"
    write_url_list(url_list, server.base, size, args.count)
    (work / "tmp").mkdir(exist_ok=True)
    part = args.part_size or min(10_000, math.ceil(args.count / (2 * args.cores)))
    base = {
        "size": size,
        "url_list": str(url_list),
        "cores": args.cores,
        "cpus": tool_cpus,
        "part_size": part,
        "threads": args.threads,
        "executor": args.executor,
        "per_host_concurrency": args.per_host_concurrency,
        "timeout": args.run_timeout,
        "tmp": str(work / "tmp"),
    }
    results = {"ours": [], "img2dataset": []}
    for rep in range(args.repeats):
        for tool in ["ours", "img2dataset"][:: 1 if rep % 2 == 0 else -1]:
            out = str(work / f"out-{size}-{tool}-{rep}")
            run = one_run({**base, "tool": tool, "out": out}, work, server, rep)
            if run["images"] != args.count:
                print(f"  WARNING: {tool} kept {run['images']} of {args.count} images")
            results[tool].append(run)
    if args.profile:
        profile_run(base, work)
    return [
        {"size": size, "tool": t, **min(runs, key=lambda r: r["wall"])}
        for t, runs in results.items()
    ]


def print_table(rows: list[dict], cores: int) -> None:
    head = (
        f"{'size':>5} {'tool':<12} {'images':>6} {'seconds':>8} {'images/s':>9} "
        f"{'img/s/core':>10} {'ratio':>6} {'cpu s':>7} {'img/cpu s':>9} {'cpu ratio':>9} "
        f"{'srv cpu s':>9}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    by = {(r["size"], r["tool"]): r for r in rows}
    for r in rows:
        theirs = by[(r["size"], "img2dataset")]
        rate, per_cpu = r["images"] / r["wall"], r["images"] / max(r["cpu"], 1e-9)
        ratio = cpu_ratio = ""
        if r["tool"] == "ours":
            ratio = f"{rate / (theirs['images'] / theirs['wall']):.2f}"
            cpu_ratio = f"{per_cpu / (theirs['images'] / max(theirs['cpu'], 1e-9)):.2f}"
        print(
            f"{r['size']:>4}px {r['tool']:<12} {r['images']:>6} {r['wall']:>8.2f} {rate:>9.1f} "
            f"{rate / cores:>10.1f} {ratio:>6} {r['cpu']:>7.2f} {per_cpu:>9.1f} "
            f"{cpu_ratio:>9} {r['srv_cpu']:>9.2f}"
        )
    print(
        "ratio: ours/img2dataset images/s (wall clock, the acceptance figure); cpu ratio: the "
        "same per CPU second of all processes a run started (less sensitive to machine load)"
    )
    for r in rows:
        if r["tool"] == "ours":
            stages = ", ".join(f"{k} {w:.2f}" for k, (w, _) in r["stages"].items() if w)
            print(f"ours {r['size']} px, stage wall seconds (best run): {stages}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=2000, help="distinct JPEGs per size")
    p.add_argument("--sizes", default="64,512", help="comma-separated source sides in px")
    p.add_argument("--cores", type=int, default=1, help="processes / Ray CPUs for each tool")
    p.add_argument("--executor", choices=["auto", "ray", "local"], default="auto", help="ours")
    p.add_argument("--repeats", type=int, default=2, help="runs per tool and size; best kept")
    p.add_argument("--threads", type=int, default=32, help="img2dataset thread_count")
    p.add_argument("--per-host-concurrency", type=int, default=8, help="ours (its default: 8)")
    p.add_argument("--part-size", type=int, default=0, help="0: count / (2 * cores)")
    p.add_argument("--run-timeout", type=int, default=900, help="seconds per run")
    p.add_argument("--profile", action="store_true", help="also cProfile ours (local executor)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, profiles)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is None:
        if args.count < 1 or args.cores < 1 or args.repeats < 1 or args.threads < 1:
            p.error("--count, --cores, --repeats and --threads must be positive")
        if args.executor == "local" and args.cores != 1:
            p.error("--executor local runs in one process: use --cores 1")
        try:
            args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        except ValueError:
            p.error(f"--sizes must be comma-separated integers, not {args.sizes!r}")
        if not args.sizes or min(args.sizes) < 8:
            p.error("--sizes must list sides of at least 8 px")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child is not None:
        _child(json.loads(args.child))
        return
    become_subreaper()
    tool_cpus, server_cpus = cpu_split(args.cores)
    executor = args.executor
    if executor == "auto":  # what pipeline.executor.AutoExecutor picks for the tool's CPUs
        n = len(tool_cpus or os.sched_getaffinity(0))
        executor += " (in-process: 1 CPU)" if n < 2 else f" (Ray on {n} CPUs)"
    print(
        f"bench_images: {args.count} JPEGs per size, sizes {args.sizes}, {args.cores} core(s) "
        f"per tool, ours on {executor}; machine CPUs {os.cpu_count()}, tools pinned to "
        f"{tool_cpus or 'all'}, server on {server_cpus or 'all (shared)'}"
    )
    print("command:", " ".join([os.path.relpath(sys.executable)] + sys.argv))
    print(f"load average at start (1/5/15 min): {os.getloadavg()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench_images_"))
    server = None
    try:
        for size in args.sizes:
            started = time.perf_counter()
            n, mean = write_dataset(work / "site", size, args.count)
            print(
                f"{n} JPEGs of {size} px, mean {mean / 1024:.1f} KiB, "
                f"made in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        server = Server(work / "site", server_cpus)
        rows = []
        for size in args.sizes:
            rows += bench_size(args, size, work, server, tool_cpus)
        print_table(rows, args.cores)
        print(f"load average at end (1/5/15 min): {os.getloadavg()}")
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
