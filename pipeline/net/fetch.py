"""The one fetch path for every request the project makes (pages, robots.txt, images).

Per hop (the requested URL, then each redirect, followed by hand):
  1. only http(s) URLs with a host;
  2. address policy: IP literals checked here, names resolved through the GuardedResolver, which
     is also the connector's resolver, so a refused address is never connected to;
  3. the per-origin files of that URL's origin (robots.txt, tdmrep.json, ai.txt; each fetched
     once), crawl-delay honoured as a per-host interval, their findings kept on the result
     (pipeline.net.consent), and with `skip_opted_out` a URL they refuse is not requested;
  4. the request under the host/global limits, with a total time cap, a byte cap (declared
     Content-Length refused early, streamed bodies cut as soon as they pass the cap), and bounded
     retries with exponential backoff on 429, 5xx and connection errors, honouring Retry-After.
Problems come back as a FetchResult status, never as an exception.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver
from multidict import CIMultiDict
from yarl import URL

from .config import FetchConfig
from .consent import (
    TDMREP_MAX_BYTES,
    AiTxtCache,
    ConsentPolicy,
    TdmRepCache,
    file_findings,
    header_findings,
)
from .consent import opt_out_error as consent_error
from .policy import AddressPolicy, BlockedAddressError, GuardedResolver, parse_ip
from .ratelimit import HostLimiter
from .result import (
    BAD_URL,
    BLOCKED_ADDRESS,
    FETCH_FAILED,
    OK,
    OPTED_OUT,
    ROBOTS_DISALLOWED,
    TOO_LARGE,
    FetchResult,
)
from .robots import RobotsCache
from .urls import parse_http_url, parse_retry_after

__all__ = ["Fetcher", "parse_http_url", "parse_retry_after"]

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024  # bytes per streamed read
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


@dataclass
class _Outcome:
    """One HTTP attempt: a final answer (status set) or a redirect (location set)."""

    status: str
    http_status: int | None = None
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    body: bytes | None = None
    error: str | None = None
    location: str | None = None
    retryable: bool = False
    retry_after: float | None = None  # seconds, from the Retry-After header


class Fetcher:
    """Async fetcher owning one aiohttp session. Use as `async with Fetcher(cfg) as f:`.

    resolver: base DNS resolver (default: aiohttp's); tests pass a StaticResolver (fake DNS).
    trace_configs: aiohttp TraceConfigs, e.g. to count connections in tests or for metrics.
    shares: host -> HostShare for hosts whose budget this fetcher holds only part of.
    robots: OriginFileRecords (robots.txt, tdmrep.json, ai.txt) fetched before (by another task,
      or a run being resumed) to reuse.
    skip_opted_out: a URL its origin's files refuse (a TDM reservation, ai.txt, robots.txt's
      Content-Usage) is not requested: status opted_out (image fetches; a crawl fetches pages
      anyway, for their links).
    """

    def __init__(
        self,
        config: FetchConfig | None = None,
        resolver: AbstractResolver | None = None,
        *,
        trace_configs: list[aiohttp.TraceConfig] | None = None,
        shares: dict | None = None,
        robots: list | None = None,
        skip_opted_out: bool = False,
    ):
        self.config = config or FetchConfig()
        self.consent_policy = ConsentPolicy.of(self.config)
        self.skip_opted_out = skip_opted_out
        self._shares, self._robots_records = shares, robots or []
        self.policy = AddressPolicy(self.config.allow_networks)
        self._base_resolver = resolver
        self._trace_configs = [_gate_trace(), *(trace_configs or [])]
        self._session: aiohttp.ClientSession | None = None
        self.resolver: GuardedResolver | None = None
        self.limiter: HostLimiter | None = None
        self.robots: RobotsCache | None = None
        self.tdmrep: TdmRepCache | None = None
        self.aitxt: AiTxtCache | None = None

    async def __aenter__(self) -> Fetcher:
        cfg = self.config
        base = self._base_resolver or DefaultResolver()
        self.resolver = GuardedResolver(self.policy, base)
        connector = aiohttp.TCPConnector(
            resolver=self.resolver,
            use_dns_cache=False,  # GuardedResolver caches already-filtered answers itself
            limit=cfg.max_in_flight,
            limit_per_host=0,  # per-host limits are HostLimiter's job
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": cfg.user_agent},
            # the total cap is an asyncio.timeout around each attempt (covers the body too)
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_timeout_s),
            cookie_jar=aiohttp.DummyCookieJar(),  # no state carried between unrelated sites
            trust_env=False,  # no proxy from the environment: it would bypass the address check
            trace_configs=self._trace_configs,
        )
        self.limiter = HostLimiter(
            cfg.per_host_concurrency, cfg.per_host_rps, cfg.max_in_flight, self._shares
        )
        self.robots = RobotsCache(
            self._fetch_origin_file, cfg.user_agent_token, max_crawl_delay_s=cfg.max_crawl_delay_s
        )
        # tdmrep.json is read up to TDMRep's 1 MiB (and one byte more, to tell a longer one)
        tdmrep_cap = max(cfg.robots_max_bytes, TDMREP_MAX_BYTES + 1)
        self.tdmrep = TdmRepCache(functools.partial(self._fetch_origin_file, cap=tdmrep_cap))
        self.aitxt = AiTxtCache(self._fetch_origin_file, cfg.user_agent_token)
        for cache in self.origin_files:
            cache.preload(self._robots_records)
        return self

    @property
    def origin_files(self) -> list:
        """The per-origin file caches: robots.txt, tdmrep.json, ai.txt."""
        return [self.robots, self.tdmrep, self.aitxt]

    def origin_records(self) -> list:
        """Every per-origin file this fetcher fetched, to be stored in the dataset."""
        return [r for cache in self.origin_files for r in cache.records]

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._base_resolver is None and self.resolver is not None:
            await self.resolver.close()  # we created the base resolver, so we close it

    async def fetch(
        self, url: str, max_bytes: int | None = None, truncate: bool = False
    ) -> FetchResult:
        """Fetch `url` (body capped at `max_bytes`, default config.max_bytes; with `truncate` a
        longer body is cut there, not refused: a recheck wants the headers). Never raises for
        problems with the URL, the network or the server: see FetchResult.status."""
        if self._session is None:
            raise RuntimeError("Fetcher is not open: use `async with Fetcher(config) as f`")
        if max_bytes is not None and (isinstance(max_bytes, bool) or max_bytes < 1):
            raise ValueError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        cap = max_bytes or self.config.max_bytes
        t0 = time.monotonic()
        try:
            check = self.config.respect_robots
            res = await self._fetch(url, cap, check_robots=check, truncate=truncate)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug must not take down a whole shard of fetches
            log.warning("unexpected error fetching %r", url, exc_info=True)
            msg = f"internal error: {type(exc).__name__}: {exc}"
            res = FetchResult(str(url), str(url), FETCH_FAILED, error=msg)
        res.elapsed_s = time.monotonic() - t0
        log.debug("fetch %s -> %s %s (%.3fs)", url, res.status, res.error or "", res.elapsed_s)
        return res

    async def _fetch_origin_file(self, url: str, cap: int | None = None) -> FetchResult:
        """A per-origin file: cut at `cap` (default robots_max_bytes), never refused for size."""
        cap = cap or self.config.robots_max_bytes
        return await self._fetch(url, cap, check_robots=False, truncate=True, read_headers=False)

    async def _fetch(
        self,
        url: str,
        cap: int,
        *,
        check_robots: bool,
        truncate: bool = False,
        read_headers: bool = True,
    ) -> FetchResult:
        """Follow redirects by hand. The findings of every hop (its origin's files when
        `check_robots`, its response's headers when `read_headers`) ride on the result."""
        redirects: list[str] = []
        seen: set[str] = set()
        findings: list = []
        current = url
        for hop in range(self.config.max_redirects + 1):
            u, why = parse_http_url(current)
            if u is None:
                error = f"redirect to {current[:200]} refused: {why}" if hop else why
                return _with(_result(url, current, BAD_URL, error, redirects), findings)
            seen.add(str(u))
            refused = await self._check_address(u, is_redirect=hop > 0)
            if refused is not None:
                return _with(_result(url, current, *refused, redirects), findings)
            delay = 0.0
            if check_robots:
                decision, hop_findings = await self._origin_checks(u)
                findings += hop_findings
                if not decision.allowed:
                    res = _result(url, current, ROBOTS_DISALLOWED, decision.reason, redirects)
                    return _with(res, findings)
                refused = consent_error(hop_findings)
                if refused and self.skip_opted_out:
                    return _with(_result(url, current, OPTED_OUT, refused, redirects), findings)
                delay = decision.crawl_delay_s
            out = await self._request(u, delay, cap, truncate)
            if read_headers and out.http_status is not None:  # a redirect's headers count too
                findings += header_findings(out.headers, self.consent_policy)
            if out.location is None:
                return _with(_result(url, current, out.status, out.error, redirects, out), findings)
            if out.location in seen:
                error = f"redirect loop at {out.location[:200]}"
                return _with(_result(url, current, FETCH_FAILED, error, redirects, out), findings)
            if hop == self.config.max_redirects:
                break
            redirects.append(out.location)
            current = out.location
        error = f"too many redirects (>{self.config.max_redirects})"
        return _with(_result(url, current, FETCH_FAILED, error, redirects), findings)

    async def _origin_checks(self, u: URL):
        """robots.txt's decision for `u`, and the findings of all its origin's files."""
        assert self.robots is not None and self.tdmrep is not None and self.aitxt is not None
        robots, tdmrep, aitxt = await asyncio.gather(
            self.robots.get(u), self.tdmrep.get(u), self.aitxt.get(u)
        )
        decision = await self.robots.check(u)  # from the cache: no second request
        reason = None if decision.allowed else decision.reason
        return decision, file_findings(u, robots, reason, tdmrep, aitxt, self.consent_policy)

    async def _check_address(self, u: URL, is_redirect: bool) -> tuple[str, str] | None:
        """None if we may connect to u's host, else (status, error). Connects to nothing."""
        host = u.raw_host or ""
        prefix = f"redirect to {host} refused" if is_redirect else f"{host} refused"
        if parse_ip(host) is not None:  # aiohttp skips the resolver for IP literals
            if self.policy.allows(host):
                return None
            return BLOCKED_ADDRESS, f"{prefix}: address not allowed"
        assert self.resolver is not None
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                await self.resolver.resolve(host, u.port or 0, socket.AF_UNSPEC)
        except BlockedAddressError as exc:
            shown = ", ".join(exc.addresses[:4])
            return BLOCKED_ADDRESS, f"{prefix}: address not allowed ({shown})"
        except TimeoutError:
            return FETCH_FAILED, f"dns lookup for {host} timed out"
        except OSError as exc:
            return FETCH_FAILED, f"dns lookup failed for {host}: {exc.strerror or exc}"
        return None

    async def _request(self, u: URL, delay: float, cap: int, truncate: bool) -> _Outcome:
        """One URL, with up to max_retries retries."""
        cfg = self.config
        assert self.limiter is not None
        host = (u.raw_host or "").lower()
        for attempt in range(cfg.max_retries + 1):
            out = await self._attempt(u, host, delay, cap, truncate)
            if not out.retryable or attempt == cfg.max_retries:
                return out
            wait = cfg.backoff_s * (2**attempt)
            if out.retry_after is not None:
                if out.retry_after > cfg.max_retry_after_s:
                    out.error = (
                        f"{out.error}; Retry-After {out.retry_after:g}s over limit "
                        f"{cfg.max_retry_after_s:g}s"
                    )
                    return out
                wait = max(wait, out.retry_after)
                self.limiter.hold_off(host, out.retry_after)  # the whole host, not just this URL
            log.debug("retry %d for %s in %.2fs after %s", attempt + 1, u, wait, out.error)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: the loop always returns")

    async def _attempt(self, u: URL, host: str, delay: float, cap: int, truncate: bool) -> _Outcome:
        cfg = self.config
        assert self.limiter is not None and self._session is not None
        try:
            async with self.limiter.slot(host, delay, defer=True) as gate:
                log.debug("GET %s", u)
                async with asyncio.timeout(cfg.total_timeout_s) as deadline:
                    gate.deadline = deadline  # the wait for our turn is not the server's time
                    get = self._session.get(u, allow_redirects=False, trace_request_ctx=gate)
                    async with get as resp:
                        return await _read_response(resp, u, cap, truncate)
        except aiohttp.ConnectionTimeoutError:
            return _Outcome(
                FETCH_FAILED,
                error=f"connect timeout after {cfg.connect_timeout_s:g}s",
                retryable=True,
            )
        except TimeoutError:
            # Not retried: the server already had the whole time budget once.
            return _Outcome(FETCH_FAILED, error=f"timeout after {cfg.total_timeout_s:g}s")
        except aiohttp.InvalidURL as exc:
            return _Outcome(BAD_URL, error=f"invalid URL: {exc}")
        except aiohttp.ClientSSLError as exc:
            return _Outcome(FETCH_FAILED, error=f"TLS error: {_short(exc)}")
        except aiohttp.ClientConnectorError as exc:
            blocked = _find_cause(exc, BlockedAddressError)
            if blocked is not None:  # DNS changed between our check and the connect
                return _Outcome(BLOCKED_ADDRESS, error=f"{host} refused: address not allowed")
            return _Outcome(FETCH_FAILED, error=f"connection failed: {_short(exc)}", retryable=True)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            return _Outcome(FETCH_FAILED, error=f"connection error: {_short(exc)}", retryable=True)
        except aiohttp.ClientError as exc:  # malformed response and the like
            return _Outcome(FETCH_FAILED, error=f"HTTP error: {_short(exc)}")


def _gate_trace() -> aiohttp.TraceConfig:
    """The host limiter's turn is waited for here, once the request's connection is ready (new
    or reused) and before it is written: what a server sees is spaced, not our connect calls."""

    async def wait_turn(_session, ctx, _params) -> None:
        gate = ctx.trace_request_ctx
        if gate is not None:
            await gate.wait()

    async def written(_session, ctx, _params) -> None:
        gate = ctx.trace_request_ctx
        if gate is not None:
            gate.sent()

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(wait_turn)
    trace.on_connection_reuseconn.append(wait_turn)
    trace.on_request_headers_sent.append(written)
    return trace


async def _read_response(
    resp: aiohttp.ClientResponse, u: URL, cap: int, truncate: bool
) -> _Outcome:
    code = resp.status
    headers = CIMultiDict(resp.headers)
    if code in _REDIRECT_CODES and resp.headers.get("Location"):
        location = resp.headers["Location"]
        try:
            nxt = u.join(URL(location)).with_fragment(None)
        except (ValueError, TypeError, UnicodeError):
            return _Outcome(
                BAD_URL, code, headers, error=f"bad redirect location {location[:200]!r}"
            )
        return _Outcome(OK, code, headers, location=str(nxt))
    if code == 429 or 500 <= code <= 599:
        ra = parse_retry_after(resp.headers.get("Retry-After"))
        return _Outcome(
            FETCH_FAILED, code, headers, error=f"HTTP {code}", retryable=True, retry_after=ra
        )
    if not 200 <= code < 300:
        return _Outcome(FETCH_FAILED, code, headers, error=f"HTTP {code}")
    declared = resp.content_length
    if declared is not None and declared > cap and not truncate:
        resp.close()  # drop the connection instead of draining the body
        return _Outcome(
            TOO_LARGE, code, headers, error=f"body over {cap} bytes (Content-Length {declared})"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        if size + len(chunk) > cap:
            if not truncate:
                resp.close()
                return _Outcome(TOO_LARGE, code, headers, error=f"body over {cap} bytes")
            chunks.append(chunk[: cap - size])
            resp.close()
            break
        chunks.append(chunk)
        size += len(chunk)
    return _Outcome(OK, code, headers, body=b"".join(chunks))


def _result(
    url: str,
    final_url: str,
    status: str,
    error: str | None,
    redirects: list[str],
    out: _Outcome | None = None,
) -> FetchResult:
    return FetchResult(
        url=str(url),
        final_url=str(final_url),
        status=status,
        http_status=out.http_status if out else None,
        headers=out.headers if out else CIMultiDict(),
        body=out.body if (out and status == OK) else None,
        error=error,
        redirects=list(redirects),
    )


def _with(res: FetchResult, findings: list) -> FetchResult:
    res.consent = findings
    return res


def _find_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of `kind` in exc's os_error/__cause__ chain (bounded walk)."""
    cur: BaseException | None = exc
    for _ in range(10):
        if cur is None or isinstance(cur, kind):
            return cur
        nxt = getattr(cur, "os_error", None)
        cur = nxt if isinstance(nxt, BaseException) and nxt is not cur else cur.__cause__
    return None


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]
