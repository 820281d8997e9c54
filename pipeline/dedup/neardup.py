"""Near-duplicate clusters of 64-bit perceptual hashes within a Hamming radius.

Pairs within the radius are found by one of three exact methods, clustered by connected
components (single linkage: A~B and B~C put A, B, C in one cluster), and each cluster keeps its
largest image (width*height; ties: the smallest uid); the others point at it with `dup_of`.

- `flat`: FAISS IndexBinaryFlat range search, every hash against every hash. Small sets.
- `multihash`: FAISS IndexBinaryMultiHash (multi-index hashing: 4 tables of 16 bits, enough
  bit flips per table to be exact for the radius). Mid-size sets; at 10M hashes its candidate
  lists grow (about 150 ids per bucket) and it is far slower than `sortjoin` (bench_neardup.py).
- `sortjoin`: a self-join by sorting (PartEnum, Arasu et al. 2006). The 64 bits are cut into m
  chunks; a pair within radius r differs in at most r chunks, so at least m-r chunks are equal.
  For a set of k-chunk keys that covers every (m-r)-subset of chunks (a greedy covering design),
  every pair within r shares one key exactly: sort the codes by each key, check the Hamming
  distance of neighbours that share it. m and k are chosen so that a key has about log2(n)+1
  bits (few false candidates) with as few keys as possible.
Identical hashes are grouped first, so a placeholder image repeated a million times costs nothing.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

METHODS = ("auto", "flat", "multihash", "sortjoin")
MAX_RADIUS = 16  # bits of 64: beyond this a 64-bit phash no longer tells copies apart
SORTJOIN_MAX_RADIUS = 12  # beyond this sortjoin needs thousands of keys; `auto` uses multihash
FLAT_MAX = 10_000  # unique hashes up to which `auto` uses the flat index (n² comparisons)
QUERY_BATCH = 65_536  # queries per FAISS range search call (bounds result memory)
BIG_GROUP = 64  # sortjoin: key groups larger than this are checked all-pairs, block by block


@dataclass(frozen=True)
class JoinPlan:
    """sortjoin parameters: bit ranges of the chunks, and the chunk sets used as keys."""

    chunks: tuple[tuple[int, int], ...]  # (first bit, bit count), bit 0 = most significant
    keys: tuple[tuple[int, ...], ...]

    def key_bits(self, key: tuple[int, ...]) -> int:
        return sum(self.chunks[c][1] for c in key)


def _chunk_ranges(m: int) -> tuple[tuple[int, int], ...]:
    sizes = [64 // m + (1 if i < 64 % m else 0) for i in range(m)]
    starts = np.cumsum([0, *sizes[:-1]])
    return tuple((int(s), int(z)) for s, z in zip(starts, sizes, strict=True))


@functools.lru_cache(maxsize=64)
def _covering(m: int, e: int, k: int) -> tuple[tuple[int, ...], ...]:
    """Greedy family of k-subsets of range(m) such that every e-subset contains one of them."""
    cands = list(itertools.combinations(range(m), k))
    if k == e:
        return tuple(cands)  # every e-subset is its own key
    targets = list(itertools.combinations(range(m), e))
    tmask = np.array([sum(1 << i for i in t) for t in targets], dtype=np.int64)
    cmask = np.array([sum(1 << i for i in c) for c in cands], dtype=np.int64)
    contains = (cmask[:, None] & tmask[None, :]) == cmask[:, None]  # cand ⊆ target
    gains = contains.sum(axis=1)  # targets each candidate would newly cover
    uncovered = np.ones(len(targets), dtype=bool)
    chosen = []
    while uncovered.any():
        best = int(gains.argmax())
        chosen.append(cands[best])
        newly = contains[best] & uncovered
        uncovered &= ~newly
        gains -= contains[:, newly].sum(axis=1)
    return tuple(chosen)


@functools.lru_cache(maxsize=64)
def join_plan(radius: int, n: int) -> JoinPlan:
    """The cheapest exact sortjoin plan for `n` hashes and `radius`, by a simple cost model:
    per key, one sort of n items plus a check of the expected n²/2^(bits+1) random collisions."""
    index_bits = max(1, math.ceil(math.log2(max(n, 2))))
    best = None
    for m in range(radius + 1, 17):
        e = m - radius
        for k in range(1, e + 1):
            bits = k * 64 / m
            widest = k * -(-64 // m)  # bits of the widest key: it is packed with an index
            if widest + index_bits > 64 or math.comb(m, k) * math.comb(m, e) > 4_000_000:
                continue
            if best is not None and 2.0 * n * math.comb(m, k) / math.comb(e, k) >= best[0]:
                continue  # even a perfect covering would cost more than the best so far
            keys = _covering(m, e, k)
            # Measured with numpy 2 (bench_neardup.py): sorting and scanning a key costs about
            # as much per item as checking 1.3 candidate pairs (random gathers).
            cost = len(keys) * (2.0 * n + 1.5 * n * n / 2.0 ** (bits + 1))
            if best is None or cost < best[0]:
                best = (cost, m, keys)
    if best is None:
        raise ValueError(f"no sortjoin plan for radius {radius}")
    return JoinPlan(chunks=_chunk_ranges(best[1]), keys=best[2])


def codes_to_u64(codes: np.ndarray) -> np.ndarray:
    """n×8 uint8 codes (FAISS layout, imagehash bit order) → n uint64, first bit most significant."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.ndim != 2 or codes.shape[1] != 8:
        raise ValueError(f"64-bit hashes must be an n×8 uint8 array, not shape {codes.shape}")
    return codes.view(">u8").ravel().astype(np.uint64)


