"""Every opt-out signal through the one fetch layer, against loopback sites that send them."""

import asyncio

import pytest

from pipeline.net import FetchConfig, Fetcher
from pipeline.net.consent import ConsentPolicy, meta_findings, opt_out_error
from pipeline.testing.consentsite import ALLOWED_POLICY, EXPECTED, ConsentWeb

pytestmark = pytest.mark.timeout(60)


def _config(**kw) -> FetchConfig:
    return FetchConfig(
        allow_networks=["127.0.0.1/32"],
        max_retries=0,
        total_timeout_s=5.0,
        allow_tdm_policies=[ALLOWED_POLICY],
        opt_out_tokens=["nofoundationmodels"],
        **kw,
    )


async def _fetch_all(urls, config):
    async with Fetcher(config, skip_opted_out=True) as fetcher:
        results = await asyncio.gather(*(fetcher.fetch(u) for u in urls))
        return results, fetcher.origin_records()


@pytest.fixture(scope="module")
def fetched():
    with ConsentWeb() as web:
        urls = web.image_urls()
        results, records = asyncio.run(_fetch_all(list(urls), _config()))
        hits = {site: web.hits(site) for site in web.servers}
        yield {urls[r.url]: r for r in results}, records, hits


def _decision(result) -> str:
    if result.status != "ok":
        return result.status
    return "opted_out" if opt_out_error(result.consent) else "kept"


def test_every_signal_in_every_form_ends_as_the_site_asked(fetched):
    results, _, _ = fetched
    assert {key: _decision(r) for key, r in results.items()} == EXPECTED


def test_an_image_its_origin_refuses_is_never_requested(fetched):
    results, _, hits = fetched
    for (site, path), result in results.items():
        if result.status == "opted_out":
            assert path not in hits[site], (site, path)
    assert "/img/covered.png" in hits["headers"]  # a header can only be read once it is sent


def test_each_per_origin_file_is_asked_once_per_origin_and_recorded(fetched):
    _, records, hits = fetched
    for site, paths in hits.items():  # a redirect loop is seen at its first hop: one request
        for path in ("/robots.txt", "/.well-known/tdmrep.json", "/ai.txt"):
            assert paths.count(path) == 1, (site, path)
    assert {r.file for r in records} == {"robots.txt", "tdmrep.json", "ai.txt"}
    assert len(records) == 3 * len(hits)
    assert all(r.fetched_at > 0 for r in records)


def test_the_finding_names_the_signal_the_rule_and_the_policy(fetched):
    results, _, _ = fetched

    def said(site, path, signal):
        return next(f for f in results[(site, path)].consent if f.signal == signal)

    tdm = said("tdmrep", "/img/covered.png", "tdmrep.json")
    assert tdm.opt_out and tdm.state == "found" and '"location":"/img/*"' in tdm.value
    assert "https://a.test/p" in tdm.value
    allowed = said("tdmrep-allowed-policy", "/img/covered.png", "tdmrep.json")
    assert not allowed.opt_out and ALLOWED_POLICY in allowed.value  # recorded either way
    usage = said("robots-usage", "/free/other.png", "robots.txt content-usage")
    assert not usage.opt_out and "train-ai=y" in usage.value  # the longer path wins
    header = said("headers", "/img/covered.png", "x-robots-tag")
    assert header.opt_out and header.value == "noml"
    other = said("headers", "/free/other.png", "x-robots-tag")
    assert other.state == "found" and not other.opt_out  # scoped to another agent
    gone = said("unavailable-tdmrep", "/free/other.png", "tdmrep.json")
    assert gone.state == "unavailable" and gone.opt_out
    loop = said("ai-txt-redirect-loop", "/img/covered.png", "ai.txt")
    assert loop.state == "unavailable" and "redirect loop" in loop.value
    garbage = said("malformed-files", "/img/covered.png", "tdmrep.json")
    assert garbage.state == "found" and not garbage.opt_out and "no rules" in garbage.value
    error = opt_out_error(results[("conflicting", "/img/covered.png")].consent)
    assert error.startswith("opted out by tdmrep.json")


