"""The dedup stage's near-duplicate phases (--near-dup-radius): pipeline.dedup.neardup's
`sortjoin`, distributed (pipeline/stages/phases.py).

Candidates are the image rows (the first row of each sha256, dedupexact.py) that are not eval
leaks and have a 64-bit phash. PartEnum keys (neardup.join_plan) guarantee that two hashes within the radius share
at least one key value exactly, so each key is a shuffle by key value:
- `keys-<part>` (map): for every key, each candidate's key value under the bucket of (key, value)
  (keys/<part>.parquet); the candidates themselves go to cand/<part>.parquet.
- `pairs-<b>` (reduce): within bucket b, hashes that share a key value are checked neighbour by
  neighbour (neardup.pairs_sharing_key): pairs/<b>.parquet of distinct hashes within the radius.
- `components-all`: connected components over all pairs (one task; the pairs are few next to
  the rows); each hash that has a pair gets its component's smallest hash as cluster id.
- `label-<part>` (map): each candidate under the bucket of its cluster (its own hash where it
  has no pair, so identical hashes still cluster).
- `near-<b>` (reduce): each cluster of two or more rows keeps its largest image (ties: the
  smallest uid); the others become near-duplicates of it, written under their sha bucket
  (near/<b>) with the representative itself (dup_of = its uid), for the final phase of
  dedupexact.py, which joins the cluster's captions.
The decisions equal pipeline.dedup.decide's on the same rows (a test checks)."""

from __future__ import annotations

import math

from manifests import storage
from pipeline.stages.base import PartStats
from pipeline.stages.phases import PhaseTask, bucket_of, read_bucket

KEY_SALT = 0xD6E8FEB86659FD93  # mixes the key's number into its bucket


def _plan(task: PhaseTask):
    from pipeline.dedup.neardup import join_plan

    return join_plan(task.config.dedup.near_dup_radius, max(2, task.figures["pending"]))


def _write(table, task: PhaseTask, kind: str, sort: str | None = "bucket") -> None:
    from manifests.layout import write_parquet_atomic

    table = table.sort_by(sort) if sort else table
    write_parquet_atomic(table, task.path(kind), row_group_size=10_000)


def keys_part(task: PhaseTask) -> PartStats:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipeline.dedup.hashes import hex_to_codes
    from pipeline.dedup.neardup import codes_to_u64, key_values
    from pipeline.stages.phases import read_part

    rows = storage.read_table(
        task.path("hash"), columns=["bucket", "uid", "row", "phash", "area", "leak"]
    )
    exact = read_part(task.layout, task.stage, "exact", task.figures["buckets"], task.part_index)
    followers = exact.filter(pc.not_equal(exact["uid"], exact["image"]))["uid"]
    dropped = pc.or_(rows["leak"], pc.is_in(rows["uid"], followers))
    rows = rows.filter(pc.invert(dropped))
    codes, valid = hex_to_codes(rows["phash"].to_pylist(), 64)
    rows = rows.filter(pa.array(valid))
    values = codes_to_u64(codes[valid]) if valid.any() else np.zeros(0, np.uint64)
    probe, owner = values, values  # without verification each row probes with its own hash
    if task.config.dedup.near_dup_verify != "off":
        from pipeline.stages.dedupverify import part_probes

        probe, owner = part_probes(task, rows["uid"].to_pylist(), values)
    cand = pa.table(
        {
            "uid": rows["uid"],
            "row": rows["row"],
            "value": pa.array(values, pa.uint64()),
            "area": rows["area"],
            "sha_bucket": rows["bucket"],
        }
    )
    _write(cand, task, "cand", sort=None)
    plan, buckets = _plan(task), task.figures["buckets"]
    key_ids, kvs = [], []
    for k, key in enumerate(plan.keys):
        kv = key_values(probe, plan, key)
        key_ids.append(np.full(kv.shape[0], k, np.int32))
        kvs.append(kv)
    kv = np.concatenate(kvs) if kvs else np.zeros(0, np.uint64)
    key_id = np.concatenate(key_ids) if key_ids else np.zeros(0, np.int32)
    salted = kv ^ (key_id.astype(np.uint64) * np.uint64(KEY_SALT))
    keys = pa.table(
        {
            "bucket": pa.array(bucket_of(salted, buckets), pa.int64()),
            "key": pa.array(key_id, pa.int32()),
            "key_value": pa.array(kv, pa.uint64()),
            "value": pa.array(np.tile(probe, len(plan.keys)), pa.uint64()),
            "owner": pa.array(np.tile(owner, len(plan.keys)), pa.uint64()),
        }
    )
    _write(keys, task, "keys")
    return PartStats(rows.num_rows, rows.num_rows)


