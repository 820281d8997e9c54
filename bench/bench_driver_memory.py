"""Driver and worker peak memory, and time, of the dedup and clip stages on synthetic rows, with
the stages' tasks on a local Ray runtime: the driver's memory must not grow with the rows.

    python bench/bench_driver_memory.py dedup --rows 1000000 10000000 --oracle 1000000
    python bench/bench_driver_memory.py clip --rows 10000 100000

Per size: synthetic input parts (what the stage before leaves: `--rows-per-part` rows per part)
in a temporary dataset folder, then a driver process of its own runs the stage(s) with Ray tasks
(a local runtime of `--cpus` CPUs) and reports its own peak RSS (getrusage) before and after
the stage, and its wall time; the workers' peak RSS is the largest any part or phase marker
recorded, and task-seconds are summed per phase from the markers.

dedup input: 90% distinct sha256 (10% copies of earlier rows, across parts); 64-bit phashes,
80% random and 20% copies of a shared pool with 0-3 bits flipped (near-duplicate clusters that
span parts); `--near-dup-radius 4`. No eval set. `--oracle N`: the single-process decisions of
before (every pending row read into the driver, pipeline.dedup.decide) at N rows, for the
comparison. clip input: pending rows with one of 256 tiny JPEGs each and a caption; a clip-nano
checkpoint (random weights), `--clip-top-fraction 0.5 --semdedup-eps 0.05`, on the CPU."""

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASE_STAGES = {"dedup": ["dedup"], "clip": ["score", "clip"]}


def _hex(values) -> list:
    import numpy as np

    return np.char.mod("%016x", np.asarray(values, dtype=np.uint64)).tolist()


def _write_part(layout, stage: str, part: str, columns: dict, side: dict | None) -> None:
    import pyarrow as pa

    from manifests import schema
    from manifests.layout import write_parquet_atomic
    from pipeline.stages import registry

    n = len(columns["uid"])
    arrays = [
        pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type)
        for f in schema.SAMPLES
    ]
    target = registry.get(stage)
    write_parquet_atomic(
        pa.Table.from_arrays(arrays, schema=schema.SAMPLES), target.rows_path(layout, part)
    )
    if side is not None:
        write_parquet_atomic(pa.table(side), target.file_path(layout, part, "images"))


def synth_dedup(layout, rows: int, per_part: int) -> list[str]:
    import numpy as np

    pool = np.random.default_rng(0).integers(0, 2**63, 100_000, dtype=np.int64).astype(np.uint64)
    parts = []
    for index, start in enumerate(range(0, rows, per_part)):
        n, rng = min(per_part, rows - start), np.random.default_rng(index + 1)
        ids = np.arange(start, start + n, dtype=np.uint64)
        copy = rng.random(n) < 0.1
        ids[copy] = rng.integers(0, max(start, 1) + np.arange(n)[copy]).astype(np.uint64)
        phash = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
        near = rng.random(n) < 0.2
        flips = np.zeros(n, np.uint64)
        for _ in range(3):
            bit = rng.integers(0, 64, n).astype(np.uint64)
            flips ^= np.where(rng.random(n) < 0.5, np.uint64(1) << bit, np.uint64(0))
        phash[near] = pool[rng.integers(0, pool.size, int(near.sum()))] ^ flips[near]
        uids = [u * 2 for u in _hex(rng.integers(0, 2**63, n, dtype=np.int64))]
        part = f"list-{index:05d}"
        columns = {
            "uid": uids,
            "status": ["pending"] * n,
            "sha256": [h * 4 for h in _hex(ids * np.uint64(0x9E3779B97F4A7C15))],
            "phash": _hex(phash),
            "original_width": rng.integers(64, 1024, n).astype(np.int32),
            "original_height": rng.integers(64, 1024, n).astype(np.int32),
        }
        side = {"uid": uids, "image": [b""] * n, "exif": [None] * n}
        side |= {"phash256": ["0" * 64] * n, "phash256_trim": ["0" * 64] * n}
        _write_part(layout, "images", part, columns, side)
        parts.append(part)
    return parts


