"""SemDeDup: semantic near-duplicates among embeddings (Abbas et al. 2023, arXiv 2303.09540).

The rule of the paper's reference code (facebookresearch/SemDeDup, `sort_clusters.py` and
`semdedup.py`, default `keep_hard`):
1. spherical k-means on the L2-normalised embeddings (faiss.Kmeans, spherical=True); each row goes to
   the centroid of highest cosine;
2. within a cluster, rows are ordered by cosine to the centroid, ascending (least similar first:
   the "hard" examples are kept), ties by row index;
3. in that order, row j is a duplicate when its cosine to ANY earlier row i of the cluster (kept or
   not: the reference takes the column max of the upper triangle of the similarity matrix) is
   greater than 1 − eps. The first row of every cluster is kept.

Rows in different clusters are never compared (the paper's trade-off for scale). The result points
every duplicate at a kept row: the most similar earlier kept row above the threshold when there is
one, else the kept row its most similar earlier row points at (a chain a ← b ← c where only b is
within the threshold of a gives c → a, a transitive duplicate). Similarities are computed block by
block (BLOCK_FLOATS floats at a time), never cluster × cluster or N × N at once.
"""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)

MAX_CLUSTERS = 50_000  # the paper used 50k clusters for LAION-440M
BLOCK_FLOATS = 1 << 24  # similarity floats per block (64 MiB)
TRAIN_POINTS_PER_CENTROID = 256  # faiss trains on a sample of at most k x 256 rows
KMEANS_ITERATIONS = 20


def default_clusters(n: int) -> int:
    """About sqrt(N) clusters, at least 1 and at most MAX_CLUSTERS."""
    return max(1, min(MAX_CLUSTERS, round(math.sqrt(n))))


def unit_rows(embeddings):
    """float32 [N, dim] copies of the rows, L2-normalised; ValueError on bad input."""
    import numpy as np

    arr = np.asarray(embeddings)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"embeddings must be a non-empty 2-D array [N, dim], got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"embeddings must be floating point, got dtype {arr.dtype}")
    x = np.array(arr, dtype=np.float32, order="C", copy=True)
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values")
    norms = np.linalg.norm(x, axis=1)
    if (norms == 0).any():
        raise ValueError(f"embedding row {int(np.flatnonzero(norms == 0)[0])} is all zeros")
    x /= norms[:, None]
    return x


def train_centroids(x, k: int, seed: int):
    """Unit centroids [k, dim] of spherical k-means over unit rows x [N, dim] (faiss samples
    at most 256 rows per centroid for training)."""
    import faiss
    import numpy as np

    if k == 1:
        c = x.mean(axis=0, keepdims=True)
        return c / max(float(np.linalg.norm(c)), 1e-12)
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=KMEANS_ITERATIONS,
        seed=seed,
        spherical=True,
        verbose=False,
        max_points_per_centroid=TRAIN_POINTS_PER_CENTROID,
    )
    km.train(x)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def assign(x, centroids):
    """(cluster label int64 [N], cosine to its centroid float32 [N]) for unit rows x."""
    import faiss
    import numpy as np

    if centroids.shape[0] == 1:
        return np.zeros(x.shape[0], dtype=np.int64), (x @ centroids[0]).astype(np.float32)
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(centroids)
    _, labels = index.search(x, 1)  # inner product with unit centroids = cosine
    labels = labels[:, 0].astype(np.int64)
    # The cosine again, row by row: faiss's own depends on the batch a row came in (BLAS
    # blocking), and the order within a cluster must not depend on how rows were split.
    return labels, np.einsum("nd,nd->n", x, centroids[labels]).astype(np.float32)


def dedup_cluster(v, threshold: float):
    """Local duplicate pointers for one ordered cluster [c, d]: -1 kept, else a kept local row."""
    import numpy as np

    c = v.shape[0]
    dup = np.full(c, -1, dtype=np.int64)
    kept = np.ones(c, dtype=bool)
    block = max(1, BLOCK_FLOATS // c)
    for s in range(0, c, block):
        e = min(c, s + block)
        sim = v[s:e] @ v[:e].T  # [rows s..e, earlier columns 0..e]
        cols = np.arange(e)[None, :]
        sim = np.where(cols < np.arange(s, e)[:, None], sim, -np.inf)  # only earlier rows
        best = sim.argmax(axis=1)
        removed = sim[np.arange(e - s), best] > threshold
        kept[s:e] = ~removed
        kept_sim = np.where(kept[None, :e], sim, -np.inf)
        best_kept = kept_sim.argmax(axis=1)
        direct = kept_sim[np.arange(e - s), best_kept] > threshold
        for r in np.flatnonzero(removed):  # in order: an earlier row's pointer is already set
            dup[s + r] = best_kept[r] if direct[r] else dup[best[r]]
    return dup


def semantic_duplicates(
    embeddings, eps: float = 0.05, n_clusters: int | None = None, seed: int = 0
):
    """int64 [N]: -1 for kept rows, else the index of a KEPT row the row duplicates
    (cosine > 1 - eps within its k-means cluster; see the module docstring for the exact rule)."""
    import numpy as np

    if not isinstance(eps, (int, float)) or not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be a number in (0, 1), not {eps!r}")
    x = unit_rows(embeddings)
    n = x.shape[0]
    if n_clusters is None:
        n_clusters = default_clusters(n)
    if not isinstance(n_clusters, int) or not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters must be an integer in [1, {n}], not {n_clusters!r}")
    labels, to_centroid = assign(x, train_centroids(x, n_clusters, seed))
    # Cluster by cluster, least similar to the centroid first; ties by row index (lexsort is stable).
    order = np.lexsort((np.arange(n), to_centroid, labels))
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    out = np.full(n, -1, dtype=np.int64)
    for rows in np.split(order, bounds):
        if rows.size > 1:
            local = dedup_cluster(x[rows], 1.0 - eps)
            hit = local >= 0
            out[rows[hit]] = rows[local[hit]]
    log.info(
        "SemDeDup: %d of %d rows are semantic duplicates (eps %g, %d clusters)",
        int((out >= 0).sum()),
        n,
        eps,
        n_clusters,
    )
    return out
