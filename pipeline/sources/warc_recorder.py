"""Record fetched HTTP responses as WARC `response` records, so a live crawl can be replayed.

`pipeline.sources.warc.pairs_from_warc` on the recording gives exactly the pairs `extract_page`
gave live, because the same final URL, headers (X-Robots-Tag included) and body bytes are stored.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from types import TracebackType

# The body we are given is already decoded (no chunking, no compression), so the transport
# headers that described the wire bytes are kept under Common Crawl's X-Crawler- names.
_TRANSPORT_HEADERS = ("content-encoding", "transfer-encoding", "content-length")
_MODES = {"x": "xb", "w": "wb", "a": "ab"}

HeadersLike = Mapping[str, str | Iterable[str]] | Iterable[tuple[str, str]] | None


def _header_pairs(headers: HeadersLike) -> list[tuple[str, str]]:
    """(name, value) pairs from a mapping (list values allowed), a multidict or pairs."""
    if not headers:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    pairs: list[tuple[str, str]] = []
    for name, value in items:
        values = value if isinstance(value, (list, tuple)) else [value]
        for one in values:
            if one is None:
                continue
            # A CR or LF inside a value would forge extra header lines in the record.
            clean = str(one).replace("\r", " ").replace("\n", " ")
            pairs.append((str(name).strip(), clean))
    return pairs


def _warc_date(date: datetime | None) -> str:
    date = date or datetime.now(UTC)
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    return date.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class WarcRecorder:
    """Context manager writing one gzip'd WARC `response` record per `write_response()` call.

    mode: 'x' (default) refuses to overwrite an existing file, 'w' overwrites, 'a' appends (a
    resumed crawl). Records are complete gzip members, so a crash loses at most the last one.
    Thread-safe: fetch workers may share one recorder.
    """

    def __init__(self, path: str | Path, *, mode: str = "x", software: str = "clipengine") -> None:
        if mode not in _MODES:
            raise ValueError(f"WarcRecorder mode must be one of {sorted(_MODES)}, not {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self.software = software
        self.records_written = 0
        self._file = None
        self._writer = None
        self._lock = threading.Lock()

    def __enter__(self) -> WarcRecorder:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        from warcio.warcwriter import WARCWriter

        if self._file is not None:
            return
        try:
            # Held open for the recorder's lifetime; close() / __exit__ close it.
            self._file = open(self.path, _MODES[self.mode])  # noqa: SIM115
        except FileExistsError as exc:
            raise FileExistsError(
                f"{self.path} exists; pass mode='a' to append or mode='w' to overwrite"
            ) from exc
        self._writer = WARCWriter(self._file, gzip=True)
        if self._file.tell() == 0:
            info = {"software": self.software, "format": "WARC File Format 1.0"}
            self._writer.write_record(self._writer.create_warcinfo_record(self.path.name, info))

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = self._writer = None

    def write_response(
        self,
        url: str,
        status: int,
        headers: HeadersLike,
        body: bytes,
        *,
        reason: str | None = None,
        date: datetime | None = None,
        ip_address: str | None = None,
    ) -> None:
        """Write one response: `url` is the final URL (after redirects), `body` the decoded bytes
        exactly as handed to `extract_page`. Any status and content type is kept as given."""
        from warcio.statusandheaders import StatusAndHeaders

        if self._writer is None:
            raise RuntimeError("WarcRecorder is not open; use it as a context manager")
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise TypeError(f"body must be bytes, not {type(body).__name__}")
        body = bytes(body)
        if reason is None:
            try:
                reason = HTTPStatus(status).phrase
            except ValueError:
                reason = ""
        pairs = []
        for name, value in _header_pairs(headers):
            if name.lower() in _TRANSPORT_HEADERS:
                name = "X-Crawler-" + name
            pairs.append((name, value))
        pairs.append(("Content-Length", str(len(body))))
        http_headers = StatusAndHeaders(
            f"{int(status)} {reason}".strip(), pairs, protocol="HTTP/1.1"
        )
        warc_headers = {"WARC-Date": _warc_date(date)}
        if ip_address:
            warc_headers["WARC-IP-Address"] = ip_address
        with self._lock:
            if self._writer is None:
                raise RuntimeError("WarcRecorder was closed")
            record = self._writer.create_warc_record(
                url,
                "response",
                payload=io.BytesIO(body),
                http_headers=http_headers,
                warc_headers_dict=warc_headers,
            )
            self._writer.write_record(record)
            self._file.flush()
            self.records_written += 1
