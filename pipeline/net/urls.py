"""Parsing what a fetch is given: request URLs (http(s) only, bounded) and Retry-After values."""

from __future__ import annotations

import email.utils
import re
from datetime import UTC, datetime

from yarl import URL

MAX_URL_CHARS = 8192
_DELTA_SECONDS_RE = re.compile(r"^\d+(\.\d+)?$")


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None if absent/invalid."""
    if not value:
        return None
    v = value.strip()
    if _DELTA_SECONDS_RE.match(v):
        return float(v)
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def parse_http_url(value: str) -> tuple[URL | None, str | None]:
    """(URL without fragment, None) for a usable http(s) URL, else (None, why not)."""
    if isinstance(value, URL):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return None, "empty URL"
    if len(value) > MAX_URL_CHARS:
        return None, f"URL longer than {MAX_URL_CHARS} characters"
    try:
        u = URL(value.strip())
        scheme = (u.scheme or "").lower()
        if scheme not in ("http", "https"):
            return None, f"unsupported scheme {scheme!r}" if scheme else "not an absolute URL"
        if not u.raw_host:
            return None, "URL has no host"
        _ = u.port  # raises on an out-of-range port
        return u.with_fragment(None), None
    except (ValueError, TypeError, UnicodeError) as exc:
        return None, f"unparsable URL ({exc})"
