"""robots.txt (RFC 9309) per origin, and the `noai` / `noimageai` opt-out signals.

robots.txt is fetched once per (scheme, host, port), through the same guarded fetch as everything
else (address policy, redirects, byte cap), with one shared in-flight load per origin so hundreds
of concurrent requests to a new host trigger a single robots.txt request. Outcomes (RFC 9309 2.3.1):
  2xx          -> parse (first `robots_max_bytes` only), rules for our product token apply
  4xx but 429  -> "unavailable": allow everything
  5xx, 429, unreachable, refused address, too many redirects -> disallow everything
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from protego import Protego
from yarl import URL

from .result import FETCH_FAILED, OK, FetchResult

log = logging.getLogger(__name__)

OPT_OUT_TOKENS = frozenset({"noai", "noimageai"})

RobotsFetch = Callable[[str], Awaitable[FetchResult]]


@dataclass(frozen=True)
class RobotsDecision:
    allowed: bool
    reason: str | None = None  # why not allowed, e.g. "robots.txt disallows /private/x"
    crawl_delay_s: float = 0.0  # minimum seconds between request starts on this host


@dataclass(frozen=True)
class RobotsRecord:
    """One robots.txt fetch as the dataset records it (DIR/manifests/origins): what was asked,
    when, and what came back, so every task and a resumed build reuse it instead of asking the
    site again."""

    origin: str  # scheme://host[:port], lower case: the unit robots.txt applies to (RFC 9309)
    url: str  # the robots.txt URL
    fetched_at: float  # time.time() of the fetch
    status: str  # the fetch's status (ok, fetch_failed, blocked_address, ...)
    http_status: int | None
    error: str | None
    body: bytes | None  # the first robots_max_bytes of the file, when it was fetched


def origin_of(url: str | URL) -> str:
    """The robots.txt origin of a URL: scheme://host, with the port unless it is the default."""
    u = url if isinstance(url, URL) else URL(url)
    return str(u.origin())


def _key(u: URL) -> tuple[str, str, int]:
    return ((u.scheme or "").lower(), (u.raw_host or "").lower(), u.port or 0)


@dataclass
class _Rules:
    parser: Protego | None  # None: no rules (allow all) or disallow all, see disallow_reason
    disallow_reason: str | None
    crawl_delay_s: float
    expires: float  # time.monotonic() deadline


