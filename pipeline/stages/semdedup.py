"""SemDeDup for the clip stage (--semdedup-eps) as parallel tasks over the rows the threshold kept.

The rule is pipeline.embed.semdedup's (the paper's reference code): spherical k-means, then within
each cluster, least similar to the centroid first, a row whose cosine to an earlier row exceeds
1 - eps is a duplicate. Here it runs in three phases of tasks, in work/clip/phases/ (pipeline/stages/phases.py):
1. `kmeans`, one task: trains the centroids on the kept rows (all of them up to 256 per centroid,
   what faiss trains on anyway; past that, a seeded sample of that many, read part by part);
   kmeans/centroids.npy.
2. `assign-<part>`, one task per part: each kept row's cluster and cosine to its centroid, with
   its vector and place in source order, into assign/<part>.parquet sorted by bucket (cluster mod
   the number of buckets), so a bucket's rows are a few row groups of each file.
3. `bucket-<b>`, one task per bucket: every cluster of the bucket, from every part, ordered as
   the rule says (ties by source order) and deduplicated; dups/<b>.parquet names each
   duplicate's part, so the clip stage's parts read only their own.
The captions of one image (dedup's image_of: the same bytes, so the same vector) are one vote:
a cluster judges the image by its first row in the rule's order, and its other rows in the
cluster share the verdict; the shards stage takes the rest of an image whose image row left.
Up to 65,536 kept rows (256 x sqrt(N) >= N) every phase sees exactly what one process would, and
the decisions equal pipeline.embed.semdedup.semantic_duplicates on the same rows (a test checks)."""

from __future__ import annotations

import io

from manifests import storage
from pipeline.stages.base import PartStats
from pipeline.stages.phases import PhaseTask, fixed_figures, phase_dir, read_bucket, run_phases

ROWS_PER_BUCKET = 200_000  # vectors one bucket task holds (x 512 dims x 4 bytes: ~400 MB)


