"""The one stage interface, in the manner of datatrove's PipelineStep.

A stage declares its `name`, its `inputs` (the stage whose rows it transforms first, then any
stage whose side files it reads), how it splits into parts (`tasks`, by default one per part of
the build), its per-part work (`process(task, rows) -> PartOutput`) and, optionally, global steps
in the driver: `plan` before the parts and `summarise` after them, which combine small per-part
summaries. The base class does the rest for every stage alike: it reads a part's input rows,
writes its outputs through the layout's one commit point, times it, counts rows in and out and
drops per reason (from the status changes; a stage adds counts the statuses cannot show, such as
rows it removed), checks every status against schema.DropReason, and writes the part's marker
last, so a rerun skips the part and a crash before the marker redoes all of it.

Layout: DIR/work/<stage>/<part>.<token>.parquet (rows), <part>.<kind>.<token>.parquet (side
files), <part>.done (marker: the part's counts and the names of its files: the commit, see
manifests.commit), plan.done, committed.json (every part's files, written when the stage
finishes); DIR/stats/<stage>.json (the totals). DIR may be a local folder or an object store.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from manifests import commit, schema, storage
from manifests.layout import DatasetLayout, read_json, write_json_atomic, write_parquet_atomic
from manifests.storage import Location

if TYPE_CHECKING:
    import pyarrow as pa

    from pipeline.buildconfig import BuildConfig

log = logging.getLogger(__name__)


@dataclass
class PartStats:
    rows_in: int = 0
    rows_out: int = 0
    drops: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)  # small per-part figures (summaries for a stage)
    peak_rss_mb: float = 0.0  # the peak memory of the process that ran the part (totals: max)
    files: dict = field(default_factory=dict)  # what the part committed: kind -> root-relative

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.drops[reason] += n

    def add(self, other: PartStats) -> None:
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.drops.update(other.drops)
        self.seconds += other.seconds
        self.peak_rss_mb = max(self.peak_rss_mb, other.peak_rss_mb)

    def to_json(self) -> dict:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "drops": dict(sorted(self.drops.items())),
            "seconds": round(self.seconds, 4),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "extra": self.extra,
            **({"files": self.files} if self.files else {}),
        }

    @classmethod
    def from_json(cls, record: dict) -> PartStats:
        return cls(
            rows_in=record.get("rows_in", 0),
            rows_out=record.get("rows_out", 0),
            drops=Counter(record.get("drops", {})),
            seconds=record.get("seconds", 0.0),
            extra=record.get("extra", {}),
            peak_rss_mb=record.get("peak_rss_mb", 0.0),
            files=record.get("files", {}),
        )


@dataclass(frozen=True)
class PartTask:
    """What a worker needs to run one part: small, picklable, no open handles."""

    stage: str
    root: str  # the dataset folder
    part: str
    inputs: tuple[str, ...]  # the stage's declared inputs, resolved to stages that run
    config: BuildConfig
    resolver: Any = None  # fake DNS in tests; None: the system's

    @property
    def layout(self) -> DatasetLayout:
        return DatasetLayout(self.root)

    @property
    def work_dir(self) -> Location:
        """The stage's own folder (where its plan wrote what the parts read)."""
        return self.layout.stage_dir(self.stage)


@dataclass
class PartOutput:
    rows: pa.Table | None  # the part's rows for the next stage (None: the stage writes none)
    files: dict[str, pa.Table] = field(default_factory=dict)  # kind -> <part>.<kind>.parquet
    stats: PartStats = field(default_factory=PartStats)  # counts beyond the status changes


