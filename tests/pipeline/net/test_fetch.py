"""The fetcher against loopback servers it is allowed (127.0.0.1) and not allowed (127.0.0.2) to reach.

Non-loopback addresses only ever appear as fake DNS answers (StaticResolver); the tests prove that
such hosts are refused without any connection attempt (aiohttp trace hooks count them).
"""

import asyncio
import gzip
import time
import tracemalloc

import aiohttp
import pytest

from pipeline.net import FetchConfig, Fetcher, StaticResolver, fetch_all, x_robots_opt_out

pytestmark = pytest.mark.timeout(30)

MIB = 1024 * 1024


def config(**overrides) -> FetchConfig:
    base = dict(
        allow_networks=["127.0.0.1/32"],
        total_timeout_s=3.0,
        connect_timeout_s=1.0,
        backoff_s=0.02,
        max_retries=2,
    )
    base.update(overrides)
    return FetchConfig(**base)


def connection_counter() -> tuple[aiohttp.TraceConfig, dict]:
    counts = {"connections": 0, "requests": 0}
    trace = aiohttp.TraceConfig()

    async def on_conn(_session, _ctx, _params):
        counts["connections"] += 1

    async def on_req(_session, _ctx, _params):
        counts["requests"] += 1

    trace.on_connection_create_start.append(on_conn)
    trace.on_request_start.append(on_req)
    return trace, counts


def fetch_many(cfg, urls, resolver=None, trace=None, max_bytes=None):
    async def main():
        async with Fetcher(cfg, resolver, trace_configs=[trace] if trace else None) as f:
            return await asyncio.gather(*(f.fetch(u, max_bytes) for u in urls))

    return asyncio.run(main())


def fetch_one(cfg, url, **kw):
    return fetch_many(cfg, [url], **kw)[0]


def test_ok_body_headers_and_user_agent(site):
    site.text(
        "/page",
        "<html>hi</html>",
        headers=[
            ("Content-Type", "text/html"),
            ("X-Robots-Tag", "noindex"),
            ("X-Robots-Tag", "noai"),
        ],
    )
    r = fetch_one(config(), site.url("/page"))
    assert (r.status, r.http_status, r.body, r.error) == ("ok", 200, b"<html>hi</html>", None)
    assert r.final_url == r.url == site.url("/page") and r.redirects == []
    assert r.content_type == "text/html"
    assert r.headers.getall("x-robots-tag") == ["noindex", "noai"]
    assert x_robots_opt_out(r.headers, "clipengine-bot")
    ua = [h.headers["User-Agent"] for h in site.hits if h.path == "/page"]
    assert ua == [FetchConfig().user_agent]
    assert (
        ua[0].startswith("clipengine-bot/")
        and "(+https://github.com/clipengine/clipengine)" in ua[0]
    )


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/x", "file:///etc/passwd", "not a url", "http://", "http://[::1"]
)
def test_bad_urls(url, site):
    r = fetch_one(config(), url)
    assert r.status == "bad_url" and r.body is None and r.error
    assert site.hits == []


@pytest.mark.parametrize("address", ["10.0.0.5", "192.168.1.20", "169.254.169.254", "fd00::1"])
def test_fake_dns_to_private_address_is_blocked_without_connecting(address):
    trace, counts = connection_counter()
    resolver = StaticResolver({"evil.test": [address]})
    r = fetch_one(config(), "http://evil.test/latest/meta-data", resolver=resolver, trace=trace)
    assert r.status == "blocked_address", r.error
    assert "address not allowed" in r.error and address in r.error
    assert counts == {"connections": 0, "requests": 0}


def test_blocked_loopback_name_and_literal_get_no_hit(other):
    trace, counts = connection_counter()
    resolver = StaticResolver({"sneaky.test": ["127.0.0.2"]})
    port = other.port
    urls = [f"http://sneaky.test:{port}/x", other.url("/x"), f"http://[::ffff:127.0.0.2]:{port}/x"]
    results = fetch_many(config(), urls, resolver=resolver, trace=trace)
    assert [r.status for r in results] == ["blocked_address"] * 3
    assert other.hits == [] and counts["connections"] == 0


def test_redirect_to_disallowed_address_is_refused(site, other):
    site.redirect("/r", other.url("/x"))
    resolver = StaticResolver({"intranet.test": ["10.1.2.3"]})
    site.redirect("/r2", "http://intranet.test/admin")
    a, b = fetch_many(config(), [site.url("/r"), site.url("/r2")], resolver=resolver)
    assert a.status == "blocked_address"
    assert a.error == "redirect to 127.0.0.2 refused: address not allowed"
    assert a.final_url == other.url("/x") and a.redirects == [other.url("/x")]
    assert b.status == "blocked_address" and "redirect to intranet.test refused" in b.error
    assert other.hits == []


