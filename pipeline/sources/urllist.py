"""Read img2dataset-style URL lists (txt, csv, tsv, json, jsonl, parquet) as (url, caption) tables.

Rows are read as a stream and cut into chunks of a fixed number of input rows, so a big list can
be sharded deterministically. A row is never dropped silently: rows with an empty URL and rows
that cannot be parsed are counted per chunk.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from manifests import storage
from manifests.config import ConfigError

FORMATS = ("txt", "csv", "tsv", "json", "jsonl", "parquet")
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".lz4")
_EXTENSIONS = {
    ".txt": "txt",
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
_READ_BLOCK_BYTES = 4 << 20  # pyarrow CSV read block (bytes)
_KEY_SAMPLE_ROWS = 1000  # JSON objects inspected to tell a missing column from a sparse one


@dataclass
class UrlList:
    """A chunk of a URL list (or the whole list, from read_url_list)."""

    table: object  # pyarrow.Table: url (string, never empty), caption (string, nullable)
    first_row: int  # 0-based index of the chunk's first input row (data rows, header excluded)
    rows_in: int  # input rows this chunk covers, dropped ones included
    dropped_empty_url: int
    dropped_malformed: int  # unparseable rows: bad CSV row, invalid JSON line, non-object item

    @property
    def rows_out(self) -> int:
        return self.table.num_rows


def detect_format(path: str | Path, input_format: str | None = None) -> str:
    """The list format: `input_format` if given (img2dataset's 'csv.gz' style allowed), else
    from the file extension after any compression suffix."""
    if input_format:
        fmt = input_format.lower().strip(".")
        for suffix in _COMPRESSION_SUFFIXES:
            fmt = fmt.removesuffix(suffix)
        if fmt not in FORMATS:
            raise ConfigError(f"unknown input format {input_format!r}; expected one of {FORMATS}")
        return fmt
    name = str(path).rsplit("/", 1)[-1].lower()  # a local path or a URI
    for suffix in _COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    fmt = _EXTENSIONS.get(Path(name).suffix)
    if fmt is None:
        raise ConfigError(
            f"cannot tell the format of {path} from its extension; "
            f"pass input_format (one of {FORMATS})"
        )
    return fmt


def _missing_column(kind: str, column: str, available: list[str], path: Path) -> ConfigError:
    hint = " (pass caption_col=None for a list without captions)" if kind == "caption" else ""
    return ConfigError(
        f"{path}: {kind} column {column!r} not found; available columns: {available}{hint}"
    )


def _to_string(array):
    """A pyarrow string array from binary/other values; invalid UTF-8 replaced, not fatal."""
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_string(array.type):
        return array
    try:
        return array.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = array.to_pylist()
        return pa.array(
            [
                v.decode("utf-8", "replace")
                if isinstance(v, bytes)
                else None
                if v is None
                else str(v)
                for v in values
            ],
            pa.string(),
        )


# Each raw reader yields (url array, caption array or None, malformed rows seen) batches.
def _raw_txt(path: Path, url_col, caption_col, block_rows: int):
    import pyarrow as pa

    with storage.open_input(path) as stream:
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
        urls: list[str] = []
        for line in text:
            urls.append(line.rstrip("\r\n"))
            if len(urls) >= block_rows:
                yield pa.array(urls, pa.string()), None, 0
                urls = []
        if urls:
            yield pa.array(urls, pa.string()), None, 0


def _raw_csv(path: Path, url_col, caption_col, block_rows: int, delimiter: str):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    malformed = [0]
    lock = threading.Lock()

    def on_invalid(_row) -> str:
        with lock:
            malformed[0] += 1
        return "skip"

    columns = [url_col] + ([caption_col] if caption_col else [])
    parse = pcsv.ParseOptions(
        delimiter=delimiter,
        # IANA TSV has no quoting: a caption starting with '"' must stay as written.
        quote_char='"' if delimiter == "," else False,
        newlines_in_values=delimiter == ",",
        invalid_row_handler=on_invalid,
    )
    read = pcsv.ReadOptions(block_size=_READ_BLOCK_BYTES)
    convert = pcsv.ConvertOptions(
        include_columns=columns, column_types={c: pa.binary() for c in columns}
    )
    try:
        reader = pcsv.open_csv(storage.open_input(path), read, parse, convert)
    except KeyError:  # pyarrow.ArrowKeyError: an include_columns name is not in the header
        names = pcsv.open_csv(storage.open_input(path), read, parse).schema.names
        kind, column = ("url", url_col) if url_col not in names else ("caption", caption_col)
        raise _missing_column(kind, column, names, path) from None
    for batch in reader:
        seen, malformed[0] = malformed[0], 0
        caption = _to_string(batch.column(caption_col)) if caption_col else None
        yield _to_string(batch.column(url_col)), caption, seen
    if malformed[0]:
        yield pa.array([], pa.string()), None, malformed[0]


def _json_rows(path: Path) -> Iterator[object]:
    """Rows of a JSON array (or of pandas' column-oriented object form) as Python objects."""

    with storage.open_input(path) as stream:
        doc = json.loads(stream.read())
    if isinstance(doc, list):
        yield from doc
    elif isinstance(doc, dict) and doc and all(isinstance(v, (list, dict)) for v in doc.values()):
        columns = {k: list(v.values()) if isinstance(v, dict) else v for k, v in doc.items()}
        rows = max(len(v) for v in columns.values())
        for i in range(rows):
            yield {k: v[i] for k, v in columns.items() if i < len(v)}
    else:
        raise ConfigError(f"{path}: a JSON URL list must be an array of objects")


def _jsonl_rows(path: Path) -> Iterator[object]:

    with storage.open_input(path) as stream:
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace")
        for line in text:
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                yield None  # counted as malformed


def _raw_json(path: Path, url_col, caption_col, block_rows: int, lines: bool):
    import pyarrow as pa

    rows = _jsonl_rows(path) if lines else _json_rows(path)
    urls: list[str | None] = []
    captions: list[str | None] = []
    malformed = checked = 0
    keys: set[str] = set()
    for row in rows:
        if not isinstance(row, dict) or (
            row.get(url_col) is not None and not isinstance(row.get(url_col), str)
        ):
            malformed += 1
            continue
        if checked < _KEY_SAMPLE_ROWS:
            keys.update(row)
            checked += 1
            if checked == _KEY_SAMPLE_ROWS:
                _check_keys(keys, url_col, caption_col, path)
        urls.append(row.get(url_col))
        if caption_col:
            value = row.get(caption_col)
            captions.append(value if value is None or isinstance(value, str) else str(value))
        if len(urls) >= block_rows:
            if checked < _KEY_SAMPLE_ROWS:
                _check_keys(keys, url_col, caption_col, path)
            yield pa.array(urls, pa.string()), pa.array(captions, pa.string()), malformed
            urls, captions, malformed = [], [], 0
    if checked and checked < _KEY_SAMPLE_ROWS:
        _check_keys(keys, url_col, caption_col, path)
    if urls or malformed:
        yield pa.array(urls, pa.string()), pa.array(captions, pa.string()), malformed


def _check_keys(keys: set[str], url_col: str, caption_col: str | None, path: Path) -> None:
    if url_col not in keys:
        raise _missing_column("url", url_col, sorted(keys), path)
    if caption_col and caption_col not in keys:
        raise _missing_column("caption", caption_col, sorted(keys), path)


def _raw_parquet(path: Path, url_col, caption_col, block_rows: int):

    parquet = storage.parquet_file(path)
    names = parquet.schema_arrow.names
    for kind, column in (("url", url_col), ("caption", caption_col)):
        if column and column not in names:
            raise _missing_column(kind, column, names, path)
    columns = [url_col] + ([caption_col] if caption_col else [])
    for batch in parquet.iter_batches(batch_size=block_rows, columns=columns):
        caption = _to_string(batch.column(caption_col)) if caption_col else None
        yield _to_string(batch.column(url_col)), caption, 0


def _raw_batches(path: Path, fmt: str, url_col: str, caption_col: str | None, block_rows: int):
    if fmt == "txt":
        return _raw_txt(path, url_col, None, block_rows)
    if fmt in ("csv", "tsv"):
        return _raw_csv(path, url_col, caption_col, block_rows, "," if fmt == "csv" else "\t")
    if fmt in ("json", "jsonl"):
        return _raw_json(path, url_col, caption_col, block_rows, lines=fmt == "jsonl")
    return _raw_parquet(path, url_col, caption_col, block_rows)


def _finish_chunk(urls: list, captions: list, first_row: int, malformed: int) -> UrlList:
    """Concatenate raw pieces, drop empty URLs (counted), trim URLs, null out blank captions."""
    import pyarrow as pa
    import pyarrow.compute as pc

    url = (
        pa.chunked_array(urls, pa.string()).combine_chunks() if urls else pa.array([], pa.string())
    )
    caption = (
        pa.chunked_array(captions, pa.string()).combine_chunks()
        if captions
        else pa.nulls(len(url), pa.string())
    )
    url = pc.utf8_trim_whitespace(url)
    keep = pc.fill_null(pc.greater(pc.utf8_length(url), 0), False)
    blank = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(caption)), 0), True)
    caption = pc.if_else(blank, pa.scalar(None, pa.string()), caption)
    table = pa.table({"url": url, "caption": caption}).filter(keep)
    table = table.cast(
        pa.schema([pa.field("url", pa.string(), nullable=False), ("caption", pa.string())])
    )
    rows_in = len(url) + malformed
    return UrlList(table, first_row, rows_in, len(url) - table.num_rows, malformed)