def synth_clip(layout, rows: int, per_part: int) -> list[str]:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    jpegs = []
    for colour in rng.integers(0, 256, (256, 3)):
        out = io.BytesIO()
        Image.new("RGB", (24, 24), tuple(int(c) for c in colour)).save(out, "JPEG")
        jpegs.append(out.getvalue())
    parts = []
    for index, start in enumerate(range(0, rows, per_part)):
        n = min(per_part, rows - start)
        uids = [f"{start + i:032x}" for i in range(n)]
        picks = rng.integers(0, 256, n)
        columns = {
            "uid": uids,
            "status": ["pending"] * n,
            "caption": [f"a picture of colour {p}" for p in picks],
        }
        part = f"list-{index:05d}"
        _write_part(layout, "dedup", part, columns, None)
        side = {"uid": uids, "image": [jpegs[p] for p in picks], "exif": [None] * n}
        side |= {"phash256": ["0" * 64] * n, "phash256_trim": ["0" * 64] * n}
        _write_part(layout, "images", part, {"uid": uids, "status": ["pending"] * n}, side)
        parts.append(part)
    return parts


def tiny_checkpoint(path: Path) -> str:
    import torch

    from trainer import models

    model = models.create("clip-nano", seed=0)
    payload = {"state_dict": model.state_dict(), "model_name": "clip-nano", "step": 0}
    torch.save({**payload, "samples_seen": 0, "config": {"model": "clip-nano"}}, path)
    return str(path)


def drive(job: dict) -> dict:
    """In the driver process: run the job's stages with Ray tasks; its peak RSS and wall."""
    from manifests.layout import DatasetLayout
    from pipeline.buildconfig import BuildConfig
    from pipeline.executor import ExecutorConfig, RayExecutor
    from pipeline.stages import registry
    from pipeline.stages.base import StageRun, peak_rss_mb

    config = BuildConfig.of(**job["options"])
    executor = RayExecutor(ExecutorConfig(kind="ray"), num_cpus=job["cpus"])
    layout, result = DatasetLayout(Path(job["out"])), {"before_mb": peak_rss_mb()}
    for name in job["stages"]:
        stage = registry.get(name)
        run = StageRun(layout, stage, registry.resolve_inputs(stage, config), config)
        stage.check_config(run)
        started = time.perf_counter()
        stage.execute(run, executor)
        result[name] = {"wall_s": time.perf_counter() - started, "driver_peak_mb": peak_rss_mb()}
    executor.shutdown()
    return result


def oracle(out: Path, parts: list[str], radius: int) -> dict:
    """The single-process path of before: every pending row into the driver, then decide()."""
    import duckdb

    from manifests.layout import DatasetLayout
    from pipeline.dedup.decide import DedupConfig, decide
    from pipeline.stages.base import peak_rss_mb, sql_files

    layout, started = DatasetLayout(out), time.perf_counter()
    folder = layout.stage_dir("images")
    rows = sql_files([folder / f"{p}.parquet" for p in parts])
    side = sql_files([folder / f"{p}.images.parquet" for p in parts])
    pending = duckdb.sql(
        f"""SELECT s.uid, s.sha256, s.phash, s.original_width AS width,
               s.original_height AS height, i.phash256, i.phash256_trim
        FROM read_parquet({rows}, filename = true, file_row_number = true) s
        JOIN read_parquet({side}) i USING (uid) WHERE s.status = 'pending'
        ORDER BY s.filename, s.file_row_number"""
    ).to_arrow_table()
    first, exact = {}, {}
    for uid, digest in zip(pending["uid"].to_pylist(), pending["sha256"].to_pylist(), strict=True):
        if digest in first:
            exact[uid] = first[digest]
        else:
            first[digest] = uid
    decide(pending, None, DedupConfig(near_dup_radius=radius), exact)
    return {"wall_s": time.perf_counter() - started, "driver_peak_mb": peak_rss_mb()}


