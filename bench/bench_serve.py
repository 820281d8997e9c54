"""Benchmark: does `pipeline serve`'s grid answer in under a second on a 10M-row manifest?

Writes a synthetic dataset of --rows manifest rows (schema.SAMPLES: uids, URLs, captions, 70%
kept and the rest spread over drop reasons, matched queries, languages, clip scores) in parts of
--rows-per-part, with real shards (64 px JPEGs) for the first --shard-rows kept rows only, then
starts `pipeline serve` on a loopback port in a subprocess and times, over HTTP, --requests
requests each of: the grid's first page and its page at offset --offset, filtered by status
(kept, and one drop reason), plus the overview and a row's page. Prints p50/p95/max per view.

    .venv/bin/python bench/bench_serve.py [--rows 10000000] [--requests 20] [--offset 1000000]
"""

from __future__ import annotations

import argparse
import html
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REASONS = ["duplicate", "language", "too_small", "over_query_cap", "fetch_failed", "eval_leak"]
QUERIES = [f"query{i}" for i in range(500)]
LANGS = ["en", "de", "fr", "es", "ja", "zh", "pt", "it"]


def _part(first: int, n: int, shard_rows: int, seed: int):
    import binascii

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from manifests import schema

    rng = np.random.default_rng(seed)
    ids = pa.array(np.arange(first, first + n, dtype=np.int64))
    text = pc.cast(ids, pa.string())
    # uids are hashes (schema.sample_uid): random hex, so no row group's statistics prune a
    # lookup by uid, as in a real manifest
    hexed = binascii.hexlify(rng.bytes(16 * n))
    uid = pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), n, [None, pa.py_buffer(hexed)])
    uid = uid.cast(pa.string())
    kept = rng.random(n) < 0.7
    reasons = pa.array(REASONS).take(pa.array(rng.integers(0, len(REASONS), n)))
    status = pc.if_else(pa.array(kept), "kept", reasons)
    counts = rng.integers(1, 3, n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    queries = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(QUERIES).take(pa.array(rng.integers(0, 500, offsets[-1])))
    )
    # the first `shard_rows` rows of the dataset are in real shards (1,000 rows each)
    in_shards = np.arange(first, first + n) < shard_rows
    shard = [
        f"{i // 1000:05d}.parquet" if s else None
        for i, s in zip(range(first, first + n), in_shards, strict=True)
    ]
    table = pa.table(
        {
            "uid": uid,
            "url": pc.binary_join_element_wise("http://host.test/img/", text, ".jpg", ""),
            "caption": pc.binary_join_element_wise("a photo of thing number ", text, ""),
            "page_url": pc.binary_join_element_wise("http://host.test/page/", text, ""),
            "matched_queries": queries,
            "status": status,
            "lang": pa.array(LANGS).take(pa.array(rng.integers(0, len(LANGS), n))),
            "clip_score": pa.array(rng.uniform(0.1, 0.4, n).astype(np.float32)),
            "width": pa.array(np.full(n, 64, np.int32)),
            "height": pa.array(np.full(n, 64, np.int32)),
            "shard": pa.array(shard, pa.string()),
            "shard_row": pa.array(np.where(in_shards, np.arange(first, first + n) % 1000, 0)),
        }
    )
    table = table.set_column(
        table.schema.get_field_index("status"),
        "status",
        pc.if_else(pa.array(in_shards), "kept", table["status"]),
    )
    return schema.conform(table, schema.SAMPLES)


