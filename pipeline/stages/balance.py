"""Stage `balance`: one row per unique (url, caption), then MetaCLIP's per-query sampling.

Global step (DuckDB, once): the first occurrence of every uid in source order, and how many unique
pairs match each query. Per-part step (Ray tasks): keep first occurrences, sample with the global
counts, write the part's `samples` manifest with status `pending` (waits for the image stages),
`over_query_cap` or `no_query_match`."""

import time
from pathlib import Path

from manifests import schema
from manifests.layout import DatasetLayout, write_parquet_atomic
from pipeline.stages.base import PartStats, StageRun, run_parts

STAGE = "balance"


def _global_tables(layout: DatasetLayout, parts: list[str]) -> None:
    import duckdb

    run_dir = layout.stage_dir(STAGE)
    files = [str(layout.stage_dir("match") / f"{p}.parquet") for p in parts]
    con = duckdb.connect(":memory:")
    file_list = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    con.execute(
        f"""CREATE TABLE firsts AS
        SELECT uid, parse_filename(filename, true) AS part, file_row_number AS row, matched_queries
        FROM read_parquet([{file_list}], filename = true, file_row_number = true)
        QUALIFY row_number() OVER (PARTITION BY uid ORDER BY filename, file_row_number) = 1"""
    )
    for name, sql in {
        "firsts": "SELECT part, row FROM firsts ORDER BY part, row",
        "query_counts": """SELECT q AS query, count(*) AS count FROM firsts,
            unnest(matched_queries) AS t(q) GROUP BY q ORDER BY q""",
    }.items():
        tmp = run_dir / f".{name}.parquet.tmp"
        con.execute(f"COPY ({sql}) TO '{tmp}' (FORMAT parquet)")
        tmp.replace(run_dir / f"{name}.parquet")
    con.close()


def balance_part(task: dict) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.balance import balance

    started = time.perf_counter()
    layout = DatasetLayout(Path(task["root"]))
    run_dir = layout.stage_dir(STAGE)
    table = pq.read_table(layout.stage_dir("match") / f"{task['part']}.parquet")
    firsts = pq.read_table(run_dir / "firsts.parquet", filters=[("part", "=", task["part"])])
    first_rows = np.zeros(table.num_rows, dtype=bool)
    first_rows[firsts["row"].to_numpy()] = True
    unique = table.filter(pa.array(first_rows))
    counts_table = pq.read_table(run_dir / "query_counts.parquet")
    counts = dict(
        zip(counts_table["query"].to_pylist(), counts_table["count"].to_pylist(), strict=True)
    )
    matched = unique["matched_queries"].to_pylist()
    if task["cap"] is None:  # no query list: a curated URL list, every unique pair goes on
        keep = has_match = np.ones(unique.num_rows, dtype=bool)
    else:
        keep = balance(unique["uid"].to_pylist(), matched, counts, task["cap"], seed=task["seed"])
        has_match = np.array([bool(m) for m in matched], dtype=bool)
    status = np.where(keep, schema.PENDING, np.where(has_match, "over_query_cap", "no_query_match"))
    samples = unique.append_column("status", pa.array(status.tolist(), pa.string()))
    write_parquet_atomic(
        schema.conform(samples, schema.SAMPLES), run_dir / f"{task['part']}.parquet"
    )

    stats = PartStats(rows_in=table.num_rows, rows_out=int(keep.sum()))
    stats.drop("repeated_pair", table.num_rows - unique.num_rows)
    stats.drop("over_query_cap", int((~keep & has_match).sum()))
    stats.drop("no_query_match", int((~has_match).sum()))
    stats.seconds = time.perf_counter() - started
    StageRun(layout, STAGE).mark_done(task["part"], stats)
    return {"part": task["part"], "kept": int(keep.sum())}


def run_balance(layout: DatasetLayout, parts: list[str], cap: int | None, seed: int, executor):
    """Balance with `cap` per query; `cap=None` (no query list) keeps every unique pair."""
    run = StageRun(layout, STAGE)
    if not run.is_done("global"):
        _global_tables(layout, parts)
        run.mark_done("global", PartStats())
    run_parts(layout, STAGE, parts, executor, balance_part, cap=cap, seed=seed)
