"""Stage `dedup`: exact duplicates by sha256 of the fetched bytes, across the whole run.

Global (DuckDB over every part): among rows still `pending`, the first occurrence of each sha256
in source order is kept; the others become `duplicate` with `dup_of` = the kept uid. Near-duplicate
clusters and eval-set leaks (pipeline.dedup) decide in the same pass when they are enabled."""

import time

from manifests import schema
from manifests.layout import DatasetLayout, write_parquet_atomic
from pipeline.stages.base import PartStats, StageRun, read_samples_part

STAGE = "dedup"


def _pending_rows(layout: DatasetLayout, previous: str, parts: list[str]):
    """(part, row, uid, sha256, ...) of every pending row, in source order, as a pyarrow table."""
    import duckdb

    files = [str(layout.stage_dir(previous) / f"{p}.parquet") for p in parts]
    file_list = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    con = duckdb.connect(":memory:")
    return con.sql(
        f"""SELECT parse_filename(filename, true) AS part, file_row_number AS row, uid, sha256,
                   phash, width, height, original_width, original_height
            FROM read_parquet([{file_list}], filename = true, file_row_number = true)
            WHERE status = '{schema.PENDING}' ORDER BY part, row"""
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


def run_dedup(layout: DatasetLayout, parts: list[str], previous: str) -> None:
    import pyarrow as pa

    run = StageRun(layout, STAGE)
    if all(run.is_done(p) for p in parts):
        run.finish(parts)
        return
    started = time.perf_counter()
    pending = _pending_rows(layout, previous, parts)
    dup_of = exact_duplicates(pending["uid"].to_pylist(), pending["sha256"].to_pylist())
    seconds = (time.perf_counter() - started) / max(1, len(parts))
    for part in parts:
        rows = read_samples_part(layout, previous, part).to_pylist()
        stats = PartStats(seconds=seconds)
        for row in rows:
            if row["status"] != schema.PENDING:
                continue
            stats.rows_in += 1
            if row["uid"] in dup_of:
                row.update(
                    status="duplicate", dup_of=dup_of[row["uid"]], error="same bytes as dup_of"
                )
                stats.drop("duplicate")
            else:
                stats.rows_out += 1
        table = pa.Table.from_pylist(rows, schema=schema.SAMPLES)
        write_parquet_atomic(table, run.dir / f"{part}.parquet")
        run.mark_done(part, stats)
    run.finish(parts)
