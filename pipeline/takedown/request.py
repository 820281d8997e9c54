"""A takedown request: what was asked (a file of URLs, domains or uids), by whom, why, and the
rows of the dataset it matches.

- `--urls`: each line an image URL or a page URL; a row matches when its `url` or its
  `page_url` is that URL, compared as the fetcher compares them (scheme and host in lower
  case, no default port, no userinfo, no #fragment, an empty path as `/`).
- `--domains`: each line a host name; a row matches when the host of its image or its page is
  that name or under it (`example.com` takes `cdn.example.com`, not `badexample.com`).
- `--uids`: each line a row's uid (32 hex digits): that caption row only.
Blank lines and lines starting with `#` are skipped; anything else that is not of the kind asked
is an error that names the line, before anything is changed.
"""

from __future__ import annotations

import contextlib
import datetime
import re
from dataclasses import asdict, dataclass

from manifests import storage
from manifests.config import ConfigError

KINDS = ("urls", "domains", "uids")
MAX_ENTRIES = 10_000_000  # lines per request file: a DuckDB table of them, held in memory
UID = re.compile(r"^[0-9a-f]{32}$")
# RFC 1123 host names (and IPv4 literals), lower case; a leading "*." or "." is allowed in
# the file and means the same as the bare name (every subdomain is included anyway)
DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
)

# DuckDB expressions over a column `url` (pipeline.origins' host and origin, as the fetcher
# computes them): the URL as a takedown compares it, and the dot-suffixes of its host.
_PATH = "regexp_extract(url, '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*([^#]*)', 1)"


def url_key_sql() -> str:
    from pipeline.origins import ORIGIN_SQL

    path = f"CASE WHEN {_PATH} = '' THEN '/' WHEN left({_PATH}, 1) = '?' THEN '/' || {_PATH} ELSE {_PATH} END"
    return f"({ORIGIN_SQL}) || ({path})"


def host_suffixes_sql() -> str:
    """The host and every parent domain of it: a.b.c -> [a.b.c, b.c, c]."""
    from pipeline.origins import HOST_SQL

    parts = f"string_split({HOST_SQL}, '.')"
    return (
        f"list_transform(range(1, len({parts}) + 1), lambda i: array_to_string({parts}[i:], '.'))"
    )


@dataclass(frozen=True)
class RemovalRequest:
    request_id: str
    kind: str  # urls, domains or uids
    values: tuple[str, ...]  # the request's entries, as written (stripped)
    requested_by: str
    reason: str
    requested_at: str  # ISO 8601, UTC

    def to_dict(self) -> dict:
        return {**asdict(self), "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: dict) -> RemovalRequest:
        return cls(**{**data, "values": tuple(data["values"])})

    @property
    def date(self) -> str:
        return self.requested_at[:10]

    def error(self) -> str:
        """The `error` of a removed row: when, at whose request, why."""
        return f"removed on {self.date} at the request of {self.requested_by}: {self.reason}"


def read_request(
    kind: str, path, requested_by: str, reason: str, request_id: str | None = None
) -> RemovalRequest:
    if kind not in KINDS:
        raise ConfigError(f"a removal takes --urls, --domains or --uids, not {kind!r}")
    requested_by, reason = (requested_by or "").strip(), (reason or "").strip()
    if not requested_by or not reason:
        raise ConfigError("a removal needs --requested-by (who asked) and --reason (why)")
    source = storage.location(path)
    if not source.is_file():
        raise ConfigError(f"--{kind}: {path} is not a file")
    try:
        text = source.read_text()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--{kind}: {path} is not UTF-8 text ({exc.reason})") from None
    values = _entries(kind, text, path)
    now = datetime.datetime.now(datetime.UTC)
    if request_id is None:
        from manifests.commit import new_token

        request_id = f"{now:%Y%m%d}-{new_token()}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", request_id):
        raise ConfigError(f"--request-id {request_id!r}: use 1-64 letters, digits, '-' or '_'")
    return RemovalRequest(
        request_id, kind, values, requested_by, reason, now.isoformat(timespec="seconds")
    )


def _entries(kind: str, text: str, path) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), 1):
        value = line.strip()
        if not value or value.startswith("#"):
            continue
        if len(found) >= MAX_ENTRIES:
            raise ConfigError(f"--{kind}: {path} has more than {MAX_ENTRIES:,} entries; split it")
        found[_checked(kind, value, f"{path}:{number}")] = None
    if not found:
        raise ConfigError(f"--{kind}: {path} names nothing to remove")
    return tuple(found)


def _checked(kind: str, value: str, where: str) -> str:
    if kind == "uids":
        if not UID.match(value.lower()):
            raise ConfigError(f"{where}: {value[:80]!r} is not a uid (32 hex digits)")
        return value.lower()
    if kind == "domains":
        name = value.lower().removeprefix("*.").removeprefix(".").rstrip(".")
        with contextlib.suppress(UnicodeError):  # as the fetcher names hosts
            name = name.encode("idna").decode("ascii")
        if not DOMAIN.match(name):
            raise ConfigError(f"{where}: {value[:80]!r} is not a domain name")
        return name
    if not re.match(r"^https?://[^/?#\s]+", value, re.IGNORECASE) or any(
        c.isspace() for c in value
    ):
        raise ConfigError(f"{where}: {value[:80]!r} is not an http(s) URL")
    return value


def match_sql(request: RemovalRequest) -> str:
    """SELECT value, uid over `samples` joined with the table `_asked(value)`: every (entry,
    row) pair the request matches. Equi-joins only, so 10^9 rows and 10^6 entries hash-join."""
    if request.kind == "uids":
        return "SELECT a.value, s.uid FROM samples s JOIN _asked a ON s.uid = a.value"
    if request.kind == "urls":
        key = url_key_sql()
        asked = f"(SELECT value, {key} AS k FROM (SELECT value, value AS url FROM _asked))"
        return " UNION ".join(
            f"""SELECT a.value, s.uid FROM (SELECT uid, {key} AS k FROM
                (SELECT uid, {column} AS url FROM samples WHERE {column} IS NOT NULL)) s
                JOIN {asked} a ON s.k = a.k"""
            for column in ("url", "page_url")
        )
    suffixes = host_suffixes_sql()
    return " UNION ".join(
        f"""SELECT a.value, s.uid FROM (SELECT uid, unnest({suffixes}) AS d FROM
            (SELECT uid, {column} AS url FROM samples WHERE {column} IS NOT NULL)) s
            JOIN _asked a ON s.d = a.value"""
        for column in ("url", "page_url")
    )


def page_match_sql(request: RemovalRequest) -> str | None:
    """SELECT page over `pages`: the page rows (by their `url`) whose URL or final URL a
    urls/domains request names (None for uids)."""
    if request.kind == "uids":
        return None
    if request.kind == "urls":
        key = url_key_sql()
        test = f"{key} IN (SELECT {key} FROM (SELECT value AS url FROM _asked))"
    else:
        test = f"list_has_any({host_suffixes_sql()}, (SELECT list(value) FROM _asked))"
    return " UNION ".join(
        f"SELECT page FROM (SELECT url AS page, {c} AS url FROM pages WHERE {c} IS NOT NULL)"
        f" WHERE {test}"
        for c in ("url", "final_url")
    )