class Stage:
    name: ClassVar[str]  # as the registry (pipeline.stages.registry) lists it
    inputs: ClassVar[tuple[str, ...]] = ()
    samples: ClassVar[bool] = True  # its rows are `samples` rows: drops counted from statuses
    reads_part_rows: ClassVar[bool] = True  # the base reads the part's input rows for process()
    in_stats: ClassVar[bool] = True  # a row in the `stats` view (DIR/stats/<stage>.json)
    unit: ClassVar[str] = "rows"  # what its rows in/out count: rows, or urls, origins, ...
    pooled: ClassVar[bool] = False  # its parts run on a pool of Ray actors (a model each)

    # --- what a stage declares ------------------------------------------------------------
    def enabled(self, config: BuildConfig) -> bool:
        return True

    def plan(self, run: StageRun) -> None:
        """Optional global step before the parts (in the driver): small files in run.dir."""

    def tasks(self, run: StageRun) -> list[PartTask]:
        """The parts still to do; by default one per part of the build."""
        return [run.task(part) for part in run.parts if not run.is_done(part)]

    def process(self, task: PartTask, rows: pa.Table | None) -> PartOutput:
        """The per-part work: the part's input rows (None for a stage without inputs) in, its
        rows, side files and any counts the statuses cannot show out. Writes nothing itself."""
        raise NotImplementedError(f"stage {self.name} has no per-part work")

    def summarise(self, run: StageRun, parts: dict[str, PartStats]) -> dict | None:
        """Optional global step after the parts: figures for stats/<stage>.json's `extra`."""
        return None

    def check_config(self, run: StageRun) -> None:
        """Checks in the driver before any stage of the build runs (a bad model fails now)."""

    def task_resources(self, config: BuildConfig) -> dict:
        """What a task needs beyond one CPU: {"num_gpus": 1} where a GPU helps (a cluster
        without GPUs runs it on a CPU)."""
        return {}

    def all_parts(self, run: StageRun) -> list[str]:
        """Every part of the stage, done or not (what its stats add up)."""
        return run.parts

    def rows_target(self, layout: DatasetLayout, part: str) -> Location:
        """Where a part's rows go (the commit adds a token to the name)."""
        return layout.stage_dir(self.name) / f"{part}.parquet"

    def file_target(self, layout: DatasetLayout, part: str, kind: str) -> Location:
        return layout.stage_dir(self.name) / f"{part}.{kind}.parquet"

    def rows_path(self, layout: DatasetLayout, part: str) -> Location:
        """The committed rows of a finished part (its marker names them)."""
        return self.committed_path(layout, part, "rows")

    def file_path(self, layout: DatasetLayout, part: str, kind: str) -> Location:
        return self.committed_path(layout, part, kind)

    def committed_path(self, layout: DatasetLayout, part: str, kind: str) -> Location:
        files = read_json(layout.stage_dir(self.name) / f"{part}.done", {}).get("files")
        if files is None:  # not done, or written before markers named files
            return (
                self.rows_target(layout, part)
                if kind == "rows"
                else self.file_target(layout, part, kind)
            )
        if kind not in files:
            raise FileNotFoundError(f"stage {self.name}, part {part}: no {kind} file committed")
        return layout.root / files[kind]

    def execute(self, run: StageRun, executor) -> dict:
        """plan (once), the parts not done (as tasks of `executor`), summarise, totals."""
        run.sweep()
        if type(self).plan is not Stage.plan and not run.is_done("plan"):
            run.parallelism, run.executor = executor.parallelism(), executor
            started = time.perf_counter()
            self.plan(run)
            run.mark_done("plan", PartStats(seconds=time.perf_counter() - started))
        self.run_tasks(self.tasks(run), executor)
        parts = self.all_parts(run)
        extra = self.summarise(run, {p: run.part_stats(p) for p in parts})
        return run.finish(parts, extra)

    # --- what the base class does -----------------------------------------------------------
    def run_tasks(self, tasks: list[PartTask], executor, desc: str | None = None) -> None:
        """Run parts as tasks of `executor` (Ray tasks named `<stage>:<part>`, or in-process),
        with a progress bar."""
        from tqdm import tqdm

        config = tasks[0].config if tasks else None
        resources = self.task_resources(config) if config is not None else None
        results = executor.map(
            run_stage_part, tasks, name=task_name, resources=resources, pool=self.pooled
        )
        for _ in tqdm(
            results, total=len(tasks), desc=desc or self.name, leave=False, disable=len(tasks) < 2
        ):
            pass

    def run_part(self, task: PartTask) -> PartStats:
        """Read, process, write, count, check and mark one part (in a worker or in-process)."""
        started = time.perf_counter()
        rows = self.read_rows(task) if self.inputs and self.reads_part_rows else None
        output = self.process(task, rows)
        if self.samples and output.rows is not None:
            self._count_statuses(rows, output.rows, output.stats, task)
        run = StageRun(task.layout, self, task.inputs)
        return self.commit(run, task.part, output, started)

    def commit(self, run: StageRun, part: str, output: PartOutput, started: float) -> PartStats:
        """Write a part's outputs under names no other attempt uses, then the marker that
        names them: the marker is the commit (manifests.commit)."""
        check_drop_counters(self.name, output.stats)  # before anything is written
        token, layout = commit.new_token(), run.layout
        for kind, table in output.files.items():
            path = commit.tokened(self.file_target(layout, part, kind), token)
            write_parquet_atomic(table, path, row_group_size=1000)
            output.stats.files[kind] = commit.relative(layout, path)
        if output.rows is not None:
            path = commit.tokened(self.rows_target(layout, part), token)
            write_parquet_atomic(output.rows, path)
            output.stats.files["rows"] = commit.relative(layout, path)
        output.stats.seconds = time.perf_counter() - started
        output.stats.peak_rss_mb = peak_rss_mb()
        run.mark_done(part, output.stats)
        return output.stats

    def _count_statuses(self, before, after, stats: PartStats, task: PartTask) -> None:
        """rows_in: the input rows still pending (all of them if the input has no status);
        rows_out: those still pending (or kept) after the stage; the others count as drops
        under their new status. Rows the stage removed it counts itself (PartOutput.stats)."""
        statuses = after["status"].to_pylist()
        schema.check_statuses(statuses, where=f"stage {self.name}, part {task.part}")
        if before is None or "status" not in before.column_names:
            pending = None  # every input row was pending
            stats.rows_in += 0 if before is None else before.num_rows
        else:
            flags = [s == schema.PENDING for s in before["status"].to_pylist()]
            pending = {u for u, p in zip(before["uid"].to_pylist(), flags, strict=True) if p}
            stats.rows_in += len(pending)
        for uid, status in zip(after["uid"].to_pylist(), statuses, strict=True):
            if pending is not None and uid not in pending:
                continue
            if status in (schema.PENDING, schema.KEPT):
                stats.rows_out += 1
            else:
                stats.drop(status)

    def input_stage(self, task: PartTask, stage: str) -> Stage:
        """The stage that provides declared input `stage` in this build."""
        from pipeline.stages import registry

        if stage not in self.inputs:
            raise ValueError(f"stage {self.name} reads {stage!r}, which it does not declare")
        return registry.get(task.inputs[self.inputs.index(stage)])

    def read_rows(self, task: PartTask, columns: list[str] | None = None):
        """The part's rows as the stage's first input left them (samples schema if they are)."""
        return self.read(task, self.inputs[0], columns=columns)

    def read(
        self,
        task: PartTask,
        stage: str,
        kind: str | None = None,
        part: str | None = None,
        columns: list[str] | None = None,
        filters=None,
    ):
        """A part's rows (or `kind` side file) of input `stage`, one of this stage's inputs."""

        source, part = self.input_stage(task, stage), part or task.part
        path = (
            source.file_path(task.layout, part, kind)
            if kind
            else source.rows_path(task.layout, part)
        )
        table_schema = schema.SAMPLES if kind is None and source.samples else None
        return storage.read_table(path, columns=columns, filters=filters, schema=table_schema)


