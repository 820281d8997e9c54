"""Stage `balance`: one row per unique (url, caption), then MetaCLIP's per-query sampling.

Plan (DuckDB, once, in the driver): the first occurrence of every uid in source order, and how
many unique pairs match each query. Per part: keep first occurrences, sample with the global
counts, and write the part's `samples` rows with status `pending` (waits for the image stages),
`over_query_cap` or `no_query_match`; repeated pairs are counted as `repeated_pair`."""

from manifests import schema, storage
from manifests.layout import atomic_path
from pipeline.stages.base import PartOutput, PartStats, Stage, StageRun, sql_files


class BalanceStage(Stage):
    name, inputs = "balance", ("match",)

    def plan(self, run: StageRun) -> None:
        from manifests.storage import duckdb_connect

        files = sql_files(run.input_rows_paths("match"))
        con = duckdb_connect(run.layout.root)
        con.execute(
            f"""CREATE TABLE firsts AS
            SELECT uid, split_part(parse_filename(filename), '.', 1) AS part, file_row_number AS row,
                   matched_queries
            FROM read_parquet({files}, filename = true, file_row_number = true)
            QUALIFY row_number() OVER (PARTITION BY uid ORDER BY part, file_row_number) = 1"""
        )
        for name, sql in {
            "firsts": "SELECT part, row FROM firsts ORDER BY part, row",
            "query_counts": """SELECT q AS query, count(*) AS count FROM firsts,
                unnest(matched_queries) AS t(q) GROUP BY q ORDER BY q""",
        }.items():
            with atomic_path(run.dir / f"{name}.parquet") as tmp:
                con.execute(f"COPY ({sql}) TO '{tmp}' (FORMAT parquet)")
        con.close()

    def process(self, task, rows) -> PartOutput:
        import numpy as np
        import pyarrow as pa

        from pipeline.balance import balance

        plan_dir = task.work_dir
        firsts = storage.read_table(plan_dir / "firsts.parquet", filters=[("part", "=", task.part)])
        first_rows = np.zeros(rows.num_rows, dtype=bool)
        first_rows[firsts["row"].to_numpy()] = True
        unique = rows.filter(pa.array(first_rows))
        counts_table = storage.read_table(plan_dir / "query_counts.parquet")
        counts = dict(
            zip(counts_table["query"].to_pylist(), counts_table["count"].to_pylist(), strict=True)
        )
        matched = unique["matched_queries"].to_pylist()
        if task.config.balance.query_list is None:  # a curated URL list: every unique pair goes on
            keep = has_match = np.ones(unique.num_rows, dtype=bool)
        else:
            cap, seed = task.config.balance.per_query_cap, task.config.seed
            keep = balance(unique["uid"].to_pylist(), matched, counts, cap, seed=seed)
            has_match = np.array([bool(m) for m in matched], dtype=bool)
        status = np.where(
            keep, schema.PENDING, np.where(has_match, "over_query_cap", "no_query_match")
        )
        samples = unique.append_column("status", pa.array(status.tolist(), pa.string()))
        stats = PartStats()
        stats.drop("repeated_pair", rows.num_rows - unique.num_rows)
        return PartOutput(schema.conform(samples, schema.SAMPLES), stats=stats)