def test_redirect_chain_of_three_is_followed(site):
    site.redirect("/a", "/b", 301)
    site.redirect("/b", site.url("/c"), 307)
    site.redirect("/c", "d#fragment", 303)
    site.text("/d", "end")
    r = fetch_one(config(), site.url("/a"))
    assert r.status == "ok" and r.body == b"end"
    assert r.redirects == [site.url("/b"), site.url("/c"), site.url("/d")]
    assert r.final_url == site.url("/d")


def test_redirect_loop_and_too_many_redirects_fail_fast(site):
    site.redirect("/loop-a", "/loop-b")
    site.redirect("/loop-b", "/loop-a")
    for i in range(20):
        site.redirect(f"/chain/{i}", f"/chain/{i + 1}")
    t0 = time.monotonic()
    loop, chain = fetch_many(config(), [site.url("/loop-a"), site.url("/chain/0")])
    assert time.monotonic() - t0 < 3
    assert loop.status == "fetch_failed" and "redirect loop" in loop.error
    assert site.count("/loop-a") == 1 and site.count("/loop-b") == 1
    assert chain.status == "fetch_failed" and chain.error == "too many redirects (>5)"
    assert len(chain.redirects) == 5
    assert sum(1 for p in site.paths() if p.startswith("/chain/")) == 6


def test_robots_disallowed_path_is_never_requested(site):
    site.text(
        "/robots.txt",
        "User-agent: clipengine-bot\nDisallow: /private/\nDisallow: /nobots\n\n"
        "User-agent: *\nDisallow: /\n",
    )
    site.text("/public", "yes")
    site.text("/private/secret", "no")
    site.redirect("/go", "/private/secret")
    pub, priv, via_redirect, nobots = fetch_many(
        config(), [site.url(p) for p in ("/public", "/private/secret", "/go", "/nobots")]
    )
    assert pub.status == "ok"  # our group applies, not the '*' group
    assert priv.status == "robots_disallowed" and "/private/secret" in priv.error
    assert via_redirect.status == "robots_disallowed"
    assert nobots.status == "robots_disallowed"
    assert site.count("/private/secret") == 0 and site.count("/nobots") == 0
    assert site.count("/robots.txt") == 1


def test_robots_fetched_once_for_many_concurrent_requests(site):
    site.text("/robots.txt", "User-agent: *\nDisallow: /private/\n")
    for i in range(40):
        site.text(f"/p{i}", str(i))
    results = fetch_many(config(), [site.url(f"/p{i}") for i in range(40)])
    assert all(r.status == "ok" for r in results)
    assert site.count("/robots.txt") == 1


def test_robots_404_allows_and_500_disallows(site):
    site.text("/page", "x")
    assert fetch_one(config(), site.url("/page")).status == "ok"  # no robots.txt route: 404
    site.text("/robots.txt", "oops", status=500)
    r = fetch_one(config(max_retries=1), site.url("/page"))
    assert r.status == "robots_disallowed" and "HTTP 500" in r.error
    assert site.count("/robots.txt") == 1 + 2  # the 404, then one try + one retry
    assert site.count("/page") == 1


def test_robots_unreachable_disallows():
    # nothing listens on this port: bind, read the port, close.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = fetch_one(config(max_retries=0), f"http://127.0.0.1:{port}/page")
    assert r.status == "robots_disallowed" and "unavailable" in r.error


def test_oversized_robots_is_truncated_not_refused(site):
    rules = "User-agent: *\nDisallow: /private/\n"
    site.text("/robots.txt", rules + "#" * 5000 + "\n")
    site.text("/ok", "x")
    ok, priv = fetch_many(config(robots_max_bytes=1000), [site.url("/ok"), site.url("/private/a")])
    assert ok.status == "ok" and priv.status == "robots_disallowed"


def test_crawl_delay_spaces_request_starts(site):
    site.text("/robots.txt", "User-agent: *\nCrawl-delay: 0.25\n")
    for i in range(3):
        site.text(f"/p{i}", "x")
    fetch_many(config(), [site.url(f"/p{i}") for i in range(3)])
    starts = sorted(h.t for h in site.hits if h.path.startswith("/p"))
    assert len(starts) == 3
    assert all(b - a >= 0.2 for a, b in zip(starts, starts[1:], strict=False))


def test_excessive_crawl_delay_skips_host(site):
    site.text("/robots.txt", "User-agent: *\nCrawl-delay: 3600\n")
    site.text("/page", "x")
    r = fetch_one(config(), site.url("/page"))
    assert r.status == "robots_disallowed" and "crawl-delay 3600s over limit 60s" in r.error
    assert site.count("/page") == 0


def test_slow_page_hits_total_timeout(site):
    site.slow("/slow", 5.0)
    t0 = time.monotonic()
    r = fetch_one(config(total_timeout_s=0.3), site.url("/slow"))
    assert time.monotonic() - t0 < 1.5
    assert r.status == "fetch_failed" and r.error == "timeout after 0.3s"
    assert site.count("/slow") == 1  # a timed-out server is not retried


