"""The dedup stage's near-duplicate verification (--near-dup-verify): pipeline.dedup.nearverify
over the phases of stages/dedupnear.py.

- `keys-<part>` probes with each candidate's mirror and trimmed hashes too (`part_probes`: the
  part's image bytes are local to its task), and `pairs-<b>` links the rows' own hashes.
- `near-<b>` writes, instead of decisions, the plan of every candidate cluster of two or more
  rows (`requests`: its hash sub-clusters, nearverify.hash_subclusters), sorted by part.
- `feats-<part>` (map): the features of its sub-cluster representatives (their bytes are in the
  part's work/images file), under the bucket of their cluster (feats/<part>.parquet).
- `verify-<b>` (reduce): the plan of bucket b and the features of its representatives;
  nearverify.join_subclusters and cluster_decisions per cluster; the duplicates with their
  reasons under their sha bucket (verify/<b>.parquet), which the final phase of dedupexact.py
  reads in place of near/.
Image bytes never travel between tasks: features do, for the representatives only.
"""

from __future__ import annotations

from manifests import storage
from pipeline.stages.base import PartStats
from pipeline.stages.phases import PhaseTask, read_bucket, read_part


def _verify_config(task: PhaseTask):
    from pipeline.dedup.verify import VerifyConfig

    return VerifyConfig(detector=task.config.dedup.near_dup_verify)


def part_images(task: PhaseTask, uids: list[str]) -> dict:
    """uid → encoded bytes of the part's images among `uids`."""
    from pipeline.stages import registry

    if not uids:
        return {}
    images = registry.get(task.inputs[0])
    path = images.file_path(task.layout, task.unit, "images")
    table = storage.read_table(path, columns=["uid", "image"], filters=[("uid", "in", uids)])
    return dict(zip(table["uid"].to_pylist(), table["image"].to_pylist(), strict=True))


def part_probes(task: PhaseTask, uids: list[str], values):
    """(probe, owner) of the part's candidates (nearverify.probes of their image bytes)."""
    from pipeline.dedup.nearverify import probe_hashes, probes

    data = part_images(task, uids)
    found = [probe_hashes(data.get(uid)) for uid in uids]
    return probes(values, [m for m, _ in found], [t for _, t in found])


def requests(task: PhaseTask, rows) -> PartStats:
    """The plan of every candidate cluster of two or more rows (`rows` sorted by cluster, then
    keep order): each row with its rank and its hash sub-cluster's first row (`subrep`),
    sorted by part. The feats phase computes features for the sub-cluster representatives."""
    import pyarrow as pa

    from manifests.layout import write_parquet_atomic
    from pipeline.dedup.nearverify import hash_subclusters

    radius = task.config.dedup.near_dup_radius
    columns = rows.to_pydict()
    out = {name: [] for name in (*columns, "rank", "subrep")}
    start = 0
    while start < rows.num_rows:
        end = start
        while end < rows.num_rows and columns["cluster"][end] == columns["cluster"][start]:
            end += 1
        if end - start > 1:
            members = columns["uid"][start:end]
            subs = hash_subclusters(members, columns["value"][start:end], radius)
            for name, values in columns.items():
                out[name] += values[start:end]
            out["rank"] += list(range(end - start))
            out["subrep"] += subs
        start = end
    schema = rows.schema.append(pa.field("rank", pa.int64())).append(
        pa.field("subrep", pa.string())
    )
    table = pa.table(out, schema=schema).sort_by("part_index")
    write_parquet_atomic(table, task.path("near"), row_group_size=10_000)
    return PartStats(rows.num_rows, rows.num_rows, extra={"to_verify": table.num_rows})


def feats_part(task: PhaseTask) -> PartStats:
    import pyarrow as pa
    import pyarrow.compute as pc

    from manifests.layout import write_parquet_atomic
    from pipeline.dedup.leakverify import encode_features
    from pipeline.dedup.nearverify import pool_features

    plan = read_part(task.layout, task.stage, "near", task.figures["buckets"], task.part_index)
    reps = plan.filter(pc.equal(plan["uid"], plan["subrep"])).to_pylist()
    data = part_images(task, [r["uid"] for r in reps])
    config = _verify_config(task)
    records = []
    for row in reps:
        image, mirror = pool_features(data.get(row["uid"]), config)
        record = {k: row[k] for k in ("bucket", "uid")}
        record |= {f"image_{k}": v for k, v in encode_features(image).items()}
        records.append(record | {f"mirror_{k}": v for k, v in encode_features(mirror).items()})
    table = pa.Table.from_pylist(records, schema=_feats_schema()).sort_by("bucket")
    write_parquet_atomic(table, task.path("feats"), row_group_size=2_000)
    return PartStats(len(records), len(records))


def _feats_schema():
    import pyarrow as pa

    from pipeline.dedup.leakverify import FEATURES_SCHEMA

    fields = [("bucket", pa.int64()), ("uid", pa.string())]
    for side in ("image", "mirror"):
        fields += [
            (f"{side}_{f.name}", f.type) for f in FEATURES_SCHEMA if f.name not in ("row", "mirror")
        ]
    return pa.schema(fields)


def verify_bucket(task: PhaseTask) -> PartStats:
    import pyarrow as pa

    from manifests.layout import write_parquet_atomic
    from pipeline.dedup.leakverify import decode_features
    from pipeline.dedup.nearverify import cluster_decisions, join_subclusters

    plan = storage.read_table(task.path("near")).sort_by(
        [("cluster", "ascending"), ("rank", "ascending")]
    )
    plan = plan.to_pylist()
    stored = {r["uid"]: r for r in read_bucket(task, "feats", int(task.unit)).to_pylist()}
    decoded: dict[str, tuple] = {}

    def side(record, name):
        cut = len(name) + 1
        return decode_features({k[cut:]: v for k, v in record.items() if k.startswith(name + "_")})

    def feats_of(uid):
        if uid not in decoded:
            decoded[uid] = side(stored[uid], "image"), side(stored[uid], "mirror")
        return decoded[uid]

    config, radius = _verify_config(task), task.config.dedup.near_dup_radius
    clusters: dict[int, list[dict]] = {}
    for row in plan:
        clusters.setdefault(row["cluster"], []).append(row)
    out = {"bucket": [], "part_index": [], "uid": [], "dup_of": [], "reason": []}
    for rows in clusters.values():
        members, subs = [r["uid"] for r in rows], [r["subrep"] for r in rows]
        joined = join_subclusters(list(dict.fromkeys(subs)), feats_of, config)
        found = cluster_decisions(members, subs, joined, radius)
        reps = {rep for rep, _ in found.values()}
        for r in rows:
            # a member, or a representative (dup_of = itself: final reads it)
            decision = found.get(r["uid"]) or ((r["uid"], "") if r["uid"] in reps else None)
            if decision is not None:
                out["bucket"].append(r["sha_bucket"])
                out["part_index"].append(r["part_index"])
                out["uid"].append(r["uid"])
                out["dup_of"].append(decision[0])
                out["reason"].append(decision[1])
    types = {"bucket": pa.int64(), "part_index": pa.int32(), "uid": pa.string()}
    types |= {"dup_of": pa.string(), "reason": pa.string()}
    table = pa.table({k: pa.array(v, types[k]) for k, v in out.items()}).sort_by("bucket")
    write_parquet_atomic(table, task.path("verify"), row_group_size=10_000)
    members = sum(u != d for u, d in zip(out["uid"], out["dup_of"], strict=True))
    return PartStats(len(plan), len(plan) - members)


PHASES = {"feats": feats_part, "verify": verify_bucket}
