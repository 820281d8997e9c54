"""Read (image url, alt text) pairs from WARC, Common Crawl WAT and ARC files; record WARCs.

WARC `response` records go through the same `extract_page` a live crawl uses, so a crawl recorded
with `WarcRecorder` replays to exactly the pairs it gave live. WAT `metadata` records (Common
Crawl's pre-extracted link JSON) are read directly. ARC records (Common Crawl 2008-2012) are read
by warcio and then go through the WARC code (`archive.py`). A file's first bytes decide WARC or ARC
and each record's content decides WARC or WAT, so a file name never decides how a record is read.
`read_warc_file` is the per-file entry point that never raises for what a file holds.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastwarc.warc import WarcRecordType

from pipeline.extract import (
    BOT_NAME,
    Pair,
    UrlResolver,
    clean_caption,
    extract_page,
    header_values,
    resolve_url,
)
from pipeline.net.consent import (
    ConsentPolicy,
    header_findings,
    meta_findings,
    opt_out_error,
    refusals,
)
from pipeline.sources.archive import (
    MAX_DECODED_BYTES,
    DamagedStream,
    NotAWarcError,
    decode_payload,
    open_records,
    sniff_archive,
    unread_tail,
)
from pipeline.sources.warc_recorder import WarcRecorder

__all__ = [
    "NotAWarcError",
    "PageInfo",
    "PageRecord",
    "WarcFileResult",
    "WarcRecorder",
    "WarcStats",
    "iter_warc_pages",
    "pairs_from_warc",
    "read_warc_file",
]

log = logging.getLogger(__name__)

HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass(slots=True)
class PageRecord:
    url: str  # WARC-Target-URI: the URL the body was served from
    http_status: int | None
    headers: dict[str, list[str]]  # HTTP response headers, name as first seen -> all values
    body: bytes  # payload with transfer and content encodings removed
    warc_date: str | None = None
    error: str | None = None  # set when the payload could not be decoded (body is then b"")
    truncated: bool = False  # the file ends inside this record (error says so too)


@dataclass(slots=True)
class PageInfo:
    """One page offered by a WARC/WAT file: a row of the `pages` audit table."""

    url: str
    http_status: int | None
    status: str  # 'ok', 'opted_out', 'fetch_failed' (non-2xx) or 'record_error'
    opted_out: bool
    pairs: int
    error: str | None
    source: str  # file name
    kind: str  # 'warc' (response record), 'wat' (metadata record) or 'error' (unreadable)
    consent: list = field(default_factory=list)  # the page's consent Findings, as archived

    def to_row(self) -> dict:
        """Columns of manifests.schema.PAGES (depth is unknown for archived pages)."""
        from pipeline.net.consent import rows

        return {
            "consent": rows(self.consent, "page"),
            "url": self.url,
            "final_url": self.url,
            "depth": None,
            "status": self.status,
            "http_status": self.http_status,
            "error": self.error,
            "pairs": self.pairs,
            "source": self.source,
        }


@dataclass
class WarcStats:
    """Counts over one file, so records that yield no page are accounted for too."""

    records: int = 0  # response + metadata records seen
    pages: int = 0  # PageInfo rows yielded (errors included)
    pairs: int = 0
    opted_out: int = 0
    errors: int = 0
    non_html: int = 0  # response records (or WAT entries) of another content type
    skipped: int = 0  # request-metadata, warcinfo-like, non-http and other records
    kinds: dict[str, int] = field(default_factory=dict)
    error: str | None = None  # why the file could not be read to its end (one line)

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def _is_html(content_type: str | None, body_start: bytes) -> bool:
    if content_type:
        return content_type.split(";", 1)[0].strip().lower() in HTML_TYPES
    start = body_start[:1024].lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html")) or b"<html" in start


def _target_uri(record) -> str:
    return (record.headers.get("WARC-Target-URI") or "").strip().strip("<>")


def _response_page(record) -> PageRecord | None:
    """The HTML page of a response record, or None when it is not an HTML http(s) page."""
    url = _target_uri(record)
    if not url.lower().startswith(("http://", "https://")) or not record.is_http:
        return None
    headers: dict[str, list[str]] = {}
    index: dict[str, str] = {}  # lower-case name -> name as first seen
    for name, value in record.http_headers.items():
        key = index.setdefault(name.lower(), name)
        headers.setdefault(key, []).append(value)
    content_type = next(iter(header_values(headers, "content-type")), None)
    if content_type is None:
        content_type = record.headers.get("WARC-Identified-Payload-Type")
    if content_type is not None and not _is_html(content_type, b""):
        return None  # decided by the header: the payload is skipped unread
    raw = record.reader.read(MAX_DECODED_BYTES + 1)
    if content_type is None and not _is_html(None, raw):
        return None
    body, truncated = b"", False
    if len(raw) > MAX_DECODED_BYTES:
        error = f"payload over {MAX_DECODED_BYTES} bytes"
    elif len(raw) < record.content_length:  # the file ends inside this record
        error = f"truncated record: {len(raw)} of {record.content_length} payload bytes"
        truncated = True
    else:
        body, error = decode_payload(raw, headers)
    status = record.http_headers.status_code
    date = record.headers.get("WARC-Date")
    return PageRecord(url, status, headers, body, date, error, truncated)


def _records(path: Path, stats: WarcStats) -> Iterator[tuple[str, object]]:
    """Tagged items: ('warc', PageRecord), ('wat', (url, WAT JSON)), ('non_html', url),
    ('skipped', None), ('record_error', (url, message)) or, last, ('stream_error', message).

    `stats.error` is set when the file cannot be read to its end: with a 'stream_error' item, or
    on a 'warc' page the file ends inside.
    """
    kind, compression = sniff_archive(path)
    records = open_records(path, kind, compression)
    offset = 0
    while True:
        try:
            record = next(records)
        except StopIteration:
            break
        except (OSError, ValueError) as exc:  # the stream itself is broken: nothing after it
            if stats.error is None:  # else this is the cut a truncated record already reported
                reason = f"unreadable {kind.upper()} stream after record {stats.records}: {exc}"
                stats.error = f"{path}: {reason}"
                yield "stream_error", reason
            return
        stats.records += 1
        offset = getattr(record, "stream_pos", 0)
        try:
            if record.record_type == WarcRecordType.response:
                page = _response_page(record)
                if page and page.truncated:
                    stats.error = (
                        f"{path}: the file ends inside record {stats.records} ({page.url})"
                    )
                yield ("warc", page) if page else ("non_html", _target_uri(record))
            else:
                yield _wat_document(record)
        except DamagedStream:
            continue  # the file is cut inside this record: the next read reports it, once
        except Exception as exc:  # one bad record must not stop the file
            yield "record_error", (_target_uri(record), f"record {stats.records}: {exc!r}")
    # fastwarc can stop quietly at a cut (see unread_tail); the ARC reader raises there instead.
    whole = kind == "arc" or stats.error is not None
    if not whole and (reason := unread_tail(path, compression, offset)):
        reason = f"{reason}, after record {stats.records}"
        stats.error = f"{path}: {reason}"
        yield "stream_error", reason


def iter_warc_pages(path: str | Path) -> Iterator[PageRecord]:
    """Every HTML `response` record of a WARC or ARC file (plain or compressed), in file order.

    Raises NotAWarcError for a file that is not a WARC or ARC at all, and for a stream that breaks
    mid-file; a record whose payload cannot be decoded comes with `error` set, and one that
    cannot be parsed at all is logged and skipped (`pairs_from_warc` reports both).
    """
    for kind, item in _records(Path(path), WarcStats()):
        if kind == "warc":
            yield item
        elif kind == "record_error":
            log.warning("%s: skipping %s: %s", path, *item)
        elif kind == "stream_error":
            raise NotAWarcError(f"{path}: {item}")


# ---------------------------------------------------------------------------------------------
# WAT (Common Crawl metadata JSON)
# ---------------------------------------------------------------------------------------------
def _wat_document(record) -> tuple[str, object]:
    raw = record.reader.read(MAX_DECODED_BYTES + 1)
    start = raw[:64].lstrip()
    if not start.startswith(b"{"):
        return "skipped", None  # e.g. Common Crawl WARC 'metadata' records (warc-fields text)
    if len(raw) > MAX_DECODED_BYTES:
        raise ValueError("WAT JSON payload over the size cap")
    doc = json.loads(raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("Envelope"), dict):
        return "skipped", None
    warc_meta = _dict(doc["Envelope"].get("WARC-Header-Metadata"))
    if str(warc_meta.get("WARC-Type", "")).lower() != "response":
        return "skipped", None  # WAT entries of request / warcinfo / metadata records
    url = str(warc_meta.get("WARC-Target-URI") or _target_uri(record)).strip().strip("<>")
    return "wat", (url, doc)


def _warc_time(value: str) -> float | None:
    """A WARC-Date (ISO 8601, e.g. 2026-11-30T12:00:00Z) as time.time(); None if unreadable."""
    import datetime

    try:
        when = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except (ValueError, TypeError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)  # WARC dates are UTC (ISO 28500)
    if not 1990 <= when.year <= 9998:
        return None  # no crawl was made then: an archive's garbage, not a time
    return when.timestamp()


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _wat_page(
    url: str, doc: dict, source: str, policy: ConsentPolicy
) -> tuple[PageInfo, list[Pair]] | None:
    """Pairs of one WAT response entry, or None when it is not an HTML http(s) page."""
    payload = _dict(doc["Envelope"].get("Payload-Metadata"))
    response = _dict(payload.get("HTTP-Response-Metadata"))
    if not response or not url.lower().startswith(("http://", "https://")):
        return None
    headers = _dict(response.get("Headers"))
    html_meta = response.get("HTML-Metadata")
    content_type = next(iter(header_values(headers, "content-type")), None)
    if not isinstance(html_meta, dict) or (content_type and not _is_html(content_type, b"")):
        return None
    try:
        status = int(_dict(response.get("Response-Message")).get("Status"))
    except (TypeError, ValueError):
        status = None
    head = _dict(html_meta.get("Head"))
    metas = [
        (
            str(m.get("name") or m.get("http-equiv") or ""),
            html.unescape(str(m.get("content") or "")),
        )
        for m in map(_dict, _list(head.get("Metas")))
    ]
    record_date = _dict(doc["Envelope"].get("WARC-Header-Metadata")).get("WARC-Date")
    at = _warc_time(str(record_date)) if record_date else None
    said = header_findings(headers, policy, at)
    said += meta_findings(metas, policy, said[0].at)
    opted_out = bool(refusals(said))
    info = PageInfo(url, status, "ok", opted_out, 0, None, source, "wat", said)
    if status is not None and not 200 <= status < 300:
        info.status, info.error = "fetch_failed", f"HTTP {status}"
        return info, []
    if opted_out:
        info.status, info.error = "opted_out", opt_out_error(said)
        return info, []
    resolve = UrlResolver(resolve_url(url, html.unescape(str(head.get("Base") or ""))) or url)
    pairs: list[Pair] = []
    seen: set[tuple[str, str]] = set()
    for link in map(_dict, _list(html_meta.get("Links"))):
        if str(link.get("path", "")).upper() != "IMG@/SRC":
            continue
        # The WAT generator stores attribute values as written, entities not decoded.
        caption = clean_caption(html.unescape(str(link.get("alt") or "")))
        img_url = resolve(html.unescape(str(link.get("url") or "")))
        if caption and img_url and (img_url, caption) not in seen:
            seen.add((img_url, caption))
            pairs.append(Pair(img_url, caption, url))
    info.pairs = len(pairs)
    return info, pairs


# ---------------------------------------------------------------------------------------------
# Pairs from either kind
# ---------------------------------------------------------------------------------------------
def _warc_page(page: PageRecord, source: str, policy: ConsentPolicy) -> tuple[PageInfo, list[Pair]]:
    info = PageInfo(page.url, page.http_status, "ok", False, 0, None, source, "warc")
    if page.error:
        info.status, info.error = "record_error", page.error
        return info, []
    if page.http_status is None or not 200 <= page.http_status < 300:
        info.status, info.error = "fetch_failed", f"HTTP {page.http_status}"
        return info, []
    at = _warc_time(page.warc_date) if page.warc_date else None
    extract = extract_page(page.url, page.body, page.headers, policy, at)
    info.opted_out, info.pairs, info.error = extract.opted_out, len(extract.pairs), extract.error
    info.consent = extract.consent
    if extract.opted_out:
        info.status, info.error = "opted_out", opt_out_error(extract.consent)
    elif extract.error:
        info.status = "record_error"
    return info, extract.pairs


def _pages(
    path: Path, stats: WarcStats, stream_row: bool, policy: ConsentPolicy | None = None
) -> Iterator[tuple[PageInfo, list[Pair]]]:
    """What `pairs_from_warc` yields; without `stream_row` a broken stream gives no row, only
    `stats.error`. `policy`: the build's ConsentPolicy (default: our token, the usual tokens)."""
    source, policy = path.name, policy or ConsentPolicy(BOT_NAME)
    for kind, item in _records(path, stats):
        result = None
        if kind in ("warc", "wat"):
            try:
                if kind == "warc":
                    result = _warc_page(item, source, policy)
                else:
                    result = _wat_page(*item, source, policy)
            except Exception as exc:  # defensive: a page must never stop the file
                url = item.url if kind == "warc" else item[0]
                kind, item = "record_error", (url, f"extraction failed: {exc!r}")
            if kind == "wat" and result is None:
                stats.non_html += 1
        if kind == "non_html":
            stats.non_html += 1
        elif kind == "skipped":
            stats.skipped += 1
        elif kind == "record_error" or (kind == "stream_error" and stream_row):
            url, message = item if kind == "record_error" else ("", item)
            result = PageInfo(url, None, "record_error", False, 0, message, source, "error"), []
        if result is None:
            continue
        info, pairs = result
        stats.pages += 1
        stats.pairs += len(pairs)
        stats.opted_out += info.opted_out
        stats.errors += info.status == "record_error"
        stats.kinds[info.kind] = stats.kinds.get(info.kind, 0) + 1
        yield info, pairs