def test_streamed_oversized_body_is_cut_early(site):
    site.stream("/huge", 50 * MIB)
    tracemalloc.start()
    t0 = time.monotonic()
    r = fetch_one(config(), site.url("/huge"), max_bytes=1 * MIB)
    elapsed = time.monotonic() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert r.status == "too_large" and r.error == f"body over {MIB} bytes"
    assert r.body is None and r.http_status == 200
    assert elapsed < 3
    assert peak < 12 * MIB, peak  # a buffered 50 MB body could not fit
    time.sleep(0.1)
    assert site.bytes_streamed < 25 * MIB  # the connection was dropped, not drained


def test_gzip_bomb_is_capped_after_decoding(site):
    bomb = gzip.compress(b"\0" * (100 * MIB), 9)  # ~100 KB on the wire
    site.text("/bomb", bomb, headers={"Content-Encoding": "gzip"})
    tracemalloc.start()
    r = fetch_one(config(), site.url("/bomb"), max_bytes=1 * MIB)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert r.status == "too_large" and peak < 12 * MIB, peak


def test_declared_content_length_over_cap_is_refused(site):
    site.stream("/big", 5 * MIB, declare_length=True)
    r = fetch_one(config(max_bytes=1 * MIB), site.url("/big"))
    assert r.status == "too_large"
    assert r.error == f"body over {MIB} bytes (Content-Length {5 * MIB})"
    site.text("/exact", b"y" * 1000)
    assert fetch_one(config(max_bytes=1000), site.url("/exact")).status == "ok"
    assert fetch_one(config(max_bytes=999), site.url("/exact")).status == "too_large"


def test_503_with_retry_after_then_ok(site):
    site.sequence("/flaky", [(503, {"Retry-After": "1"}, "busy"), (200, {}, "fine")])
    t0 = time.monotonic()
    r = fetch_one(config(), site.url("/flaky"))
    assert r.status == "ok" and r.body == b"fine"
    assert time.monotonic() - t0 >= 0.9  # Retry-After honoured over the 0.02 s backoff
    assert site.count("/flaky") == 2


def test_429_retry_after_honoured_or_given_up(site):
    site.sequence("/limited", [(429, {"Retry-After": "0"}, "slow down"), (200, {}, "ok now")])
    site.sequence("/closed", [(429, {"Retry-After": "3600"}, "come back tomorrow")])
    t0 = time.monotonic()
    ok, closed = fetch_many(config(), [site.url("/limited"), site.url("/closed")])
    assert ok.status == "ok" and site.count("/limited") == 2
    assert closed.status == "fetch_failed" and closed.http_status == 429
    assert "Retry-After 3600s over limit 30s" in closed.error
    assert site.count("/closed") == 1 and time.monotonic() - t0 < 3


def test_http_errors(site):
    site.text("/gone", "no", status=404)
    site.text("/broken", "no", status=500)
    gone, broken = fetch_many(config(), [site.url("/gone"), site.url("/broken")])
    assert (gone.status, gone.http_status, gone.error) == ("fetch_failed", 404, "HTTP 404")
    assert site.count("/gone") == 1  # 4xx is not retried
    assert (broken.status, broken.error) == ("fetch_failed", "HTTP 500")
    assert site.count("/broken") == 3  # max_retries=2


def test_per_host_concurrency_limit_observed_by_server(site):
    site.slow("/sleepy", 0.1)
    results = fetch_many(config(per_host_concurrency=3), [site.url("/sleepy")] * 12)
    assert all(r.status == "ok" for r in results)
    assert 2 <= site.max_active <= 3  # limited, yet really concurrent


def test_global_cap_across_hosts_and_per_host_rate(site):
    site.slow("/sleepy", 0.1)
    names = {f"h{i}.test": ["127.0.0.1"] for i in range(4)}
    urls = [f"http://h{i}.test:{site.port}/sleepy" for i in range(4) for _ in range(3)]
    results = fetch_many(config(max_in_flight=2), urls, resolver=StaticResolver(names))
    assert all(r.status == "ok" for r in results) and site.max_active <= 2

    site.text("/tick", "t")
    fetch_many(config(per_host_rps=10.0, respect_robots=False), [site.url("/tick")] * 4)
    starts = [h.t for h in site.hits if h.path == "/tick"]
    assert max(starts) - min(starts) >= 0.25  # 4 starts at least 0.1 s apart


def test_fetch_all_keeps_order_with_bounded_tasks(site):
    site.slow("/sleepy", 0.05)
    for i in range(6):
        site.text(f"/n{i}", str(i))
    urls = [site.url(f"/n{i}") for i in range(6)] + [site.url("/sleepy")] * 4 + ["gopher://x"]
    results = asyncio.run(fetch_all(urls, config(), max_tasks=2))
    assert [r.url for r in results] == urls
    assert [r.body for r in results[:6]] == [str(i).encode() for i in range(6)]
    assert results[-1].status == "bad_url"
    assert site.max_active <= 2