def pairs_bucket(task: PhaseTask) -> PartStats:
    import numpy as np
    import pyarrow as pa

    from pipeline.dedup.neardup import pairs_sharing_key

    verify = task.config.dedup.near_dup_verify != "off"
    columns = ["key", "key_value", "value"] + (["owner"] if verify else [])
    rows = read_bucket(task, "keys", int(task.unit), columns)
    key = rows["key"].to_numpy()
    kv, value = rows["key_value"].to_numpy(), rows["value"].to_numpy()
    values, index = _sorted_distinct(value)
    found_i, found_j = [], []
    radius = task.config.dedup.near_dup_radius
    # As neardup's sortjoin does: per key, (key value, hash index) packed in one uint64 and
    # sorted (a plain sort is far faster than a lexsort); the plan keeps key bits + index bits
    # within 64 for the build's row count, which bounds the hashes of a bucket.
    bits = np.uint64(max(1, math.ceil(math.log2(max(task.figures["pending"], 2)))))
    for k in range(int(key.max()) + 1 if key.size else 0):
        packed = np.sort((kv[key == k] << bits) | index[key == k].astype(np.uint64))
        packed = packed[np.r_[True, packed[1:] != packed[:-1]]] if packed.size else packed
        order = (packed & ((np.uint64(1) << bits) - np.uint64(1))).astype(np.int64)
        pairs_sharing_key(values, packed >> bits, order, radius, found_i, found_j)
    i = np.concatenate(found_i) if found_i else np.zeros(0, np.int64)
    j = np.concatenate(found_j) if found_j else np.zeros(0, np.int64)
    if verify:  # probe pairs link the rows' own hashes (nearverify.owner_pairs)
        from pipeline.dedup.nearverify import owner_pairs

        lo, hi = owner_pairs(value, rows["owner"].to_numpy(), values, i, j)
    else:
        lo, hi = np.minimum(values[i], values[j]), np.maximum(values[i], values[j])
        order = np.lexsort((hi, lo))
        lo, hi = _distinct(lo[order], hi[order])
    table = pa.table({"a": pa.array(lo, pa.uint64()), "b": pa.array(hi, pa.uint64())})
    _write(table, task, "pairs", sort=None)
    return PartStats(extra={"pairs": int(lo.size)})


def _sorted_distinct(x):
    """(the distinct values of x sorted, each element's index among them): a sort, not
    np.unique, whose hash path is many times slower on uint64 (numpy 2)."""
    import numpy as np

    order = np.argsort(x, kind="stable")
    ordered = x[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]] if x.size else np.zeros(0, bool)
    index = np.empty(x.size, np.int64)
    index[order] = np.cumsum(first) - 1
    return ordered[first], index


def _distinct(first, second):
    """Sorted (first, second) pairs without repeats (np.unique(axis=0) is far slower)."""
    import numpy as np

    if first.size == 0:
        return first, second
    keep = np.r_[True, (first[1:] != first[:-1]) | (second[1:] != second[:-1])]
    return first[keep], second[keep]


