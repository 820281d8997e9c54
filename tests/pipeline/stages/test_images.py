import pyarrow.parquet as pq
import pytest

from pipeline.loopback import LoopbackServer
from pipeline.testing.site import picture
from tests.pipeline.stages.conftest import sample_rows

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def image_server():
    routes = {
        "/robots.txt": (200, {"Content-Type": "text/plain"}, b"User-agent: *\nDisallow: /no/\n"),
        "/ok.png": (200, {"Content-Type": "image/png"}, picture("ok", size=64)),
        "/tiny.png": (200, {"Content-Type": "image/png"}, picture("tiny", size=8)),
        "/page.html": (200, {"Content-Type": "text/html"}, b"<html>not an image</html>"),
        "/no/secret.png": (200, {"Content-Type": "image/png"}, picture("secret")),
        "/optout.png": (
            200,
            {"Content-Type": "image/png", "X-Robots-Tag": "noimageai"},
            picture("optout"),
        ),
    }
    with LoopbackServer(routes=routes) as server:
        yield server


def test_images_fetch_check_and_store_every_pending_image(bench, image_server):
    base = image_server.base
    b = bench(allow_network=["127.0.0.1/32"], timeout=3.0, min_size=16, image_size=32)
    names = ["ok.png", "tiny.png", "page.html", "no/secret.png", "optout.png", "missing.png"]
    b.put(
        "text",
        "p0",
        sample_rows(
            [{"url": base + n, "caption": n} for n in names]
            + [{"url": base + "ok.png", "caption": "dropped before", "status": "language"}]
        ),
    )
    for name in ("robots", "fetch"):  # robots.txt once, then every distinct URL once
        b.run(name)
    record = b.run("images")
    status = {r["caption"]: r["status"] for r in b.rows("images", "p0")}
    assert status == {
        "ok.png": "pending",
        "tiny.png": "too_small",
        "page.html": "not_an_image",
        "no/secret.png": "robots_disallowed",
        "optout.png": "opted_out",
        "missing.png": "fetch_failed",
        "dropped before": "language",
    }
    assert "/no/secret.png" not in image_server.hits  # robots.txt was read first
    stored = pq.read_table(b.path("images", "p0", "images")).to_pylist()
    assert len(stored) == 1 and stored[0]["image"][:2] == b"\xff\xd8"  # the kept one, as JPEG
    assert stored[0]["phash256"] and stored[0]["phash256_trim"]
    assert (record["rows_in"], record["rows_out"]) == (6, 1)
    hits = len(image_server.hits)
    for name in ("robots", "fetch", "images"):  # done: a rerun fetches nothing again
        b.run(name)
    assert len(image_server.hits) == hits
    assert image_server.count("/robots.txt") == 1
    # ok.png is listed twice (one row dropped before): fetched once
    assert image_server.count("/ok.png") == 1
