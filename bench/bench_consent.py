"""Benchmark: what consent provenance costs a manifest, at the scale of a real build.

Every row carries one finding per signal checked for its image (7 when it was fetched), so a
10^9-row dataset carries ~7 * 10^9 findings. This writes --rows manifest rows the way the build
does (schema.SAMPLES, zstd Parquet, the publish stage's row groups), with findings drawn like a
web where most signals say nothing: per origin, its files' states and fetch time are shared by
the origin's rows; 2% of images carry an X-Robots-Tag, 0.5% a Content-Usage header, 3% of
origins serve a tdmrep.json and 1% an ai.txt. It prints the consent column's bytes per row, its
share of the manifest, and the time to read it back with one DuckDB query that unnests it.

  .venv/bin/python bench/bench_consent.py [--rows 1000000] [--origins 20000]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _origin_findings(rng: random.Random, origin: int, fetched: float) -> list[tuple]:
    tdm = rng.random() < 0.03
    ai = rng.random() < 0.01
    rule = '{"location":"/img/","tdm-reservation":0}' if tdm else None
    return [
        ("robots.txt", "found", None, False, fetched),
        ("robots.txt content-usage", "found", None, False, fetched),
        ("tdmrep.json", "found" if tdm else "absent", rule if tdm else "HTTP 404", False, fetched),
        ("ai.txt", "found" if ai else "absent", None if ai else "HTTP 404", False, fetched + 0.01),
    ]


def _table(rows: int, origins: int, seed: int = 0):
    import datetime

    import pyarrow as pa

    from manifests import schema

    rng = random.Random(seed)
    start = time.time() - 86400
    per_origin = [_origin_findings(rng, o, start + o * 0.5) for o in range(origins)]
    data = {name: [] for name in ("uid", "url", "caption", "status", "consent")}
    for i in range(rows):
        origin = rng.randrange(origins)
        at = start + 3600 + i * 0.001
        headers = [
            ("x-robots-tag", "found", "noindex", False, at)
            if rng.random() < 0.02
            else ("x-robots-tag", "absent", None, False, at),
            ("content-usage", "found", "search=y", False, at)
            if rng.random() < 0.005
            else ("content-usage", "absent", None, False, at),
            ("tdm-reservation", "absent", None, False, at),
        ]
        entries = []
        for signal, state, value, opt_out, when in per_origin[origin] + headers:
            when = datetime.datetime.fromtimestamp(when, datetime.UTC)
            entries.append(
                {
                    "subject": "image",
                    "signal": signal,
                    "state": state,
                    "value": value,
                    "opt_out": opt_out,
                    "at": when,
                }
            )
        data["uid"].append(f"{rng.getrandbits(128):032x}")
        data["url"].append(f"https://h{origin}.example/img/{i}.jpg")
        data["caption"].append(f"a photo number {i}")
        data["status"].append("kept")
        data["consent"].append(entries)
    table = pa.table({k: v for k, v in data.items() if k != "consent"})
    table = table.append_column("consent", pa.array(data["consent"], type=schema.CONSENT))
    return schema.conform(table, schema.SAMPLES)


def _column_bytes(path: Path) -> dict[str, int]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    sizes: dict[str, int] = {}
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            top = column.path_in_schema.split(".")[0]
            sizes[top] = sizes.get(top, 0) + column.total_compressed_size
    return sizes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--origins", type=int, default=20_000)
    args = parser.parse_args(argv)
    import duckdb
    import pyarrow.parquet as pq

    started = time.perf_counter()
    table = _table(args.rows, args.origins)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "samples.parquet"
        pq.write_table(table, path, compression="zstd", row_group_size=100_000)
        sizes = _column_bytes(path)
        total, consent = sum(sizes.values()), sizes["consent"]
        t0 = time.perf_counter()
        count = (
            duckdb.connect()
            .execute(
                f"SELECT count(*) FROM (SELECT unnest(consent) AS c FROM '{path}') "
                "WHERE c.signal = 'tdmrep.json' AND c.state = 'found'"
            )
            .fetchone()[0]
        )
        query_s = time.perf_counter() - t0
    print(f"rows: {args.rows:,}, origins: {args.origins:,} (built in {t0 - started:.1f} s)")
    print(f"consent column: {consent / args.rows:.2f} bytes/row, {consent / total:.1%} of the")
    print(f"  manifest's {total / args.rows:.1f} bytes/row (zstd Parquet, 100k-row groups)")
    print(f"at 10^9 rows: {consent / args.rows * 1e9 / 2**30:.1f} GiB of consent findings")
    print(f"unnest + filter over every finding: {query_s:.2f} s ({count:,} tdmrep findings)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
