"""FAISS index choice, recall@10 and speed on random unit vectors (pipeline.embed.index).

Builds the index `build_index` chooses for N vectors, and each kind forced (default flat,
ivfflat, ivfpq; hnsw on request), and prints per kind: the factory string, the tuned search parameter, recall@10 against exact flat search
(on the held-out queries build_index tunes with; goal ≥ 0.95), build time (training + adding +
tuning), recall@10 of the tuned index on 1000 fresh queries ("fresh", never used in tuning),
and search time per query (1000 fresh queries, k=10, one batched call using every CPU
this process may use, so per query = batch time / 1000).

Vectors (float32, seeded):
- default, uniform on the unit sphere: each row is i.i.d. N(0, 1) in every coordinate, divided by
  its L2 norm. In 128-d the nearest neighbours are barely closer than random points (cosine ~0.35
  vs ~0), the hardest case for any ANN index.
- --clustered, a Gaussian mixture, closer to real embeddings: C (--centers, default 1000) centres
  uniform on the sphere, each row = a centre chosen uniformly + N(0, (0.5²/dim)·I) noise (noise
  norm ~0.5, cosine to its centre ~0.9), then divided by its L2 norm.

    .venv/bin/python bench/bench_index.py                       # 1M × 128, uniform
    .venv/bin/python bench/bench_index.py --clustered           # 1M × 128, Gaussian mixture
    .venv/bin/python bench/bench_index.py --n 200000 --kinds hnsw --dim 512
"""

import argparse
import logging
import time

import numpy as np

from pipeline.embed import index as faiss_index


def unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_vectors(n: int, dim: int, clustered: bool, centers: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    if clustered:
        c = unit_rows(rng.standard_normal((centers, dim), dtype=np.float32))
    for start in range(0, n, 1 << 17):  # in chunks: no float64 or second full-size temporary
        rows = min(1 << 17, n - start)
        noise = rng.standard_normal((rows, dim), dtype=np.float32)
        if clustered:
            noise *= 0.5 / np.sqrt(dim)
            noise += c[rng.integers(0, centers, rows)]
        out[start : start + rows] = unit_rows(noise)
    return out


def per_query_ms(index, info, queries: np.ndarray) -> float:
    faiss_index.search(index, info, queries[:10], 10)  # warm-up
    started = time.perf_counter()
    faiss_index.search(index, info, queries, 10)
    return (time.perf_counter() - started) * 1000 / queries.shape[0]


def fresh_recall(index, info, x: np.ndarray, queries: np.ndarray) -> float:
    """recall@10 against exact flat search on `queries`, with the index's tuned parameters."""
    import faiss

    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    truth = exact.search(queries, 10)[1]
    found = faiss_index.search(index, info, queries, 10)[1]
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clustered", action="store_true")
    parser.add_argument("--centers", type=int, default=1000)
    parser.add_argument(
        "--kinds", nargs="+", default=["flat", "ivfflat", "ivfpq"], choices=faiss_index.KINDS
    )
    parser.add_argument("--budget-gib", type=float, default=4.0, help="index memory budget")
    parser.add_argument("--recall-target", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every tuning step")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)

    budget = int(args.budget_gib * (1 << 30))
    t0 = time.perf_counter()
    x = make_vectors(args.n, args.dim, args.clustered, args.centers, args.seed)
    data = f"Gaussian mixture of {args.centers}" if args.clustered else "uniform on the sphere"
    print(f"{args.n} × {args.dim} float32 vectors, {data} ({time.perf_counter() - t0:.1f} s)")
    chosen, factory = faiss_index.choose_index(args.n, args.dim, budget)
    print(f"chosen for a {args.budget_gib:g} GiB budget: {chosen} ({factory})")
    # Fresh timing queries, drawn like build_index's held-out ones: base rows plus small noise.
    rng = np.random.default_rng(args.seed + 7)
    queries = x[rng.choice(args.n, min(1000, args.n), replace=False)]
    queries += rng.standard_normal(queries.shape, dtype=np.float32) * (0.1 / np.sqrt(args.dim))
    queries = unit_rows(queries)
    header = (
        f"{'kind':<14}{'factory':<34}{'params':<32}{'recall@10':>10}{'fresh':>8}{'build s':>9}"
        f"{'ms/query':>10}"
    )
    print(header)
    for kind in args.kinds:
        index, info = faiss_index.build_index(
            x,
            kind=kind,
            recall_target=args.recall_target,
            seed=args.seed,
            memory_budget_bytes=budget,
        )
        ms = per_query_ms(index, info, queries)
        recall = "exact" if info.recall_at_10 is None else f"{info.recall_at_10:.4f}"
        # the tuned parameters on the timing queries, which tuning never saw
        fresh = "exact" if kind == "flat" else f"{fresh_recall(index, info, x, queries):.4f}"
        name = kind + (" (chosen)" if kind == chosen else "")
        params = ",".join(f"{k}={v}" for k, v in info.search_params.items()) or "-"
        print(
            f"{name:<14}{info.factory:<34}{params:<32}{recall:>10}{fresh:>8}"
            f"{info.build_seconds:>9.1f}{ms:>10.3f}",
            flush=True,
        )
        del index


if __name__ == "__main__":
    main()
