"""Stage `robots`: every origin's per-origin files, fetched once per build, before any image is.

Plan (DuckDB): the origins of every pending URL that the dataset lacks one of the per-origin
files of (robots.txt, tdmrep.json, ai.txt; the crawl records the ones it read), cut into parts of
ORIGINS_PER_PART. Per part: one request per file per origin, through the fetch layer (address
policy, byte cap, per-host limits), each answer stored with its fetch time and status in
DIR/manifests/origins/<part>.parquet, where every later fetcher of the build, and a resumed
build, finds it (pipeline.origins)."""

import asyncio
import json
from dataclasses import dataclass

from manifests.layout import write_json_atomic
from pipeline.origins import FILES, HTTP_SQL, ORIGIN_SQL, records_table
from pipeline.stages.base import (
    PartOutput,
    PartStats,
    PartTask,
    Stage,
    StageRun,
    planning_db,
    sql_files,
)

ORIGINS_PER_PART = 1000
CONCURRENT = 64  # origins whose files are asked for at once per task


@dataclass(frozen=True)
class RobotsTask(PartTask):
    origins: tuple[str, ...] = ()


class RobotsStage(Stage):
    name, inputs, samples = "robots", ("text",), False
    reads_part_rows = False  # its parts are groups of origins, not parts of the build
    unit = "origins"

    def enabled(self, config) -> bool:
        return config.fetch and config.net.respect_robots

    def rows_target(self, layout, part: str):
        return layout.origins / f"{part}.parquet"

    def plan(self, run: StageRun) -> None:
        con = planning_db(run)
        rows = sql_files(run.input_rows_paths("text"))
        known = sorted(run.layout.origins.glob("*.parquet")) if run.layout.origins.is_dir() else []
        done = (
            f"""SELECT origin FROM read_parquet({sql_files(known)}) GROUP BY origin
                HAVING count(DISTINCT file) = {len(FILES)}"""
            if known
            else "SELECT NULL"
        )
        urls = f"SELECT url FROM read_parquet({rows}) WHERE status = 'pending'"
        if not run.config.source.seeds:  # pages the build does not read: their files count
            urls += f" UNION ALL SELECT page_url FROM read_parquet({rows}) WHERE status = 'pending'"
        origins = con.execute(
            f"""SELECT DISTINCT {ORIGIN_SQL} AS origin FROM ({urls})
                WHERE url IS NOT NULL AND {HTTP_SQL}
                EXCEPT ({done}) ORDER BY origin"""
        ).fetchall()  # one row per origin: small beside the rows
        parts = {}
        for i in range(0, len(origins), ORIGINS_PER_PART):
            parts[f"robots-{i // ORIGINS_PER_PART:05d}"] = [
                o for (o,) in origins[i : i + ORIGINS_PER_PART]
            ]
        write_json_atomic(parts, run.dir / "plan.json")

    def _plan(self, run: StageRun) -> dict:
        return json.loads((run.dir / "plan.json").read_text())

    def all_parts(self, run: StageRun) -> list[str]:
        return sorted(self._plan(run))

    def tasks(self, run: StageRun) -> list[PartTask]:
        plan = sorted(self._plan(run).items())
        return [run.task(p, RobotsTask, origins=tuple(o)) for p, o in plan if not run.is_done(p)]

    def process(self, task: RobotsTask, rows) -> PartOutput:
        records = asyncio.run(_fetch_robots(task))
        statuses: dict[str, int] = {}
        for record in records:
            key = f"{record.file} {record.status}"
            statuses[key] = statuses.get(key, 0) + 1
        stats = PartStats(len(task.origins), len(records), extra={"statuses": statuses})
        return PartOutput(records_table(records), stats=stats)


async def _fetch_robots(task: RobotsTask) -> list:
    from yarl import URL

    from pipeline.net.fetch import Fetcher
    from pipeline.origins import read_records

    gate = asyncio.Semaphore(CONCURRENT)
    known = read_records(task.layout, set(task.origins))  # an origin may lack one file only
    async with Fetcher(task.config.net, resolver=task.resolver, robots=known) as fetcher:

        async def one(origin: str) -> None:
            async with gate:
                url = URL(origin + "/")
                await asyncio.gather(*(cache.get(url) for cache in fetcher.origin_files))

        await asyncio.gather(*(one(o) for o in task.origins))
        return fetcher.origin_records()
