"""Stage `clip`: score every pending pair with a trainer checkpoint, drop the worst, and (optionally)
semantic duplicates. Runs after exact dedup, so a duplicate is never scored.

1. Scoring, per part, in this process (one model load, batched, on the GPU when there is one):
   work/clip/<part>.scores.parquet holds uid, clip_score and the image embedding (float16); it
   is written atomically, so its existence is the part's completion marker for this step.
2. Decisions over the whole run: `low_clip_score` below --min-clip-score, or outside the best
   --clip-top-fraction of scored rows (a global quantile, so it needs every part's scores);
   with --semdedup-eps, SemDeDup over the image embeddings of the rows still kept
   (`semantic_duplicate`, `dup_of` = the uid kept). Every scored row gets its `clip_score`.
3. Per part: every scored row gets its `clip_score`, every decision is applied.
Scoring and decisions are the stage's plan, in the driver: scoring on Ray workers is next
(docs/scaling.md)."""

import json
import logging

from manifests import schema
from manifests.config import ConfigError
from manifests.layout import write_json_atomic, write_parquet_atomic
from pipeline.stages.base import PartOutput, Stage, StageRun
from pipeline.stages.decisions import apply_decisions, decisions_table

log = logging.getLogger(__name__)


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


def _score_part(loaded, run: StageRun, part: str, batch_size: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.embed.encode import embed_pairs
    from pipeline.embed.store import vector_array

    rows = pq.read_table(run.input_rows_paths("dedup", [part])[0], schema=schema.SAMPLES)
    pending = rows.filter(pa.compute.equal(rows["status"], schema.PENDING))
    uids = pending["uid"].to_pylist()
    images_path = run.input_file_paths("images", "images", [part])[0]
    stored = pq.read_table(images_path, columns=["uid", "image"])
    image_of = dict(zip(stored["uid"].to_pylist(), stored["image"].to_pylist(), strict=True))
    captions = [c or "" for c in pending["caption"].to_pylist()]
    emb = embed_pairs(loaded, [image_of[u] for u in uids], captions, batch_size, desc=part)
    table = pa.table(
        {
            "uid": pa.array(uids, pa.string()),
            "clip_score": pa.array(emb.score, pa.float32()),
            "image": vector_array(emb.image),
        }
    )
    write_parquet_atomic(table, run.file_path(part, "scores"))


def _score_all(config, run: StageRun) -> None:
    from tqdm import tqdm

    from pipeline.embed.encode import load_model

    todo = [p for p in run.parts if not run.file_path(p, "scores").exists()]
    if not todo:
        return
    _check_model(run, config.clip_model)
    loaded = load_model(config.clip_model, config.device)
    for part in tqdm(todo, desc="clip scores", leave=False, disable=len(todo) < 2):
        _score_part(loaded, run, part, config.batch_size)


def _read_scores(run: StageRun, parts: list[str], vectors: bool):
    """uids (list), scores np.float32 [N], and (only if `vectors`: SemDeDup needs them, and they
    are N x D floats) image embeddings np.float32 [N, D], in part order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.embed import store

    columns = ["uid", "clip_score"] + (["image"] if vectors else [])
    table = pa.concat_tables(
        [pq.read_table(run.file_path(p, "scores"), columns=columns) for p in parts]
    )
    image = store.to_matrix(table["image"]) if vectors else None
    return table["uid"].to_pylist(), table["clip_score"].to_numpy(zero_copy_only=False), image


def decide(
    uids, scores, vectors, min_score=None, top_fraction=None, semdedup_eps=None, seed: int = 0
) -> tuple[dict, dict]:
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
        why = (
            "the image could not be decoded for scoring"
            if not readable[i]
            else f"clip score {scores[i]:.4f} < {threshold:.4f}"
            + (f" (not in the best {top_fraction:.0%})" if top_fraction is not None else "")
        )
        updates[uids[i]] = {"status": "low_clip_score", "error": why}
    if semdedup_eps is not None and keep_mask.sum() > 1:
        from pipeline.embed.semdedup import semantic_duplicates

        kept = np.flatnonzero(keep_mask)
        dup = semantic_duplicates(vectors[kept], eps=semdedup_eps, seed=seed)
        for j in np.flatnonzero(dup >= 0):
            i, of = kept[j], kept[dup[j]]
            updates[uids[i]] = {
                "status": "semantic_duplicate",
                "dup_of": uids[of],
                "error": f"cosine > {1 - semdedup_eps:.3f} to {uids[of]}",
            }
        extra["semantic_duplicates"] = int((dup >= 0).sum())
    return updates, extra


class ClipStage(Stage):
    name, inputs = "clip", ("dedup", "images")

    def enabled(self, config) -> bool:
        return config.clip.clip_model is not None and config.fetch

    def check_config(self, run: StageRun) -> None:
        from pipeline.embed.encode import load_model

        if not (run.layout.stats / "clip.json").exists():  # not finished: it will score
            load_model(run.config.clip.clip_model, run.config.clip.device)

    def plan(self, run: StageRun) -> None:
        config = run.config.clip
        _score_all(config, run)
        uids, scores, vectors = _read_scores(
            run, run.parts, vectors=config.semdedup_eps is not None
        )
        updates, extra = decide(
            uids,
            scores,
            vectors,
            config.min_clip_score,
            config.clip_top_fraction,
            config.semdedup_eps,
            run.config.seed,
        )
        part_of = {}
        for part in run.parts:
            part_of.update(dict.fromkeys(_part_uids(run, part), part))
        write_parquet_atomic(decisions_table(updates, part_of), run.dir / "decisions.parquet")
        write_json_atomic(extra, run.dir / "decisions.json")

    def process(self, task, rows) -> PartOutput:
        import pyarrow.parquet as pq

        scores = self.read_scores(task)
        score_of = dict(
            zip(scores["uid"].to_pylist(), scores["clip_score"].to_pylist(), strict=True)
        )

        def fill(row: dict) -> None:
            score = score_of.get(row["uid"])
            row["clip_score"] = None if score is None or score != score else score  # NaN: unscored

        decisions = pq.read_table(
            task.work_dir / "decisions.parquet", filters=[("part", "=", task.part)]
        )
        return PartOutput(apply_decisions(rows, decisions, fill))

    def read_scores(self, task):
        import pyarrow.parquet as pq

        path = self.file_path(task.layout, task.part, "scores")
        return pq.read_table(path, columns=["uid", "clip_score"])

    def summarise(self, run: StageRun, parts) -> dict | None:
        return json.loads((run.dir / "decisions.json").read_text())


def _part_uids(run: StageRun, part: str) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(run.file_path(part, "scores"), columns=["uid"])["uid"].to_pylist()
