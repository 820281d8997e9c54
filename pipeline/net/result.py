"""FetchResult: what every fetch returns, success or not (fetching never raises for web problems)."""

from __future__ import annotations

from dataclasses import dataclass, field

from multidict import CIMultiDict

# Stable status values; they end up as manifest drop reasons, so never rename them.
OK = "ok"
BAD_URL = "bad_url"  # not http(s), unparsable, no host (also for a redirect to such a URL)
BLOCKED_ADDRESS = "blocked_address"  # host resolves only to addresses outside the policy
ROBOTS_DISALLOWED = "robots_disallowed"  # robots.txt forbids it, or robots.txt is unavailable
OPTED_OUT = "opted_out"  # a per-origin file refuses AI training for it (pipeline.net.consent)
FETCH_FAILED = "fetch_failed"  # connection error, timeout, HTTP error, redirect loop/too many
TOO_LARGE = "too_large"  # body (declared or streamed) over the byte cap

STATUSES = (OK, BAD_URL, BLOCKED_ADDRESS, ROBOTS_DISALLOWED, OPTED_OUT, FETCH_FAILED, TOO_LARGE)


@dataclass
class FetchResult:
    """One fetch, after redirects and retries.

    headers: the final response's headers, case-insensitive, repeated headers kept
      (`headers.getall("X-Robots-Tag", [])`); empty when no response was received.
    body: the full body for status 'ok', else None.
    redirects: every URL redirected to, in order (the last one is final_url).
    elapsed_s: wall time of the whole fetch including robots.txt, waits and retries.
    consent: pipeline.net.consent Findings: the per-origin files of every hop, then the final
      response's headers (empty when the fetch checks no per-origin files).
    """

    url: str
    final_url: str
    status: str
    http_status: int | None = None
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    body: bytes | None = None
    error: str | None = None
    redirects: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    consent: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def content_type(self) -> str:
        """Media type without parameters, lower case ('' if absent)."""
        return self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