def pairs_from_warc(
    path: str | Path, stats: WarcStats | None = None, policy: ConsentPolicy | None = None
) -> Iterator[tuple[PageInfo, list[Pair]]]:
    """(page info, pairs) for every HTML page of a WARC, WAT or ARC file (plain, gzip, zstd, lz4).

    Only 2xx pages give pairs; other statuses, opt-outs and unreadable records are reported in
    PageInfo (status / error) and never raise, nor does a stream that breaks or ends mid-record
    (the last row says why). `stats`, when given, is filled as the file is read.
    Raises NotAWarcError on the first next() when the file is not a WARC, WAT or ARC at all.
    """
    stats = stats if stats is not None else WarcStats()
    yield from _pages(Path(path), stats, stream_row=True, policy=policy)


@dataclass(slots=True)
class WarcFileResult:
    """What one WARC, WAT or ARC file gave, as `read_warc_file` returns it."""

    path: str
    pages: list[PageInfo] = field(default_factory=list)  # file order, record errors included
    pairs: list[Pair] = field(default_factory=list)  # all pages' pairs, in page order
    error: str | None = None  # one line naming the file: why it was not read to its end
    stats: WarcStats = field(default_factory=WarcStats)


def read_warc_file(path: str | Path, policy: ConsentPolicy | None = None) -> WarcFileResult:
    """Every page and pair of one file, and why reading stopped early if it did.

    Never raises for what the file holds: a file that is no WARC, WAT or ARC at all (text, HTML,
    random bytes, empty, a gzip cut before any data) gives no pages and `error`; one damaged
    part-way gives the pages before the damage and `error`. A page's pairs are the `info.pairs`
    pairs that follow the previous pages' in `pairs`. Only OSError for a path that cannot be
    opened (missing, a directory, no permission) passes: that is the caller's bad path.
    """
    path = Path(path)
    result = WarcFileResult(str(path))
    try:
        for info, pairs in _pages(path, result.stats, stream_row=False, policy=policy):
            result.pages.append(info)
            result.pairs.extend(pairs)
        result.error = result.stats.error
    except NotAWarcError as exc:
        result.error = str(exc)
    except OSError:
        raise
    except Exception as exc:  # defensive: a reader bug must not fail the build either
        result.error = f"{path}: reading failed after {len(result.pages)} pages: {exc!r}"
    if result.error:
        result.error = " ".join(result.error.split())[:500]  # one line, whatever a library said
    return result
