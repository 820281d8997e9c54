"""Per-query balancing of matched captions, as in MetaCLIP (arXiv 2309.16671).

Each query q has a global count: how many (unique) pairs matched it. A pair is kept when, for
ANY of its matched queries, a uniform draw u(seed, uid, q) is below cap / count[q]; so a query
with count <= cap keeps every pair, and a query seen N > cap times keeps about cap of them.

The draw is a keyed hash of (seed, uid, query), not a random generator's next number: the
decision for a pair depends only on the seed, its uid, its matched queries and the global counts,
never on sharding, row order or the number of workers. Rows whose outcome is already certain
(some query at or under the cap) are decided without hashing.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)


def count_queries(matched) -> dict[str, int]:
    """How many rows matched each query (a query listed twice in one row counts once).

    `matched`: a sequence of lists of queries (None rows skipped), or a pyarrow list<string>
    array / chunked array. Counts of many shards add up with `merge_counts`.
    """
    rows, queries, codes = _flatten(matched)
    if rows.size == 0:
        return {}
    pair_keys = np.sort(rows * np.int64(len(queries)) + codes)
    # one key per (row, query): sort + neighbour compare (np.unique hashes, ~20x slower here)
    pair_keys = pair_keys[np.concatenate([[True], pair_keys[1:] != pair_keys[:-1]])]
    per_query = np.bincount(pair_keys % len(queries), minlength=len(queries))
    return dict(zip(queries, per_query.tolist(), strict=True))


def merge_counts(shard_counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """The sum of per-shard counts (shards must hold disjoint, de-duplicated pairs)."""
    total: Counter[str] = Counter()
    for counts in shard_counts:
        total.update(counts)
    return dict(total)


def _seed_key(seed: int) -> bytes:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int, not {type(seed).__name__}")
    return str(int(seed)).encode()


def _hash64(texts: Iterable[str], key: bytes, person: bytes) -> np.ndarray:
    """64-bit keyed BLAKE2b of each text, as uint64."""
    digests = b"".join(
        hashlib.blake2b(
            t.encode("utf-8", "surrogatepass"), digest_size=8, key=key, person=person
        ).digest()
        for t in texts
    )
    return np.frombuffer(digests, dtype="<u8").astype(_U64, copy=False)


def _mix(uid_hash: np.ndarray, query_hash: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) floats from two uint64 hash arrays (splitmix64 finaliser of a combination)."""
    with np.errstate(over="ignore"):
        x = uid_hash + query_hash * _GOLDEN
        x ^= x >> _U64(30)
        x *= _U64(0xBF58476D1CE4E5B9)
        x ^= x >> _U64(27)
        x *= _U64(0x94D049BB133111EB)
        x ^= x >> _U64(31)
    return (x >> _U64(11)).astype(np.float64) * (1.0 / (1 << 53))


def draws(uids: Sequence[str], queries: Sequence[str], seed: int = 0) -> np.ndarray:
    """u(seed, uid, query) in [0, 1) for aligned uid / query sequences (the balancing draws)."""
    key = _seed_key(seed)
    if len(uids) != len(queries):
        raise ValueError(f"{len(uids)} uids but {len(queries)} queries")
    return _mix(_hash64(uids, key, b"uid"), _hash64(queries, key, b"query"))


def _flatten(matched, n_rows: int | None = None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(row index of each pair, distinct queries, index into them of each pair)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(matched, pa.ChunkedArray):
        matched = matched.combine_chunks() if matched.num_chunks else pa.array([], matched.type)
    if not isinstance(matched, pa.Array):
        try:
            matched = pa.array(matched, type=pa.list_(pa.string()))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise TypeError(f"matched must hold lists of strings: {exc}") from None
    if not pa.types.is_list(matched.type) and not pa.types.is_large_list(matched.type):
        raise TypeError(f"matched queries must be a list<string> array, not {matched.type}")
    if n_rows is not None and len(matched) != n_rows:
        raise ValueError(f"{n_rows} rows but {len(matched)} rows of matched queries")
    rows = pc.list_parent_indices(matched).to_numpy()
    flat = pc.list_flatten(matched)
    valid = pc.is_valid(flat).to_numpy(zero_copy_only=False)
    encoded = flat.dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    return rows[valid], encoded.dictionary.to_pylist(), codes[valid].astype(np.int64)


def _keep_probabilities(queries: list[str], counts: Mapping[str, int], cap: int) -> np.ndarray:
    probs = np.empty(len(queries), dtype=np.float64)
    for i, query in enumerate(queries):
        count = counts.get(query)
        if count is None or count < 1:
            raise ValueError(
                f"query {query!r} is matched but has no positive count ({count!r}): "
                "counts must come from the same matched queries"
            )
        probs[i] = min(1.0, cap / count)
    return probs


def balance(
    uids: Sequence[str],
    matched,
    counts: Mapping[str, int],
    cap: int = 20_000,
    seed: int = 0,
) -> np.ndarray:
    """Which pairs to keep (bool array, one per uid): MetaCLIP's per-query sampling.

    `matched`: per pair, its matched queries (lists, or a pyarrow list<string> array). `counts`:
    global per-query counts over all shards after de-duplication by uid. Pairs with no match are
    not kept (the balance stage names them `no_query_match`).
    """
    if isinstance(cap, bool) or not isinstance(cap, int | np.integer) or cap < 1:
        raise ValueError(f"cap must be an int >= 1, not {cap!r}")
    key = _seed_key(seed)
    if hasattr(uids, "to_pylist"):  # a pyarrow array of uids
        uids = uids.to_pylist()
    n = len(uids)
    rows, queries, codes = _flatten(matched, n)
    keep = np.zeros(n, dtype=bool)
    if rows.size == 0:
        return keep
    pair_prob = _keep_probabilities(queries, counts, cap)[codes]
    keep[rows[pair_prob >= 1.0]] = True  # a query at or under the cap keeps all its pairs
    todo = ~keep[rows]
    if not todo.any():
        return keep
    rows, codes, pair_prob = rows[todo], codes[todo], pair_prob[todo]
    draw_rows = rows[np.concatenate([[True], rows[1:] != rows[:-1]])]  # rows come sorted
    uid_hash = np.zeros(n, dtype=_U64)
    uid_hash[draw_rows] = _hash64((_uid_str(uids[i]) for i in draw_rows), key, b"uid")
    used = np.flatnonzero(np.bincount(codes, minlength=len(queries)))
    query_hash = np.zeros(len(queries), dtype=_U64)
    query_hash[used] = _hash64((queries[i] for i in used), key, b"query")
    u = _mix(uid_hash[rows], query_hash[codes])
    keep[rows[u < pair_prob]] = True
    return keep


def _uid_str(uid) -> str:
    if not isinstance(uid, str):
        raise TypeError(f"a uid must be a str, not {type(uid).__name__}: {uid!r}")
    return uid
