"""Near-duplicate clustering at scale: random 64-bit hashes with planted near-duplicates.

A share of the rows (--dup-share) are copies of another row with 0..radius random bit flips
(some copies of copies, so clusters chain), plus exact repeats. Prints, per method and size, the
time for pairs + clusters + representatives, the planted pairs found (must be all: the methods
are exact), and the peak memory of the process.

    .venv/bin/python bench/bench_neardup.py --sizes 1000000 10000000 --radius 6
    .venv/bin/python bench/bench_neardup.py --sizes 200000 --methods flat multihash sortjoin
"""

import argparse
import logging
import os
import resource
import time

import numpy as np

from pipeline.dedup.neardup import cluster_labels, cluster_near_duplicates


def planted(n: int, radius: int, dup_share: float, seed: int):
    """(codes n×8 uint8, (i, j) planted pairs within radius, areas)."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    values |= rng.integers(0, 2, n, dtype=np.int64).astype(np.uint64)
    n_dup = int(n * dup_share)
    copies = rng.choice(n, n_dup, replace=False)
    # Sources come from anywhere, copies included: chains such as a→b→c happen.
    sources = rng.integers(0, n, n_dup)
    sources = np.where(sources == copies, (sources + 1) % n, sources)
    flips = rng.integers(0, radius + 1, n_dup)
    masks = np.zeros(n_dup, dtype=np.uint64)
    for k in range(radius):
        # A repeated bit flips back: the distance is at most `flips`, within the radius.
        rows = np.flatnonzero(flips > k)
        masks[rows] ^= np.uint64(1) << rng.integers(0, 64, rows.size).astype(np.uint64)
    order = np.argsort(copies)  # write copies in row order so chains resolve left to right
    for c, s, m in zip(copies[order], sources[order], masks[order], strict=True):
        values[c] = values[s] ^ m
    codes = values.astype(">u8").view(np.uint8).reshape(n, 8)
    areas = rng.integers(32, 1024, n) * rng.integers(32, 1024, n)
    return codes, (copies, sources), areas


def run(n: int, radius: int, method: str, dup_share: float) -> None:
    t0 = time.perf_counter()
    codes, (copies, sources), areas = planted(n, radius, dup_share, seed=0)
    made = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels = cluster_labels(codes, radius, method)
    cluster_s = time.perf_counter() - t0
    # A planted pair may no longer be within the radius when its source was itself re-planted
    # later; only pairs still within the radius must share a cluster.
    values = codes.view(">u8").ravel()
    within = np.bitwise_count(values[copies] ^ values[sources]) <= radius
    missed = int((labels[copies[within]] != labels[sources[within]]).sum())
    uids = [f"{k:032x}" for k in range(n)]  # like sample_uid: 32 hex chars
    t0 = time.perf_counter()
    cluster_near_duplicates(uids, codes, areas, radius, method)
    reps_s = time.perf_counter() - t0
    n_clusters = np.unique(labels).size
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"n={n:>11,} r={radius} {method:9s}: pairs+clusters {cluster_s:7.1f} s, "
        f"with representatives (full API) {reps_s:7.1f} s | {n - n_clusters:,} rows are "
        f"near-dups, planted pairs missed {missed} of {int(within.sum()):,} | "
        f"data {made:.1f} s, peak RSS {peak_gib:.1f} GiB",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--radius", type=int, default=6)
    parser.add_argument("--methods", nargs="+", default=["auto"])
    parser.add_argument("--dup-share", type=float, default=0.05)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"cores: {os.cpu_count()} (shared with other jobs), numpy {np.__version__}")
    for n in args.sizes:
        for method in args.methods:
            run(n, args.radius, method, args.dup_share)


if __name__ == "__main__":
    main()