def markers(out: Path, stage: str) -> dict:
    """Per phase (or `parts`): tasks, task-seconds, the largest peak RSS a task's process had."""
    found: dict[str, dict] = {}
    for path in (out / "work" / stage).rglob("*.done"):
        record = json.loads(path.read_text())
        name = path.stem.partition("-")[0] if path.parent.name == "phases" else "parts"
        if path.stem == "plan":
            continue
        entry = found.setdefault(name, {"tasks": 0, "task_s": 0.0, "peak_mb": 0.0})
        entry["tasks"] += 1
        entry["task_s"] += record.get("seconds", 0.0)
        entry["peak_mb"] = max(entry["peak_mb"], record.get("peak_rss_mb", 0.0))
    return found


def in_process(args, job: dict) -> dict:
    """Run `job` in a fresh Python process (so its RSS is the job's alone); its JSON result."""
    argv = [sys.executable, __file__, "_job", json.dumps(job)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        raise SystemExit(f"driver failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def one_size(args, rows: int, root: Path) -> None:
    from manifests.layout import DatasetLayout, write_json_atomic

    out = root / f"ds-{rows}"
    layout = DatasetLayout(out).create()
    started = time.perf_counter()
    synth = synth_dedup if args.stage == "dedup" else synth_clip
    parts = synth(layout, rows, args.rows_per_part)
    write_json_atomic(parts, layout.work / "parts.json")
    made = time.perf_counter() - started
    options = {"out": str(out), "url_list": "synthetic.csv", "executor": "ray"}
    if args.stage == "dedup":
        options["near_dup_radius"] = args.near_dup_radius
    else:
        ckpt = tiny_checkpoint(root / "nano.pt")
        options |= {"clip_model": ckpt, "clip_top_fraction": 0.5, "semdedup_eps": 0.05}
        options |= {"device": "cpu"}
    job = {
        "out": str(out),
        "options": options,
        "cpus": args.cpus,
        "stages": PHASE_STAGES[args.stage],
    }
    result = in_process(args, {"kind": "drive", **job})
    print(f"\n{rows:,} rows in {len(parts)} parts (synthesised in {made:.0f} s)")
    print(f"  driver RSS after imports and ray.init: {result['before_mb']:.0f} MiB")
    for stage in PHASE_STAGES[args.stage]:
        figures = result[stage]
        print(
            f"  {stage:6s} wall {figures['wall_s']:7.1f} s | driver peak RSS "
            f"{figures['driver_peak_mb']:6.0f} MiB"
        )
        for phase, entry in sorted(markers(out, stage).items()):
            print(
                f"      {phase:11s} {entry['tasks']:5d} tasks {entry['task_s']:8.1f} task-s | "
                f"worker peak RSS {entry['peak_mb']:6.0f} MiB"
            )
    if args.stage == "dedup" and rows in args.oracle:
        before = in_process(
            args,
            {"kind": "oracle", "out": str(out), "parts": parts, "radius": args.near_dup_radius},
        )
        print(
            f"  before (one process, pipeline.dedup.decide): wall {before['wall_s']:7.1f} s | "
            f"peak RSS {before['driver_peak_mb']:6.0f} MiB"
        )


def main(argv=None) -> None:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "_job":
        job = json.loads(sys.argv[2])
        logging.basicConfig(level=logging.WARNING)
        if job["kind"] == "drive":
            print(json.dumps(drive(job)))
        else:
            print(json.dumps(oracle(Path(job["out"]), job["parts"], job["radius"])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=sorted(PHASE_STAGES))
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--rows-per-part", type=int, default=100_000)
    parser.add_argument("--near-dup-radius", type=int, default=4)
    parser.add_argument(
        "--oracle", type=int, nargs="*", default=[], help="sizes to also run the old path at"
    )
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--keep", help="folder to build in (kept); default: a temporary one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-driver-") as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        for rows in args.rows:
            one_size(args, rows, root)


if __name__ == "__main__":
    main()
