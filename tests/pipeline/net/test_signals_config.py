"""Opt-out header/meta parsing, Retry-After and URL parsing, FetchConfig validation."""

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from multidict import CIMultiDict

from pipeline.net import (
    FetchConfig,
    meta_robots_opt_out,
    parse_http_url,
    parse_retry_after,
    x_robots_opt_out,
)

TOKEN = "clipengine-bot"


@pytest.mark.parametrize(
    "values, expected",
    [
        (["noai"], True),
        (["NoImageAI"], True),
        (["noindex, nofollow"], False),
        (["noindex", "noai"], True),  # repeated header, second one opts out
        (["noindex,noimageai"], True),
        (["clipengine-bot: noai"], True),
        (["ClipEngine-Bot: noindex, noimageai"], True),  # scope covers the whole comma list
        (["otherbot: noai, noimageai"], False),
        (["otherbot: noindex", "noai"], True),
        (["noai, otherbot: noindex"], True),
        (["otherbot: noindex, clipengine-bot: noai"], True),
        (["unavailable_after: 25 Jun 2010 15:00:00 PST"], False),
        (["unavailable_after: 25 Jun 2010 15:00:00 PST, noai"], True),
        (["noaiX, xnoai"], False),
        ([], False),
    ],
)
def test_x_robots_opt_out(values, expected):
    headers = CIMultiDict([("X-Robots-Tag", v) for v in values] + [("Content-Type", "text/html")])
    assert x_robots_opt_out(headers, TOKEN) is expected


def test_x_robots_opt_out_accepts_plain_dicts_and_pairs():
    assert x_robots_opt_out({"x-robots-tag": "noai"}, TOKEN)
    assert x_robots_opt_out({"X-Robots-Tag": ["noindex", "noimageai"]}, TOKEN)
    assert x_robots_opt_out([("x-robots-tag", "noindex"), ("X-ROBOTS-TAG", "noai")], TOKEN)
    assert not x_robots_opt_out({"x-robots-tag-extra": "noai"}, TOKEN)


@pytest.mark.parametrize(
    "content, expected",
    [
        ("noai", True),
        ("noindex, NOIMAGEAI", True),
        ("noindex noai", True),
        ("noindex, nofollow", False),
        ("", False),
        ("noairplane", False),
    ],
)
def test_meta_robots_opt_out(content, expected):
    assert meta_robots_opt_out(content) is expected


def test_parse_retry_after():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    future = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    assert 85 <= parse_retry_after(future) <= 91
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(past) == 0.0


@pytest.mark.parametrize(
    "url, why",
    [
        ("ftp://example.com/x", "unsupported scheme 'ftp'"),
        ("file:///etc/passwd", "unsupported scheme 'file'"),
        ("javascript:alert(1)", "unsupported scheme 'javascript'"),
        ("/relative/path", "not an absolute URL"),
        ("http://", "no host"),
        ("http://[::1", "unparsable"),
        ("http://example.com:99999/", "unparsable"),
        ("", "empty"),
        ("http://example.com/" + "a" * 9000, "longer than"),
    ],
)
def test_parse_http_url_rejects(url, why):
    u, error = parse_http_url(url)
    assert u is None and why in error


def test_parse_http_url_drops_fragment():
    u, error = parse_http_url("HTTP://Example.COM/a?b=1#frag")
    assert error is None and str(u) == "http://example.com/a?b=1"


def test_config_defaults_and_user_agent():
    cfg = FetchConfig()
    assert cfg.max_bytes == 10 * 1024 * 1024 and cfg.max_redirects == 5
    assert cfg.user_agent.startswith("clipengine-bot/")
    assert cfg.user_agent.endswith(" (+https://github.com/clipengine/clipengine)")


def test_config_from_dict_rejects_unknown_keys_listing_allowed():
    with pytest.raises(ValueError, match="unknown option.*timeout.*allowed: .*total_timeout_s"):
        FetchConfig.from_dict({"timeout": 3})
    cfg = FetchConfig.from_dict({"total_timeout_s": 3, "allow_networks": ["127.0.0.1/32"]})
    assert cfg.total_timeout_s == 3.0 and isinstance(cfg.total_timeout_s, float)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        # ill-typed values and bad values alike are ConfigErrors (ValueErrors)
        ({"max_bytes": "10"}, ValueError),
        ({"max_bytes": 1.5}, ValueError),
        ({"max_retries": True}, ValueError),
        ({"respect_robots": 1}, ValueError),
        ({"allow_networks": "127.0.0.1/32"}, ValueError),
        ({"allow_networks": ["300.0.0.0/8"]}, ValueError),
        ({"total_timeout_s": 0}, ValueError),
        ({"max_redirects": -1}, ValueError),
        ({"per_host_concurrency": 0}, ValueError),
        ({"user_agent_token": "clip engine/1.0"}, ValueError),
        ({"contact_url": "https://x\r\nEvil: 1"}, ValueError),
    ],
)
def test_config_rejects_bad_values(kwargs, error):
    with pytest.raises(error):
        FetchConfig(**kwargs)
