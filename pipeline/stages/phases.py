"""Phases of tasks inside a stage's plan: a shuffle over files, as dedup and SemDeDup need.

A run-wide decision (exact duplicates across the build, a cluster that spans parts) cannot be
made part by part. Its plan runs phases of tasks instead: a *map* phase, one task per part,
writes each row under a bucket (a hash of the key it is grouped by) into one file per part sorted
by bucket; a *reduce* phase, one task per bucket, reads its bucket of every part's file (Parquet
row-group statistics skip the rest) and decides. Every task writes its file through the one
commit point and then its marker, DIR/work/<stage>/phases/<task>.done, so a killed build redoes
only the tasks that had not finished; the driver only lists tasks and waits.

A task's name is `<phase>-<unit>` (`hash-list-00003`, `exact-7`); the stage's
`run_phase(task) -> PartStats` does the work."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from manifests import storage
from manifests.layout import write_json_atomic
from pipeline.stages.base import PartStats, PartTask, StageRun, peak_rss_mb, task_name

GOLDEN = 0x9E3779B97F4A7C15  # Fibonacci hashing: spreads consecutive keys over buckets


@dataclass(frozen=True)
class PhaseTask(PartTask):
    parts: tuple[str, ...] = ()  # every part of the build, in source order
    figures: dict = field(default_factory=dict)  # the plan's figures (buckets, thresholds...)

    @property
    def phase(self) -> str:
        return self.part.partition("-")[0]

    @property
    def unit(self) -> str:
        """The part or bucket the task works on."""
        return self.part.partition("-")[2]

    @property
    def part_index(self) -> int:
        return self.parts.index(self.unit)

    def path(self, kind: str, unit: str | None = None):
        """A phase file: work/<stage>/phases/<kind>/<unit>.parquet."""
        return phase_dir(self.layout, self.stage) / kind / f"{unit or self.unit}.parquet"


def phase_dir(layout, stage: str):
    return layout.stage_dir(stage) / "phases"


def bucket_of(values, buckets: int):
    """Bucket (int64) of each uint64 key: a multiplicative hash, so similar keys spread out."""
    import numpy as np

    mixed = np.asarray(values, dtype=np.uint64) * np.uint64(GOLDEN)
    return ((mixed >> np.uint64(32)) % np.uint64(buckets)).astype(np.int64)


def read_bucket(task: PhaseTask, kind: str, bucket: int, columns=None, units=None):
    """Bucket `bucket` of every `kind` file of a map phase (one per part, or per `units`), in
    order; each file is sorted by its `bucket` column."""
    import pyarrow as pa

    tables = [
        storage.read_table(task.path(kind, u), columns=columns, filters=[("bucket", "=", bucket)])
        for u in (task.parts if units is None else units)
    ]
    return pa.concat_tables(tables)


def read_part(layout, stage: str, kind: str, buckets: int, part_index: int, columns=None):
    """Part `part_index`'s rows of every bucket's `kind` file (each sorted by part_index)."""
    import pyarrow as pa

    folder = phase_dir(layout, stage) / kind
    where = [("part_index", "=", part_index)]
    tables = [
        storage.read_table(folder / f"{b}.parquet", columns=columns, filters=where)
        for b in range(buckets)
    ]
    return pa.concat_tables(tables)


def run_phase_task(task: PhaseTask) -> PartStats:
    """What executors map: the stage's run_phase, then the task's marker."""
    from pipeline.stages import registry

    started = time.perf_counter()
    stats = registry.get(task.stage).run_phase(task)
    stats.seconds, stats.peak_rss_mb = time.perf_counter() - started, peak_rss_mb()
    write_json_atomic(stats.to_json(), phase_dir(task.layout, task.stage) / f"{task.part}.done")
    return stats


def run_phases(
    run: StageRun, executor, phases: list[list[str]], figures: dict, parts=None, resources=None
) -> None:
    """Each phase's tasks not done yet, phase after phase (a phase reads the one before).
    `parts`: the build's parts (default: work/parts.json; the sources stage has none yet);
    `resources`: phase kind ("hash" of "hash-<part>") -> what its tasks need beyond one CPU
    ({"num_gpus": 1}: a GPU where the cluster has any)."""
    folder = phase_dir(run.layout, run.name)
    parts = tuple(run.parts if parts is None else parts)
    for names in phases:
        todo = [
            run.task(name, cls=PhaseTask, parts=parts, figures=figures)
            for name in names
            if not (folder / f"{name}.done").exists()
        ]
        wants = (resources or {}).get(names[0].split("-")[0]) if names else None
        for _ in executor.map(run_phase_task, todo, name=task_name, resources=wants):
            pass


def phase_stats(run: StageRun, name: str) -> PartStats:
    import json

    path = phase_dir(run.layout, run.name) / f"{name}.done"
    return PartStats.from_json(json.loads(path.read_text()))


def fixed_figures(run: StageRun, figures: dict) -> dict:
    """The figures the phases were first planned with (a resumed build may run on a cluster of
    another size, but its bucket files were cut by the first plan's count)."""
    import json

    path = phase_dir(run.layout, run.name) / "plan.json"
    if path.exists():
        return json.loads(path.read_text())
    write_json_atomic(figures, path)
    return figures
