"""Stage bookkeeping in the manner of datatrove: a stage's work is split into parts; each finished
part leaves a completion marker holding its counts, so a rerun skips it and the stage's totals
(rows in, rows out, drops per reason, seconds) still add up over every part."""

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from manifests.layout import DatasetLayout, write_json_atomic

log = logging.getLogger(__name__)

# The order stages run in; it orders the `stats` view and the report's funnel.
STAGE_ORDER = {
    "sources": 10,
    "match": 20,
    "balance": 30,
    "text": 35,
    "images": 40,
    "dedup": 50,
    "clip": 55,
    "shards": 60,
}


@dataclass
class PartStats:
    rows_in: int = 0
    rows_out: int = 0
    drops: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.drops[reason] += n

    def to_json(self) -> dict:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "drops": dict(sorted(self.drops.items())),
            "seconds": round(self.seconds, 4),
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, record: dict) -> "PartStats":
        return cls(
            rows_in=record.get("rows_in", 0),
            rows_out=record.get("rows_out", 0),
            drops=Counter(record.get("drops", {})),
            seconds=record.get("seconds", 0.0),
            extra=record.get("extra", {}),
        )


class StageRun:
    """Markers and totals of one stage in one dataset folder."""

    def __init__(self, layout: DatasetLayout, stage: str):
        self.layout = layout
        self.stage = stage
        self.dir = layout.stage_dir(stage)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()

    def marker(self, part: str) -> Path:
        return self.dir / f"{part}.done"

    def is_done(self, part: str) -> bool:
        return self.marker(part).exists()

    def mark_done(self, part: str, stats: PartStats) -> None:
        write_json_atomic(stats.to_json(), self.marker(part))
        _crash_point(self.stage)

    def part_stats(self, part: str) -> PartStats:
        return PartStats.from_json(json.loads(self.marker(part).read_text()))

    def done_parts(self) -> list[str]:
        return sorted(p.name[: -len(".done")] for p in self.dir.glob("*.done"))

    def finish(self, parts: list[str] | None = None, extra: dict | None = None) -> dict:
        """Sum the markers of `parts` (all done parts by default) into DIR/stats/<stage>.json."""
        total = PartStats()
        for part in parts if parts is not None else self.done_parts():
            stats = self.part_stats(part)
            total.rows_in += stats.rows_in
            total.rows_out += stats.rows_out
            total.drops.update(stats.drops)
            total.seconds += stats.seconds
        record = {
            "stage": self.stage,
            "order": STAGE_ORDER.get(self.stage, 99),
            **total.to_json(),
            "wall_seconds": round(time.perf_counter() - self.started, 4),
        }
        if extra:
            record["extra"] = extra
        write_json_atomic(record, self.layout.stats / f"{self.stage}.json")
        log.info(
            "stage %s: %d in, %d out, drops %s",
            self.stage,
            total.rows_in,
            total.rows_out,
            dict(total.drops),
        )
        return record


def run_parts(layout: DatasetLayout, stage: str, parts: list[str], executor, task_fn, **shared):
    """Run `task_fn({"root", "part", **shared})` for every part of `stage` without a marker
    (as Ray tasks or in-process, by `executor`), with a progress bar; then total the stage."""
    from tqdm import tqdm

    run = StageRun(layout, stage)
    todo = [
        {"root": str(layout.root), "part": part, **shared}
        for part in parts
        if not run.is_done(part)
    ]
    for _ in tqdm(executor.map(task_fn, todo), total=len(todo), desc=stage, leave=False):
        pass
    run.finish(parts)


_marked: Counter = Counter()


def _crash_point(stage: str) -> None:
    """Test hook: CLIPENGINE_CRASH_AFTER=stage:N ends the process abruptly (as a kill would)
    after this process has finished N parts of `stage`."""
    spec = os.environ.get("CLIPENGINE_CRASH_AFTER", "")
    if not spec.startswith(stage + ":"):
        return
    _marked[stage] += 1
    if _marked[stage] >= int(spec.split(":", 1)[1]):
        log.warning("CLIPENGINE_CRASH_AFTER=%s: exiting now", spec)
        os._exit(17)


def read_samples_part(layout: DatasetLayout, stage: str, part: str):
    """The samples rows of `part` as stage `stage` left them (schema.SAMPLES)."""
    import pyarrow.parquet as pq

    from manifests import schema

    return pq.read_table(layout.stage_dir(stage) / f"{part}.parquet", schema=schema.SAMPLES)


def write_decisions(run: StageRun, previous: str, parts: list[str], updates: dict,
                    seconds: float, fill=None) -> None:  # fmt: skip
    """The per-part half of a stage that decides over the whole run (dedup, clip): every row of
    `previous` still pending gets `fill(row)` (columns the stage adds to each one), then its
    update from `updates` (uid → a drop: status, error, ...) if any; rows, counts and a marker
    per part. `seconds` is the stage's time per part."""
    import pyarrow as pa

    from manifests import schema
    from manifests.layout import write_parquet_atomic

    for part in parts:
        rows = read_samples_part(run.layout, previous, part).to_pylist()
        stats = PartStats(seconds=seconds)
        for row in rows:
            if row["status"] != schema.PENDING:
                continue
            stats.rows_in += 1
            if fill is not None:
                fill(row)
            update = updates.get(row["uid"])
            if update:
                row.update(update)
                stats.drop(update["status"])
            else:
                stats.rows_out += 1
        table = pa.Table.from_pylist(rows, schema=schema.SAMPLES)
        write_parquet_atomic(table, run.dir / f"{part}.parquet")
        run.mark_done(part, stats)


def publish_samples(layout: DatasetLayout, stage: str, parts: list[str]) -> None:
    """Make stage `stage`'s samples rows the dataset's manifests (hard links: no copy)."""
    import os

    for part in parts:
        src = layout.stage_dir(stage) / f"{part}.parquet"
        dst = layout.samples / f"{part}.parquet"
        tmp = dst.with_name(f".{dst.name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:  # another filesystem: copy instead
            import shutil

            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
