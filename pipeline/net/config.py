"""FetchConfig: every knob of the fetch layer, validated on construction."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .policy import AddressPolicy

KIB = 1024
MIB = 1024 * 1024

# RFC 9309 section 2.2.1: a product token is letters, "_" and "-".
_TOKEN_RE = re.compile(r"^[A-Za-z_-]+$")


@lru_cache(maxsize=1)
def clipengine_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clipengine")
    except PackageNotFoundError:  # running from a source tree that is not pip-installed
        return "dev"


@dataclass
class FetchConfig:
    """Fetch settings. Units are in the names: seconds (_s), bytes, requests per second (_rps)."""

    user_agent_token: str = "clipengine-bot"  # what robots.txt groups and X-Robots-Tag match
    contact_url: str = "https://github.com/clipengine/clipengine"  # shown in the User-Agent
    allow_networks: list[str] = field(default_factory=list)  # CIDRs allowed beyond public IPs
    total_timeout_s: float = 20.0  # per response attempt: connect + headers + body
    connect_timeout_s: float = 10.0
    max_bytes: int = 10 * MIB  # body cap per response (after content decoding)
    max_redirects: int = 5
    max_retries: int = 2  # extra attempts on 429, 5xx and connection errors
    backoff_s: float = 0.5  # first retry delay; doubles each retry
    max_retry_after_s: float = 30.0  # a longer Retry-After means give up (fetch_failed)
    per_host_concurrency: int = 8
    per_host_rps: float = 0.0  # 0 = no spacing beyond robots.txt crawl-delay
    max_in_flight: int = 256  # requests in flight over all hosts
    respect_robots: bool = True
    max_crawl_delay_s: float = 60.0  # a host asking for a longer crawl-delay is skipped
    robots_max_bytes: int = 500 * KIB  # RFC 9309: parse at least the first 500 KiB

    def __post_init__(self) -> None:
        self._check_types()
        if isinstance(self.allow_networks, tuple):
            self.allow_networks = list(self.allow_networks)
        AddressPolicy(self.allow_networks)  # raises a clear ValueError on a bad CIDR
        if not _TOKEN_RE.match(self.user_agent_token):
            raise ValueError(
                f"user_agent_token {self.user_agent_token!r}: only letters, '_' and '-' (RFC 9309)"
            )
        if not self.contact_url or any(c.isspace() or ord(c) < 32 for c in self.contact_url):
            raise ValueError("contact_url must be a non-empty URL without spaces or control chars")
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
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    def _check_types(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            if kind == "bool":
                ok = isinstance(value, bool)
            elif kind == "int":
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif kind == "float":
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                if ok:
                    setattr(self, f.name, float(value))
            elif kind == "str":
                ok = isinstance(value, str)
            else:  # list[str]
                ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
            if not ok:
                raise TypeError(f"FetchConfig.{f.name} must be {kind}, got {value!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FetchConfig:
        """Build from a plain mapping (a config file section); unknown keys are an error."""
        if not isinstance(data, dict):
            raise TypeError(f"fetch config must be a mapping, got {type(data).__name__}")
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown fetch option(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def user_agent(self) -> str:
        return f"{self.user_agent_token}/{clipengine_version()} (+{self.contact_url})"
