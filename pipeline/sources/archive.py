"""Archive files below the record: which format a file is, whether it is whole, ARC records.

fastwarc reads WARC and WAT (plain, gzip, zstd, lz4) but not ARC, the Internet Archive format of
Common Crawl's 2008-2012 crawls; warcio does, and with `arc2warc=True` it presents each ARC record
as a WARC `response`. `arc_records` wraps those in the few fastwarc `WarcRecord` attributes that
`warc._response_page` reads, so an ARC page goes through the very code a WARC page does and gives
the same pairs. `open_records` hands out either kind.

`Gunzip` is needed twice: warcio's own inflater only warns on bad data and takes EOFError for a
clean end, so a cut .arc.gz would end quietly; and fastwarc stops at a cut gzip member without a
word, so `unread_tail` re-inflates the end of a .warc.gz to tell a whole file from a cut one.
HTTP payloads keep whatever encodings the server sent; `decode_payload` undoes them.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from fastwarc.warc import WarcRecordType

from pipeline.extract import header_values

__all__ = [
    "MAX_DECODED_BYTES",
    "ArcRecord",
    "DamagedStream",
    "Gunzip",
    "NotAWarcError",
    "arc_version",
    "decode_payload",
    "open_records",
    "sniff_archive",
    "unread_tail",
]

MAX_DECODED_BYTES = 32 << 20  # cap on a decompressed body or WAT JSON payload (bytes)
_BLOCK = 1 << 16
_HTTP_SCHEMES = ("http:", "https:")
_GZIP_MAGIC = b"\x1f\x8b"
_OTHER_MAGICS = (b"\x28\xb5\x2f\xfd", b"\x04\x22\x4d\x18")  # zstd, lz4: fastwarc reads both


class NotAWarcError(ValueError):
    """The file is not a WARC, WAT or ARC file at all (as opposed to one bad record inside it)."""


class DamagedStream(ValueError):
    """The file's bytes are cut or corrupt here: nothing after this point can be read."""


def sniff_archive(path: Path) -> tuple[str, str]:
    """('warc' or 'arc', 'gzip', 'plain' or 'other') from the file's first bytes.

    Raises NotAWarcError when the file is none of these; OSError (a missing or unreadable path,
    a user's mistake rather than bad content) passes through.
    """
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    if not head:
        raise NotAWarcError(f"{path}: empty file, not a WARC, WAT or ARC file")
    if head.startswith(_OTHER_MAGICS):
        return "warc", "other"  # ARC never came zstd- or lz4-compressed
    compression, what = "plain", ""
    if head.startswith(_GZIP_MAGIC):
        compression, what = "gzip", "gzip data "
        try:
            head = zlib.decompressobj(wbits=31).decompress(head, 1024)
        except zlib.error as exc:
            raise NotAWarcError(f"{path}: corrupt gzip stream: {exc}") from exc
        if not head:
            raise NotAWarcError(f"{path}: truncated gzip stream: it ends before any data")
    head = head.lstrip(b"\r\n")
    if head.startswith(b"WARC/"):
        return "warc", compression
    version = arc_version(head)
    if version == 1:
        return "arc", compression
    if version is not None:
        raise NotAWarcError(f"{path}: ARC version {version} file, only version 1 is read")
    raise NotAWarcError(f"{path}: not a WARC, WAT or ARC file ({what}starts with {head[:24]!r})")


def unread_tail(path: Path, compression: str, offset: int) -> str | None:
    """Why a file fastwarc finished reading without complaint is not whole, or None.

    fastwarc ends quietly where a file is cut inside a gzip member or inside record headers, so
    the members from the last record it gave (`offset`) on are inflated once more, output thrown
    away; a plain file must end with the blank line that closes every record.
    """
    with open(path, "rb") as handle:
        if compression == "plain":
            handle.seek(max(path.stat().st_size - 4, 0))
            if handle.read().endswith((b"\r\n\r\n", b"\n\n")):
                return None
            return "the file ends inside a record (no closing blank line)"
        if compression != "gzip":
            return None
        handle.seek(offset)
        if handle.read(3) != b"\x1f\x8b\x08":  # not a member start: a one-member file
            offset = 0
        handle.seek(offset)
        stream = Gunzip(handle)
        try:
            while stream.read(1 << 20):
                pass
        except ValueError as exc:
            return str(exc)
    return None


def open_records(path: Path, kind: str, compression: str) -> Iterator:
    """The records of a file `sniff_archive` judged `(kind, compression)`: fastwarc's `response`
    and `metadata` WarcRecords, or ArcRecords, which offer the attributes the reader uses."""
    if kind == "arc":
        return arc_records(path, compression == "gzip")
    from fastwarc.warc import ArchiveIterator

    wanted = WarcRecordType.response | WarcRecordType.metadata
    return iter(ArchiveIterator(str(path), record_types=wanted, parse_http=True))


def arc_version(head: bytes) -> int | None:
    """The ARC version that `head` (a file's first decompressed bytes) opens, or None: not ARC.

    A file normally opens with its `filedesc://` block, whose second line starts with the version
    number; one split off a larger file may open directly with a version-1 record line
    (`URL IP-address Archive-date Content-type Archive-length`, the URL may hold spaces).
    """
    first, _, rest = head.partition(b"\n")
    if first.startswith(b"filedesc://"):
        version = rest.split(b" ", 1)[0]
        return int(version) if version.isdigit() else 1  # unreadable: warcio will say why
    parts = first.rstrip(b"\r").rsplit(b" ", 4)
    scheme = parts[0].split(b":", 1)[0]
    is_record = (
        len(parts) == 5
        and b":" in parts[0]
        and scheme.isalpha()
        and parts[2].isdigit()
        and parts[4].isdigit()
    )
    return 1 if is_record else None


