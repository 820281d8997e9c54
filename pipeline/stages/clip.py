"""Stage `clip` (only with --clip-model): drop the worst-scored pairs and, optionally, semantic
duplicates. The scores come from the `score` stage (its tasks); this stage decides.

1. Plan (the driver, DuckDB, memory capped): the threshold. --min-clip-score as given, or with
   --clip-top-fraction F the score of the last row kept when the readable rows are ranked best
   first (an exact global quantile: DuckDB sorts what does not fit in memory on disk).
2. With --semdedup-eps: SemDeDup over the rows the threshold kept, as parallel tasks
   (pipeline/stages/semdedup.py: k-means, cluster assignment per part, one task per bucket of
   clusters).
3. Per part: every scored row gets its `clip_score`; a row below the threshold (or whose image
   does not decode) becomes `low_clip_score`, a semantic duplicate `semantic_duplicate` with
   `dup_of` = the uid kept."""

import json
import logging

from manifests.layout import write_json_atomic
from pipeline.stages.base import PartOutput, Stage, StageRun, planning_db, sql_files
from pipeline.stages.decisions import apply_decisions, decisions_table

log = logging.getLogger(__name__)


def threshold(run: StageRun) -> dict:
    """{"scored", "readable", "threshold" (None: no cut), "kept"} over every part's scores."""
    config = run.config.clip
    files = sql_files(run.input_rows_paths("score"))
    con = planning_db(run)
    con.execute(f"CREATE VIEW s AS SELECT clip_score FROM read_parquet({files})")
    scored, readable = con.execute(
        "SELECT count(*), count(*) FILTER (NOT isnan(clip_score)) FROM s"
    ).fetchone()
    cut = config.min_clip_score
    if config.clip_top_fraction is not None and readable:
        keep = max(1, round(config.clip_top_fraction * readable))
        (cut,) = con.execute(
            "SELECT clip_score FROM s WHERE NOT isnan(clip_score) "
            "ORDER BY clip_score DESC LIMIT 1 OFFSET ?",
            [keep - 1],
        ).fetchone()
    where = "NOT isnan(clip_score)" + ("" if cut is None else " AND clip_score >= ?")
    (kept,) = con.execute(
        f"SELECT count(*) FROM s WHERE {where}", [] if cut is None else [cut]
    ).fetchone()
    return {"scored": scored, "readable": readable, "threshold": cut, "kept": kept}


class ClipStage(Stage):
    name, inputs = "clip", ("dedup", "score")

    def enabled(self, config) -> bool:
        return config.clip.clip_model is not None and config.fetch

    def plan(self, run: StageRun) -> None:
        from pipeline.stages.semdedup import run_semdedup

        figures = threshold(run)
        if run.config.clip.semdedup_eps is not None and figures["kept"] > 1:
            figures["semdedup"] = run_semdedup(
                run, run.executor, figures["threshold"], figures["kept"]
            )
        write_json_atomic(figures, run.dir / "decisions.json")

    def process(self, task, rows) -> PartOutput:
        from pipeline.stages.phases import read_part

        figures = json.loads((task.work_dir / "decisions.json").read_text())
        scores = self.read(task, "score", columns=["uid", "clip_score"])
        score_of = dict(
            zip(scores["uid"].to_pylist(), scores["clip_score"].to_pylist(), strict=True)
        )
        updates = _low_scores(score_of, figures["threshold"], task.config.clip.clip_top_fraction)
        if "semdedup" in figures:
            buckets, index = figures["semdedup"]["buckets"], run_parts(task).index(task.part)
            dups = read_part(
                task.layout, self.name, "dups", buckets, index, ["uid", "dup_of", "error"]
            )
            for d in dups.to_pylist():
                updates[d["uid"]] = {"status": "semantic_duplicate", **d}

        def fill(row: dict) -> None:
            score = score_of.get(row["uid"])
            row["clip_score"] = None if score is None or score != score else score  # NaN: unscored

        decisions = decisions_table(updates, dict.fromkeys(updates, task.part))
        return PartOutput(apply_decisions(rows, decisions, fill))

    def run_phase(self, task):
        from pipeline.stages.semdedup import run_semdedup_phase

        return run_semdedup_phase(task)

    def summarise(self, run: StageRun, parts) -> dict | None:
        figures = json.loads((run.dir / "decisions.json").read_text())
        extra = {"scored": figures["scored"]}
        if figures["threshold"] is not None:
            extra["threshold"] = round(float(figures["threshold"]), 6)
        if "semdedup" in figures:
            extra["semantic_duplicates"] = figures["semdedup"]["semantic_duplicates"]
            extra["semdedup_clusters"] = figures["semdedup"]["clusters"]
        return extra


def run_parts(task) -> list[str]:
    return StageRun(task.layout, ClipStage(), task.inputs).parts


def _low_scores(score_of: dict, cut: float | None, top_fraction: float | None) -> dict:
    """uid -> low_clip_score decision for rows below the cut or whose image did not decode."""
    updates = {}
    for uid, score in score_of.items():
        if score != score:  # NaN
            why = "the image could not be decoded for scoring"
        elif cut is not None and score < cut:
            why = f"clip score {score:.4f} < {cut:.4f}" + (
                f" (not in the best {top_fraction:.0%})" if top_fraction is not None else ""
            )
        else:
            continue
        updates[uid] = {"status": "low_clip_score", "error": why}
    return updates
