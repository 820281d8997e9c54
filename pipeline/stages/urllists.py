"""The sources stage's URL lists: read in tasks, never in the driver.

A Parquet list is split by its footer alone: part i holds input rows [i*N, (i+1)*N) (N =
--rows-per-part), and a task reads only the row groups that hold them, so many tasks read one
list at once. A text list (txt, csv, tsv, json, jsonl, compressed or not) cannot be cut without
reading it: one task streams it and commits every N rows as a part as it goes, each with its
own marker (a killed stream resumes at its first unfinished part). Either way part i holds the
same rows of the same file."""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipeline.stages.base import PartOutput, PartStats, PartTask, StageRun

STREAM = "list-stream"  # the marker of the task that streamed a text list: it names the parts


@dataclass(frozen=True)
class ListTask(PartTask):
    first: int = 0  # input rows [first, end) of a Parquet list
    end: int = 0
    stream: bool = False  # the task that reads a text list from start to end


def part_name(index: int) -> str:
    return f"list-{index:05d}"


def _format(source) -> str:
    from pipeline.sources.urllist import detect_format

    return detect_format(source.url_list, source.input_format)


def check(source) -> None:
    """A missing file, an unknown format or a missing column: fail before any task runs."""
    from pipeline.sources.urllist import iter_url_list_chunks, read_parquet_range

    if _format(source) == "parquet":
        read_parquet_range(
            source.url_list, 0, 0, url_col=source.url_col, caption_col=source.caption_col
        )
    else:  # the first rows are enough to know the columns
        chunks = iter_url_list_chunks(
            source.url_list,
            1000,
            url_col=source.url_col,
            caption_col=source.caption_col,
            input_format=source.input_format,
        )
        next(iter(chunks), None)


def url_list_parts(stage, run: StageRun, executor) -> list[str]:
    """Run the list's tasks (those not done) and return the parts, in source order."""
    from pipeline.sources.urllist import parquet_rows

    source = run.config.source
    if _format(source) != "parquet":
        if not run.is_done(STREAM):
            stage.run_tasks([run.task(STREAM, ListTask, stream=True)], executor, "URL list")
        return run.part_stats(STREAM).extra["parts"]
    n, total = source.rows_per_part, parquet_rows(source.url_list)
    parts = [part_name(i) for i in range(-(-total // n))]
    todo = [
        run.task(p, ListTask, first=i * n, end=min(total, (i + 1) * n))
        for i, p in enumerate(parts)
        if not run.is_done(p)
    ]
    stage.run_tasks(todo, executor, "URL list")
    return parts


def read_range(task: ListTask) -> PartOutput:
    from pipeline.sources.urllist import read_parquet_range

    source = task.config.source
    chunk = read_parquet_range(
        source.url_list,
        task.first,
        task.end,
        url_col=source.url_col,
        caption_col=source.caption_col,
    )
    return _output(chunk)


def stream(stage, task: ListTask) -> PartStats:
    """The text list from start to end, a part committed every --rows-per-part rows."""
    from pipeline.sources.urllist import iter_url_list_chunks

    source, run = task.config.source, StageRun(task.layout, stage, task.inputs)
    chunks = iter_url_list_chunks(
        source.url_list,
        rows_per_chunk=source.rows_per_part,
        url_col=source.url_col,
        caption_col=source.caption_col,
        input_format=source.input_format,
    )
    parts, started = [], time.perf_counter()
    for index, chunk in enumerate(chunks):
        parts.append(part_name(index))
        if not run.is_done(parts[-1]):
            stage.commit(run, parts[-1], _output(chunk), started)
        started = time.perf_counter()
    done = PartStats(extra={"parts": parts})
    run.mark_done(STREAM, done)
    return done


def _output(chunk) -> PartOutput:
    from pipeline.stages.sources import candidates_table

    table = chunk.table
    # A URL list has no pages, so no page_url; a missing caption matches no query.
    urls, captions = table["url"].to_pylist(), table["caption"].to_pylist()
    pairs = [(u, c or "", None) for u, c in zip(urls, captions, strict=True)]
    stats = PartStats(rows_in=chunk.rows_in, rows_out=len(pairs))
    stats.drop("empty_url", chunk.dropped_empty_url)
    stats.drop("malformed_row", chunk.dropped_malformed)
    return PartOutput(candidates_table(pairs), stats=stats)