def iter_url_list_chunks(
    path: str | Path,
    rows_per_chunk: int = 100_000,
    *,
    url_col: str = "url",
    caption_col: str | None = "caption",
    input_format: str | None = None,
) -> Iterator[UrlList]:
    """Stream a URL list as chunks of exactly `rows_per_chunk` parsed input rows (the last may be
    shorter), so chunk i always covers the same rows of the same file. Malformed rows are
    counted in the chunk being filled when they are met, on top of its parsed rows.

    Raises ValueError (naming the available columns) when url_col or caption_col is missing;
    caption_col=None reads no captions (always the case for txt lists).
    """
    if not isinstance(rows_per_chunk, int) or rows_per_chunk < 1:
        raise ValueError(f"rows_per_chunk must be a positive int, not {rows_per_chunk!r}")
    path = storage.location(path)
    if not path.is_file():
        raise FileNotFoundError(f"URL list {path} does not exist")
    fmt = detect_format(path, input_format)
    block_rows = min(rows_per_chunk, 65_536)
    urls: list = []
    captions: list = []
    filled = malformed = first_row = 0
    for url, caption, bad in _raw_batches(path, fmt, url_col, caption_col, block_rows):
        malformed += bad
        offset = 0
        while offset < len(url):
            take = min(rows_per_chunk - filled, len(url) - offset)
            urls.append(url.slice(offset, take))
            if caption is not None:
                captions.append(caption.slice(offset, take))
            filled += take
            offset += take
            if filled == rows_per_chunk:
                chunk = _finish_chunk(urls, captions, first_row, malformed)
                yield chunk
                first_row += filled
                urls, captions, filled, malformed = [], [], 0, 0
    if filled or malformed:
        yield _finish_chunk(urls, captions, first_row, malformed)


