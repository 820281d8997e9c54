"""Finding content in a dataset folder, for the takedown tests: every file is read whole, and
Parquet files also value by value (their pages are compressed, so a raw scan would miss them)."""

from __future__ import annotations

from pathlib import Path


def distinctive(data: bytes, size: int = 96) -> bytes:
    """A slice of encoded image bytes that no other image shares: the end of its compressed
    data (headers and tables at the start are the same across images)."""
    if len(data) < 2 * size:
        raise ValueError(f"{len(data)} bytes are too few to tell an image by")
    return data[-size - 16 : -16]


def _values(path: Path):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    for column in table.columns:
        for value in column.to_pylist():
            if isinstance(value, bytes):
                yield value
            elif isinstance(value, str):
                yield value.encode("utf-8")
            elif isinstance(value, list):
                yield repr(value).encode("utf-8")


def content_hits(root, needles: dict[str, bytes]) -> list[tuple[str, str]]:
    """(needle name, root-relative path) of every file under `root` that holds a needle."""
    root = Path(root)
    hits = set()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        blobs = [path.read_bytes()]
        if path.suffix == ".parquet":
            blobs += list(_values(path))
        for name, needle in needles.items():
            if any(needle in blob for blob in blobs):
                hits.add((name, path.relative_to(root).as_posix()))
    return sorted(hits)