def kept_rows(task: PhaseTask, part: str, vectors: bool = True):
    """The part's rows the threshold kept: uid, clip_score (and image vectors), source order,
    with `group`: the image the row's caption belongs to (dedup's image_of, else its uid)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipeline.stages import registry

    score = registry.get(task.inputs[1])  # the clip stage's second input: score
    columns = ["uid", "clip_score"] + (["image"] if vectors else [])
    table = storage.read_table(score.rows_path(task.layout, part), columns=columns)
    dedup = registry.get(task.inputs[0])
    rows = storage.read_table(dedup.rows_path(task.layout, part), columns=["uid", "image_of"])
    group = dict(zip(rows["uid"].to_pylist(), rows["image_of"].to_pylist(), strict=True))
    uids = table["uid"].to_pylist()
    groups = pa.array([group.get(u) or u for u in uids], pa.string())
    table = table.append_column("group", groups)
    keep = pc.invert(pc.is_nan(table["clip_score"]))
    threshold = task.figures["threshold"]
    if threshold is not None:
        keep = pc.and_(keep, pc.greater_equal(table["clip_score"], threshold))
    return table.filter(keep)


def _unit(table):
    from pipeline.embed import store
    from pipeline.embed.semdedup import unit_rows

    return unit_rows(store.to_matrix(table["image"]))


def _centroids_path(task: PhaseTask):
    return phase_dir(task.layout, task.stage) / "kmeans" / "centroids.npy"


def _train(task: PhaseTask) -> None:
    import numpy as np

    from manifests.layout import write_bytes_atomic
    from pipeline.embed.semdedup import TRAIN_POINTS_PER_CENTROID, train_centroids

    clusters, kept = task.figures["clusters"], task.figures["kept"]
    sample = clusters * TRAIN_POINTS_PER_CENTROID
    wanted = None  # every kept row
    if kept > sample:
        rng = np.random.default_rng(task.config.seed)
        wanted = np.sort(rng.choice(kept, sample, replace=False))
    blocks, start = [], 0  # start: the part's first row among all kept rows
    for part in task.parts:
        table = kept_rows(task, part)
        rows = table.num_rows
        if wanted is not None:
            lo, hi = np.searchsorted(wanted, [start, start + rows])
            table = table.take(wanted[lo:hi] - start)
        start += rows
        if table.num_rows:
            blocks.append(_unit(table))
    centroids = train_centroids(np.concatenate(blocks), clusters, task.config.seed)
    out = io.BytesIO()
    np.save(out, centroids)
    write_bytes_atomic(out.getvalue(), _centroids_path(task))


def _assign(task: PhaseTask) -> None:
    import numpy as np
    import pyarrow as pa

    from manifests.layout import write_parquet_atomic
    from pipeline.embed.semdedup import assign

    table = kept_rows(task, task.unit)
    centroids = np.load(io.BytesIO(_centroids_path(task).read_bytes()))
    labels, sims = assign(_unit(table), centroids) if table.num_rows else ([], [])
    labels = np.asarray(labels, np.int64)
    out = pa.table(
        {
            "bucket": pa.array(labels % task.figures["buckets"], pa.int64()),
            "cluster": pa.array(labels, pa.int64()),
            "to_centroid": pa.array(sims, pa.float32()),
            "part_index": pa.array([task.part_index] * table.num_rows, pa.int32()),
            "row": pa.array(range(table.num_rows), pa.int64()),
            "uid": table["uid"],
            "group": table["group"],
            "image": table["image"],
        }
    ).sort_by("bucket")
    write_parquet_atomic(out, task.path("assign"), row_group_size=1000)


def _dedup_bucket(task: PhaseTask) -> int:
    import numpy as np
    import pyarrow as pa

    from manifests.layout import write_parquet_atomic
    from pipeline.embed.semdedup import dedup_cluster

    # The rule's order: cluster by cluster, least similar to the centroid first, then source order.
    order = [(c, "ascending") for c in ("cluster", "to_centroid", "part_index", "row")]
    rows = read_bucket(task, "assign", int(task.unit)).sort_by(order)
    x, uids = _unit(rows) if rows.num_rows else None, rows["uid"].to_pylist()
    part_index = rows["part_index"].to_pylist()
    bounds = np.flatnonzero(np.diff(rows["cluster"].to_numpy())) + 1
    eps = task.config.clip.semdedup_eps
    groups = rows["group"].to_pylist() if "group" in rows.column_names else uids
    found = {"part_index": [], "uid": [], "dup_of": [], "error": []}
    for block in np.split(np.arange(rows.num_rows), bounds):
        # One image, one vote: the captions of one image (same bytes, same vector) are judged
        # as that image, by its first row in the rule's order, and share its verdict.
        members: dict[str, list[int]] = {}
        for i in block:
            members.setdefault(groups[i], []).append(int(i))
        reps = np.array([m[0] for m in members.values()], dtype=np.int64)
        if reps.size < 2:
            continue
        local = dedup_cluster(x[reps], 1.0 - eps)
        for j in np.flatnonzero(local >= 0):
            of = reps[local[j]]
            for i in members[groups[reps[j]]]:
                found["part_index"].append(part_index[i])
                found["uid"].append(uids[i])
                found["dup_of"].append(uids[of])
                found["error"].append(f"cosine > {1 - eps:.3f} to {uids[of]}")
    types = {"part_index": pa.int32()}
    table = pa.table({k: pa.array(v, types.get(k, pa.string())) for k, v in found.items()})
    write_parquet_atomic(table.sort_by("part_index"), task.path("dups"))
    return table.num_rows


def run_semdedup_phase(task: PhaseTask) -> PartStats:
    stats = PartStats()
    if task.phase == "kmeans":
        _train(task)
    elif task.phase == "assign":
        _assign(task)
    else:
        stats.extra["semantic_duplicates"] = _dedup_bucket(task)
    return stats


def run_semdedup(run, executor, threshold: float | None, kept: int) -> dict:
    """All three phases (the ones not done); the figures for the clip stage's stats."""
    import math

    from pipeline.embed.semdedup import default_clusters
    from pipeline.stages.phases import phase_stats

    clusters = default_clusters(kept)
    buckets = max(1, min(clusters, max(run.parallelism, math.ceil(kept / ROWS_PER_BUCKET))))
    figures = {"threshold": threshold, "kept": kept, "clusters": clusters, "buckets": buckets}
    figures = fixed_figures(run, figures)
    buckets = figures["buckets"]
    phases = [["kmeans-all"], [f"assign-{p}" for p in run.parts]]
    phases.append([f"dups-{b}" for b in range(buckets)])
    run_phases(run, executor, phases, figures)
    dups = sum(phase_stats(run, f"dups-{b}").extra["semantic_duplicates"] for b in range(buckets))
    return {"kept": kept, "clusters": clusters, "buckets": buckets, "semantic_duplicates": dups}
