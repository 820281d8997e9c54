"""robots.txt (RFC 9309) per origin, and the `noai` / `noimageai` / `noml` opt-out signals.

robots.txt is one of the per-origin files (pipeline.net.originfiles: fetched once per origin,
recorded, shared in flight); its outcomes follow RFC 9309 2.3.1:
  2xx          -> parse (first `robots_max_bytes` only), rules for our product token apply
  4xx but 429  -> "absent": allow everything
  5xx, 429, unreachable, refused address, too many redirects -> "unavailable": disallow all
Besides Allow/Disallow and crawl-delay, its AI-preference lines (IETF aipref `Content-Usage`)
are read for pipeline.net.consent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from protego import Protego
from yarl import URL

from .consent_rules import OPT_OUT_TOKENS, ContentUsageRules, select_group_lines, x_robots_tokens
from .originfiles import UNAVAILABLE, FileFetch, OriginFile, OriginFileCache, origin_of

log = logging.getLogger(__name__)

__all__ = ["OPT_OUT_TOKENS", "RobotsCache", "RobotsDecision", "origin_of"]


@dataclass(frozen=True)
class RobotsDecision:
    allowed: bool
    reason: str | None = None  # why not allowed, e.g. "robots.txt disallows /private/x"
    crawl_delay_s: float = 0.0  # minimum seconds between request starts on this host


@dataclass(frozen=True)
class _Rules:
    parser: Protego | None  # None: no rules (allow all) or disallow all, see disallow_reason
    disallow_reason: str | None
    crawl_delay_s: float
    content_usage: ContentUsageRules | None = None


class RobotsCache(OriginFileCache):
    """robots.txt rules per origin, loaded on first use through `fetch`."""

    file, path = "robots.txt", "/robots.txt"

    def __init__(
        self, fetch: FileFetch, user_agent_token: str, *, max_crawl_delay_s: float = 60.0, **kw
    ):
        super().__init__(fetch, **kw)
        self.token = user_agent_token
        self.max_crawl_delay_s = max_crawl_delay_s

    async def check(self, url: str | URL) -> RobotsDecision:
        u = url if isinstance(url, URL) else URL(url)
        entry = await self.get(u)
        if entry.state == UNAVAILABLE:
            return RobotsDecision(False, f"robots.txt unavailable ({entry.note}): disallow all")
        rules: _Rules | None = entry.rules
        if rules is None:
            return RobotsDecision(True)
        if rules.disallow_reason is not None:
            return RobotsDecision(False, rules.disallow_reason, rules.crawl_delay_s)
        if rules.parser is not None and not rules.parser.can_fetch(str(u), self.token):
            return RobotsDecision(
                False, f"robots.txt disallows {u.raw_path_qs}", rules.crawl_delay_s
            )
        return RobotsDecision(True, None, rules.crawl_delay_s)

    def parse(self, body: bytes) -> tuple[_Rules | None, str | None]:
        text = body.decode("utf-8", errors="replace").lstrip("\ufeff")
        usage = ContentUsageRules.parse(text, self.token)
        try:
            parser = Protego.parse(_our_group(text, self.token))
        except Exception as exc:  # a file with no parsable rules imposes none (RFC 9309 2.2)
            log.debug("robots.txt unparsable (%s): no rules", exc)
            return _Rules(None, None, 0.0, usage), "unparsable"
        delay = parser.crawl_delay(self.token) or 0.0
        rate = parser.request_rate(self.token)
        if rate is not None and rate.requests > 0:
            delay = max(delay, rate.seconds / rate.requests)
        if delay > self.max_crawl_delay_s:
            reason = f"robots.txt crawl-delay {delay:g}s over limit {self.max_crawl_delay_s:g}s"
            return _Rules(None, reason, delay, usage), None
        return _Rules(parser, None, float(delay), usage), None


# The lines of our group that Protego reads; it sees them as the one `*` group, so it, the
# Content-Usage lines and ai.txt agree on which group is ours (select_group_lines: RFC 9309's
# product-token match, where Protego would match user agents by substring).
_PROTEGO_KEYS = ("allow", "disallow", "crawl-delay", "request-rate")


def _our_group(text: str, token: str) -> str:
    lines = [f"{k}: {v}" for k, v in select_group_lines(text, token) if k in _PROTEGO_KEYS]
    return "User-agent: *\n" + "\n".join(lines) + "\n"


def content_usage_of(entry: OriginFile) -> ContentUsageRules | None:
    rules: _Rules | None = entry.rules
    return rules.content_usage if rules is not None else None


# ---------------------------------------------------------------- opt-out signals (noai etc.)


def x_robots_opt_out(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    user_agent_token: str,
    tokens: Iterable[str] = OPT_OUT_TOKENS,
) -> bool:
    """True when an X-Robots-Tag header that applies to us (unscoped, or scoped to
    `user_agent_token`) carries one of `tokens` (noai, noimageai, noml by default)."""
    from pipeline.extract import header_values

    said = x_robots_tokens(header_values(headers, "x-robots-tag"), user_agent_token)
    return not said.isdisjoint(t.lower() for t in tokens)


def meta_robots_opt_out(content: str, tokens: Iterable[str] = OPT_OUT_TOKENS) -> bool:
    """True when a robots meta tag's `content` (e.g. "noindex, noai") carries one of `tokens`.

    The caller decides which tags apply: `<meta name="robots">` and `<meta name="<our token>">`.
    """
    said = {t.lower() for t in (content or "").replace(",", " ").split()}
    return not said.isdisjoint(t.lower() for t in tokens)
