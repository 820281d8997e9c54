"""Stage `dedup`: exact duplicates, eval-set leaks and near-duplicate clusters, across the run.

Plan, over every row still `pending` (pipeline.dedup.decide): exact duplicates by sha256 of the
fetched bytes (the first in source order is kept, the others become `duplicate` with `dup_of`);
copies of an `--eval-set` image become `eval_leak` with `leak_of` = "<set>/<class>/<file>", and
DIR/overlap.parquet marks every eval image that has a copy; with `--near-dup-radius N`, clusters
of phashes within N bits keep their largest image and the rest become `duplicate`. The decisions
go to work/dedup/decisions.parquet; each part then applies its own.

The plan still reads every pending row's hashes in the driver (DuckDB): distributing it is the
next step (docs/scaling.md)."""

from manifests import schema
from manifests.layout import write_parquet_atomic
from pipeline.stages.base import PartOutput, Stage, StageRun, sql_files
from pipeline.stages.decisions import apply_decisions, decisions_table


def _pending_rows(run: StageRun):
    """Every pending row in source order with its part and hashes; width/height are the original
    size, which picks a cluster's representative (the largest image)."""
    import duckdb

    rows = sql_files(run.input_rows_paths("images"))
    images = sql_files(run.input_file_paths("images", "images"))
    return (
        duckdb.connect(":memory:")
        .sql(
            f"""SELECT parse_filename(s.filename, true) AS part, s.uid, s.sha256, s.phash,
                   s.original_width AS width, s.original_height AS height,
                   i.phash256, i.phash256_trim
            FROM read_parquet({rows}, filename = true, file_row_number = true) s
            JOIN read_parquet({images}) i USING (uid)
            WHERE s.status = '{schema.PENDING}'
            ORDER BY parse_filename(s.filename, true), s.file_row_number"""
        )
        .to_arrow_table()
    )


def exact_duplicates(uids: list[str], digests: list[str]) -> dict[str, str]:
    """uid -> uid kept, for every row whose sha256 an earlier row already has."""
    first: dict[str, str] = {}
    dup_of = {}
    for uid, digest in zip(uids, digests, strict=True):
        if digest in first:
            dup_of[uid] = first[digest]
        else:
            first[digest] = uid
    return dup_of


class DedupStage(Stage):
    name, inputs = "dedup", ("images",)

    def enabled(self, config) -> bool:
        return config.fetch

    def plan(self, run: StageRun) -> None:
        from pipeline.dedup.decide import decide
        from pipeline.dedup.evalsets import hash_eval_sets_cached
        from pipeline.dedup.leaks import write_overlap

        config = run.config.dedup
        pending = _pending_rows(run)
        exact = exact_duplicates(pending["uid"].to_pylist(), pending["sha256"].to_pylist())
        eval_table = None
        if config.eval_set:
            cache = run.dir / "eval_hashes.parquet"
            eval_table = hash_eval_sets_cached(config.eval_set, cache)
        updates, leaks = decide(pending, eval_table, config, exact)
        if eval_table is not None:
            write_overlap(run.layout.root / "overlap.parquet", eval_table, leaks)
        part_of = dict(zip(pending["uid"].to_pylist(), pending["part"].to_pylist(), strict=True))
        write_parquet_atomic(decisions_table(updates, part_of), run.dir / "decisions.parquet")

    def process(self, task, rows) -> PartOutput:
        import pyarrow.parquet as pq

        decisions = pq.read_table(
            task.work_dir / "decisions.parquet", filters=[("part", "=", task.part)]
        )
        return PartOutput(apply_decisions(rows, decisions))
