"""The seed crawl (--seeds) of the sources stage, as tasks: the frontier partitioned by host.

Breadth-first by depth and, within a depth, by URL, so the pages a `--max-pages` cap keeps do
not depend on response timing or on how the work is split. Each host belongs to one *lane* (a
stable hash of the host name modulo `--crawl-lanes`, fixed when the crawl starts, so the parts
are the same whatever the executor or the cluster's size): at every depth
the lane's one task fetches that host's pages through one Fetcher, so the host's limits, its
robots.txt (fetched once per origin, stored in DIR/manifests/origins, reused at later depths
and by a resumed crawl) and its crawl-delay hold in one place. Per depth d:

- `crawl-<d>-<lane>`, a part of the build: fetch the lane's frontier, extract pairs and links in
  URL order; its candidates and pages parts, and links/<d>/<lane>.parquet: every same-site link
  and every fetched page's URL (seen), under the lane that owns its host.
- `route-<d+1>-<lane>` (a phase task): the links for this lane's hosts from every lane's task,
  less what the lane has seen before (its checkpoint seen/<d>/<lane>.parquet: every URL it
  queued or fetched), sorted: its candidates for depth d+1; then seen/<d+1>/<lane>.parquet.
- the driver: the `budget` smallest candidate URLs over all lanes (budget: --max-pages less the
  pages fetched; one DuckDB query, memory-capped) are depth d+1's frontier: level-<d+1>.json
  keeps the cut-off URL, and each lane's task reads its candidates up to it.
Every task commits its files and then its marker, so a killed crawl resumes at the first
unfinished task and fetches no finished page again."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from manifests import storage
from manifests.layout import write_json_atomic, write_parquet_atomic
from pipeline.stages.base import PartStats, PartTask, StageRun, planning_db, sql_files

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CrawlTask(PartTask):
    depth: int = 0
    lane: int = 0
    lanes: int = 1
    cutoff: str | None = None  # the frontier: the lane's candidates up to this URL


def lane_of(url: str, lanes: int) -> int:
    """The lane that owns a URL's host (a stable hash: the same in every process and run)."""
    host = (urlsplit(url).hostname or "").lower()
    return int.from_bytes(hashlib.blake2b(host.encode(), digest_size=8).digest()) % lanes


def crawl_dir(layout):
    return layout.stage_dir("sources") / "crawl"


def part_name(depth: int, lane: int) -> str:
    return f"crawl-{depth:03d}-{lane:04d}"  # sorts in crawl order: depth, then lane


def _urls_table(urls: list[str], lanes: int, kinds: list[str] | None = None):
    import pyarrow as pa

    columns = {
        "lane": pa.array([lane_of(u, lanes) for u in urls], pa.int32()),
        "url": pa.array(urls, pa.string()),
    }
    if kinds is not None:
        columns["kind"] = pa.array(kinds, pa.string())
    return pa.table(columns).sort_by([("lane", "ascending"), ("url", "ascending")])


def candidates_path(layout, depth: int, lane: int):
    return crawl_dir(layout) / "candidates" / f"{depth:03d}" / f"{lane:04d}.parquet"


def frontier(task: CrawlTask) -> list[str]:

    path = candidates_path(task.layout, task.depth, task.lane)
    urls = storage.read_table(path, columns=["url"])["url"].to_pylist()
    return [u for u in urls if task.cutoff is None or u <= task.cutoff]


def crawl_part(stage, task: CrawlTask) -> PartStats:
    """One lane at one depth: fetch, extract, commit the part (pages, pairs, robots records),
    and its links for the route phase."""
    import asyncio

    from pipeline.sources.crawl import same_site, site_key
    from pipeline.stages.sources import pages_output

    started, source = time.perf_counter(), task.config.source
    urls = frontier(task)
    level, robots = asyncio.run(_fetch_level(task, urls))
    sites = {site_key(u) for u in source.seeds}
    links = [u for u in level.links if same_site(u, sites)] if task.depth < source.max_depth else []
    seen = [p["final_url"] or p["url"] for p in level.pages] + urls
    table = _urls_table(seen + links, task.lanes, ["seen"] * len(seen) + ["link"] * len(links))
    write_parquet_atomic(
        table, crawl_dir(task.layout) / "links" / f"{task.depth:03d}" / f"{task.lane:04d}.parquet"
    )
    stats = PartStats(rows_in=len(level.pages), rows_out=len(level.pairs))
    stats.extra = {"fetched": len(urls)}
    output = pages_output(level.pairs, level.pages, stats)
    if robots:
        from pipeline.origins import records_table

        output.files["origins"] = records_table(robots)
    run = StageRun(task.layout, stage, task.inputs)
    return stage.commit(run, task.part, output, started)


async def _fetch_level(task: CrawlTask, urls: list[str]):
    from pipeline.net.fetch import Fetcher
    from pipeline.origins import read_records

    origins = {f"{s.scheme}://{s.netloc}" for s in map(urlsplit, urls)}
    stored = read_records(task.layout, origins)  # files asked at an earlier depth or run
    async with Fetcher(task.config.net, resolver=task.resolver, robots=stored) as fetcher:
        level = await _recorded(task, fetcher, urls)
        return level, fetcher.origin_records()


