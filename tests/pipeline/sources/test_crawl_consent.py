"""A crawled page's consent: its origin's files, its headers and its meta tags."""

import asyncio
import json

import pytest

from pipeline.loopback import LoopbackServer
from pipeline.net import FetchConfig, Fetcher
from pipeline.sources.crawl import crawl_level

pytestmark = pytest.mark.timeout(60)

HTML = {"Content-Type": "text/html"}


def _page(links: str = "", head: str = "") -> bytes:
    body = f'<img src="/img/a.png" alt="a cat on a mat">{links}'
    return f"<html><head>{head}</head><body>{body}</body></html>".encode()


ROUTES = {
    "/.well-known/tdmrep.json": (
        200,
        {"Content-Type": "application/json"},
        json.dumps([{"location": "/reserved/", "tdm-reservation": 1}]).encode(),
    ),
    "/reserved/a.html": (200, HTML, _page('<a href="/open.html">on</a>')),
    "/open.html": (200, HTML, _page()),
    "/noml.html": (200, {**HTML, "X-Robots-Tag": "clipengine-bot: noml"}, _page()),
    "/meta.html": (200, HTML, _page(head="<meta name='tdm-reservation' content='1'>")),
    "/custom.html": (200, HTML, _page(head="<meta name='robots' content='nogenai'>")),
}


def _crawl(paths):
    config = FetchConfig(allow_networks=["127.0.0.1/32"], opt_out_tokens=["nogenai"])

    async def go(server):
        async with Fetcher(config) as fetcher:
            urls = [f"http://127.0.0.1:{server.port}{p}" for p in paths]
            return await crawl_level(fetcher, urls, 0)

    with LoopbackServer(routes=ROUTES) as server:
        return asyncio.run(go(server)), server


def test_a_page_its_origin_reserves_gives_no_pairs_but_its_links():
    level, server = _crawl(["/reserved/a.html", "/open.html"])
    reserved, open_page = level.pages
    assert reserved["status"] == "opted_out" and reserved["error"].startswith(
        "opted out by tdmrep.json"
    )
    assert "/reserved/a.html" in server.hits  # fetched for its links: the reservation is on use
    assert any(link.endswith("/open.html") for link in level.links)
    assert open_page["status"] == "ok" and [p[2] for p in level.pairs] == [open_page["final_url"]]
    signals = [c["signal"] for c in reserved["consent"]]
    assert signals[:4] == ["robots.txt", "robots.txt content-usage", "tdmrep.json", "ai.txt"]
    assert {"x-robots-tag", "meta robots", "meta tdm-reservation"} <= set(signals)
    assert {c["subject"] for c in reserved["consent"]} == {"page"}


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/noml.html", "opted out by x-robots-tag (clipengine-bot: noml)"),
        ("/meta.html", "opted out by meta tdm-reservation (tdm-reservation: 1)"),
        ("/custom.html", "opted out by meta robots (nogenai)"),  # --opt-out-token nogenai
    ],
)
def test_a_page_that_says_no_in_its_headers_or_meta_tags(path, error):
    level, _ = _crawl([path])
    assert level.pages[0]["status"] == "opted_out" and level.pages[0]["error"] == error
    assert level.pairs == []