def write_dataset(root: Path, rows: int, per_part: int, shard_rows: int) -> list[str]:
    """The dataset; returns the uids of the rows in shards."""
    import io

    from PIL import Image

    from manifests.commit import commit_dataset, new_token
    from manifests.layout import DatasetLayout, write_json_atomic, write_parquet_atomic
    from pipeline.images.process import ProcessedImage
    from pipeline.shards import ShardWriter

    layout = DatasetLayout(root).create()
    write_json_atomic({"config": {}, "layout": 2}, layout.run_json)
    files = []
    sharded: list[str] = []  # uids of the rows in shards, in shard order
    for part, first in enumerate(range(0, rows, per_part)):
        target = layout.samples / f"list-{part:05d}.{new_token()}.parquet"
        table = _part(first, min(per_part, rows - first), shard_rows, part)
        write_parquet_atomic(table, target)
        files.append(target.relative_to(layout.root).as_posix())
        sharded += table["uid"][: max(0, shard_rows - first)].to_pylist()
    for index in range(-(-shard_rows // 1000)):
        with ShardWriter(layout.shards, index, samples_per_shard=1000) as writer:
            for i in range(index * 1000, min(shard_rows, (index + 1) * 1000)):
                out = io.BytesIO()
                Image.new("RGB", (64, 64), (i % 256, 80, 160)).save(out, "JPEG")
                image = ProcessedImage(
                    "kept", image=out.getvalue(), encode_format="jpg", width=64, height=64
                )
                writer.write(sharded[i], f"http://host.test/img/{i}.jpg", "c", image)
        files.append(f"shards/{index:05d}.parquet")
    commit_dataset(layout, files)
    return sharded


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as reply:
        reply.read()
        if reply.status != 200:
            raise RuntimeError(f"{url}: HTTP {reply.status}")
    return time.perf_counter() - started


def _wait(base: str, proc) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            _get(base + "/grid?page=1&status=kept")  # also warms the first connection
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the server did not answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--rows-per-part", type=int, default=500_000)
    parser.add_argument("--shard-rows", type=int, default=5_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--offset", type=int, default=1_000_000)
    args = parser.parse_args()
    from pipeline.serve.data import PAGE_SIZE

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        started = time.perf_counter()
        sharded = write_dataset(root, args.rows, args.rows_per_part, args.shard_rows)
        size = sum(p.stat().st_size for p in (root / "manifests").rglob("*.parquet"))
        print(
            f"wrote {args.rows:,} manifest rows ({size / 1e6:.0f} MB of Parquet) and "
            f"{args.shard_rows:,} shard rows in {time.perf_counter() - started:.0f} s"
        )
        port = _port()
        base = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "serve", str(root), "--port", str(port)]
        )
        try:
            _wait(base, proc)
            page = args.offset // PAGE_SIZE + 1
            views = {
                "grid, kept, first page": "/grid?status=kept",
                f"grid, kept, offset {page * PAGE_SIZE - PAGE_SIZE:,}": f"/grid?status=kept&page={page}",
                "grid, duplicate, first page": "/grid?status=duplicate",
                f"grid, duplicate, offset {page * PAGE_SIZE - PAGE_SIZE:,}": f"/grid?status=duplicate&page={page}",
                "overview (cached counts)": "/",
                "a row's page (scans by uid)": f"/row/{sharded[len(sharded) // 2]}",
            }
            print(
                f"{'view':34s} {'p50 ms':>8s} {'p95 ms':>8s} {'max ms':>8s}  ({args.requests} requests each)"
            )
            for name, path in views.items():
                times = sorted(_get(base + path) for _ in range(args.requests))
                p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
                print(
                    f"{name:34s} {statistics.median(times) * 1e3:8.0f} {p95 * 1e3:8.0f} "
                    f"{times[-1] * 1e3:8.0f}"
                )
            with urllib.request.urlopen(base + "/grid?status=kept", timeout=60) as reply:
                page_html = reply.read().decode()
            thumbs = [html.unescape(u) for u in re.findall(r'<img src="(/thumb[^"]+)"', page_html)]
            cold = sorted(_get(base + u) for u in thumbs)
            print(
                f"{'thumbnails, first request each':34s} {statistics.median(cold) * 1e3:8.0f} "
                f"{cold[round(0.95 * (len(cold) - 1))] * 1e3:8.0f} {cold[-1] * 1e3:8.0f}  "
                f"({len(cold)} of the first page, read from the shards and resized)"
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
