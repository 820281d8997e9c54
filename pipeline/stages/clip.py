"""Stage `clip`: score every pending pair with a trainer checkpoint, drop the worst, and (optionally)
semantic duplicates. Runs after exact dedup, so a duplicate is never scored.

1. Scoring, per part, in this process (one model load, batched, on the GPU when there is one):
   work/clip/<part>.scores.parquet holds uid, clip_score and the image embedding (float16); it
   is written atomically, so its existence is the part's completion marker for this step.
2. Decisions over the whole run: `low_clip_score` below --min-clip-score, or outside the best
   --clip-top-fraction of scored rows (a global quantile, so it needs every part's scores);
   with --semdedup-eps, SemDeDup over the image embeddings of the rows still kept
   (`semantic_duplicate`, `dup_of` = the uid kept). Every scored row gets its `clip_score`.
3. The samples rows per part and their markers, as every stage writes them."""

import json
import logging
import time

from manifests import schema
from manifests.layout import DatasetLayout, write_json_atomic, write_parquet_atomic
from pipeline.config import ConfigError
from pipeline.stages.base import StageRun, read_samples_part, write_decisions

log = logging.getLogger(__name__)
STAGE = "clip"


def _check_model(run: StageRun, checkpoint: str) -> str:
    """Scores of one run must come from one model: a checkpoint rewritten in place since the
    first scores were written is an error, not a silent mix."""
    from pipeline.embed.encode import checkpoint_digest

    digest = checkpoint_digest(checkpoint)
    path = run.dir / "model.json"
    if path.exists():
        recorded = json.loads(path.read_text())["checkpoint_sha256"]
        if recorded != digest:
            raise ConfigError(
                f"{checkpoint} changed since this build began scoring with it; "
                "restore it, or build into a new --out"
            )
    else:
        write_json_atomic({"checkpoint": checkpoint, "checkpoint_sha256": digest}, path)
    return digest


def _score_part(loaded, layout: DatasetLayout, part: str, previous: str, batch_size: int):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.embed.encode import embed_pairs
    from pipeline.embed.store import vector_array

    rows = read_samples_part(layout, previous, part)
    pending = rows.filter(pa.compute.equal(rows["status"], schema.PENDING))
    uids = pending["uid"].to_pylist()
    stored = pq.read_table(layout.stage_dir("images") / f"{part}.images.parquet",
                           columns=["uid", "image"])  # fmt: skip
    image_of = dict(zip(stored["uid"].to_pylist(), stored["image"].to_pylist(), strict=True))
    captions = [c or "" for c in pending["caption"].to_pylist()]
    emb = embed_pairs(loaded, [image_of[u] for u in uids], captions, batch_size, desc=part)
    table = pa.table({"uid": pa.array(uids, pa.string()),
                      "clip_score": pa.array(emb.score, pa.float32()),
                      "image": vector_array(emb.image)})  # fmt: skip
    write_parquet_atomic(table, layout.stage_dir(STAGE) / f"{part}.scores.parquet")


def _score_all(config, layout: DatasetLayout, parts: list[str], previous: str, run: StageRun):
    from tqdm import tqdm

    from pipeline.embed.encode import load_model

    todo = [p for p in parts if not (run.dir / f"{p}.scores.parquet").exists()]
    if not todo:
        return
    _check_model(run, config.clip_model)
    loaded = load_model(config.clip_model, config.device)
    for part in tqdm(todo, desc="clip scores", leave=False, disable=len(todo) < 2):
        _score_part(loaded, layout, part, previous, config.clip_batch_size)


def _read_scores(run: StageRun, parts: list[str], vectors: bool):
    """uids (list), scores np.float32 [N], and (only if `vectors`: SemDeDup needs them, and they
    are N x D floats) image embeddings np.float32 [N, D], in part order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.embed import store

    columns = ["uid", "clip_score"] + (["image"] if vectors else [])
    table = pa.concat_tables(
        [pq.read_table(run.dir / f"{p}.scores.parquet", columns=columns) for p in parts]
    )
    image = store.to_matrix(table["image"]) if vectors else None
    return table["uid"].to_pylist(), table["clip_score"].to_numpy(zero_copy_only=False), image


def decide(uids, scores, vectors, min_score=None, top_fraction=None, semdedup_eps=None,
           seed: int = 0) -> tuple[dict, dict]:  # fmt: skip
    """(uid → {status, error, dup_of}) for the dropped rows, and the figures for stats' extra."""
    import numpy as np

    updates, extra = {}, {"scored": len(uids)}
    readable = ~np.isnan(scores)
    threshold = min_score
    if top_fraction is not None and readable.any():
        # The score of the last row kept when rows are ranked best first.
        keep = max(1, round(top_fraction * int(readable.sum())))
        threshold = float(np.sort(scores[readable])[::-1][keep - 1])
    keep_mask = readable.copy()
    if threshold is not None:
        keep_mask &= scores >= threshold
        extra["threshold"] = round(float(threshold), 6)
    for i in np.flatnonzero(~keep_mask):
        why = ("the image could not be decoded for scoring" if not readable[i] else
               f"clip score {scores[i]:.4f} < {threshold:.4f}"
               + (f" (not in the best {top_fraction:.0%})" if top_fraction is not None else ""))  # fmt: skip
        updates[uids[i]] = {"status": "low_clip_score", "error": why}
    if semdedup_eps is not None and keep_mask.sum() > 1:
        from pipeline.embed.semdedup import semantic_duplicates

        kept = np.flatnonzero(keep_mask)
        dup = semantic_duplicates(vectors[kept], eps=semdedup_eps, seed=seed)
        for j in np.flatnonzero(dup >= 0):
            i, of = kept[j], kept[dup[j]]
            updates[uids[i]] = {"status": "semantic_duplicate", "dup_of": uids[of],
                                "error": f"cosine > {1 - semdedup_eps:.3f} to {uids[of]}"}  # fmt: skip
        extra["semantic_duplicates"] = int((dup >= 0).sum())
    return updates, extra


def run_clip(config, layout: DatasetLayout, parts: list[str], previous: str) -> None:
    run = StageRun(layout, STAGE)
    decisions = run.dir / "decisions.json"  # the run-wide figures, kept for stats/clip.json
    if all(run.is_done(p) for p in parts):
        run.finish(parts, extra=json.loads(decisions.read_text()) if decisions.exists() else None)
        return
    started = time.perf_counter()
    _score_all(config, layout, parts, previous, run)
    uids, scores, vectors = _read_scores(run, parts, vectors=config.semdedup_eps is not None)
    updates, extra = decide(uids, scores, vectors, config.min_clip_score,
                            config.clip_top_fraction, config.semdedup_eps, config.seed)  # fmt: skip
    write_json_atomic(extra, decisions)
    score_of = dict(zip(uids, scores.tolist(), strict=True))

    def fill(row: dict) -> None:
        score = score_of.get(row["uid"])
        row["clip_score"] = None if score is None or score != score else score  # NaN: unscored

    seconds = (time.perf_counter() - started) / max(1, len(parts))
    write_decisions(run, previous, parts, updates, seconds, fill)
    run.finish(parts, extra=extra)
