"""The dedup stage's exact-duplicate and leak phases (pipeline/stages/phases.py), and the
phases that write every duplicate decision.

- `hash-<part>` (map): the part's pending rows that were fetched, in source order; eval leaks
  against the eval index the task loads (leaks/<part>.parquet); each row under the bucket of
  its sha256 (hash/<part>.parquet: part_index, row, uid, sha256, caption_key, phash, area, leak).
- `exact-<b>` (reduce): the rows of sha bucket b from every part grouped by sha256 in source
  order, leaks left out (a leak stays a leak): the rows of every image with two or more, with
  its image row, the first (exact/<b>.parquet). The near-duplicate search skips the others.
- `final-<b>` (reduce): each image's captions (pipeline.dedup.captions): one row per distinct
  caption stays pending beside the image (`image_of`), a repeated caption becomes a duplicate
  (final/<b>.parquet, sorted by part, which each part of the stage reads its own rows from).
  With --near-dup-radius an image in a cluster (dedupnear.py routes them by sha bucket) is not
  decided here: its rows go under the bucket of the cluster's representative (tomerge/<b>).
- `merge-<b>` (reduce, with --near-dup-radius): each cluster's rows as one image group, its
  representative's own rows first (merge/<b>.parquet, by part)."""

from __future__ import annotations

from manifests import storage
from pipeline.stages.base import PartStats
from pipeline.stages.phases import PhaseTask, bucket_of, read_bucket


def sha_key(sha256):
    """uint64 key of each sha256 (or uid) hex: its first 16 digits; 0 where missing."""
    import numpy as np

    return np.array([int(s[:16], 16) if s else 0 for s in sha256], dtype=np.uint64)