def planning_db(run: StageRun):
    """A DuckDB connection for a stage's plan: memory capped (--driver-memory-mb), spilling to
    the stage's folder past it, so the driver's memory does not grow with the rows."""

    from manifests.storage import duckdb_connect, local_scratch

    con = duckdb_connect(run.layout.root)
    limit = run.config.execution.driver_memory_mb if run.config else 2048
    con.execute(f"SET memory_limit = '{limit}MB'")
    spill = run.dir / ".duckdb-spill" if run.dir.is_local else local_scratch("duckdb-spill")
    con.execute(f"SET temp_directory = '{spill}'")
    con.execute("SET preserve_insertion_order = false")  # every plan orders what it writes
    return con


def check_drop_counters(stage: str, stats: PartStats) -> None:
    """Raise ValueError (a bug) on a drop counter outside schema.DropReason."""
    unknown = sorted(r for r in stats.drops if not schema.is_drop_counter(r))
    if unknown:
        raise ValueError(f"stage {stage}: drop reasons outside schema.DropReason: {unknown}")


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB. On Linux its VmHWM: getrusage's
    ru_maxrss carries the spawning process's high-water mark across exec (a worker started by a
    big driver would report the driver's peak)."""
    import re
    import resource
    import sys

    try:
        with open("/proc/self/status") as status:
            found = re.search(r"VmHWM:\s+(\d+) kB", status.read())
        if found:
            return int(found.group(1)) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def sql_files(paths) -> str:
    """A DuckDB list literal of file paths or URIs (a connection from
    manifests.storage.duckdb_connect reads s3:// and gs:// ones)."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def task_name(task: PartTask) -> str:
    """A part's task name on a Ray dashboard: `images:list-00003`."""
    return f"{task.stage}:{task.part}"


def run_stage_part(task: PartTask) -> PartStats:
    """The function executors map over tasks (Ray remote functions cannot be bound methods)."""
    from pipeline.stages import registry

    return registry.get(task.stage).run_part(task)


