"""Stage `fetch`: every distinct pending image URL fetched once, by tasks that own its host.

Plan (DuckDB, memory-capped, in the driver): the distinct URLs of every pending row, grouped
by host. Hosts with at most `urls_per_fetch_part` URLs are packed, in a hash order of host
names, into *lanes* of about that many URLs; a host with more is split into k = min(
per_host_concurrency, tasks the executor runs at once, ceil(n / urls_per_fetch_part)) lanes,
each holding 1/k of its budget
(pipeline.net.ratelimit: concurrency // k, and every k-th slot of the spacing). A lane is cut
into parts of at most `urls_per_fetch_part` URLs that one task runs one after the other, each
with its own marker; lanes run in parallel. So a host's requests, over the whole cluster, stay
within its per-host limits, and a URL that many rows share is fetched once.

Per part: fetch, check, resize and hash (the images stage's per-URL work), and write one row per
URL (FETCHED) to work/fetch/<part>.parquet, with what every opt-out signal said of it (its
`consent`: pipeline.net.consent); a URL its origin's files refuse is not requested. The per-origin
files come from the dataset's store (the `robots` stage fetched them), and any the task had to
fetch itself (a redirect's new origin) are stored. work/fetch/where/part=<build part>/ says, per build part, which fetch part holds each of
its URLs, for the `images` stage."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from manifests import schema, storage
from manifests.layout import write_json_atomic
from pipeline.origins import records_table
from pipeline.stages.base import PartOutput, PartStats, PartTask, Stage, StageRun, planning_db

MAX_QUEUED = 32  # fetched image bodies waiting to be resized, per task (memory bound)
# Fetch statuses that are manifest statuses as they are; anything else is `fetch_failed`.
FETCH_STATUSES = {"robots_disallowed", "opted_out", "blocked_address", "too_large", "fetch_failed"}
FETCHED = {  # one row per URL: what the images stage copies into its rows and side file
    "url": "string",
    "status": "string",
    "error": "string",
    "width": "int32",
    "height": "int32",
    "original_width": "int32",
    "original_height": "int32",
    "sha256": "string",
    "phash": "string",
    "image": "binary",
    "exif": "string",
    "phash256": "string",
    "phash256_trim": "string",
    "consent": schema.CONSENT,
}


@dataclass(frozen=True)
class LaneTask(PartTask):
    lane: int = 0
    subs: int = 1  # parts of the lane, run in order


def part_name(lane: int, sub: int) -> str:
    return f"lane{lane:06d}-{sub:05d}"


class FetchStage(Stage):
    name, inputs, samples = "fetch", ("text",), False
    unit = "urls"  # rows in: distinct URLs; rows out: those whose image was kept

    def enabled(self, config) -> bool:
        return config.fetch

    def plan(self, run: StageRun) -> None:
        from pipeline.stages.fetchplan import plan_lanes

        lanes = plan_lanes(planning_db(run), run)
        write_json_atomic(lanes, run.dir / "lanes.json")

    def _lanes(self, run: StageRun) -> dict[str, int]:
        return json.loads((run.dir / "lanes.json").read_text())

    def all_parts(self, run: StageRun) -> list[str]:
        return [
            part_name(int(lane), s) for lane, subs in self._lanes(run).items() for s in range(subs)
        ]

    def tasks(self, run: StageRun) -> list[PartTask]:
        todo = []
        for lane, subs in self._lanes(run).items():
            if not all(run.is_done(part_name(int(lane), s)) for s in range(subs)):
                todo.append(run.task(part_name(int(lane), 0), LaneTask, lane=int(lane), subs=subs))
        return todo

    def run_part(self, task: LaneTask) -> PartStats:
        """A lane: its parts in order, each committed with its own marker (a killed lane
        resumes at its first unfinished part), all through one fetcher, so the hosts' limits
        and robots.txt carry from one part to the next."""
        return asyncio.run(self._run_lane(task))

    async def _run_lane(self, task: LaneTask) -> PartStats:

        from pipeline.net.fetch import Fetcher
        from pipeline.origins import read_records

        run = StageRun(task.layout, self, task.inputs)
        plan = storage.read_table(
            task.work_dir / "plan.parquet",
            columns=["url", "sub", "k", "slot"],
            filters=[("lane", "=", task.lane)],
        ).to_pylist()
        shares, origins = _shares_and_origins(plan)
        fetcher = Fetcher(
            task.config.image_fetch(),
            resolver=task.resolver,
            shares=shares,
            robots=read_records(task.layout, origins),
            skip_opted_out=True,
        )
        total, stored = PartStats(), set()  # ids of the file records already put in the store
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="resize") as pool:
            async with fetcher:
                for sub in range(task.subs):
                    part = part_name(task.lane, sub)
                    if run.is_done(part):
                        continue
                    started = time.perf_counter()
                    urls = [r["url"] for r in plan if r["sub"] == sub]
                    outcomes = await _fetch(fetcher, pool, urls, task.config.images)
                    robots = [r for r in fetcher.origin_records() if id(r) not in stored]
                    stored.update(map(id, robots))
                    output = _output(urls, outcomes, robots)
                    total.add(self.commit(run, part, output, started))
        return total

    def where_dir(self, layout, part: str):
        """Which fetch part holds each pending URL of build part `part` (written by the plan)."""
        return layout.stage_dir(self.name) / "where" / f"part={part}"

    def file_target(self, layout, part: str, kind: str):
        if kind == "origins":  # per-origin files a task fetched itself: into the dataset's store
            return layout.origins / f"{part}.parquet"
        return super().file_target(layout, part, kind)

    def summarise(self, run: StageRun, parts) -> dict | None:
        totals: dict[str, int] = {"urls": 0, "robots_fetched": 0}
        for stats in parts.values():
            for key in totals:
                totals[key] += stats.extra.get(key, 0)
        totals["parts"], totals["lanes"] = len(parts), len(self._lanes(run))
        return totals


def _output(urls: list[str], outcomes: list[dict], robots: list) -> PartOutput:
    """A fetch part: one FETCHED row per URL, and the per-origin files it fetched itself."""
    import pyarrow as pa

    rows = [{"url": u, **o} for u, o in zip(urls, outcomes, strict=True)]
    table = pa.Table.from_pylist(rows, schema=pa.schema(list(FETCHED.items())))
    statuses: dict[str, int] = {}
    for o in outcomes:
        statuses[o["status"]] = statuses.get(o["status"], 0) + 1
    extra = {"urls": len(urls), "statuses": statuses, "robots_fetched": len(robots)}
    stats = PartStats(len(urls), statuses.get(schema.PENDING, 0), extra=extra)
    files = {"origins": records_table(robots)} if robots else {}
    return PartOutput(table, files=files, stats=stats)


def _shares_and_origins(plan: list[dict]):
    """The lane's HostShares (for hosts split over k > 1 lanes), by the fetcher's own host
    names, and the robots.txt origins of its URLs."""
    from yarl import URL

    from pipeline.net.ratelimit import HostShare
    from pipeline.net.robots import origin_of

    shares, origins = {}, set()
    for row in plan:
        try:
            u = URL(row["url"])
        except (ValueError, TypeError):
            continue  # the fetcher reports it as bad_url
        if u.scheme in ("http", "https") and u.raw_host:
            origins.add(origin_of(u))
            if row["k"] > 1:
                shares[u.raw_host.lower()] = HostShare(row["k"], row["slot"])
    return shares, origins


def _outcome(result, image_config) -> dict:
    """One FetchResult -> the FETCHED columns of its URL (image bytes when kept)."""
    from pipeline.dedup.hashes import image_hashes_from_bytes
    from pipeline.images.process import process_image
    from pipeline.net.consent import opt_out_error, rows

    consent = rows(result.consent)
    if result.status != "ok":
        status = result.status if result.status in FETCH_STATUSES else "fetch_failed"
        return {"status": status, "error": result.error, "consent": consent}
    refused = opt_out_error(result.consent)  # the image's own headers; its files refused above
    if refused:
        return {"status": "opted_out", "error": refused, "consent": consent}
    image = process_image(result.body, result.content_type, image_config)
    row = {
        "consent": consent,
        "status": schema.PENDING if image.kept else image.status,
        "error": image.error,
        "width": image.width,
        "height": image.height,
        "original_width": image.original_width,
        "original_height": image.original_height,
        "sha256": image.sha256,
    }
    if image.kept:
        row["image"] = image.image
        row["exif"] = image.exif
        # Perceptual hashes of the encoded output (JPEGs decode at reduced scale for this):
        # phash goes to the manifest, the 256-bit ones serve the leak check (pipeline.dedup).
        row.update(image_hashes_from_bytes(image.image))
    return row


async def _fetch(fetcher, pool, urls: list[str], image_config) -> list[dict]:
    """The outcome of every URL (fetched, then checked and resized on `pool`), in order."""
    from pipeline.net.batch import iter_fetch

    outcomes: list[dict | None] = [None] * len(urls)
    loop = asyncio.get_running_loop()
    queued: dict[asyncio.Future, int] = {}
    async for index, result in iter_fetch(fetcher, urls, max_bytes=image_config.max_bytes):
        future = loop.run_in_executor(pool, _outcome, result, image_config)
        queued[future] = index
        # Bounded: fetched bodies wait for the resize threads, at most MAX_QUEUED of them.
        while len(queued) >= MAX_QUEUED:
            done, _ = await asyncio.wait(queued, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                outcomes[queued.pop(future)] = future.result()
    for future, index in queued.items():
        outcomes[index] = await future
    return outcomes
