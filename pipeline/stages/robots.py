"""Stage `robots`: every origin's robots.txt, fetched once per build, before any image is.

Plan (DuckDB): the origins of every pending URL that the dataset has no robots.txt of yet (the
crawl records the ones it read), cut into parts of ORIGINS_PER_PART. Per part: one robots.txt
request per origin, through the fetch layer (address policy, byte cap, per-host limits), each
answer stored with its fetch time and status in DIR/manifests/origins/<part>.parquet, where
every later fetcher of the build, and a resumed build, finds it (pipeline.origins)."""

import asyncio
import json
from dataclasses import dataclass

from manifests.layout import write_json_atomic
from pipeline.origins import HTTP_SQL, ORIGIN_SQL, records_table
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
CONCURRENT = 64  # robots.txt requests in flight per task (each host sees one)


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
        done = f"SELECT origin FROM read_parquet({sql_files(known)})" if known else "SELECT NULL"
        origins = con.execute(
            f"""SELECT DISTINCT {ORIGIN_SQL} AS origin FROM read_parquet({rows})
                WHERE status = 'pending' AND {HTTP_SQL}
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
            statuses[record.status] = statuses.get(record.status, 0) + 1
        stats = PartStats(len(task.origins), len(records), extra={"statuses": statuses})
        return PartOutput(records_table(records), stats=stats)


async def _fetch_robots(task: RobotsTask) -> list:
    from pipeline.net.fetch import Fetcher

    gate = asyncio.Semaphore(CONCURRENT)
    async with Fetcher(task.config.net, resolver=task.resolver) as fetcher:

        async def one(origin: str) -> None:
            async with gate:
                await fetcher.robots.check(origin + "/")

        await asyncio.gather(*(one(o) for o in task.origins))
        return list(fetcher.robots.records)
