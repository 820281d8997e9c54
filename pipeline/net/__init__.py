"""The project's single fetch layer: address policy (SSRF guard), robots.txt, rate limits, caps.

Typical use:
    async with Fetcher(FetchConfig(allow_networks=["127.0.0.1/32"])) as f:
        result = await f.fetch("http://127.0.0.1:8080/page.html")
        if result.ok and not x_robots_opt_out(result.headers, f.config.user_agent_token): ...
"""

import importlib

# Names exported lazily (PEP 562), so importing `pipeline.net.config` (the build's flags are
# generated from FetchConfig) does not load aiohttp.
_EXPORTS = {
    "batch": ("fetch_all", "iter_fetch"),
    "config": ("FetchConfig",),
    "fetch": ("Fetcher", "parse_http_url", "parse_retry_after"),
    "policy": ("AddressPolicy", "BlockedAddressError", "GuardedResolver", "StaticResolver"),
    "ratelimit": ("HostLimiter",),
    "result": (
        "BAD_URL",
        "BLOCKED_ADDRESS",
        "FETCH_FAILED",
        "OK",
        "ROBOTS_DISALLOWED",
        "STATUSES",
        "TOO_LARGE",
        "FetchResult",
    ),
    "robots": ("RobotsCache", "RobotsDecision", "meta_robots_opt_out", "x_robots_opt_out"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
