import threading
from concurrent.futures import ThreadPoolExecutor

import pyarrow.parquet as pq
import pytest

from pipeline.stages import registry
from pipeline.stages.base import StageRun
from pipeline.testing.manyhosts import ManyHosts, politeness_breaches
from tests.pipeline.stages.conftest import sample_rows

pytestmark = pytest.mark.timeout(120)


class Threads:
    """An executor that runs every task at once, each in its own thread (and event loop), as
    Ray tasks on several nodes would: what makes a shared host budget matter."""

    def parallelism(self) -> int:
        return 4

    def map(self, fn, tasks, name=None, resources=None, pool=False):
        tasks = list(tasks)
        with ThreadPoolExecutor(max_workers=max(1, len(tasks))) as pool:
            return list(pool.map(fn, tasks))


def _run(b, name, executor, resolver):
    stage = registry.get(name)
    run = StageRun(b.layout, stage, registry.resolve_inputs(stage, b.config), b.config, resolver)
    return stage.execute(run, executor)


def test_every_distinct_url_is_fetched_once_by_lanes_that_share_a_big_hosts_budget(bench):
    with ManyHosts(hosts=6, images=40, big_share=0.5, delay_s=0.03) as web:
        urls = web.all_urls()
        b = bench(
            parts=["p0", "p1"],
            allow_network=["127.0.0.1/32"],
            timeout=5.0,
            per_host_concurrency=2,
            per_host_rps=20,
            urls_per_fetch_part=5,
        )
        # every URL twice (two captions), across both parts
        rows = [{"url": u, "caption": c} for u in urls for c in ("one", "two")]
        b.put("text", "p0", sample_rows(rows[: len(rows) // 2]))
        b.put("text", "p1", sample_rows(rows[len(rows) // 2 :]))
        _run(b, "robots", Threads(), web.resolver())
        before = len(web.hits())
        record = _run(b, "fetch", Threads(), web.resolver())
        hits = web.hits()[before:]
        assert sorted(web.image_hits().values()) == [1] * len(urls)  # once per URL
        files = ("/robots.txt", "/.well-known/tdmrep.json", "/ai.txt")
        assert not [h for h in hits if h.path in files]  # the store answered
        lanes = b.layout.stage_dir("fetch") / "lanes.json"
        assert lanes.exists() and record["extra"]["urls"] == len(urls)
        plan = pq.read_table(b.layout.stage_dir("fetch") / "plan.parquet").to_pylist()
        big = [r for r in plan if "//h00.test" in r["url"]]
        assert {r["k"] for r in big} == {2}  # 20 URLs, 5 a part: split over min(2, 4) lanes
        assert len({r["lane"] for r in big}) == 2
        breaches = politeness_breaches(hits, concurrency=2, min_interval_s=1 / 20)
        assert breaches["over"] == [] and breaches["too_close"] == [], breaches
        assert breaches["in_flight"]["h00.test"] <= 2
        again = len(web.hits())
        _run(b, "fetch", Threads(), web.resolver())  # done: nothing is fetched again
        assert len(web.hits()) == again


def test_images_give_every_row_of_a_url_its_one_fetch(bench):
    with ManyHosts(hosts=2, images=4, delay_s=0.0) as web:
        b = bench(allow_network=["127.0.0.1/32"], timeout=3.0, min_size=16, image_size=32)
        url = web.all_urls()[0]
        missing = url.rsplit("/", 1)[0] + "/missing.png"
        b.put(
            "text",
            "p0",
            sample_rows(
                [
                    {"url": url, "caption": "a"},
                    {"url": url, "caption": "b"},
                    {"url": missing, "caption": "c"},
                    {"url": url, "caption": "d", "status": "language"},
                ]
            ),
        )
        for name in ("robots", "fetch"):
            b.run(name, resolver=web.resolver())
        record = b.run("images")
        rows = b.rows("images", "p0")
        assert [r["status"] for r in rows] == ["pending", "pending", "fetch_failed", "language"]
        assert rows[0]["sha256"] == rows[1]["sha256"] and rows[0]["phash"]
        assert rows[3]["sha256"] is None  # not pending: untouched
        stored = pq.read_table(b.path("images", "p0", "images"))
        assert stored["uid"].to_pylist() == [rows[0]["uid"], rows[1]["uid"]]
        assert (record["rows_in"], record["rows_out"], record["drops"]) == (
            3,
            2,
            {"fetch_failed": 1},
        )
        assert web.image_hits()[url.split(str(web.port))[1]] == 1


def _two_lanes(lane) -> None:
    """Run lane(0) and lane(1) at once, each in its own thread (and event loop)."""
    threads = [threading.Thread(target=lane, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_shared_slots_keep_two_lanes_of_one_host_apart():
    import asyncio
    import time

    from pipeline.net.ratelimit import HostLimiter, HostShare, next_slot

    assert next_slot(10.0, 0.5, HostShare(2, 1)) == pytest.approx(10.5)
    assert next_slot(10.6, 0.5, HostShare(2, 0)) == pytest.approx(11.0)
    starts, lock = [], threading.Lock()

    def lane(index: int) -> None:
        async def go():
            limiter = HostLimiter(4, 20.0, 16, {"h": HostShare(2, index)})
            for _ in range(5):
                async with limiter.slot("h"):
                    with lock:
                        starts.append(time.time())

        asyncio.run(go())

    _two_lanes(lane)
    starts.sort()
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert len(starts) == 10 and min(gaps) > 1 / 20 - 0.005


def test_shared_slots_hold_when_a_lane_writes_late_after_its_turn():
    """A process the OS does not run between the slot check and the write (or a thread waiting
    for the GIL) writes late; the slot's margin keeps it clear of the other lane's next slot."""
    import asyncio
    import time

    from pipeline.net.ratelimit import SLOT_MARGIN_S, HostLimiter, HostShare

    late_s = SLOT_MARGIN_S - 0.005
    writes, lock = [], threading.Lock()

    def lane(index: int) -> None:
        async def go():
            limiter = HostLimiter(4, 20.0, 16, {"h": HostShare(2, index)})
            for _ in range(4):
                async with limiter.slot("h", defer=True) as gate:
                    await gate.wait()
                    time.sleep(late_s if index == 0 else 0.0)  # blocks the loop, as a stall does
                    with lock:
                        writes.append(time.time())
                    gate.sent()

        asyncio.run(go())

    _two_lanes(lane)
    writes.sort()
    gaps = [b - a for a, b in zip(writes, writes[1:], strict=False)]
    assert len(writes) == 8 and min(gaps) > 1 / 20 - 0.005, gaps


def test_a_gap_is_a_breach_only_beyond_the_servers_own_measured_lateness():
    from pipeline.testing.manyhosts import LoggedHit

    def hits(late: float):
        return [LoggedHit("/a", "h", 10.0, 10.01, late), LoggedHit("/b", "h", 10.08, 10.09)]

    assert politeness_breaches(hits(0.0), 2, 0.1)["too_close"] == [("h", pytest.approx(0.08))]
    # the server's loop was 25 ms late when it logged /a: /a may have arrived 25 ms earlier
    assert politeness_breaches(hits(0.025), 2, 0.1)["too_close"] == []
    assert politeness_breaches(hits(0.01), 2, 0.1)["too_close"] != []  # 90 ms: still too close
