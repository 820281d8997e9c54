"""The seed crawl as tasks (pipeline.stages.crawl): hosts split into lanes, breadth-first by
depth and then by URL, so --max-pages keeps the same pages whatever the lane count."""

import json

import pyarrow.parquet as pq
import pytest

from pipeline.stages import crawl
from pipeline.testing.manyhosts import ManyHosts
from tests.pipeline.stages.conftest import StageBench

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def web():
    with ManyHosts(hosts=6, images=24, big_share=0.5, delay_s=0.0, pages=3) as hosts:
        yield hosts


def _crawl(web, root, **options):
    b = StageBench(
        root,
        [],
        seeds=web.seeds(),
        url_list=None,
        allow_network=["127.0.0.1/32"],
        timeout=5.0,
        **options,
    )
    return b, *_run(b, web)


def _run(b, web):
    record = b.run("sources", resolver=web.resolver())
    parts = json.loads((b.layout.work / "parts.json").read_text())
    pages = [r for p in parts for r in pq.read_table(b.path("sources", p, "pages")).to_pylist()]
    return record, parts, pages


def test_lanes_split_hosts_and_max_pages_keeps_the_smallest_urls_of_a_depth(web, tmp_path):
    before = len(web.hits())
    *_, one_parts, one = _crawl(web, tmp_path / "one", crawl_lanes=1, max_pages=15, max_depth=2)
    hits_one = [h.path for h in web.hits()[before:] if h.path.endswith(".html")]
    *_, many_parts, many = _crawl(web, tmp_path / "many", crawl_lanes=4, max_pages=15, max_depth=2)
    assert one_parts == ["crawl-000-0000", "crawl-001-0000"]
    assert len(many_parts) > 2 and sorted(many_parts) == many_parts  # depth, then lane
    assert sorted(p["url"] for p in one) == sorted(p["url"] for p in many)  # the same pages
    assert len(one) == 15 and len(hits_one) == 15  # 6 seeds + the 9 smallest depth-1 URLs
    depth1 = sorted(p["url"] for p in one if p["depth"] == 1)
    base = web.seeds()[0].rsplit("/site/", 1)[0]
    every = sorted(
        f"{base.replace('h00', f'h{h:02d}')}/pg/{h}/{k}.html" for h in range(6) for k in range(3)
    )
    assert depth1 == every[:9]
    lanes = {crawl.lane_of(u, 4) for u in web.seeds()}
    assert {int(p.rsplit("-", 1)[1]) for p in many_parts} <= lanes  # only lanes with hosts


def test_a_rerun_fetches_no_finished_page_again(web, tmp_path):
    b, first, parts, _ = _crawl(web, tmp_path / "a", crawl_lanes=3, max_depth=1)
    (b.layout.stage_dir("sources") / f"{parts[-1]}.done").unlink()  # as if killed in its task
    (b.layout.stats / "sources.json").unlink()
    before = len(web.hits())
    again, again_parts, _ = _run(b, web)
    refetched = [h.path for h in web.hits()[before:] if h.path.endswith(".html")]
    mine = pq.read_table(b.path("sources", parts[-1], "pages"))["url"].to_pylist()
    assert sorted(refetched) == sorted(u.split(str(web.port), 1)[1] for u in mine)
    assert again_parts == parts and again["rows_out"] == first["rows_out"]