def key_values(values: np.ndarray, plan: JoinPlan, key: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(values.shape[0], dtype=np.uint64)
    for c in key:
        start, size = plan.chunks[c]
        part = (values >> np.uint64(64 - start - size)) & np.uint64((1 << size) - 1)
        out = (out << np.uint64(size)) | part
    return out


def _verify(values, i, j, radius) -> tuple[np.ndarray, np.ndarray]:
    keep = np.bitwise_count(values[i] ^ values[j]) <= radius
    return i[keep], j[keep]


def _big_group_pairs(values, members, radius):
    """All pairs within `radius` among `members` (indices), in 2048×2048 blocks."""
    out_i, out_j = [], []
    block = 2048
    for a in range(0, len(members), block):
        rows = members[a : a + block]
        for b in range(a, len(members), block):
            cols = members[b : b + block]
            dist = np.bitwise_count(values[rows][:, None] ^ values[cols][None, :])
            x, y = np.nonzero(dist <= radius)
            keep = rows[x] < cols[y] if a == b else np.ones(x.size, dtype=bool)
            out_i.append(rows[x][keep])
            out_j.append(cols[y][keep])
    return np.concatenate(out_i), np.concatenate(out_j)


def _sortjoin_pairs(values: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    n = values.shape[0]
    plan = join_plan(radius, n)
    index_bits = max(1, math.ceil(math.log2(max(n, 2))))
    index_mask = np.uint64((1 << index_bits) - 1)
    ids = np.arange(n, dtype=np.uint64)
    found_i, found_j = [], []
    for key in plan.keys:
        # Sort (key, index) packed in one uint64: a plain sort is faster than an argsort.
        packed = np.sort((key_values(values, plan, key) << np.uint64(index_bits)) | ids)
        order = (packed & index_mask).astype(np.int64)
        skey = packed >> np.uint64(index_bits)
        del packed
        pairs_sharing_key(values, skey, order, radius, found_i, found_j)
    if not found_i:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(found_i), np.concatenate(found_j)


def pairs_sharing_key(values, skey, order, radius, found_i, found_j) -> None:
    """Append to found_i/found_j the pairs within `radius` among rows that share a key: `skey`
    the sorted key values, `order` the row (index into `values`) at each sorted position."""
    n = skey.shape[0]
    same = skey[1:] == skey[:-1]  # same[x]: positions x and x+1 share the key
    run = same  # run[x]: positions x..x+d all share the key
    for d in range(1, BIG_GROUP + 1):
        hits = np.flatnonzero(run)
        if hits.size == 0:
            return
        i, j = _verify(values, order[hits], order[hits + d], radius)
        found_i.append(i)
        found_j.append(j)
        run = run[: n - d - 1] & same[d:]
    _big_groups(values, skey, order, radius, found_i, found_j)


def _big_groups(values, skey, order, radius, found_i, found_j) -> None:
    """Groups of more than BIG_GROUP equal keys: check them all-pairs (the loop over offsets
    stopped at BIG_GROUP and missed their farther pairs)."""
    starts = np.flatnonzero(np.r_[True, skey[1:] != skey[:-1]])
    sizes = np.diff(np.r_[starts, skey.shape[0]])
    for start, size in zip(starts[sizes > BIG_GROUP], sizes[sizes > BIG_GROUP], strict=True):
        log.info("sortjoin: checking a group of %d hashes that share a key all-pairs", size)
        i, j = _big_group_pairs(values, order[start : start + size], radius)
        found_i.append(i)
        found_j.append(j)


def _faiss_pairs(codes: np.ndarray, radius: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) within `radius` by a FAISS range search of every code against all."""
    import faiss

    if method == "flat":
        index = faiss.IndexBinaryFlat(64)
    else:
        # Exact when radius < nhash * (nflip + 1): some 16-bit table differs in <= nflip bits.
        index = faiss.IndexBinaryMultiHash(64, 4, 16)
        index.nflip = (radius + 1 + 3) // 4 - 1
    index.add(codes)
    found_i, found_j = [], []
    for start in range(0, codes.shape[0], QUERY_BATCH):
        # FAISS binary range search returns distances strictly below the radius.
        lims, _, ids = index.range_search(codes[start : start + QUERY_BATCH], radius + 1)
        rows = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims).astype(np.int64))
        keep = rows < ids
        found_i.append(rows[keep])
        found_j.append(ids[keep].astype(np.int64))
    return np.concatenate(found_i), np.concatenate(found_j)


def near_duplicate_pairs(
    codes: np.ndarray, radius: int, method: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j), i < j, of distinct hashes within `radius` bits (n×8 uint8 codes of
    distinct hashes; pairs of identical hashes are found too but cost a full bucket)."""
    if method not in METHODS:
        raise ValueError(f"near-duplicate method must be one of {METHODS}, not {method!r}")
    if not 0 <= radius <= MAX_RADIUS:
        raise ValueError(f"near-duplicate radius must be 0..{MAX_RADIUS} bits, not {radius}")
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    n = codes.shape[0]
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if method == "auto":
        if n <= FLAT_MAX:
            method = "flat"
        else:
            method = "sortjoin" if radius <= SORTJOIN_MAX_RADIUS else "multihash"
    if method == "sortjoin" and radius > SORTJOIN_MAX_RADIUS:
        raise ValueError(f"sortjoin handles radii up to {SORTJOIN_MAX_RADIUS} bits, not {radius}")
    if method == "sortjoin":
        i, j = _sortjoin_pairs(codes_to_u64(codes), radius)
    else:
        i, j = _faiss_pairs(codes, radius, method)
    # The same pair can come from several keys or tables: keep it once.
    packed = np.unique(np.minimum(i, j).astype(np.uint64) * np.uint64(n) + np.maximum(i, j))
    return (packed // np.uint64(n)).astype(np.int64), (packed % np.uint64(n)).astype(np.int64)


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(i.size, dtype=np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def cluster_labels(codes: np.ndarray, radius: int, method: str = "auto") -> np.ndarray:
    """Cluster label per row of n×8 uint8 `codes`: rows within `radius` (transitively) share it."""
    values = codes_to_u64(codes)
    uniq, inverse = np.unique(values, return_inverse=True)
    uniq_codes = uniq.astype(">u8").view(np.uint8).reshape(-1, 8)
    i, j = near_duplicate_pairs(uniq_codes, radius, method)
    log.info(
        "near-duplicates: %d hashes, %d distinct, %d pairs within %d bits",
        values.size,
        uniq.size,
        i.size,
        radius,
    )
    return components(uniq.size, i, j)[inverse.ravel()]


def cluster_near_duplicates(uids, codes, areas, radius: int, method: str = "auto") -> list:
    """`dup_of` per row: None for the row each cluster keeps (the largest area, ties: the
    smallest uid), else the uid of that row. `codes` n×8 uint8 (hashes.hex_to_codes of the
    `phash` column), `areas` n numbers (width*height; None/NaN count as 0)."""
    uids = np.asarray(list(uids), dtype=object)
    areas = np.asarray([0 if a is None else a for a in areas], dtype=np.float64)
    areas = np.nan_to_num(areas, nan=0.0)
    if not (uids.shape[0] == areas.shape[0] == np.asarray(codes).shape[0]):
        raise ValueError("uids, codes and areas must have the same length")
    dup_of: list = [None] * uids.shape[0]
    if uids.shape[0] == 0:
        return dup_of
    labels = cluster_labels(codes, radius, method)
    # Only rows of clusters with two or more members need ranking.
    rows = np.flatnonzero(np.bincount(labels)[labels] > 1)
    if rows.size == 0:
        return dup_of
    uid_rank = np.argsort(np.argsort(uids[rows].astype(str), kind="stable"), kind="stable")
    # Sort by (label, -area, uid): the first row of each label is its representative.
    order = rows[np.lexsort((uid_rank, -areas[rows], labels[rows]))]
    first = np.r_[True, labels[order][1:] != labels[order][:-1]]
    rep = np.empty(labels.max() + 1, dtype=np.int64)
    rep[labels[order][first]] = order[first]
    for row in order[~first].tolist():
        dup_of[row] = uids[rep[labels[row]]]
    return dup_of