def _pending(task: PhaseTask):
    """The part's pending rows that have an image, in source order, with their 256-bit hashes."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from manifests import schema
    from pipeline.stages import registry

    images, layout, part = registry.get(task.inputs[0]), task.layout, task.unit
    columns = ["uid", "caption", "status", "sha256", "phash", "original_width", "original_height"]
    rows = storage.read_table(images.rows_path(layout, part), columns=columns)
    rows = rows.append_column("row", pa.array(np.arange(rows.num_rows), pa.int64()))
    rows = rows.filter(pc.equal(rows["status"], schema.PENDING))
    hashes = ["uid", "phash256", "phash256_trim"]
    side = storage.read_table(images.file_path(layout, part, "images"), columns=hashes)
    return rows.join(side, "uid", join_type="inner").sort_by("row")


def _leaks(task: PhaseTask, rows) -> set:
    import pyarrow as pa

    from manifests.layout import write_parquet_atomic
    from pipeline.dedup.decide import leak_config
    from pipeline.dedup.leaks import find_leaks

    found = []
    if task.figures["eval"]:
        settings = leak_config(task.config.dedup)
        eval_table = storage.read_table(task.work_dir / "eval_hashes.parquet")
        images = store = embeddings = None
        if settings.verify is not None:
            from pipeline.dedup.leakverify import EvalFeatures

            images = _image_reader(task, rows["uid"].to_pylist())
            store = EvalFeatures(eval_table, settings.verify, task.work_dir)
        if settings.embed is not None:
            from pipeline.dedup.leakembed import EvalEmbeddings

            embeddings = EvalEmbeddings(eval_table, settings.embed, task.work_dir)
        found = find_leaks(
            eval_table,
            rows["uid"].to_pylist(),
            rows["phash256"].to_pylist(),
            rows["phash256_trim"].to_pylist(),
            settings,
            images=images,
            eval_features=store,
            eval_embeddings=embeddings,
        )
    columns = {
        "uid": pa.array([f.uid for f in found], pa.string()),
        "eval_id": pa.array([f.eval_id for f in found], pa.string()),
        "distance": pa.array([f.distance for f in found], pa.int32()),
        "kind": pa.array([f.kind for f in found], pa.string()),
        "inliers": pa.array([f.inliers for f in found], pa.int32()),
        "structure": pa.array([f.structure for f in found], pa.float64()),
        "cosine": pa.array([f.cosine for f in found], pa.float64()),
    }
    write_parquet_atomic(pa.table(columns), task.path("leaks"))
    return {f.uid for f in found}


def _image_reader(task: PhaseTask, uids: list):
    """indexes → {index: encoded image} of the part's pending rows: only the candidates' bytes
    are read (work/images holds every kept image of the part)."""
    from pipeline.stages.dedupverify import part_images

    def read(indexes):
        data = part_images(task, [uids[i] for i in indexes])
        return {i: data[uids[i]] for i in indexes if uids[i] in data}

    return read


def hash_part(task: PhaseTask) -> PartStats:
    import numpy as np
    import pyarrow as pa

    from manifests.layout import write_parquet_atomic
    from pipeline.dedup.captions import caption_key

    rows = _pending(task)
    leaks = _leaks(task, rows)
    sha = rows["sha256"].to_pylist()
    width = np.array([w or 0 for w in rows["original_width"].to_pylist()], np.float64)
    height = np.array([h or 0 for h in rows["original_height"].to_pylist()], np.float64)
    out = pa.table(
        {
            "bucket": pa.array(bucket_of(sha_key(sha), task.figures["buckets"]), pa.int64()),
            "part_index": pa.array([task.part_index] * rows.num_rows, pa.int32()),
            "row": rows["row"],
            "uid": rows["uid"],
            "sha256": pa.array([s or "" for s in sha], pa.string()),
            "caption_key": pa.array(
                [caption_key(c) for c in rows["caption"].to_pylist()], pa.int64()
            ),
            "phash": rows["phash"],
            "area": pa.array(width * height, pa.float64()),
            "leak": pa.array([u in leaks for u in rows["uid"].to_pylist()], pa.bool_()),
        }
    ).sort_by("bucket")
    write_parquet_atomic(out, task.path("hash"), row_group_size=10_000)
    return PartStats(rows.num_rows, rows.num_rows - len(leaks), extra={"eval_leaks": len(leaks)})


def _byte_groups(rows: dict) -> list[list[int]]:
    """Indexes of each sha256 group's rows in source order, leaks left out (a leak stays a
    leak): `rows` sorted by (sha256, part_index, row), as read from a hash bucket."""
    groups, previous = [], None
    for i, (sha, leak) in enumerate(zip(rows["sha256"], rows["leak"], strict=True)):
        if leak:
            continue
        if sha != previous or not groups or not sha:  # no sha256: bytes unknown, alone
            groups.append([])
            previous = sha
        groups[-1].append(i)
    return groups


def _read_hash_bucket(task: PhaseTask):
    columns = ["part_index", "row", "uid", "sha256", "caption_key", "leak"]
    order = [(c, "ascending") for c in ("sha256", "part_index", "row")]
    return read_bucket(task, "hash", int(task.unit), columns).sort_by(order).to_pydict()


def exact_bucket(task: PhaseTask) -> PartStats:
    """Within one sha bucket, the rows of every image with two or more rows (the image row, the
    first in source order, has image = its own uid): exact/<b>.parquet, by part."""
    import pyarrow as pa

    from manifests.layout import write_parquet_atomic

    rows = _read_hash_bucket(task)
    out = {"part_index": [], "uid": [], "image": []}
    for group in _byte_groups(rows):
        if len(group) > 1:
            for i in group:
                out["part_index"].append(rows["part_index"][i])
                out["uid"].append(rows["uid"][i])
                out["image"].append(rows["uid"][group[0]])
    types = {"part_index": pa.int32(), "uid": pa.string(), "image": pa.string()}
    table = pa.table({k: pa.array(v, types[k]) for k, v in out.items()}).sort_by("part_index")
    write_parquet_atomic(table, task.path("exact"), row_group_size=10_000)
    followers = sum(u != i for u, i in zip(out["uid"], out["image"], strict=True))
    return PartStats(len(rows["uid"]), len(rows["uid"]) - followers)


DECISIONS = {
    "part_index": "int32",
    "uid": "string",
    "status": "string",
    "dup_of": "string",
    "image_of": "string",
    "error": "string",
}


def _decisions_table(out: dict):
    import pyarrow as pa

    return pa.table({k: pa.array(out[k], getattr(pa, t)()) for k, t in DECISIONS.items()}).sort_by(
        "part_index"
    )


def _append(out: dict, part_index: int, uid: str, update: dict) -> None:
    out["part_index"].append(part_index)
    out["uid"].append(uid)
    for name in ("status", "dup_of", "image_of", "error"):
        out[name].append(update.get(name))


def _clusters(task: PhaseTask) -> dict[str, tuple[str, str]]:
    """image row uid → (its cluster's representative, why) for the images of this sha bucket
    in a near-duplicate cluster, representatives included (rep = itself, why = "")."""
    if task.figures["radius"] is None:
        return {}
    units = [str(b) for b in range(task.figures["buckets"])]
    if task.config.dedup.near_dup_verify != "off":  # dedupverify.py: a reason per row
        found = read_bucket(task, "verify", int(task.unit), ["uid", "dup_of", "reason"], units)
        return {
            u: (d, w)
            for u, d, w in zip(*(found[c].to_pylist() for c in found.column_names), strict=True)
        }
    found = read_bucket(task, "near", int(task.unit), ["uid", "dup_of"], units)
    why = f"phash within {task.config.dedup.near_dup_radius} bits"
    return {
        u: (d, "" if u == d else why)
        for u, d in zip(found["uid"].to_pylist(), found["dup_of"].to_pylist(), strict=True)
    }


def final_bucket(task: PhaseTask) -> PartStats:
    """The caption decisions of the images of one sha bucket (pipeline.dedup.captions): final/<b>
    for an image outside any near-duplicate cluster; a clustered image's rows go under the
    bucket of their representative (tomerge/<b>), whose merge task decides the whole cluster."""
    import pyarrow as pa

    from manifests.layout import write_parquet_atomic
    from pipeline.dedup.captions import Member, group_decisions

    rows, clusters = _read_hash_bucket(task), _clusters(task)
    out = {name: [] for name in DECISIONS}
    merge = {"rep": [], "own": [], "why": [], "part_index": [], "row": [], "uid": [], "key": []}
    for group in _byte_groups(rows):
        head = rows["uid"][group[0]]
        if head in clusters:
            rep, why = clusters[head]
            for i in group:
                merge["rep"].append(rep)
                merge["own"].append(rep == head)
                merge["why"].append(why)
                for name in ("part_index", "row", "uid"):
                    merge[name].append(rows[name][i])
                merge["key"].append(rows["caption_key"][i])
            continue
        members = [Member(rows["uid"][i], rows["caption_key"][i]) for i in group]
        decided = group_decisions(members, task.config.dedup.near_dup_status)
        index_of = {rows["uid"][i]: rows["part_index"][i] for i in group}
        for uid, update in decided.items():
            _append(out, index_of[uid], uid, update)
    write_parquet_atomic(_decisions_table(out), task.path("final"), row_group_size=10_000)
    if task.figures["radius"] is not None:
        types = [pa.string(), pa.bool_(), pa.string(), pa.int32(), pa.int64(), pa.string()]
        fields = [pa.field(n, t) for n, t in zip(merge, [*types, pa.int64()], strict=True)]
        table = pa.table(merge, schema=pa.schema(fields)).append_column(
            "bucket", pa.array(bucket_of(sha_key(merge["rep"]), task.figures["buckets"]))
        )
        write_parquet_atomic(table.sort_by("bucket"), task.path("tomerge"), row_group_size=10_000)
    return PartStats(extra=_counts(out))


def merge_bucket(task: PhaseTask) -> PartStats:
    """Each near-duplicate cluster of this bucket as one image group: its representative's own
    rows first, then the other images' rows, each in source order (pipeline.dedup.captions)."""
    from manifests.layout import write_parquet_atomic
    from pipeline.dedup.captions import Member, group_decisions

    units = [str(b) for b in range(task.figures["buckets"])]
    rows = read_bucket(task, "tomerge", int(task.unit), units=units)
    order = [("rep", "ascending"), ("own", "descending"), ("part_index", "ascending")]
    rows = rows.sort_by([*order, ("row", "ascending")]).to_pydict()
    out = {name: [] for name in DECISIONS}
    start, n = 0, len(rows["uid"])
    while start < n:
        end = start
        while end < n and rows["rep"][end] == rows["rep"][start]:
            end += 1
        members = [
            Member(rows["uid"][i], rows["key"][i], rows["own"][i], rows["why"][i])
            for i in range(start, end)
        ]
        decided = group_decisions(members, task.config.dedup.near_dup_status)
        index_of = {rows["uid"][i]: rows["part_index"][i] for i in range(start, end)}
        for uid, update in decided.items():
            _append(out, index_of[uid], uid, update)
        start = end
    write_parquet_atomic(_decisions_table(out), task.path("merge"), row_group_size=10_000)
    return PartStats(n, n, extra=_counts(out))


def _counts(out: dict) -> dict:
    from pipeline.dedup.captions import SAME_BYTES

    exact = sum(e == SAME_BYTES for e in out["error"])
    joined = sum(s == "pending" for s in out["status"])
    return {
        "exact_duplicates": exact,
        "near_duplicates": sum(s != "pending" for s in out["status"]) - exact,
        "captions_joined": joined,
    }