def parquet_rows(path: str | Path) -> int:
    """Rows of a Parquet URL list, from its footer alone."""

    return storage.parquet_file(path).metadata.num_rows


def read_parquet_range(
    path: str | Path,
    first: int,
    end: int,
    *,
    url_col: str = "url",
    caption_col: str | None = "caption",
) -> UrlList:
    """Rows [first, end) of a Parquet URL list as one chunk, reading only the row groups that
    hold them: what a task reads of its part, the same chunk iter_url_list_chunks gives."""

    parquet = storage.parquet_file(path)
    names = parquet.schema_arrow.names
    for kind, column in (("url", url_col), ("caption", caption_col)):
        if column and column not in names:
            raise _missing_column(kind, column, names, path)
    groups, start, offset = [], 0, None
    for g in range(parquet.metadata.num_row_groups):
        rows = parquet.metadata.row_group(g).num_rows
        if start + rows > first and start < end:
            groups.append(g)
            offset = start if offset is None else offset
        start += rows
    columns = [url_col] + ([caption_col] if caption_col else [])
    table = parquet.read_row_groups(groups, columns=columns) if groups else None
    if table is None:
        return _finish_chunk([], [], first, 0)
    table = table.slice(first - offset, end - first)
    urls = [_to_string(table.column(url_col))]
    captions = [_to_string(table.column(caption_col))] if caption_col else []
    return _finish_chunk(urls, captions, first, 0)


def read_url_list(
    path: str | Path,
    url_col: str = "url",
    caption_col: str | None = "caption",
    *,
    input_format: str | None = None,
) -> UrlList:
    """The whole URL list as one UrlList: `.table` (url, caption) plus the drop counts."""
    import pyarrow as pa

    chunks = list(
        iter_url_list_chunks(
            path, 1 << 20, url_col=url_col, caption_col=caption_col, input_format=input_format
        )
    )
    if not chunks:
        schema = pa.schema([pa.field("url", pa.string(), nullable=False), ("caption", pa.string())])
        return UrlList(schema.empty_table(), 0, 0, 0, 0)
    table = pa.concat_tables([c.table for c in chunks]).combine_chunks()
    return UrlList(
        table,
        0,
        sum(c.rows_in for c in chunks),
        sum(c.dropped_empty_url for c in chunks),
        sum(c.dropped_malformed for c in chunks),
    )
