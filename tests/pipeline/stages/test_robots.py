import pyarrow.parquet as pq
import pytest

from pipeline.testing.manyhosts import ManyHosts
from tests.pipeline.stages.conftest import sample_rows

pytestmark = pytest.mark.timeout(60)


def test_robots_txt_once_per_origin_recorded_in_the_dataset(bench):
    with ManyHosts(hosts=5, images=20) as web:
        b = bench(parts=["p0", "p1"], allow_network=["127.0.0.1/32"], timeout=3.0)
        urls = web.all_urls()
        b.put("text", "p0", sample_rows([{"url": u, "caption": "x"} for u in urls[:12]]))
        b.put(
            "text",
            "p1",
            sample_rows(
                [{"url": u, "caption": "y"} for u in urls[8:]]
                + [{"url": "data:image/png;base64,AA", "caption": "z"}]
            ),
        )
        record = b.run("robots", resolver=web.resolver())
        assert web.robots_fetches() == dict.fromkeys(web.names(), 1)
        assert (record["rows_in"], record["rows_out"]) == (5, 5)
        stored = pq.read_table(b.path("robots", "robots-00000")).to_pylist()
        port = web.port
        assert [r["origin"] for r in stored] == [f"http://{h}:{port}" for h in web.names()]
        assert {r["status"] for r in stored} == {"ok"} and stored[0]["body"].startswith(
            b"User-agent"
        )
        assert all(r["fetched_at"] is not None and r["http_status"] == 200 for r in stored)
        b.run("robots", resolver=web.resolver())  # done: no site is asked again
        assert sum(web.robots_fetches().values()) == 5


def test_origins_the_dataset_already_has_are_not_asked_again(bench):
    from pipeline.net.robots import RobotsRecord
    from pipeline.origins import records_table

    with ManyHosts(hosts=3, images=6) as web:
        b = bench(allow_network=["127.0.0.1/32"], timeout=3.0)
        b.put("text", "p0", sample_rows([{"url": u, "caption": "x"} for u in web.all_urls()]))
        first = f"http://h00.test:{web.port}"
        known = RobotsRecord(first, first + "/robots.txt", 1e9, "ok", 200, None, b"")
        b.layout.origins.mkdir(parents=True, exist_ok=True)
        pq.write_table(records_table([known]), b.layout.origins / "crawl-level-000.parquet")
        b.run("robots", resolver=web.resolver())
        assert web.robots_fetches() == {"h01.test": 1, "h02.test": 1}
        view = __import__("manifests").open(b.layout.root)
        assert view.execute("SELECT count(*) FROM origins").fetchone() == (3,)
