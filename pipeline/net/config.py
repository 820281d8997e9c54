"""FetchConfig: every knob of the fetch layer, validated on construction."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from manifests.config import ConfigError, check_fields, from_dict, option

KIB = 1024
MIB = 1024 * 1024

# RFC 9309 section 2.2.1: a product token is letters, "_" and "-".
_TOKEN_RE = re.compile(r"^[A-Za-z_-]+$")
_OPT_OUT_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+$")


@lru_cache(maxsize=1)
def clipengine_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clipengine")
    except PackageNotFoundError:  # running from a source tree that is not pip-installed
        return "dev"


@dataclass
class FetchConfig:
    """Fetch settings. Units are in the names: seconds (_s), bytes, requests per second (_rps).
    The build offers each as a flag (its `net` section); `max_bytes` is the cap for pages (the
    image stage uses --max-image-bytes instead)."""

    user_agent_token: str = option(
        "clipengine-bot", help="the product token robots.txt groups and X-Robots-Tag match"
    )
    contact_url: str = option(
        "https://github.com/clipengine/clipengine",
        help="named in the User-Agent so site owners can reach you",
    )
    allow_networks: list[str] = option(
        default_factory=list,
        flag="allow-network",
        metavar="CIDR",
        help="also allow these addresses (default: public addresses only)",
    )
    total_timeout_s: float = option(
        20.0,
        flag="timeout",
        metavar="SECONDS",
        runtime=True,
        help="seconds per response attempt: connect, headers and body",
    )
    connect_timeout_s: float = option(10.0, runtime=True, help="seconds to connect")
    max_bytes: int = option(10 * MIB, flag="max-page-bytes", help="body cap per page (bytes)")
    max_redirects: int = option(5, help="redirects followed per request")
    max_retries: int = option(2, runtime=True, help="extra attempts on 429, 5xx and errors")
    backoff_s: float = option(0.5, runtime=True, help="first retry delay; doubles each retry")
    max_retry_after_s: float = option(
        30.0, runtime=True, help="a longer Retry-After means give up (fetch_failed)"
    )
    per_host_concurrency: int = option(8, runtime=True, help="requests in flight per host")
    per_host_rps: float = option(
        0.0, runtime=True, help="requests/s per host; 0: no cap beyond robots.txt crawl-delay"
    )
    max_in_flight: int = option(256, runtime=True, help="requests in flight over all hosts")
    respect_robots: bool = option(True, cli=False, help="obey robots.txt (tests turn it off)")
    max_crawl_delay_s: float = option(
        60.0, help="a host asking for a longer crawl-delay is skipped"
    )
    robots_max_bytes: int = option(
        500 * KIB, help="bytes parsed of robots.txt, tdmrep.json, ai.txt (RFC 9309: >= 500 KiB)"
    )
    opt_out_tokens: list[str] = option(
        default_factory=list,
        flag="opt-out-token",
        metavar="TOKEN",
        help="also an opt-out in X-Robots-Tag / meta robots (besides noai, noimageai, noml)",
    )
    allow_tdm_policies: list[str] = option(
        default_factory=list,
        flag="allow-tdm-policy",
        metavar="URL",
        help="a TDMRep reservation whose tdm-policy is this URL is not an opt-out",
    )

    def __post_init__(self) -> None:
        from .policy import AddressPolicy

        check_fields(self)
        AddressPolicy(self.allow_networks)  # a clear error on a bad CIDR
        if not _TOKEN_RE.match(self.user_agent_token):
            raise ConfigError(
                f"--user-agent-token {self.user_agent_token!r}: only letters, '_' and '-' "
                "(RFC 9309)"
            )
        for token in self.opt_out_tokens:
            if not _OPT_OUT_TOKEN_RE.match(token):
                raise ConfigError(
                    f"--opt-out-token {token!r}: one directive, letters, digits, '_' and '-'"
                )
        if not self.contact_url or any(c.isspace() or ord(c) < 32 for c in self.contact_url):
            raise ConfigError("--contact-url must be a non-empty URL without spaces or controls")
        positive = ("total_timeout_s", "connect_timeout_s", "max_bytes", "robots_max_bytes")
        at_least_one = ("per_host_concurrency", "max_in_flight")
        non_negative = (
            "max_redirects",
            "max_retries",
            "backoff_s",
            "max_retry_after_s",
            "per_host_rps",
            "max_crawl_delay_s",
        )
        for names, low, text in (
            (positive, 0, "> 0"),
            (at_least_one, 1, ">= 1"),
            (non_negative, 0, ">= 0"),
        ):
            for name in names:
                value = getattr(self, name)
                if value < low or (text == "> 0" and value == 0):
                    raise ConfigError(f"{name} must be {text}, not {value!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FetchConfig:
        """Build from a plain mapping (a config file section); unknown keys are an error."""
        return from_dict(cls, data)

    @property
    def user_agent(self) -> str:
        return f"{self.user_agent_token}/{clipengine_version()} (+{self.contact_url})"
