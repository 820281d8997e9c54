"""The dataset's record of per-origin files: DIR/manifests/origins/*.parquet.

Every robots.txt, tdmrep.json and ai.txt the build fetched is stored with its fetch time and
status (the `robots` stage fetches each origin's once; the crawl and the fetch tasks store any
they had to fetch themselves), and every fetcher of the build preloads the ones it needs instead
of asking the site again: once per origin per build, across tasks, nodes and resumed runs."""

from __future__ import annotations

from manifests import schema

ROBOTS = "robots.txt"
FILES = ("robots.txt", "tdmrep.json", "ai.txt")  # pipeline.net.consent's per-origin files


def records_table(records):
    """OriginFileRecords as rows of schema.ORIGINS, sorted by origin (readers prune by it)."""
    import datetime

    import pyarrow as pa

    rows = [
        {
            "origin": r.origin,
            "file": r.file,
            "url": r.url,
            "status": r.status,
            "fetched_at": datetime.datetime.fromtimestamp(r.fetched_at, datetime.UTC),
            "http_status": r.http_status,
            "error": r.error,
            "body": r.body,
        }
        for r in sorted(records, key=lambda r: (r.origin, r.file, r.fetched_at))
    ]
    return pa.Table.from_pylist(rows, schema=schema.ORIGINS)


def read_records(layout, origins: set[str] | None = None) -> list:
    """The stored per-origin file records (of `origins` only, if given); for a file of an
    origin stored more than once (two tasks met it at once) the latest fetch."""
    import pyarrow.dataset as ds

    from manifests.storage import parquet_dataset
    from pipeline.net.originfiles import OriginFileRecord

    files = sorted(layout.origins.glob("*.parquet")) if layout.origins.is_dir() else []
    if not files or origins == set():
        return []
    data = parquet_dataset(files, schema=schema.ORIGINS, format="parquet")
    where = ds.field("file").isin(list(FILES))
    if origins is not None:
        where &= ds.field("origin").isin(sorted(origins))
    latest: dict[tuple[str, str], OriginFileRecord] = {}
    for row in data.to_table(filter=where).to_pylist():
        record = OriginFileRecord(
            row["origin"],
            row["url"],
            row["fetched_at"].timestamp(),
            row["status"],
            row["http_status"],
            row["error"],
            row["body"],
            row["file"],
        )
        key = (row["origin"], row["file"])
        if key not in latest or latest[key].fetched_at < record.fetched_at:
            latest[key] = record
    return list(latest.values())


# DuckDB expressions over a `url` column: the host that owns a URL's politeness budget and the
# origin its robots.txt belongs to (lower case, no userinfo, no default port), as the fetcher
# computes them for ASCII host names (an IDN host is grouped under its Unicode spelling here,
# under its punycode spelling by the fetcher).
_SCHEME = "lower(regexp_extract(url, '^([A-Za-z][A-Za-z0-9+.-]*)://', 1))"
_AUTHORITY = (
    "lower(regexp_replace(regexp_extract(url, '^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)', 1),"
    " '^.*@', ''))"
)
_HOSTPART = (
    f"CASE WHEN {_AUTHORITY} LIKE '[%' THEN regexp_extract({_AUTHORITY}, '^(\\[[^\\]]*\\])', 1)"
    f" ELSE regexp_replace({_AUTHORITY}, ':[0-9]*$', '') END"
)
_PORT = f"regexp_extract({_AUTHORITY}, '(?:\\]|^[^\\[]*?):([0-9]+)$', 1)"
HOST_SQL = f"trim({_HOSTPART}, '[]')"
ORIGIN_SQL = (
    f"{_SCHEME} || '://' || {_HOSTPART} || CASE WHEN {_PORT} = ''"
    f" OR ({_SCHEME} = 'http' AND {_PORT} = '80') OR ({_SCHEME} = 'https' AND {_PORT} = '443')"
    f" THEN '' ELSE ':' || {_PORT} END"
)
HTTP_SQL = f"{_SCHEME} IN ('http', 'https') AND {_HOSTPART} <> ''"
