"""Read (image url, alt text) pairs from WARC and Common Crawl WAT files, and record crawls to WARC.

WARC `response` records go through the same `extract_page` a live crawl uses, so a crawl recorded
with `WarcRecorder` replays to exactly the pairs it gave live. WAT `metadata` records (Common
Crawl's pre-extracted link JSON) are read directly. WARC and WAT are told apart per record by
content, so a file name never decides how a record is read.
"""

from __future__ import annotations

import html
import io
import json
import logging
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.extract import (
    Pair,
    UrlResolver,
    clean_caption,
    extract_page,
    header_values,
    resolve_url,
    robots_directives,
)
from pipeline.sources.warc_recorder import WarcRecorder

__all__ = [
    "NotAWarcError",
    "PageInfo",
    "PageRecord",
    "WarcRecorder",
    "WarcStats",
    "iter_warc_pages",
    "pairs_from_warc",
]

log = logging.getLogger(__name__)

HTML_TYPES = ("text/html", "application/xhtml+xml")
MAX_DECODED_BYTES = 32 << 20  # cap on a decompressed body or WAT JSON payload (bytes)
_GZIP_MAGIC = b"\x1f\x8b"
_OTHER_MAGICS = (b"\x28\xb5\x2f\xfd", b"\x04\x22\x4d\x18")  # zstd, lz4: fastwarc reads both


class NotAWarcError(ValueError):
    """The file is not a WARC/WAT file at all (as opposed to one bad record inside it)."""


@dataclass(slots=True)
class PageRecord:
    url: str  # WARC-Target-URI: the URL the body was served from
    http_status: int | None
    headers: dict[str, list[str]]  # HTTP response headers, name as first seen -> all values
    body: bytes  # payload with transfer and content encodings removed
    warc_date: str | None = None
    error: str | None = None  # set when the payload could not be decoded (body is then b"")


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

    def to_row(self) -> dict:
        """Columns of manifests.schema.PAGES (depth is unknown for archived pages)."""
        return {
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

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def _check_is_warc(path: Path) -> None:
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
    except OSError as exc:
        raise NotAWarcError(f"{path}: cannot read: {exc}") from exc
    if not head:
        raise NotAWarcError(f"{path}: empty file, not a WARC file")
    if head.startswith(_OTHER_MAGICS):
        return
    if head.startswith(_GZIP_MAGIC):
        try:
            head = zlib.decompressobj(wbits=31).decompress(head, 64)
        except zlib.error as exc:
            raise NotAWarcError(f"{path}: corrupt gzip stream: {exc}") from exc
    if not head.lstrip(b"\r\n").startswith(b"WARC/"):
        raise NotAWarcError(f"{path}: not a WARC file (does not start with 'WARC/')")


def _dechunk(data: bytes) -> bytes:
    out, pos = bytearray(), 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0].strip(), 16)
        if size == 0:
            return bytes(out)
        out += data[end + 2 : end + 2 + size]
        if len(out) > MAX_DECODED_BYTES:
            raise ValueError("chunked body over the size cap")
        pos = end + 2 + size + 2


def _inflate(data: bytes, wbits: int) -> bytes:
    decomp = zlib.decompressobj(wbits=wbits)
    out = decomp.decompress(data, MAX_DECODED_BYTES + 1)
    if len(out) > MAX_DECODED_BYTES:
        raise ValueError("decompressed body over the size cap")
    return out


def _decode_body(body: bytes, headers: Mapping[str, list[str]]) -> bytes:
    """Undo Transfer-Encoding and Content-Encoding that a third-party WARC may have kept."""
    transfer = ",".join(header_values(headers, "transfer-encoding")).lower()
    if "chunked" in transfer:
        body = _dechunk(body)
    for coding in reversed(",".join(header_values(headers, "content-encoding")).lower().split(",")):
        coding = coding.strip()
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, 47)  # 32 + 15: gzip or zlib header, auto-detected
        elif coding == "deflate":
            try:
                body = _inflate(body, 15)
            except zlib.error:
                body = _inflate(body, -15)  # raw deflate, as some servers send
        elif coding == "br":
            from fastwarc.stream_io import BrotliReader

            body = BrotliReader(io.BytesIO(body)).read(MAX_DECODED_BYTES + 1)
            if len(body) > MAX_DECODED_BYTES:
                raise ValueError("decompressed body over the size cap")
        elif coding not in ("", "identity"):
            raise ValueError(f"unsupported content encoding {coding!r}")
    return body


