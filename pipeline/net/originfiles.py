"""Per-origin files (robots.txt, /.well-known/tdmrep.json, /ai.txt): each fetched once per origin.

A file is loaded on first use through the guarded fetch (address policy, redirects, byte cap,
per-host limits), with one shared in-flight load per origin, so hundreds of concurrent requests to
a new host trigger a single request per file. Every fetch is kept as an OriginFileRecord for the
dataset (DIR/manifests/origins), and a cache can be preloaded with records another task or an
earlier run stored. What a fetch means (RFC 9309 2.3.1, applied to every file alike):
  2xx          -> "found": the first `max_bytes` are parsed
  4xx but 429  -> "absent": no rules
  5xx, 429, unreachable, refused address, too many redirects -> "unavailable": disallow all
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from yarl import URL

from .result import FETCH_FAILED, OK, FetchResult

FileFetch = Callable[[str], Awaitable[FetchResult]]

FOUND, ABSENT, UNAVAILABLE = "found", "absent", "unavailable"


@dataclass(frozen=True)
class OriginFileRecord:
    """One per-origin file fetch as the dataset records it: what was asked, when, and what came
    back, so every task and a resumed build reuse it instead of asking the site again."""

    origin: str  # scheme://host[:port], lower case: the unit these files apply to (RFC 9309)
    url: str  # the file's URL
    fetched_at: float  # time.time() of the fetch
    status: str  # the fetch's status (ok, fetch_failed, blocked_address, ...)
    http_status: int | None
    error: str | None
    body: bytes | None  # the first max_bytes of the file, when it was fetched
    file: str = "robots.txt"  # which file: robots.txt, tdmrep.json or ai.txt


def origin_of(url: str | URL) -> str:
    """The origin of a URL: scheme://host, with the port unless it is the default."""
    u = url if isinstance(url, URL) else URL(url)
    return str(u.origin())


def _key(u: URL) -> tuple[str, str, int]:
    return ((u.scheme or "").lower(), (u.raw_host or "").lower(), u.port or 0)


@dataclass
class OriginFile:
    """One origin's copy of a file, interpreted: `rules` is the subclass's parse of the body
    (None when absent or unavailable)."""

    state: str  # FOUND, ABSENT or UNAVAILABLE
    rules: Any
    note: str | None  # why unavailable (the fetch's error), or a parse problem
    fetched_at: float  # time.time() of the fetch
    expires: float  # time.monotonic() deadline


class OriginFileCache:
    """One kind of per-origin file, loaded on first use through `fetch` (which must follow
    redirects and truncate, not refuse, an oversized file, and must not itself check the
    per-origin files). Subclasses set `file`, `path` and `parse`.

    ttl_s: how long a fetched file is reused (RFC 9309 asks for at most 24 h).
    error_ttl_s: how long an "unavailable" answer is reused before asking again.
    max_entries: LRU bound on cached origins.
    """

    file = ""
    path = ""

    def __init__(
        self,
        fetch: FileFetch,
        *,
        ttl_s: float = 24 * 3600.0,
        error_ttl_s: float = 600.0,
        max_entries: int = 50_000,
    ):
        self._fetch = fetch
        self.ttl_s, self.error_ttl_s, self.max_entries = ttl_s, error_ttl_s, max_entries
        self.loads = 0  # fetches started (for stats and tests)
        self.records: list[OriginFileRecord] = []  # every fetch this cache made, to be stored
        self._cache: OrderedDict[tuple[str, str, int], OriginFile] = OrderedDict()
        self._inflight: dict[tuple[str, str, int], asyncio.Future[OriginFile]] = {}

    def parse(self, body: bytes) -> tuple[Any, str | None]:
        """(rules, a parse problem or None) of a served file."""
        raise NotImplementedError

    async def get(self, u: URL) -> OriginFile:
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

    def cached(self, u: URL) -> OriginFile | None:
        """The origin's file if this cache holds it (loaded or preloaded), without fetching."""
        return self._cache.get(_key(u))

    def preload(self, records, keep_stale: bool = False) -> int:
        """Take this file's records fetched earlier (by another task, or before a resume) as if
        this cache had fetched them; one older than its time to live is left out, so it is
        fetched again (unless `keep_stale`: a reader of what the build saw). Returns how many
        were taken."""
        taken = 0
        for rec in records:
            if rec.file != self.file:
                continue
            res = FetchResult(
                rec.url, rec.url, rec.status, rec.http_status, body=rec.body, error=rec.error
            )
            entry = self._interpret(res, rec.fetched_at)
            entry.expires -= max(0.0, time.time() - rec.fetched_at)  # dated now; it is older
            if keep_stale or entry.expires > time.monotonic():
                self._cache[_key(URL(rec.origin))] = entry
                taken += 1
        return taken

    def _load_done(self, key: tuple[str, str, int], fut: asyncio.Future) -> None:
        self._inflight.pop(key, None)
        if not fut.cancelled():
            fut.exception()  # mark retrieved even if every waiter was cancelled

    async def _load(self, key: tuple[str, str, int], u: URL) -> OriginFile:
        url = str(u.origin().with_path(self.path))
        self.loads += 1
        fetched_at = time.time()
        res = await self._fetch(url)
        self.records.append(
            OriginFileRecord(
                origin_of(u),
                url,
                fetched_at,
                res.status,
                res.http_status,
                res.error,
                res.body,
                self.file,
            )
        )
        entry = self._interpret(res, fetched_at)
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return entry

    def _interpret(self, res: FetchResult, fetched_at: float) -> OriginFile:
        now, code = time.monotonic(), res.http_status
        if res.status == OK and res.body is not None:
            try:
                rules, note = self.parse(res.body)
            except Exception as exc:  # a file we cannot read imposes nothing (RFC 9309 2.2)
                rules, note = None, f"unparsable: {type(exc).__name__}"
            return OriginFile(FOUND, rules, note, fetched_at, now + self.ttl_s)
        if res.status == FETCH_FAILED and code is not None and 400 <= code < 500 and code != 429:
            return OriginFile(ABSENT, None, f"HTTP {code}", fetched_at, now + self.ttl_s)
        why = res.error or res.status
        return OriginFile(UNAVAILABLE, None, why, fetched_at, now + self.error_ttl_s)
