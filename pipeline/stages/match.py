"""Stage `match`: give every candidate its uid and the queries its caption contains.

One task per sources part. Building the automaton for a 500,000-query list takes seconds, so
each worker process builds it once and keeps it for the parts it runs after that."""

from manifests.schema import sample_uid
from manifests.storage import location
from pipeline.stages.base import PartOutput, PartStats, Stage

_MATCHERS: dict[tuple, object] = {}  # per worker process: (path, mtime, size) -> QueryMatcher


def _matcher(query_list: str | None):
    from pipeline.queries import QueryMatcher, load_query_list

    if query_list is None:
        return None
    path = location(query_list)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _MATCHERS:
        _MATCHERS.clear()
        _MATCHERS[key] = QueryMatcher(load_query_list(query_list))
    return _MATCHERS[key]


class MatchStage(Stage):
    name, inputs, samples = "match", ("sources",), False

    def check_config(self, run) -> None:
        _matcher(run.config.balance.query_list)  # a bad list fails here, clearly, not in a task

    def process(self, task, rows) -> PartOutput:
        import pyarrow as pa

        urls, captions = rows["url"].to_pylist(), rows["caption"].to_pylist()
        matcher = _matcher(task.config.balance.query_list)
        matched = matcher.match_many(captions) if matcher else [[] for _ in captions]
        uids = [sample_uid(u, c) for u, c in zip(urls, captions, strict=True)]
        out = rows.append_column("uid", pa.array(uids, pa.string())).append_column(
            "matched_queries", pa.array(matched, pa.list_(pa.string()))
        )
        stats = PartStats(rows_in=rows.num_rows, rows_out=rows.num_rows)
        stats.extra = {"matched": sum(1 for m in matched if m)}
        return PartOutput(out, stats=stats)
