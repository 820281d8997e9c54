"""Stage `dedup`: exact duplicates, eval-set leaks and near-duplicate clusters, across the run.

Global, over every row still `pending` (pipeline.dedup.decide): exact duplicates by sha256 of the
fetched bytes (the first in source order is kept, the others become `duplicate` with `dup_of`);
copies of an `--eval-set` image become `eval_leak` with `leak_of` = "<set>/<class>/<file>", and
DIR/overlap.parquet marks every eval image that has a copy; with `--near-dup-radius N`, clusters
of phashes within N bits keep their largest image and the rest become `duplicate`."""

import time

from manifests import schema
from manifests.layout import DatasetLayout
from pipeline.stages.base import StageRun, write_decisions

STAGE = "dedup"


def _pending_rows(layout: DatasetLayout, previous: str, parts: list[str]):
    """Every pending row in source order with its hashes; width/height are the original size,
    which picks a cluster's representative (the largest image)."""
    import duckdb

    def files(pattern: str) -> str:
        paths = [str(layout.stage_dir(previous) / pattern.format(p)) for p in parts]
        return ", ".join("'" + f.replace("'", "''") + "'" for f in paths)

    con = duckdb.connect(":memory:")
    return con.sql(
        f"""SELECT s.uid, s.sha256, s.phash, s.original_width AS width,
                   s.original_height AS height, i.phash256, i.phash256_trim
            FROM read_parquet([{files("{}.parquet")}], filename = true, file_row_number = true) s
            JOIN read_parquet([{files("{}.images.parquet")}]) i USING (uid)
            WHERE s.status = '{schema.PENDING}'
            ORDER BY parse_filename(s.filename, true), s.file_row_number"""
    ).to_arrow_table()


def exact_duplicates(uids: list[str], digests: list[str]) -> dict[str, str]:
    """uid → uid kept, for every row whose sha256 an earlier row already has."""
    first: dict[str, str] = {}
    dup_of = {}
    for uid, digest in zip(uids, digests, strict=True):
        if digest in first:
            dup_of[uid] = first[digest]
        else:
            first[digest] = uid
    return dup_of


def _decisions(layout: DatasetLayout, parts, previous: str, eval_sets, radius) -> dict:
    from pipeline.dedup.decide import DedupConfig, decide
    from pipeline.dedup.evalsets import hash_eval_sets_cached
    from pipeline.dedup.leaks import write_overlap

    pending = _pending_rows(layout, previous, parts)
    exact = exact_duplicates(pending["uid"].to_pylist(), pending["sha256"].to_pylist())
    eval_table = None
    if eval_sets:
        cache = layout.stage_dir(STAGE) / "eval_hashes.parquet"
        eval_table = hash_eval_sets_cached(eval_sets, cache)
    updates, leaks = decide(pending, eval_table, DedupConfig(near_dup_radius=radius), exact)
    if eval_table is not None:
        write_overlap(layout.root / "overlap.parquet", eval_table, leaks)
    return updates


def run_dedup(layout: DatasetLayout, parts: list[str], previous: str,
              eval_sets: list[str] = (), near_dup_radius: int | None = None) -> None:  # fmt: skip
    run = StageRun(layout, STAGE)
    if all(run.is_done(p) for p in parts):
        run.finish(parts)
        return
    started = time.perf_counter()
    updates = _decisions(layout, parts, previous, list(eval_sets), near_dup_radius)
    seconds = (time.perf_counter() - started) / max(1, len(parts))
    write_decisions(run, previous, parts, updates, seconds)
    run.finish(parts)
