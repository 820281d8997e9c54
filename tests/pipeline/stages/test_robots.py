import pyarrow.parquet as pq
import pytest

from pipeline.testing.manyhosts import ManyHosts
from tests.pipeline.stages.conftest import sample_rows

pytestmark = pytest.mark.timeout(60)


def test_every_per_origin_file_once_per_origin_recorded_in_the_dataset(bench):
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
        files = [h.path for h in web.hits()]
        assert files.count("/.well-known/tdmrep.json") == files.count("/ai.txt") == 5
        assert (record["rows_in"], record["rows_out"]) == (5, 15)
        stored = pq.read_table(b.path("robots", "robots-00000")).to_pylist()
        port = web.port
        assert [(r["origin"], r["file"]) for r in stored] == [
            (f"http://{h}:{port}", f)
            for h in web.names()
            for f in ("ai.txt", "robots.txt", "tdmrep.json")
        ]
        robots = [r for r in stored if r["file"] == "robots.txt"]
        assert {r["status"] for r in robots} == {"ok"} and robots[0]["body"].startswith(
            b"User-agent"
        )
        assert all(r["fetched_at"] is not None and r["http_status"] == 200 for r in robots)
        others = [r for r in stored if r["file"] != "robots.txt"]  # none served: 404, no rules
        assert {(r["status"], r["http_status"]) for r in others} == {("fetch_failed", 404)}
        asked = len(web.hits())
        b.run("robots", resolver=web.resolver())  # done: no site is asked again
        assert len(web.hits()) == asked


def test_files_the_dataset_already_has_are_not_asked_again(bench):
    import time

    from pipeline.net.originfiles import OriginFileRecord
    from pipeline.origins import records_table

    with ManyHosts(hosts=3, images=6) as web:
        b = bench(allow_network=["127.0.0.1/32"], timeout=3.0)
        b.put("text", "p0", sample_rows([{"url": u, "caption": "x"} for u in web.all_urls()]))
        first, second = (f"http://h0{i}.test:{web.port}" for i in (0, 1))
        now = time.time()  # fresh: within the files' time to live
        known = [
            OriginFileRecord(first, first + path, now, status, code, None, b"", name)
            for name, path, status, code in (
                ("robots.txt", "/robots.txt", "ok", 200),
                ("tdmrep.json", "/.well-known/tdmrep.json", "fetch_failed", 404),
                ("ai.txt", "/ai.txt", "fetch_failed", 404),
            )
        ]
        known.append(OriginFileRecord(second, second + "/robots.txt", now, "ok", 200, None, b""))
        b.layout.origins.mkdir(parents=True, exist_ok=True)
        pq.write_table(records_table(known), b.layout.origins / "crawl-level-000.parquet")
        b.run("robots", resolver=web.resolver())
        asked = sorted((h.host, h.path) for h in web.hits())
        assert asked == [
            ("h01.test", "/.well-known/tdmrep.json"),  # h01 lacked these two
            ("h01.test", "/ai.txt"),
            ("h02.test", "/.well-known/tdmrep.json"),
            ("h02.test", "/ai.txt"),
            ("h02.test", "/robots.txt"),
        ]
        view = __import__("manifests").open(b.layout.root)
        assert view.execute("SELECT count(*) FROM origins").fetchone() == (9,)
