"""The dedup stage's exact-duplicate and leak phases (pipeline/stages/phases.py), and the last
phase that writes every duplicate decision.

- `hash-<part>` (map): the part's pending rows that were fetched, in source order; eval leaks
  against the eval index the task loads (leaks/<part>.parquet); each row under the bucket of
  its sha256 (hash/<part>.parquet: part_index, row, uid, sha256, phash, area, leak).
- `exact-<b>` (reduce): every row of sha bucket b from every part, in source order; the first
  row of each sha256 is kept, the later ones point at it (exact/<b>.parquet). A leak is never
  written as a duplicate here (it stays a leak), but it can be the row the others point at.
- `final-<b>` (reduce): the exact duplicates of bucket b, each pointing past a kept row that
  became a near-duplicate to that cluster's representative, and the near-duplicates of bucket b
  (dedupnear.py routes them by sha bucket): final/<b>.parquet, sorted by part, which each part
  of the stage reads its own rows from."""

from __future__ import annotations

from manifests import storage
from pipeline.stages.base import PartStats
from pipeline.stages.phases import PhaseTask, bucket_of, read_bucket

EXACT_REASON = "same bytes as dup_of"


def sha_key(sha256):
    """uint64 key of each sha256 hex (its first 16 digits; 0 where missing)."""
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
    columns = ["uid", "status", "sha256", "phash", "original_width", "original_height"]
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
        images = store = None
        if settings.verify is not None:
            from pipeline.dedup.leakverify import EvalFeatures

            images = _image_reader(task, rows["uid"].to_pylist())
            store = EvalFeatures(eval_table, settings.verify, task.work_dir)
        found = find_leaks(
            eval_table,
            rows["uid"].to_pylist(),
            rows["phash256"].to_pylist(),
            rows["phash256_trim"].to_pylist(),
            settings,
            images=images,
            eval_features=store,
        )
    columns = {
        "uid": pa.array([f.uid for f in found], pa.string()),
        "eval_id": pa.array([f.eval_id for f in found], pa.string()),
        "distance": pa.array([f.distance for f in found], pa.int32()),
        "kind": pa.array([f.kind for f in found], pa.string()),
        "inliers": pa.array([f.inliers for f in found], pa.int32()),
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
            "phash": rows["phash"],
            "area": pa.array(width * height, pa.float64()),
            "leak": pa.array([u in leaks for u in rows["uid"].to_pylist()], pa.bool_()),
        }
    ).sort_by("bucket")
    write_parquet_atomic(out, task.path("hash"), row_group_size=10_000)
    return PartStats(rows.num_rows, rows.num_rows - len(leaks), extra={"eval_leaks": len(leaks)})


def exact_bucket(task: PhaseTask) -> PartStats:
    """Within one sha bucket: the first row of each sha256 in source order is kept."""
    import pyarrow as pa

    from manifests.layout import write_parquet_atomic

    columns = ["part_index", "row", "uid", "sha256", "leak"]
    order = [(c, "ascending") for c in ("sha256", "part_index", "row")]
    rows = read_bucket(task, "hash", int(task.unit), columns).sort_by(order).to_pydict()
    out = {"part_index": [], "uid": [], "dup_of": []}
    first, previous = None, None
    for index, uid, sha, leak in zip(
        rows["part_index"], rows["uid"], rows["sha256"], rows["leak"], strict=True
    ):
        if sha != previous:
            first, previous = uid, sha
        elif not leak:
            out["part_index"].append(index)
            out["uid"].append(uid)
            out["dup_of"].append(first)
    types = {"part_index": pa.int32(), "uid": pa.string(), "dup_of": pa.string()}
    table = pa.table({k: pa.array(v, types[k]) for k, v in out.items()}).sort_by("part_index")
    write_parquet_atomic(table, task.path("exact"), row_group_size=10_000)
    return PartStats(len(rows["uid"]), len(rows["uid"]) - table.num_rows)


def final_bucket(task: PhaseTask) -> PartStats:
    import pyarrow as pa

    from manifests.layout import write_parquet_atomic

    exact = storage.read_table(task.path("exact")).to_pydict()
    near = {"part_index": [], "uid": [], "dup_of": []}
    config = task.config.dedup
    near_reasons = None
    if task.figures["radius"] is not None:
        units = [str(b) for b in range(task.figures["buckets"])]
        if config.near_dup_verify != "off":  # dedupverify.py: a reason per row
            near = read_bucket(task, "verify", int(task.unit), [*near, "reason"], units).to_pydict()
            near_reasons = [f"near-duplicate of dup_of ({why})" for why in near.pop("reason")]
        else:
            near = read_bucket(task, "near", int(task.unit), list(near), units).to_pydict()
    rep_of = dict(zip(near["uid"], near["dup_of"], strict=True))
    n_exact, n_near = len(exact["uid"]), len(near["uid"])
    if near_reasons is None:
        near_reasons = [f"near-duplicate of dup_of (phash within {config.near_dup_radius} bits)"]
        near_reasons *= n_near
    table = pa.table(
        {
            "part_index": pa.array(exact["part_index"] + near["part_index"], pa.int32()),
            "uid": pa.array(exact["uid"] + near["uid"], pa.string()),
            "status": pa.array(
                ["duplicate"] * n_exact + [config.near_dup_status] * n_near, pa.string()
            ),
            "dup_of": pa.array(
                [rep_of.get(k, k) for k in exact["dup_of"]] + near["dup_of"], pa.string()
            ),
            "error": pa.array([EXACT_REASON] * n_exact + near_reasons, pa.string()),
        }
    ).sort_by("part_index")
    write_parquet_atomic(table, task.path("final"), row_group_size=10_000)
    return PartStats(extra={"exact_duplicates": n_exact, "near_duplicates": n_near})