class RobotsCache:
    """robots.txt rules per origin, loaded on first use through `fetch` (which must not itself
    check robots.txt, must follow redirects and truncate, not refuse, an oversized file).

    ttl_s: how long fetched rules are reused (RFC 9309 asks for at most 24 h).
    error_ttl_s: how long a "disallow all because unavailable" answer is reused before retrying.
    max_entries: LRU bound on cached origins.
    """

    def __init__(
        self,
        fetch: RobotsFetch,
        user_agent_token: str,
        *,
        max_crawl_delay_s: float = 60.0,
        ttl_s: float = 24 * 3600.0,
        error_ttl_s: float = 600.0,
        max_entries: int = 50_000,
    ):
        self._fetch = fetch
        self.token = user_agent_token
        self.max_crawl_delay_s = max_crawl_delay_s
        self.ttl_s = ttl_s
        self.error_ttl_s = error_ttl_s
        self.max_entries = max_entries
        self.loads = 0  # robots.txt fetches started (for stats and tests)
        self.records: list[RobotsRecord] = []  # every fetch this cache made, to be stored
        self._cache: OrderedDict[tuple[str, str, int], _Rules] = OrderedDict()
        self._inflight: dict[tuple[str, str, int], asyncio.Future[_Rules]] = {}

    async def check(self, url: str | URL) -> RobotsDecision:
        u = url if isinstance(url, URL) else URL(url)
        rules = await self._rules(u)
        if rules.disallow_reason is not None:
            return RobotsDecision(False, rules.disallow_reason, rules.crawl_delay_s)
        if rules.parser is not None and not rules.parser.can_fetch(str(u), self.token):
            return RobotsDecision(
                False, f"robots.txt disallows {u.raw_path_qs}", rules.crawl_delay_s
            )
        return RobotsDecision(True, None, rules.crawl_delay_s)

    def preload(self, records) -> int:
        """Take robots.txt answers fetched earlier (by another task, or before a resume) as if
        this cache had fetched them; an answer older than its time to live is left out, so it is
        fetched again. Returns how many were taken."""
        taken = 0
        for rec in records:
            res = FetchResult(
                rec.url,
                rec.url,
                rec.status,
                http_status=rec.http_status,
                body=rec.body,
                error=rec.error,
            )
            rules = self._interpret(rec.url, res)
            age = max(0.0, time.time() - rec.fetched_at)
            rules.expires -= age  # _interpret dated it now; it is `age` older
            if rules.expires > time.monotonic():
                self._cache[_key(URL(rec.origin))] = rules
                taken += 1
        return taken

    async def _rules(self, u: URL) -> _Rules:
        key = _key(u)
        hit = self._cache.get(key)
        if hit is not None and hit.expires > time.monotonic():
            self._cache.move_to_end(key)
            return hit
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._load(key, u))
            self._inflight[key] = pending
            pending.add_done_callback(lambda f: self._load_done(key, f))
        # shield: a cancelled waiter must not cancel the load the other waiters share
        return await asyncio.shield(pending)

    def _load_done(self, key: tuple[str, str, int], fut: asyncio.Future) -> None:
        self._inflight.pop(key, None)
        if not fut.cancelled():
            fut.exception()  # mark retrieved even if every waiter was cancelled

    async def _load(self, key: tuple[str, str, int], u: URL) -> _Rules:
        robots_url = str(u.origin().with_path("/robots.txt"))
        self.loads += 1
        fetched_at = time.time()
        res = await self._fetch(robots_url)
        self.records.append(
            RobotsRecord(
                origin_of(u),
                robots_url,
                fetched_at,
                res.status,
                res.http_status,
                res.error,
                res.body,
            )
        )
        rules = self._interpret(robots_url, res)
        log.debug("robots %s -> %s", robots_url, rules.disallow_reason or "rules loaded")
        self._cache[key] = rules
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return rules

    def _interpret(self, robots_url: str, res: FetchResult) -> _Rules:
        now = time.monotonic()
        code = res.http_status
        if res.status == OK and res.body is not None:
            return self._parse(res.body, now)
        if res.status == FETCH_FAILED and code is not None and 400 <= code < 500 and code != 429:
            return _Rules(None, None, 0.0, now + self.ttl_s)  # unavailable: no restrictions
        why = res.error or res.status
        return _Rules(
            None, f"robots.txt unavailable ({why}): disallow all", 0.0, now + self.error_ttl_s
        )

    def _parse(self, body: bytes, now: float) -> _Rules:
        text = body.decode("utf-8", errors="replace").lstrip("\ufeff")
        try:
            parser = Protego.parse(text)
        except Exception as exc:  # a file with no parsable rules imposes none (RFC 9309 2.2)
            log.debug("robots.txt unparsable (%s): no rules", exc)
            return _Rules(None, None, 0.0, now + self.ttl_s)
        delay = parser.crawl_delay(self.token) or 0.0
        rate = parser.request_rate(self.token)
        if rate is not None and rate.requests > 0:
            delay = max(delay, rate.seconds / rate.requests)
        if delay > self.max_crawl_delay_s:
            reason = f"robots.txt crawl-delay {delay:g}s over limit {self.max_crawl_delay_s:g}s"
            return _Rules(None, reason, delay, now + self.ttl_s)
        return _Rules(parser, None, float(delay), now + self.ttl_s)


# ---------------------------------------------------------------- opt-out signals (noai etc.)

# Directives of the form "name: value" that are not user-agent prefixes.
_VALUED_DIRECTIVES = frozenset(
    {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}
)
_UA_PREFIX_RE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*:\s*(.*)$", re.S)
_SPLIT_RE = re.compile(r"[\s,]+")


def _header_values(headers: Mapping[str, str] | Iterable[tuple[str, str]], name: str) -> list[str]:
    getall = getattr(headers, "getall", None)
    if getall is not None:  # multidict (aiohttp): repeated headers kept
        return [str(v) for v in getall(name, [])]
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: list[str] = []
    for key, value in items:
        if str(key).lower() == name.lower():
            out.extend(value if isinstance(value, list | tuple) else [value])
    return [str(v) for v in out]


def x_robots_opt_out(
    headers: Mapping[str, str] | Iterable[tuple[str, str]], user_agent_token: str
) -> bool:
    """True when an X-Robots-Tag header tells us `noai` or `noimageai`.

    Each header value is a comma list of directives. A directive may start with a user-agent name
    ("otherbot: noai, noimageai"); that scope lasts until the next prefix in the same value and
    only a scope naming `user_agent_token` (or no scope) applies to us.
    """
    ours = user_agent_token.lower()
    for value in _header_values(headers, "X-Robots-Tag"):
        scope: str | None = None
        for part in value.split(","):
            m = _UA_PREFIX_RE.match(part)
            if m and m.group(1).lower() not in _VALUED_DIRECTIVES:
                scope, part = m.group(1).lower(), m.group(2)
            if scope is not None and scope != ours:
                continue
            if any(tok.lower() in OPT_OUT_TOKENS for tok in _SPLIT_RE.split(part)):
                return True
    return False


def meta_robots_opt_out(content: str) -> bool:
    """True when a robots meta tag's `content` (e.g. "noindex, noai") contains noai/noimageai.

    The caller decides which tags apply: `<meta name="robots">` and `<meta name="<our token>">`.
    """
    return any(tok.lower() in OPT_OUT_TOKENS for tok in _SPLIT_RE.split(content or ""))
