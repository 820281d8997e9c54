"""Benchmark: what a takedown costs, per phase, on a synthetic dataset.

A takedown must look at every file that may hold a removed row: it reads the key columns of
every manifest and work/ file, and rewrites the files (and shards) that hold a removed row. This
writes --rows samples rows as a build leaves them: the manifests (schema.SAMPLES), three stage
copies under work/ (text, images, dedup), the fetch stage's parts (one per --rows-per-part, with
--image-bytes of image per URL) and shards of --shard-size rows, then carries out one request of
--urls image URLs drawn at random (so nearly every file holds one: the worst case) and prints
each phase's seconds and rows per second, with the time that rate gives for 10^9 rows.

  .venv/bin/python bench/bench_remove.py [--rows 500000] [--urls 1000]
"""

from __future__ import annotations

import argparse
import functools
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TIMES: dict[str, float] = {}


def _samples(first: int, n: int, shard_size: int):
    import pyarrow as pa

    from manifests import schema

    uids = [f"{i:032x}" for i in range(first, first + n)]
    table = {
        "uid": uids,
        "url": [f"http://host{i % 5000}.test/img/{i}.jpg" for i in range(first, first + n)],
        "caption": [f"a photo of thing number {i}" for i in range(first, first + n)],
        "status": ["kept"] * n,
        "shard": [f"{i // shard_size:05d}.parquet" for i in range(first, first + n)],
        "shard_row": [i % shard_size for i in range(first, first + n)],
    }
    return schema.conform(pa.table(table), schema.SAMPLES)


def _write_dataset(root: Path, rows: int, per_part: int, shard_size: int, image_bytes: int):
    import os

    import pyarrow as pa

    from manifests.commit import commit_dataset, new_token
    from manifests.layout import DatasetLayout, write_json_atomic, write_parquet_atomic
    from pipeline.shards import ShardWriter

    layout = DatasetLayout(root).create()
    write_json_atomic({"config": {}, "layout": 2}, layout.run_json)
    files = []
    for part, first in enumerate(range(0, rows, per_part)):
        table = _samples(first, min(per_part, rows - first), shard_size)
        target = layout.samples / f"list-{part:05d}.{new_token()}.parquet"
        write_parquet_atomic(table, target)
        files.append(target.relative_to(layout.root).as_posix())
        for stage in ("text", "images", "dedup"):
            write_parquet_atomic(
                table, layout.work / stage / f"list-{part:05d}.{new_token()}.parquet"
            )
        fetched = pa.table(
            {
                "url": table["url"],
                "status": ["ok"] * table.num_rows,
                "image": [os.urandom(image_bytes) for _ in range(table.num_rows)],
            }
        )
        write_parquet_atomic(
            fetched, layout.work / "fetch" / f"lane{part:06d}-00000.{new_token()}.parquet"
        )
    from pipeline.images.process import ProcessedImage

    for index in range(-(-rows // shard_size)):
        with ShardWriter(layout.shards, index, samples_per_shard=shard_size) as writer:
            for i in range(index * shard_size, min(rows, (index + 1) * shard_size)):
                image = ProcessedImage(
                    "kept", image=os.urandom(image_bytes), encode_format="jpg", width=8, height=8
                )
                writer.write(f"{i:032x}", f"http://host{i % 5000}.test/img/{i}.jpg", "c", image)
        files.append(f"shards/{index:05d}.parquet")
    commit_dataset(layout, files)


def _timed(module, name: str, label: str) -> None:
    original = getattr(module, name)

    @functools.wraps(original)
    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            TIMES[label] = TIMES.get(label, 0.0) + time.perf_counter() - started

    setattr(module, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--rows-per-part", type=int, default=50_000)
    parser.add_argument("--shard-size", type=int, default=10_000)
    parser.add_argument("--image-bytes", type=int, default=128)
    parser.add_argument("--urls", type=int, default=1000)
    args = parser.parse_args()

    from pipeline.takedown import plan as planning
    from pipeline.takedown import run
    from pipeline.takedown.request import read_request

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        started = time.perf_counter()
        _write_dataset(root, args.rows, args.rows_per_part, args.shard_size, args.image_bytes)
        print(
            f"wrote {args.rows:,} rows (5 copies + shards) in {time.perf_counter() - started:.1f} s"
        )
        chosen = random.Random(0).sample(range(args.rows), args.urls)
        asked = Path(tmp) / "urls.txt"
        asked.write_text("".join(f"http://host{i % 5000}.test/img/{i}.jpg\n" for i in chosen))
        _timed(planning, "make_plan", "match and plan")
        _timed(run, "_scrub_files", "manifests and work/ files")
        _timed(planning, "clean_stored", "shards")
        _timed(run, "_commit", "commit")
        request = read_request("urls", asked, "bench", "bench")
        started = time.perf_counter()
        summary = run.remove(root, request)
        total = time.perf_counter() - started
    assert summary["rows"] == args.urls, summary
    print(f"removed {summary['rows']:,} rows; {summary['files_rewritten']} files rewritten")
    print(f"{'phase':<28}{'seconds':>9}{'rows/s':>12}{'10^9 rows':>12}")
    for label, seconds in [*TIMES.items(), ("total", total)]:
        rate = args.rows / seconds if seconds else float("inf")
        print(f"{label:<28}{seconds:>9.2f}{rate:>12,.0f}{1e9 / rate / 3600:>10.1f} h")


if __name__ == "__main__":
    main()