def _decoded(body: bytes, headers: Mapping[str, list[str]]) -> tuple[bytes, str | None]:
    try:
        return _decode_body(body, headers), None
    except Exception as exc:  # a lying header: keep the raw body when it already looks like HTML
        if body.lstrip()[:1] == b"<":
            return body, None
        return b"", f"cannot decode payload: {exc}"


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
    body = b""
    if len(raw) > MAX_DECODED_BYTES:
        error = f"payload over {MAX_DECODED_BYTES} bytes"
    elif len(raw) < record.content_length:  # the file ends inside this record
        error = f"truncated record: {len(raw)} of {record.content_length} payload bytes"
    else:
        body, error = _decoded(raw, headers)
    status = record.http_headers.status_code
    date = record.headers.get("WARC-Date")
    return PageRecord(url, status, headers, body, date, error)


def _records(path: Path, stats: WarcStats) -> Iterator[tuple[str, object]]:
    """Tagged items: ('warc', PageRecord), ('wat', (url, WAT JSON)), ('non_html', url),
    ('skipped', None), ('record_error', (url, message)) or, last, ('stream_error', message)."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    _check_is_warc(path)
    wanted = WarcRecordType.response | WarcRecordType.metadata
    records = iter(ArchiveIterator(str(path), record_types=wanted, parse_http=True))
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except (OSError, ValueError) as exc:  # the stream itself is broken: nothing after it
            yield "stream_error", f"unreadable WARC stream after record {stats.records}: {exc}"
            return
        stats.records += 1
        try:
            if record.record_type == WarcRecordType.response:
                page = _response_page(record)
                yield ("warc", page) if page else ("non_html", _target_uri(record))
            else:
                yield _wat_document(record)
        except Exception as exc:  # one bad record must not stop the file
            yield "record_error", (_target_uri(record), f"record {stats.records}: {exc!r}")


def iter_warc_pages(path: str | Path) -> Iterator[PageRecord]:
    """Every HTML `response` record of a .warc/.warc.gz file, in file order.

    Raises NotAWarcError for a file that is not a WARC at all, and for a stream that breaks
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


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _wat_page(url: str, doc: dict, source: str) -> tuple[PageInfo, list[Pair]] | None:
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
    opted_out, _ = robots_directives(header_values(headers, "x-robots-tag"), metas)
    info = PageInfo(url, status, "ok", opted_out, 0, None, source, "wat")
    if status is not None and not 200 <= status < 300:
        info.status, info.error = "fetch_failed", f"HTTP {status}"
        return info, []
    if opted_out:
        info.status = "opted_out"
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
def _warc_page(page: PageRecord, source: str) -> tuple[PageInfo, list[Pair]]:
    info = PageInfo(page.url, page.http_status, "ok", False, 0, None, source, "warc")
    if page.error:
        info.status, info.error = "record_error", page.error
        return info, []
    if page.http_status is None or not 200 <= page.http_status < 300:
        info.status, info.error = "fetch_failed", f"HTTP {page.http_status}"
        return info, []
    extract = extract_page(page.url, page.body, page.headers)
    info.opted_out, info.pairs, info.error = extract.opted_out, len(extract.pairs), extract.error
    if extract.opted_out:
        info.status = "opted_out"
    elif extract.error:
        info.status = "record_error"
    return info, extract.pairs


def pairs_from_warc(
    path: str | Path, stats: WarcStats | None = None
) -> Iterator[tuple[PageInfo, list[Pair]]]:
    """(page info, pairs) for every HTML page of a WARC or WAT file (plain, gzip, zstd or lz4).

    Only 2xx pages give pairs; other statuses, opt-outs and unreadable records are reported in
    PageInfo (status / error) and never raise. `stats`, when given, is filled as the file is read.
    Raises NotAWarcError on the first next() when the file is not a WARC at all.
    """
    path = Path(path)
    stats = stats if stats is not None else WarcStats()
    source = path.name
    for kind, item in _records(path, stats):
        result = None
        if kind in ("warc", "wat"):
            try:
                result = _warc_page(item, source) if kind == "warc" else _wat_page(*item, source)
            except Exception as exc:  # defensive: a page must never stop the file
                url = item.url if kind == "warc" else item[0]
                kind, item = "record_error", (url, f"extraction failed: {exc!r}")
            if kind == "wat" and result is None:
                stats.non_html += 1
        if kind == "non_html":
            stats.non_html += 1
        elif kind == "skipped":
            stats.skipped += 1
        elif kind in ("record_error", "stream_error"):
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
