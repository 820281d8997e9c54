"""Benchmark: a dataset on S3 (a moto server on loopback). Two figures:

query   `pipeline query DIR "SELECT status, count(*) FROM samples GROUP BY 1"` on a remote
        dataset of --rows manifest rows (with shards for a sample of them): the bytes the store
        sent, per kind of object, against the manifests' total bytes (goal: < 10%: projection
        pushdown), and whether any shard object was read (goal: none). The bytes are counted
        on the wire, by a counting HTTP proxy between the client and the server.
loader  the trainer's data loader (one process, batch 256, ViT-B-32's tokenizer, 224 px
        crops of 224 px JPEGs, bench_loader's workload) from S3 vs from local disk on the same
        shards, in samples per loader CPU-second, with the S3 server pinned to the other core
        (`taskset`) and this process to the first (goal: S3 >= 0.9x local).

  .venv/bin/python bench/bench_store.py query [--rows 100000]
  .venv/bin/python bench/bench_store.py loader [--images 2000] [--batches 12]
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class CountingProxy:
    """An HTTP proxy on loopback in front of the S3 server: every response's body bytes,
    counted by object key, as the client received them."""

    def __init__(self, upstream_port: int):
        self.bytes: Counter = Counter()
        self.requests: Counter = Counter()
        self.log: list[tuple] = []  # (method, key, range, body bytes) per request
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = f"127.0.0.1:{upstream_port}"
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))  # HEAD: the object's
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                key = self.path.split("?", 1)[0]
                proxy.bytes[key] += len(data)
                proxy.requests[key] += 1
                proxy.log.append((self.command, key, self.headers.get("Range"), len(data)))
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CountingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def synthetic_dataset(root: Path, rows: int, parts: int, shard_rows: int) -> None:
    """A committed dataset: `rows` manifest rows like a build's (URLs, captions, hashes, queries,
    statuses), `shard_rows` of them kept with 20 kB images in shards."""
    import numpy as np
    import pyarrow as pa

    from manifests import schema
    from manifests.commit import LAYOUT_VERSION, commit_dataset
    from manifests.layout import DatasetLayout, write_json_atomic, write_parquet_atomic

    layout = DatasetLayout(root).create()
    write_json_atomic({"config": {}, "layout": LAYOUT_VERSION}, layout.run_json)
    rng = np.random.default_rng(0)
    words = np.array(
        [
            "a",
            "photo",
            "of",
            "the",
            "red",
            "blue",
            "small",
            "big",
            "dog",
            "cat",
            "car",
            "tree",
            "on",
            "in",
            "with",
        ]
    )
    statuses = ["kept", "duplicate", "fetch_failed", "language", "over_query_cap", "too_small"]
    files, per_part, kept_left = [], -(-rows // parts), shard_rows
    shard_table = []
    for p in range(parts):
        n = min(per_part, rows - p * per_part)
        uid = [f"{p:04d}{i:08d}" for i in range(n)]
        status = rng.choice(statuses, n, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.1])
        take = np.flatnonzero(status == "kept")[:kept_left]
        kept_left -= len(take)
        shard = [None] * n
        shard_row = [None] * n
        for j, i in enumerate(take):
            shard[i], shard_row[i] = f"{p:05d}.parquet", j
        table = pa.table(
            {
                "uid": uid,
                "url": [f"https://img{i % 997}.example.com/a/{p}/{i}.jpg" for i in range(n)],
                "caption": [" ".join(rng.choice(words, 9)) for _ in range(n)],
                "page_url": [f"https://site{i % 313}.example.org/page/{i // 7}" for i in range(n)],
                "matched_queries": [[str(w)] for w in rng.choice(words, n)],
                "status": status.tolist(),
                "width": rng.integers(64, 1024, n).astype("int32"),
                "height": rng.integers(64, 1024, n).astype("int32"),
                "sha256": [os.urandom(32).hex() for _ in range(n)],
                "phash": [os.urandom(8).hex() for _ in range(n)],
                "lang": ["en"] * n,
                "shard": shard,
                "shard_row": shard_row,
            }
        )
        rel = f"manifests/samples/part-{p:05d}.00000000.parquet"
        write_parquet_atomic(schema.conform(table, schema.SAMPLES), root / rel)
        files.append(rel)
        if len(take):
            shard_table.append((f"{p:05d}.parquet", len(take)))
    index = []
    for name, n in shard_table:
        images = [os.urandom(20_000) for _ in range(n)]  # incompressible, like JPEG bytes
        table = pa.table({"key": [f"{i:09d}" for i in range(n)], "jpg": images})
        write_parquet_atomic(table, layout.shards / name, row_group_size=1000)
        files.append(f"shards/{name}")
        size = (layout.shards / name).stat().st_size
        index.append({"shard": name, "rows": n, "row_groups": -(-n // 1000), "bytes": size})
    rel = "work/shards/index-00000000.parquet"  # as the shards stage writes it
    write_parquet_atomic(pa.Table.from_pylist(index, schema=schema.SHARDS), root / rel)
    commit_dataset(layout, files, shard_index=rel)


def bench_query(args) -> None:
    from manifests.storage import upload_tree
    from pipeline.testing.s3server import S3Server, aws_env

    with tempfile.TemporaryDirectory(prefix="bench_store_") as tmp, S3Server() as server:
        local = Path(tmp) / "ds"
        t0 = time.perf_counter()
        synthetic_dataset(local, args.rows, args.parts, args.shard_rows)
        bucket = server.create_bucket("bench")
        with aws_env(server.env):
            upload_tree(local, f"{bucket}/ds")
        manifest_bytes = sum(p.stat().st_size for p in (local / "manifests").rglob("*.parquet"))
        shard_bytes = sum(p.stat().st_size for p in (local / "shards").glob("*.parquet"))
        print(
            f"dataset: {args.rows:,} manifest rows in {args.parts} files ({manifest_bytes / 1e6:.1f} MB),"
            f" {args.shard_rows:,} images in shards ({shard_bytes / 1e6:.1f} MB); "
            f"written and uploaded in {time.perf_counter() - t0:.0f} s"
        )
        with CountingProxy(server.port) as proxy:
            env = {**server.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
            with aws_env(env):
                import manifests

                t0 = time.perf_counter()
                con = manifests.open(f"{bucket}/ds")
                answer = con.execute(
                    "SELECT status, count(*) FROM samples GROUP BY 1 ORDER BY 1"
                ).fetchall()
                seconds = time.perf_counter() - t0
        by_kind = Counter()
        for key, n in proxy.bytes.items():
            kind = (
                "manifests"
                if "/ds/manifests/" in key
                else "shards"
                if "/ds/shards/" in key
                else "other"
            )
            by_kind[kind] += n
        shard_reads = {k: v for k, v in proxy.requests.items() if "/ds/shards/" in k}
        if args.verbose:
            for entry in proxy.log:
                print("  ", *entry)
        print(f"answer: {answer} ({sum(n for _, n in answer):,} rows) in {seconds:.2f} s")
        print(
            f"bytes from the store: manifests {by_kind['manifests']:,} of {manifest_bytes:,} "
            f"({by_kind['manifests'] / manifest_bytes:.2%}; goal < 10%); shards {by_kind['shards']:,} "
            f"({len(shard_reads)} shard objects requested; goal 0); other (run.json, dataset.json, "
            f"stats, the shard index, listings) {by_kind['other']:,}"
        )


def bench_loader(args) -> None:
    import torch

    from bench.bench_loader import build
    from manifests.storage import upload_tree
    from pipeline.testing.s3server import S3Server, aws_env
    from trainer.config import TrainConfig
    from trainer.data import build_loader, resolve

    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:
        os.sched_setaffinity(0, {0})  # this process on core 0, the server on core 1
    with tempfile.TemporaryDirectory(prefix="bench_store_") as tmp, S3Server(cpu=1) as server:
        root = Path(tmp) / "ds"
        build(root, args.images)
        bucket = server.create_bucket("loader")
        with aws_env(server.env):
            upload_tree(root, f"{bucket}/ds")
            print(
                f"dataset: {args.images} JPEGs of 224 px, 1,000-row row groups; "
                f"server pinned to core 1, loader to core 0"
            )
            rates = {}
            for name, data in (("local", str(root)), ("s3", f"{bucket}/ds"), ("local", str(root))):
                cfg = TrainConfig(
                    data=data, model="ViT-B-32", batch_size=256, workers=0, shuffle_buffer=2000
                )
                index = resolve(data)
                loader, _ = build_loader(
                    cfg, rank=0, world_size=1, image_size=224, context_length=77, index=index
                )
                it = iter(loader)
                next(it)  # warm: first reads, tokenizer caches
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(args.batches):
                    next(it)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                samples = args.batches * cfg.batch_size
                rates.setdefault(name, []).append(samples / cpu)
                print(
                    f"  {name:5s}: {samples / cpu:6.0f} samples per loader CPU-second, "
                    f"{samples / wall:6.0f} samples/s wall"
                )
                del it, loader
    local = sum(rates["local"]) / len(rates["local"])
    print(f"=> S3 / local: {rates['s3'][0] / local:.2f}x (goal >= 0.9x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    q = sub.add_parser("query", help="bytes a manifest query reads from the store")
    q.add_argument("--rows", type=int, default=100_000)
    q.add_argument("--parts", type=int, default=10)
    q.add_argument("--shard-rows", type=int, default=5_000, help="kept rows with images")
    q.add_argument("--verbose", action="store_true", help="print every request to the store")
    lo = sub.add_parser("loader", help="loader CPU per sample, S3 vs local")
    lo.add_argument("--images", type=int, default=2000)
    lo.add_argument("--batches", type=int, default=12)
    args = parser.parse_args()
    bench_query(args) if args.what == "query" else bench_loader(args)


if __name__ == "__main__":
    main()