class Gunzip:
    """A reader of gzip data (one member or many) that hands out every byte before damage.

    A cut or corrupt stream then raises DamagedStream on this and every later read, so whoever reads
    it learns the file is damaged instead of seeing a clean end (gzip.GzipFile drops the data it
    inflated in the call that meets the cut, then reads as empty).
    """

    def __init__(self, raw):
        self._raw = raw
        self._inflate = zlib.decompressobj(wbits=31)
        self._pending = b""  # compressed bytes read but not yet inflated
        self._in_member = False  # bytes of the current member have been fed
        self._out = 0
        self._error: str | None = None

    def tell(self) -> int:
        return self._out  # decompressed offset: warcio asks for it

    def read(self, size: int = -1) -> bytes:
        size = size if size > 0 else _BLOCK  # callers read in blocks; no read-it-all here
        while self._error is None:
            if self._inflate.eof:  # on to the next member, if any
                self._pending = self._inflate.unused_data + self._pending
                self._inflate, self._in_member = zlib.decompressobj(wbits=31), False
            data, self._pending = self._pending or self._raw.read(_BLOCK), b""
            if not data:  # the raw file is at its end
                if not self._in_member:
                    return b""
                self._error = "truncated gzip stream: the file ends inside a gzip member"
                break
            if not self._in_member:
                data = data.lstrip(b"\x00")  # zero padding between or after members is allowed
                if not data:
                    continue
            try:
                out = self._inflate.decompress(data, size)
            except zlib.error as exc:
                self._error = f"corrupt gzip data after decompressed byte {self._out}: {exc}"
                break
            self._in_member, self._pending = True, self._inflate.unconsumed_tail
            if out:
                self._out += len(out)
                return out
        raise DamagedStream(self._error)


@dataclass(slots=True)
class ArcHttp:
    """The parsed HTTP response head, as fastwarc's `record.http_headers` offers it."""

    status_code: int | None
    headers: list[tuple[str, str]]
    length: int  # bytes of status line, headers and blank line

    def items(self) -> list[tuple[str, str]]:
        return self.headers


class ArcRecord:
    """A warcio ARC record seen through the fastwarc `WarcRecord` attributes the reader uses.

    The HTTP head is parsed on first use, inside the caller's per-record error handling: parsed
    by warcio's iterator, one bad head would end the whole file.
    """

    record_type = WarcRecordType.response

    def __init__(self, record):
        self.headers = dict(record.rec_headers.headers)  # WARC-Target-URI, WARC-Date, ...
        self.reader = record.raw_stream  # limited to this record's bytes
        self._length = record.length or 0
        uri = self.headers.get("WARC-Target-URI", "").lower()
        self.is_http = self._length > 0 and uri.startswith(_HTTP_SCHEMES)

    @cached_property
    def http_headers(self) -> ArcHttp:
        from warcio.statusandheaders import StatusAndHeadersParser

        # verify=False: old servers answered with odd status lines; the status then reads None.
        head = StatusAndHeadersParser(["HTTP/1.0", "HTTP/1.1"], verify=False).parse(self.reader)
        code = head.get_statuscode()
        status = int(code) if code and code.isdigit() else None
        return ArcHttp(status, list(head.headers), head.total_len)

    @property
    def content_length(self) -> int:
        return self._length - self.http_headers.length


def arc_records(path: Path, gzipped: bool) -> Iterator[ArcRecord]:
    """The `response` records of an ARC file (plain, or gzip with one member or one per record).

    Damage ends the iteration with ValueError, after every record before it.
    """
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed
    from warcio.statusandheaders import StatusAndHeadersParserException

    with open(path, "rb") as raw:
        # warcio sees plain bytes either way; its member-per-record gzip check has nothing to do.
        stream = Gunzip(raw) if gzipped else raw
        records = iter(ArchiveIterator(stream, arc2warc=True, no_record_parse=True))
        record = None
        while True:
            last = record
            try:
                record = next(records)  # drains the last record first
            except StopIteration:
                missing = getattr(last.raw_stream, "limit", 0) if last is not None else 0
                if missing > 0:  # warcio takes the end of the file for the end of the archive
                    raise DamagedStream(
                        f"the last record is cut short by {missing} bytes"
                    ) from None
                return
            except (ArchiveLoadFailed, StatusAndHeadersParserException, EOFError) as exc:
                raise ValueError(f"bad ARC record: {exc}") from exc
            if record.rec_type == "response":  # not the filedesc:// block (warcinfo)
                yield ArcRecord(record)


# ---------------------------------------------------------------------------------------------
# HTTP payloads
# ---------------------------------------------------------------------------------------------


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


def decode_payload(body: bytes, headers: Mapping[str, list[str]]) -> tuple[bytes, str | None]:
    """(decoded body, None), or (b"", why) when the encodings cannot be undone."""
    try:
        return _decode_body(body, headers), None
    except Exception as exc:  # a lying header: keep the raw body when it already looks like HTML
        if body.lstrip()[:1] == b"<":
            return body, None
        return b"", f"cannot decode payload: {exc}"
