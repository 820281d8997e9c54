"""Stage `match`: give every candidate its uid and the queries its caption contains.

One Ray task per sources part. Building the automaton for a 500,000-query list takes seconds, so
each worker process builds it once and keeps it for the parts it runs after that."""

import time
from pathlib import Path

from manifests.layout import DatasetLayout, write_parquet_atomic
from manifests.schema import sample_uid
from pipeline.stages.base import PartStats, StageRun, run_parts

STAGE = "match"
_MATCHERS: dict[tuple, object] = {}  # per worker process: (path, mtime, size) → QueryMatcher


def _matcher(query_list: str | None):
    from pipeline.queries import QueryMatcher, load_query_list

    if query_list is None:
        return None
    stat = Path(query_list).stat()
    key = (str(Path(query_list).resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _MATCHERS:
        _MATCHERS.clear()
        _MATCHERS[key] = QueryMatcher(load_query_list(query_list))
    return _MATCHERS[key]


def match_part(task: dict) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    layout = DatasetLayout(Path(task["root"]))
    table = pq.read_table(layout.stage_dir("sources") / f"{task['part']}.parquet")
    urls, captions = table["url"].to_pylist(), table["caption"].to_pylist()
    matcher = _matcher(task["query_list"])
    matched = matcher.match_many(captions) if matcher else [[] for _ in captions]
    uids = [sample_uid(u, c) for u, c in zip(urls, captions, strict=True)]
    out = table.append_column("uid", pa.array(uids, pa.string())).append_column(
        "matched_queries", pa.array(matched, pa.list_(pa.string()))
    )
    write_parquet_atomic(out, layout.stage_dir(STAGE) / f"{task['part']}.parquet")
    stats = PartStats(rows_in=table.num_rows, rows_out=table.num_rows)
    stats.extra = {"matched": sum(1 for m in matched if m)}
    stats.seconds = time.perf_counter() - started
    StageRun(layout, STAGE).mark_done(task["part"], stats)
    return {"part": task["part"], "rows": table.num_rows}


def run_match(query_list: str | None, layout: DatasetLayout, parts: list[str], executor) -> None:
    query_list = str(Path(query_list).resolve()) if query_list else None
    if query_list:
        _matcher(query_list)  # fail here, with a clear message, on a bad list; not in a task
    run_parts(layout, STAGE, parts, executor, match_part, query_list=query_list)