class StageRun:
    """One stage in one dataset folder: its folder, markers, parts and totals (driver side)."""

    def __init__(
        self,
        layout: DatasetLayout,
        stage: Stage,
        inputs: tuple[str, ...],
        config: BuildConfig | None = None,
        resolver=None,
    ):
        self.layout, self.stage, self.inputs = layout, stage, inputs
        self.config, self.resolver = config, resolver
        self.parallelism = 1  # tasks the executor runs at once (set for a stage's plan)
        self.executor = None  # set for a stage's plan: a plan may run tasks of its own
        self.dir = layout.stage_dir(stage.name)
        self.started = time.perf_counter()

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def parts(self) -> list[str]:
        """The build's parts, in source order (the sources stage lists them in work/parts.json)."""
        from manifests.config import ConfigError

        path = self.layout.work / "parts.json"
        if not path.exists():
            raise ConfigError(f"{self.layout.root}: the sources stage has not finished; run it")
        return read_json(path)

    def task(self, part: str, cls=PartTask, **extra) -> PartTask:
        return cls(
            self.name, str(self.layout.root), part, self.inputs, self.config, self.resolver, **extra
        )

    def rows_path(self, part: str) -> Location:
        return self.stage.rows_path(self.layout, part)

    def file_path(self, part: str, kind: str) -> Location:
        return self.stage.file_path(self.layout, part, kind)

    def input(self, stage: str) -> Stage:
        """The stage that provides declared input `stage` in this build."""
        from pipeline.stages import registry

        return registry.get(self.inputs[self.stage.inputs.index(stage)])

    def input_rows_paths(self, stage: str, parts: list[str] | None = None) -> list[Location]:
        return self.input_file_paths(stage, "rows", parts)

    def input_file_paths(self, stage: str, kind: str, parts: list[str] | None = None):
        """The committed `kind` files of input `stage`'s parts (from its committed.json when
        it has finished, one read; else from each part's marker)."""
        source = self.input(stage)
        index_path = self.layout.stage_dir(source.name) / "committed.json"
        index = read_json(index_path, {})
        paths = []
        for part in parts or self.parts:
            files = index.get(part)
            if files is not None and kind in files:
                paths.append(self.layout.root / files[kind])
            else:
                paths.append(source.committed_path(self.layout, part, kind))
        return paths

    def marker(self, part: str) -> Location:
        return self.dir / f"{part}.done"

    def is_done(self, part: str) -> bool:
        return self.marker(part).exists()

    def markers(self) -> dict[str, dict]:
        """Every marker of the stage, read in parallel (an object store answers each in ms)."""
        from concurrent.futures import ThreadPoolExecutor

        paths = self.dir.glob("*.done")
        with ThreadPoolExecutor(16) as pool:
            return dict(zip((p.stem for p in paths), pool.map(read_json, paths), strict=True))

    def sweep(self) -> None:
        """Remove data files a killed attempt left in the stage's folder: files no marker
        names (the common case, nothing listed beyond committed.json, reads no marker)."""
        index_path = self.dir / "committed.json"
        index = read_json(index_path, {})
        known = {self.layout.root / rel for files in index.values() for rel in files.values()}
        listed = [p for p in self.dir.glob("*.parquet") if commit.is_part_file(p.name)]
        if all(p in known for p in listed):
            return
        referenced = {
            self.layout.root / rel
            for record in self.markers().values()
            for rel in record.get("files", {}).values()
        }
        swept = commit.sweep_stage(self.dir, referenced)
        if swept:
            log.info("stage %s: removed %d files of unfinished attempts", self.name, swept)

    def mark_done(self, part: str, stats: PartStats) -> None:
        unknown = sorted(r for r in stats.drops if not schema.is_drop_counter(r))
        if unknown:
            raise ValueError(
                f"stage {self.name}: drop reasons outside schema.DropReason: {unknown}"
            )
        write_json_atomic(stats.to_json(), self.marker(part))

    def part_stats(self, part: str) -> PartStats:
        return PartStats.from_json(read_json(self.marker(part)))

    def finish(self, parts: list[str], extra: dict | None = None) -> dict:
        """Sum the markers of `parts` (and the plan's seconds) into DIR/stats/<stage>.json."""
        from concurrent.futures import ThreadPoolExecutor

        from pipeline.stages import registry

        total, index = PartStats(), {}
        names = parts + (["plan"] if self.is_done("plan") else [])
        with ThreadPoolExecutor(16) as pool:  # an object store answers each read in ms
            read = list(pool.map(self.part_stats, names))
        for part, stats in zip(names, read, strict=True):
            total.add(stats)
            if stats.files:
                index[part] = stats.files
        write_json_atomic(index, self.dir / "committed.json")
        record = {
            "stage": self.name,
            "order": registry.order(self.name),
            "unit": self.stage.unit,
            **total.to_json(),
            "wall_seconds": round(time.perf_counter() - self.started, 4),
        }
        if extra:
            record["extra"] = extra
        if self.stage.in_stats:
            write_json_atomic(record, self.layout.stats / f"{self.name}.json")
        log.info(
            "stage %s: %d in, %d out, drops %s",
            self.name,
            total.rows_in,
            total.rows_out,
            dict(total.drops),
        )
        return record