def components_all(task: PhaseTask) -> PartStats:
    import numpy as np
    import pyarrow as pa

    from pipeline.dedup.neardup import components

    tables = [
        storage.read_table(task.path("pairs", str(b))) for b in range(task.figures["buckets"])
    ]
    pairs = pa.concat_tables(tables)
    a, b = pairs["a"].to_numpy(), pairs["b"].to_numpy()
    values = np.unique(np.concatenate([a, b]))
    labels = components(values.size, np.searchsorted(values, a), np.searchsorted(values, b))
    smallest = np.full(labels.max() + 1 if labels.size else 0, np.iinfo(np.uint64).max, np.uint64)
    np.minimum.at(smallest, labels, values)
    table = pa.table(
        {"value": pa.array(values, pa.uint64()), "cluster": pa.array(smallest[labels], pa.uint64())}
    )
    _write(table, task, "components", sort=None)
    return PartStats(extra={"hashes_in_pairs": int(values.size)})


def label_part(task: PhaseTask) -> PartStats:
    import numpy as np
    import pyarrow as pa

    cand = storage.read_table(task.path("cand"))
    comps = storage.read_table(task.path("components", "all"))
    known, cluster_of = comps["value"].to_numpy(), comps["cluster"].to_numpy()
    value = cand["value"].to_numpy()
    pos = np.minimum(np.searchsorted(known, value), max(known.size - 1, 0))
    hit = (known[pos] == value) if known.size else np.zeros(value.size, bool)
    cluster = np.where(hit, cluster_of[pos] if known.size else value, value)
    table = pa.table(
        {
            "bucket": pa.array(bucket_of(cluster, task.figures["buckets"]), pa.int64()),
            "cluster": pa.array(cluster, pa.uint64()),
            "part_index": pa.array([task.part_index] * cand.num_rows, pa.int32()),
            "uid": cand["uid"],
            "area": cand["area"],
            "sha_bucket": cand["sha_bucket"],
            "value": cand["value"],  # the row's own hash (verification's fallback compares it)
        }
    )
    _write(table, task, "label")
    return PartStats(cand.num_rows, cand.num_rows)


def near_bucket(task: PhaseTask) -> PartStats:
    """Clusters of two or more rows: the largest image is kept, ties by the smallest uid."""
    import pyarrow as pa

    rows = read_bucket(task, "label", int(task.unit))
    order = [("cluster", "ascending"), ("area", "descending"), ("uid", "ascending")]
    if task.config.dedup.near_dup_verify != "off":
        from pipeline.stages.dedupverify import requests

        return requests(task, rows.sort_by(order))
    rows = rows.sort_by(order).to_pydict()
    out = {"bucket": [], "part_index": [], "uid": [], "dup_of": []}
    rep, previous, rep_row = None, None, None
    for cluster, index, uid, sha_bucket in zip(
        rows["cluster"], rows["part_index"], rows["uid"], rows["sha_bucket"], strict=True
    ):
        if cluster != previous:
            rep, previous = uid, cluster
            rep_row = (sha_bucket, index, uid, uid)  # written once the cluster has a member
            continue
        if rep_row is not None:  # the representative itself, dup_of = itself (final reads it)
            for name, value in zip(out, rep_row, strict=True):
                out[name].append(value)
            rep_row = None
        out["bucket"].append(sha_bucket)
        out["part_index"].append(index)
        out["uid"].append(uid)
        out["dup_of"].append(rep)
    types = {
        "bucket": pa.int64(),
        "part_index": pa.int32(),
        "uid": pa.string(),
        "dup_of": pa.string(),
    }
    _write(pa.table({k: pa.array(v, types[k]) for k, v in out.items()}), task, "near")
    members = sum(u != d for u, d in zip(out["uid"], out["dup_of"], strict=True))
    return PartStats(len(rows["uid"]), len(rows["uid"]) - members)


PHASES = {
    "keys": keys_part,
    "pairs": pairs_bucket,
    "components": components_all,
    "label": label_part,
    "near": near_bucket,
}