def test_every_result_lists_every_signal_it_checked(fetched):
    results, _, _ = fetched
    files = ["robots.txt", "robots.txt content-usage", "tdmrep.json", "ai.txt"]
    headers = ["x-robots-tag", "content-usage", "tdm-reservation"]
    for result in results.values():
        signals = [f.signal for f in result.consent]
        assert signals == (files + headers if result.status == "ok" else files)


def test_meta_tags_of_a_page_say_tdm_and_robots_opt_outs():
    policy = ConsentPolicy("clipengine-bot", allowed_tdm_policies=frozenset({ALLOWED_POLICY}))
    metas = [("robots", "index, noml"), ("tdm-reservation", "1"), ("tdm-policy", "https://x/p")]
    found = {f.signal: f for f in meta_findings(metas, policy, 1.0)}
    assert found["meta robots"].opt_out and found["meta tdm-reservation"].opt_out
    allowed = meta_findings([("tdm-reservation", "1"), ("tdm-policy", ALLOWED_POLICY)], policy, 1.0)
    assert [f.opt_out for f in allowed] == [False, False]
    assert allowed[0].state == "absent" and allowed[1].state == "found"


def test_unknown_opt_out_tokens_are_refused_with_a_message():
    from manifests.config import ConfigError

    with pytest.raises(ConfigError, match="--opt-out-token"):
        FetchConfig(opt_out_tokens=["no ai"])


def _one_site(routes: dict, url_path: str, **config):
    from pipeline.loopback import LoopbackServer

    with LoopbackServer(routes=routes) as server:
        result = asyncio.run(_fetch_all([server.url(url_path)], _config(**config)))[0][0]
        return result, list(server.hits)


def test_repeated_tdm_headers_that_disagree_are_a_reservation():
    from pipeline.testing.site import picture

    headers = [("Content-Type", "image/png"), ("tdm-reservation", "0"), ("tdm-reservation", "1")]
    result, _ = _one_site({"/a.png": (200, headers, picture("x"))}, "/a.png")
    assert opt_out_error(result.consent).startswith("opted out by tdm-reservation")


def test_a_redirect_that_says_noai_counts_and_keeps_every_hops_findings():
    from pipeline.testing.site import picture

    routes = {
        "/old.png": (302, {"Location": "/new.png", "X-Robots-Tag": "noai"}, b""),
        "/new.png": (200, {"Content-Type": "image/png"}, picture("y")),
        "/loop.png": (302, {"Location": "/loop.png"}, b""),
    }
    result, _ = _one_site(routes, "/old.png")
    assert result.status == "ok" and opt_out_error(result.consent).startswith(
        "opted out by x-robots-tag (noai)"
    )
    assert [f.signal for f in result.consent].count("tdmrep.json") == 2  # both hops' origin
    looped, _ = _one_site(routes, "/loop.png")
    assert looped.status == "fetch_failed" and looped.consent  # findings kept on a failure


def test_one_group_is_ours_for_allow_disallow_and_ai_preferences():
    from pipeline.testing.site import picture

    robots = (
        "User-agent: clipengine\nDisallow: /\nContent-Usage: train-ai=n\n\n"
        "User-agent: clipengine-bot/2\nAllow: /\nContent-Usage: /private/ train-ai=n\n"
    )
    routes = {
        "/robots.txt": (200, {"Content-Type": "text/plain"}, robots.encode()),
        "/a.png": (200, {"Content-Type": "image/png"}, picture("z")),
        "/private/b.png": (200, {"Content-Type": "image/png"}, picture("w")),
    }
    open_one, _ = _one_site(routes, "/a.png")  # `clipengine` is another agent's group
    assert open_one.status == "ok" and opt_out_error(open_one.consent) is None
    private, hits = _one_site(routes, "/private/b.png")  # `clipengine-bot/2` is ours
    assert private.status == "opted_out" and "/private/b.png" not in hits


def test_header_opt_outs_hold_without_robots_txt():
    from pipeline.testing.site import picture

    routes = {"/a.png": (200, {"Content-Type": "image/png", "X-Robots-Tag": "noml"}, picture("v"))}
    result, _ = _one_site(routes, "/a.png", respect_robots=False)
    assert opt_out_error(result.consent) == "opted out by x-robots-tag (noml)"