async def _recorded(task: CrawlTask, fetcher, urls: list[str]):
    """The level, recorded as work/sources/<part>.warc.gz when --warc-out is set."""
    from manifests.layout import atomic_path
    from pipeline.sources.crawl import crawl_level

    if not task.config.source.warc_out:
        return await crawl_level(fetcher, urls, task.depth, None)
    from pipeline.sources.warc import WarcRecorder

    path = task.work_dir / f"{task.part}.warc.gz"
    with atomic_path(path) as tmp, WarcRecorder(tmp, mode="w") as recorder:
        return await crawl_level(fetcher, urls, task.depth, recorder)


def route(task) -> PartStats:
    """A lane's candidates for depth d: the links for its hosts that it has not seen."""
    import pyarrow.compute as pc

    depth, lane = (int(x) for x in task.unit.split("-"))
    lanes, folder = task.figures["lanes"], crawl_dir(task.layout)
    tables = [
        storage.read_table(
            folder / "links" / f"{depth - 1:03d}" / f"{source:04d}.parquet",
            filters=[("lane", "=", lane)],
        )
        for source in task.figures["from_lanes"]
    ]
    seen_before = folder / "seen" / f"{depth - 1:03d}" / f"{lane:04d}.parquet"
    seen = (
        set(storage.read_table(seen_before)["url"].to_pylist()) if seen_before.exists() else set()
    )
    for table in tables:
        seen.update(table.filter(pc.equal(table["kind"], "seen"))["url"].to_pylist())
    new = set()
    for table in tables:
        new.update(
            u
            for u in table.filter(pc.equal(table["kind"], "link"))["url"].to_pylist()
            if u not in seen
        )
    links = sorted(new)
    write_parquet_atomic(_urls_table(links, lanes), candidates_path(task.layout, depth, lane))
    write_parquet_atomic(
        _urls_table(sorted(seen | new), lanes),
        folder / "seen" / f"{depth:03d}" / f"{lane:04d}.parquet",
    )
    return PartStats(rows_in=sum(t.num_rows for t in tables), rows_out=len(links))


def _level(run: StageRun, depth: int, budget: int) -> dict:
    """Depth `depth`'s frontier: the `budget` smallest candidate URLs over all lanes (the
    cut-off URL, and how many each lane has up to it), kept in level-<d>.json."""
    path = crawl_dir(run.layout) / f"level-{depth:03d}.json"
    if path.exists():
        return json.loads(path.read_text())
    lanes = _lanes(run)
    files = sql_files([candidates_path(run.layout, depth, lane) for lane in range(lanes)])
    con = planning_db(run)
    con.execute(f"CREATE VIEW c AS SELECT lane, url FROM read_parquet({files})")
    (total,) = con.execute("SELECT count(*) FROM c").fetchone()
    cutoff = None
    if total > budget:
        query = "SELECT url FROM c ORDER BY url LIMIT 1 OFFSET ?"
        (cutoff,) = con.execute(query, [budget - 1]).fetchone() if budget else ("",)
    where = "" if cutoff is None else "WHERE url <= ?"
    counts = con.execute(
        f"SELECT lane, count(*) FROM c {where} GROUP BY lane ORDER BY lane",
        [] if cutoff is None else [cutoff],
    ).fetchall()
    level = {"cutoff": cutoff, "lanes": {str(lane): n for lane, n in counts if n}}
    write_json_atomic(level, path)
    return level


def _lanes(run: StageRun) -> int:
    """The lane count (--crawl-lanes) the crawl started with: a resumed crawl keeps its hosts'
    owners and parts even if the option changed."""
    path = crawl_dir(run.layout) / "lanes.json"
    if not path.exists():
        write_json_atomic({"lanes": run.config.source.crawl_lanes}, path)
    return json.loads(path.read_text())["lanes"]


def _seed(run: StageRun) -> None:
    """Depth 0's candidates and seen URLs: the seeds, under their hosts' lanes."""
    import pyarrow.compute as pc

    lanes, seeds = _lanes(run), sorted(set(run.config.source.seeds))
    table = _urls_table(seeds, lanes)
    for lane in range(lanes):
        path = candidates_path(run.layout, 0, lane)
        if not path.exists():
            mine = table.filter(pc.equal(table["lane"], lane))
            write_parquet_atomic(
                mine, crawl_dir(run.layout) / "seen" / "000" / f"{lane:04d}.parquet"
            )
            write_parquet_atomic(mine, path)


def crawl(stage, run: StageRun, executor) -> list[str]:
    """Every depth: its lanes' crawl tasks, then the route phase and the next frontier."""
    from pipeline.stages.phases import run_phases

    source, parts, fetched = run.config.source, [], 0
    lanes = _lanes(run)
    _seed(run)
    for depth in range(source.max_depth + 1):
        level = _level(run, depth, max(0, source.max_pages - fetched))
        active = sorted(int(lane) for lane in level["lanes"])
        if not active:
            break
        names = [part_name(depth, lane) for lane in active]
        todo = [
            run.task(name, CrawlTask, depth=depth, lane=lane, lanes=lanes, cutoff=level["cutoff"])
            for name, lane in zip(names, active, strict=True)
            if not run.is_done(name)
        ]
        stage.run_tasks(todo, executor, desc=f"crawl depth {depth}")
        parts += names
        fetched += sum(level["lanes"].values())
        log.info(
            "crawl depth %d: %d pages in %d lanes", depth, sum(level["lanes"].values()), len(active)
        )
        if depth == source.max_depth or fetched >= source.max_pages:
            break
        routes = [f"route-{depth + 1}-{lane}" for lane in range(lanes)]
        run_phases(run, executor, [routes], {"lanes": lanes, "from_lanes": active}, parts=())
    return parts
