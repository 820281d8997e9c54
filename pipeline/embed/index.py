"""A FAISS index over L2-normalised float32 embeddings (inner product = cosine), chosen by size.

The choice follows autofaiss (`get_optimal_index_keys_v2`) by size and memory, with the flat
threshold the issue asks for:
- fewer than FLAT_MAX (100k) vectors: exact search, `Flat` (IndexFlatIP);
- else IVF-Flat (`IVF{nlist},Flat`) when the full vectors fit the memory budget. Here we part from
  autofaiss, which picks HNSW: HNSW's build ran at a few hundred vectors/s per core here (200k
  uniform 128-d vectors: 509 s on 2 loaded cores), IVF-Flat builds in seconds, and as its
  distances are exact, nprobe alone takes its recall to any target. HNSW (`HNSW{M},Flat`, M =
  floor((budget / (4n) − dim) / 2) capped at 32, at least 8, autofaiss's rule) stays available
  as a forced kind (`kind="hnsw"`), for search-heavy use where its build cost pays off;
- else IVF-PQ: nlist ≈ 4·sqrt(n) rounded to a power of two (the FAISS guideline autofaiss uses below
  1M vectors; above, we keep it, capped at 65536, instead of autofaiss's fixed 16384, so training
  stays affordable), m sub-quantizers of 8 dimensions each (m from autofaiss's list, largest that
  fits the budget; 8-dim sub-vectors train ~15x faster than 4-dim ones in this faiss build),
  8-bit codes, and an SQ8 re-ranking stage (`Refine(SQ8)`, dim bytes a vector) when it still fits,
  because PQ distances alone rarely reach recall@10 = 0.95. An OPQ rotation (autofaiss always adds
  one) is kept only when the data's variance is unbalanced across the PQ sub-spaces (max/min
  sub-space energy > OPQ_IMBALANCE), where a rotation that evens it out lowers PQ error; on
  isotropic data it costs minutes of training and gains nothing.

After building, the search parameter (efSearch for HNSW; nprobe for IVF-Flat; nprobe, then the refine
factor, for IVF-PQ) is raised by doubling until recall@10 on held-out queries reaches the target
plus TUNE_MARGIN, then bisected down to
the smallest value that still reaches it. recall@10 = mean over queries of
|ANN top-10 ∩ exact top-10| / 10 (row ids; the exact top-10 from IndexFlatIP on the same vectors).
Queries are `recall_queries` base vectors drawn at random (seeded) plus Gaussian noise of norm about
0.1 (cosine ≈ 0.995 to their source), renormalised: users search with vectors like the indexed ones
(an image of the dataset, or a text whose embedding lands near images), and nothing is excluded, so
the source row is usually one of the 10 exact neighbours, as it is when a user searches with an image
of the dataset. Ties in the exact scores (identical embeddings) can lower the measured recall.

With faiss-gpu and a visible GPU, `load_index` moves flat and IVF indexes to the GPU for search
(HNSW has no GPU version and stays on the CPU). Building and recall tuning run on the CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from manifests.storage import cached_local, location

log = logging.getLogger(__name__)

KINDS = ("flat", "ivfflat", "hnsw", "ivfpq")
FLAT_MAX = 100_000  # vectors below which exact search is fast enough (~10 ms a query at 512-d)
HNSW_MAX_M = 32
HNSW_EF_CONSTRUCTION = 80  # FAISS's default 40 leaves uniform 128-d data short of 0.95 recall
PQ_VALUES = (64, 48, 32, 24, 16, 8, 4)  # autofaiss's list, without sizes above 64 bytes
PQ_SUB_DIM = 8  # dimensions per PQ sub-quantizer
OPQ_IMBALANCE = 2.0  # max/min PQ sub-space variance above which an OPQ rotation is trained
OPQ_TRAIN_MAX = 20_000  # vectors used to train the OPQ rotation (its cost grows fast with it)
TRAIN_PER_LIST = 50  # IVF training vectors per inverted list (FAISS warns below 39)
MAX_EF_SEARCH = 4096
MAX_K_FACTOR = 256
QUERY_NOISE = 0.1  # norm of the noise added to held-out queries
RECALL_K = 10
# Tuning aims this much above the target: the recall of 1000 queries has a standard error of
# about 0.002, and fresh queries should reach the target too (1M uniform vectors tuned to exactly
# 0.95 gave 0.9491 on fresh queries).
TUNE_MARGIN = 0.005
INDEX_FILE, INFO_FILE = "{}.faiss", "{}.index.json"


class IndexFileError(ValueError):
    """An index folder whose index or info file is missing, unreadable or inconsistent."""


@dataclass
class IndexInfo:
    """What was built and how well it searches; stored as JSON next to the index."""

    kind: str  # "flat" | "ivfflat" | "hnsw" | "ivfpq"
    factory: str  # faiss.index_factory string
    n: int
    dim: int
    search_params: dict  # e.g. {"efSearch": 128} or {"nprobe": 32, "k_factor_rf": 16}
    recall_at_10: float | None  # None for flat (exact)
    recall_queries: int
    build_seconds: float

    @classmethod
    def from_dict(cls, data: dict) -> IndexInfo:
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            raise IndexFileError(f"index info must have exactly the keys {sorted(names)}")
        info = cls(**data)
        if info.kind not in KINDS or not isinstance(info.search_params, dict):
            raise IndexFileError(f"index info has a bad kind or search_params: {data}")
        return info


def _validate(vectors, what: str = "vectors", dim: int | None = None):
    """float32 C-contiguous [N, d] copy with unit rows; clear errors for anything else."""
    import numpy as np

    arr = np.asarray(vectors)
    if arr.ndim == 1 and what == "queries":
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{what} must be a non-empty 2-D array [N, dim], got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{what} must be floating point, got dtype {arr.dtype}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{what} have dimension {arr.shape[1]}, the index has {dim}")
    out = np.array(arr, dtype=np.float32, order="C", copy=True)
    if not np.isfinite(out).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    norms = np.linalg.norm(out, axis=1)
    if (norms == 0).any():
        raise ValueError(f"{what} row {int(np.flatnonzero(norms == 0)[0])} is all zeros")
    out /= norms[:, None]
    return out


@contextlib.contextmanager
def _threads():
    """FAISS's OpenMP threads = the CPUs this process may run on (not the host's count)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, len(os.sched_getaffinity(0))))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _pq_m(n: int, dim: int, budget: int) -> int | None:
    """Largest PQ size (bytes a vector) of 8-dim sub-vectors whose codes + ids fit the budget."""
    for m in PQ_VALUES:
        if m <= max(1, dim // PQ_SUB_DIM) and n * (m + 8) <= budget:
            return m
    return None


def factory_for(
    kind: str, n: int, dim: int, memory_budget_bytes: int = 4 << 30, opq: bool = True
) -> str:
    """The index_factory string for a kind at this size (kind forced or chosen)."""
    if kind == "flat":
        return "Flat"
    if kind == "hnsw":
        m = int(math.floor((memory_budget_bytes / (4 * n) - dim) / 2))
        return f"HNSW{max(8, min(m, HNSW_MAX_M))},Flat"
    if kind not in KINDS:
        raise ValueError(f"index kind must be one of {KINDS}, not {kind!r}")
    nlist = max(1, min(65536, 2 ** round(math.log2(4 * math.sqrt(n))), n // TRAIN_PER_LIST))
    if kind == "ivfflat":
        return f"IVF{nlist},Flat"
    m = _pq_m(n, dim, memory_budget_bytes) or 4
    bits = 8 if n >= 256 * TRAIN_PER_LIST else 4  # 256 centroids per sub-quantizer need data
    if dim % m:
        opq = True  # the rotation pads dim to a multiple of m; plain PQ cannot
    prefix = f"OPQ{m}_{-(-dim // m) * m}," if opq else ""
    refine = ",Refine(SQ8)" if n * (m + 8 + dim) <= memory_budget_bytes else ""
    return f"{prefix}IVF{nlist},PQ{m}x{bits}{refine}"


def choose_index(n: int, dim: int, memory_budget_bytes: int = 4 << 30) -> tuple[str, str]:
    """(kind, factory) for n vectors of dim floats within a memory budget, as autofaiss chooses."""
    if n < 1 or dim < 1 or memory_budget_bytes < 1:
        raise ValueError(f"need n, dim and budget ≥ 1, got {n}, {dim}, {memory_budget_bytes}")
    if n < FLAT_MAX:
        kind = "flat"
    elif n * (4 * dim + 8) <= memory_budget_bytes:
        kind = "ivfflat"
    elif _pq_m(n, dim, memory_budget_bytes) is not None:
        kind = "ivfpq"
    else:
        raise ValueError(f"{n} vectors do not fit {memory_budget_bytes} bytes even as 4-byte PQ")
    return kind, factory_for(kind, n, dim, memory_budget_bytes)


def _opq_helps(x, m: int) -> bool:
    """Whether the variance is unbalanced across the m PQ sub-spaces (see OPQ_IMBALANCE)."""
    var = x.var(axis=0)
    if x.shape[1] % m:
        return True
    energy = var.reshape(m, -1).sum(axis=1)
    ratio = float(energy.max() / max(energy.min(), 1e-12))
    log.info("PQ sub-space variance max/min = %.2f (OPQ above %.1f)", ratio, OPQ_IMBALANCE)
    return ratio > OPQ_IMBALANCE


def _train_sample(x, factory: str, rng):
    import re

    nlist = int(re.search(r"IVF(\d+)", factory).group(1))
    size = min(x.shape[0], max(TRAIN_PER_LIST * nlist, 256 * TRAIN_PER_LIST))
    return x[rng.choice(x.shape[0], size, replace=False)] if size < x.shape[0] else x


def _make(x, kind: str, factory: str, seed: int):
    import faiss
    import numpy as np

    index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if kind == "hnsw":
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    if kind in ("ivfpq", "ivfflat"):
        rng = np.random.default_rng(seed)
        sample = _train_sample(x, factory, rng)
        if factory.startswith("OPQ"):
            outer = faiss.downcast_index(index)
            pre = faiss.downcast_index(outer.base_index) if "Refine" in factory else outer
            opq = faiss.downcast_VectorTransform(pre.chain.at(0))
            opq.niter = 20  # FAISS's 50 takes many minutes on a few cores
            opq.max_train_points = OPQ_TRAIN_MAX
        index.train(sample)
    for start in range(0, x.shape[0], 1 << 18):  # add in chunks: bounded temporaries
        index.add(x[start : start + (1 << 18)])
    return index


def _set_params(index, params: dict) -> None:
    import faiss

    space = faiss.GpuParameterSpace() if _is_gpu(index) else faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, value)


def _is_gpu(index) -> bool:
    return "Gpu" in type(index).__name__ or "Gpu" in type(getattr(index, "index", None)).__name__


def _overlap(found, exact, k: int) -> float:
    """mean |found top-k ∩ exact top-k| / min(k, N) over queries."""
    hits = [
        len(set(f[:k][f[:k] >= 0].tolist()) & set(e[:k][e[:k] >= 0].tolist()))
        for f, e in zip(found, exact, strict=True)
    ]
    per_query = max(1, int((exact[:, :k] >= 0).sum(axis=1).max()))
    return float(sum(hits) / (len(hits) * per_query))


def _exact_ids(x, queries, k: int):
    import faiss

    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    return flat.search(queries, k)[1]


def measure_recall(index, vectors, queries, k: int = RECALL_K) -> float:
    """recall@k of `index` (with its current search parameters) against exact flat search on
    `vectors`: mean |ANN top-k ∩ exact top-k| / k (k = min(k, N))."""
    x = _validate(vectors)
    q = _validate(queries, "queries", x.shape[1])
    if index.ntotal != x.shape[0]:
        raise ValueError(f"the index holds {index.ntotal} vectors, `vectors` has {x.shape[0]}")
    with _threads():
        return _overlap(index.search(q, k)[1], _exact_ids(x, q, k), k)


def _held_out(x, count: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    rows = rng.choice(x.shape[0], min(count, x.shape[0]), replace=False)
    noise = rng.standard_normal((rows.size, x.shape[1])).astype(np.float32)
    q = x[rows] + noise * (QUERY_NOISE / math.sqrt(x.shape[1]))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _ladder(top: int, start: int = 1) -> list[int]:
    """Powers of two from `start` below `top`, then `top`."""
    return [v for v in (2**i for i in range(20)) if start <= v < top] + [top]


def _smallest(recall, values: list[int], target: float) -> tuple[int, float] | None:
    """Smallest value reaching the target (doubling along `values`, then bisection to within
    ~12%), with its recall; None when even the last value falls short."""
    for i, v in enumerate(values):
        r = recall(v)
        if r >= target:
            lo, hi, best = (values[i - 1] if i else v), v, (v, r)
            while hi - lo > max(1, lo // 8):
                mid = (lo + hi) // 2
                rm = recall(mid)
                if rm < target:
                    lo = mid
                else:
                    hi, best = mid, (mid, rm)
            return best
    return None


def _tune(index, kind, factory, x, recall_target, recall_queries, seed) -> tuple[dict, float, int]:
    """Search parameters reaching the target at least cost, their recall, #queries.
    HNSW: the smallest efSearch. IVF-PQ: the smallest nprobe with a generous refine factor, then
    the smallest refine factor at that nprobe (or a larger factor when all lists fall short)."""
    import re

    goal = min(1.0, recall_target + TUNE_MARGIN)
    q = _held_out(x, recall_queries, seed)
    k = min(RECALL_K, x.shape[0])
    exact = _exact_ids(x, q, k)
    fixed: dict = {}

    def recall_of(name: str):
        def recall(value: int) -> float:
            params = {**fixed, name: value}
            _set_params(index, params)
            r = _overlap(index.search(q, k)[1], exact, k)
            log.info("%s %s: recall@%d = %.4f", kind, params, k, r)
            return r

        return recall

    if kind == "hnsw":
        top = min(MAX_EF_SEARCH, max(16, x.shape[0]))
        name, values = "efSearch", _ladder(top, 16)
    else:
        name, values = "nprobe", _ladder(int(re.search(r"IVF(\d+)", factory).group(1)))
        if "Refine" in factory:
            fixed["k_factor_rf"] = MAX_K_FACTOR // 4
    found = _smallest(recall_of(name), values, goal)
    if found is None and fixed:  # every list searched: only more re-ranking can help
        fixed[name] = values[-1]
        got = _smallest(recall_of("k_factor_rf"), _ladder(MAX_K_FACTOR, 128), goal)
        name, values = "k_factor_rf", [MAX_K_FACTOR]
        found = got
    elif found is not None and fixed:  # re-rank no more candidates than needed
        fixed[name] = found[0]
        name, values = "k_factor_rf", _ladder(fixed.pop("k_factor_rf"))
        found = _smallest(recall_of(name), values, goal)
    if found is None:
        found = (values[-1], recall_of(name)(values[-1]))
        log.warning(
            "%s index reaches recall@%d = %.3f < target %.3f at its largest %s",
            kind,
            k,
            found[1],
            goal,
            {**fixed, name: values[-1]},
        )
    params = {**fixed, name: found[0]}
    _set_params(index, params)
    return params, found[1], int(q.shape[0])


def build_index(
    vectors,
    kind: str | None = None,
    recall_target: float = 0.95,
    seed: int = 0,
    recall_queries: int = 1000,
    memory_budget_bytes: int = 4 << 30,
):
    """(index on the CPU, IndexInfo): the kind chosen by size (or forced), search parameters tuned
    to `recall_target` recall@10 against exact search; row i of `vectors` is index id i."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"index kind must be one of {KINDS} or None, not {kind!r}")
    if not 0.0 < recall_target <= 1.0 or recall_queries < 1:
        raise ValueError(
            f"need 0 < recall_target ≤ 1 and recall_queries ≥ 1, "
            f"got {recall_target}, {recall_queries}"
        )
    x = _validate(vectors)
    n, dim = x.shape
    started = time.perf_counter()
    with _threads():
        if kind is None:
            kind, factory = choose_index(n, dim, memory_budget_bytes)
        else:
            factory = factory_for(kind, n, dim, memory_budget_bytes)
        if (
            kind == "ivfpq"
            and factory.startswith("OPQ")
            and dim % int(factory[3:].split("_")[0]) == 0
        ):
            m = int(factory[3:].split("_")[0])
            if not _opq_helps(x[: OPQ_TRAIN_MAX * 5], m):
                factory = factory_for(kind, n, dim, memory_budget_bytes, opq=False)
        log.info("building a %s index (%s) of %d × %d", kind, factory, n, dim)
        index = _make(x, kind, factory, seed)
        if kind == "flat":
            params, recall, queries = {}, None, 0
        else:
            params, recall, queries = _tune(
                index, kind, factory, x, recall_target, recall_queries, seed
            )
    seconds = round(time.perf_counter() - started, 3)
    recall = None if recall is None else round(recall, 4)
    info = IndexInfo(kind, factory, n, dim, params, recall, queries, seconds)
    return index, info


def search(index, info: IndexInfo, queries, k: int):
    """(scores [Q, k] float32 cosine, ids [Q, k] int64; -1 where fewer than k were found).
    `queries` is [Q, dim] or one vector [dim]; it is L2-normalised here."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, not {k!r}")
    q = _validate(queries, "queries", info.dim)
    params = dict(info.search_params)
    if "efSearch" in params:
        params["efSearch"] = max(params["efSearch"], k)  # HNSW returns at most efSearch results
    with _threads():
        _set_params(index, params)
        scores, ids = index.search(q, k)
    return scores, ids


def _paths(folder: Path, name: str) -> tuple[Path, Path]:
    return location(folder) / INDEX_FILE.format(name), location(folder) / INFO_FILE.format(name)


def save_index(index, info: IndexInfo, folder: Path, name: str = "image") -> None:
    """folder/{name}.faiss and folder/{name}.index.json, each committed whole (atomic_path)."""
    import faiss

    from manifests.layout import atomic_path, write_bytes_atomic

    index_path, info_path = _paths(folder, name)
    index_path.parent.mkdir(parents=True, exist_ok=True)
    if _is_gpu(index):
        index = faiss.index_gpu_to_cpu(index)
    with atomic_path(index_path) as tmp:
        faiss.write_index(index, str(tmp))
    write_bytes_atomic((json.dumps(dataclasses.asdict(info), indent=2) + "\n").encode(), info_path)


def load_index(folder: Path, name: str = "image", gpu: bool | None = None):
    """(index with its search parameters set, IndexInfo); IndexFileError when missing or corrupt.
    gpu=None moves flat and IVF indexes to the GPU when faiss-gpu sees one."""
    import faiss

    index_path, info_path = _paths(folder, name)
    for path in (index_path, info_path):
        if not path.is_file():
            raise IndexFileError(f"{path} does not exist; build the index first")
    try:
        info = IndexInfo.from_dict(json.loads(info_path.read_text()))
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise IndexFileError(f"{info_path} is not a valid index info file: {exc}") from exc
    try:
        index = faiss.read_index(str(cached_local(index_path)))
    except RuntimeError as exc:
        raise IndexFileError(f"{index_path} is not a readable FAISS index") from exc
    if index.ntotal != info.n or index.d != info.dim:
        raise IndexFileError(
            f"{index_path} holds {index.ntotal} × {index.d}, but {info_path} "
            f"says {info.n} × {info.dim}; rebuild the index"
        )
    if gpu is None:
        gpu = info.kind != "hnsw" and faiss.get_num_gpus() > 0
    if gpu:
        index = _to_gpu(index)
    _set_params(index, info.search_params)
    return index, info


def _to_gpu(index):
    import faiss

    try:
        return faiss.index_cpu_to_all_gpus(index)
    except (AttributeError, RuntimeError) as exc:  # e.g. a refine stage FAISS cannot clone
        log.warning("searching on the CPU: cannot move the index to the GPU (%s)", exc)
        return index
