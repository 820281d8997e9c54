"""Stage `text`: language ID and caption filters, before any image is fetched.

Every row gets `lang` and `lang_score` (the report's language histogram covers all candidates);
only rows still `pending` can be dropped here, with the filter's stable reason."""

import time
from pathlib import Path

from manifests import schema
from manifests.layout import DatasetLayout, write_parquet_atomic
from pipeline.stages.base import PartStats, StageRun, read_samples_part, run_parts

STAGE = "text"


def filter_part(task: dict) -> dict:
    import pyarrow as pa

    from pipeline.filters.text import filter_captions

    started = time.perf_counter()
    layout = DatasetLayout(Path(task["root"]))
    rows = read_samples_part(layout, task["previous"], task["part"]).to_pylist()
    verdicts = filter_captions([r["caption"] for r in rows], task["config"])
    stats = PartStats()
    for row, verdict in zip(rows, verdicts, strict=True):
        row["lang"], row["lang_score"] = verdict.lang, verdict.lang_score
        if row["status"] != schema.PENDING:
            continue
        stats.rows_in += 1
        if verdict.status == "kept":
            stats.rows_out += 1
        else:
            row["status"], row["error"] = verdict.status, verdict.error
            stats.drop(verdict.status)
    run = StageRun(layout, STAGE)
    write_parquet_atomic(
        pa.Table.from_pylist(rows, schema=schema.SAMPLES), run.dir / f"{task['part']}.parquet"
    )
    stats.seconds = time.perf_counter() - started
    run.mark_done(task["part"], stats)
    return {"part": task["part"]}


def run_text(layout, parts: list[str], previous: str, config, executor) -> None:
    run_parts(layout, STAGE, parts, executor, filter_part, previous=previous, config=config)
