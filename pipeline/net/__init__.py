"""The project's single fetch layer: address policy (SSRF guard), robots.txt, rate limits, caps.

Typical use:
    async with Fetcher(FetchConfig(allow_networks=["127.0.0.1/32"])) as f:
        result = await f.fetch("http://127.0.0.1:8080/page.html")
        if result.ok and not x_robots_opt_out(result.headers, f.config.user_agent_token): ...
"""

from .batch import fetch_all, iter_fetch
from .config import FetchConfig
from .fetch import Fetcher, parse_http_url, parse_retry_after
from .policy import AddressPolicy, BlockedAddressError, GuardedResolver, StaticResolver
from .ratelimit import HostLimiter
from .result import (
    BAD_URL,
    BLOCKED_ADDRESS,
    FETCH_FAILED,
    OK,
    ROBOTS_DISALLOWED,
    STATUSES,
    TOO_LARGE,
    FetchResult,
)
from .robots import RobotsCache, RobotsDecision, meta_robots_opt_out, x_robots_opt_out

__all__ = [
    "BAD_URL",
    "BLOCKED_ADDRESS",
    "FETCH_FAILED",
    "OK",
    "ROBOTS_DISALLOWED",
    "STATUSES",
    "TOO_LARGE",
    "AddressPolicy",
    "BlockedAddressError",
    "FetchConfig",
    "FetchResult",
    "Fetcher",
    "GuardedResolver",
    "HostLimiter",
    "RobotsCache",
    "RobotsDecision",
    "StaticResolver",
    "fetch_all",
    "iter_fetch",
    "meta_robots_opt_out",
    "parse_http_url",
    "parse_retry_after",
    "x_robots_opt_out",
]
