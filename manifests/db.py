"""DuckDB access to a dataset: `open(dir)` gives a connection with the views `samples`, `pages`,
`origins`, `removals`, `shards`, `stats` (and `embeddings` after `pipeline embed`), and `subset_sql(name)` the SELECT
of a named subset."""

import json
from pathlib import Path

from manifests import schema, storage
from manifests.commit import committed_files, read_dataset_json, shard_index
from manifests.config import ConfigError
from manifests.layout import DatasetLayout

PACKAGE_SUBSETS = Path(__file__).parent / "subsets"


class NotADatasetError(ConfigError):
    pass


class UnknownSubsetError(ConfigError):
    pass


def _duck_type(arrow_type) -> str:
    import pyarrow as pa

    if pa.types.is_list(arrow_type):
        return _duck_type(arrow_type.value_type) + "[]"
    if pa.types.is_struct(arrow_type):
        fields = ", ".join(f'"{f.name}" {_duck_type(f.type)}' for f in arrow_type)
        return f"STRUCT({fields})"
    return {
        pa.string(): "VARCHAR",
        pa.int32(): "INTEGER",
        pa.int64(): "BIGINT",
        pa.float32(): "FLOAT",
        pa.float64(): "DOUBLE",
        pa.binary(): "BLOB",
        pa.bool_(): "BOOLEAN",
        pa.timestamp("ms", tz="UTC"): "TIMESTAMPTZ",
    }[arrow_type]


def _parquet_view(con, name: str, files: list, arrow_schema) -> None:
    columns = ", ".join(f'"{f.name}" {_duck_type(f.type)}' for f in arrow_schema)
    if not files:
        # An empty view with the right columns, so queries on a fresh dataset still run.
        con.execute(f"CREATE OR REPLACE TABLE _empty_{name} ({columns})")
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM _empty_{name}")
        return
    import duckdb

    file_list = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    source = f"read_parquet([{file_list}], union_by_name = true)"

    def view(present) -> None:
        casts = ", ".join(
            f"CAST({_quoted(f.name) if f.name in present else 'NULL'} AS {_duck_type(f.type)})"
            f' AS "{f.name}"'
            for f in arrow_schema
        )
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT {casts} FROM {source}")

    try:
        view({f.name for f in arrow_schema})
    except duckdb.BinderException:  # files older than a column (consent): it reads as nulls
        present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        view(present)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _stats_table(con, stats_dir) -> None:
    import pyarrow as pa

    rows = []
    for path in stats_dir.glob("*.json"):
        record = json.loads(path.read_text())
        rows.append(
            {
                "stage": record.get("stage", path.stem),
                "order": int(record.get("order", 0)),
                "rows_in": int(record.get("rows_in", 0)),
                "rows_out": int(record.get("rows_out", 0)),
                "dropped": int(sum(record.get("drops", {}).values())),
                "drops": json.dumps(record.get("drops", {}), sort_keys=True),
                "seconds": float(record.get("seconds", 0.0)),
                "unit": record.get("unit", "rows"),
                "peak_rss_mb": float(record.get("peak_rss_mb", 0.0)),
            }
        )
    rows.sort(key=lambda r: (r["order"], r["stage"]))
    stats = pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("stage", pa.string()),
                ("order", pa.int32()),
                ("rows_in", pa.int64()),
                ("rows_out", pa.int64()),
                ("dropped", pa.int64()),
                ("drops", pa.string()),
                ("seconds", pa.float64()),
                ("unit", pa.string()),  # what rows_in/rows_out count: rows, urls, origins
                ("peak_rss_mb", pa.float64()),  # the most memory a process of its parts used
            ]
        ),
    )
    con.register("_stats_arrow", stats)
    con.execute('CREATE OR REPLACE VIEW stats AS SELECT * FROM _stats_arrow ORDER BY "order"')


def _shards_view(con, index, files: list) -> None:
    import pyarrow as pa

    if index is not None and index.exists():  # written by the build: no shard is opened
        con.register("_shards_arrow", storage.read_table(index))
        con.execute("CREATE OR REPLACE VIEW shards AS SELECT * FROM _shards_arrow ORDER BY shard")
        return
    rows = []
    for path in files:  # footers only
        meta = storage.parquet_file(path).metadata
        rows.append(
            {
                "shard": path.name,
                "rows": meta.num_rows,
                "row_groups": meta.num_row_groups,
                "bytes": path.stat().st_size,
            }
        )
    table = pa.Table.from_pylist(rows, schema=schema.SHARDS)
    con.register("_shards_arrow", table)
    con.execute("CREATE OR REPLACE VIEW shards AS SELECT * FROM _shards_arrow")


def _embeddings_view(con, folder: Path) -> None:
    """`embeddings` (uid, shard, shard_row, clip_score, image, text) when `pipeline embed` ran;
    then `samples.clip_score` falls back to it where the build did not score the row."""
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return
    file_list = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    con.execute(f"CREATE OR REPLACE VIEW embeddings AS SELECT * FROM read_parquet([{file_list}])")
    con.execute("ALTER VIEW samples RENAME TO _samples_manifest")
    con.execute(
        "CREATE OR REPLACE VIEW samples AS "
        "SELECT s.* REPLACE (coalesce(s.clip_score, e.clip_score) AS clip_score) "
        "FROM _samples_manifest s LEFT JOIN "
        "(SELECT uid, any_value(CASE WHEN isnan(clip_score) THEN NULL ELSE clip_score END) "
        "AS clip_score FROM embeddings GROUP BY uid) e "
        "ON s.uid = e.uid"
    )


def _consent_view(con) -> None:
    """`consent`: one row per (sample, signal checked for its image or its page): what the
    signal said and when. A sample's own `consent` holds its image's findings (and its page's
    origin files when the build did not fetch the page: an archive); a crawled or archived
    page's own findings (headers, meta tags; a crawl's origin files) are its `pages` row's,
    joined by page_url."""
    con.execute(
        """CREATE OR REPLACE VIEW consent AS
        WITH found AS (
            SELECT uid, status, url, page_url, unnest(consent) AS c FROM samples
            UNION ALL
            SELECT s.uid, s.status, s.url, s.page_url, unnest(p.consent)
            FROM samples s JOIN (
                -- one row per page (a page reached twice, by a redirect or in two archives):
                -- the one that gave pairs
                SELECT coalesce(final_url, url) AS page, consent FROM pages
                QUALIFY row_number() OVER (
                    PARTITION BY coalesce(final_url, url) ORDER BY (status = 'ok') DESC, url
                ) = 1
            ) p ON s.page_url = p.page
        )
        SELECT uid, status, c.subject AS subject,
               CASE WHEN c.subject = 'page' THEN page_url ELSE url END AS url,
               c.signal AS signal, c.state AS state, c.value AS value,
               c.opt_out AS opt_out, c.at AS at
        FROM found"""
    )


def _images_view(con) -> None:
    """`images`: one row per image in the shards (shard, shard_row) with its kept captions in
    their `captions` order, beside `samples` (one row per caption). The url, sha256 and sizes
    are the first caption's row's; `uid` is the image's (its shard row's uid)."""
    con.execute(
        """CREATE OR REPLACE VIEW images AS
        SELECT shard, shard_row,
               arg_min(coalesce(image_of, uid), coalesce(caption_index, 0)) AS uid,
               arg_min(url, coalesce(caption_index, 0)) AS url,
               arg_min(sha256, coalesce(caption_index, 0)) AS sha256,
               arg_min(width, coalesce(caption_index, 0)) AS width,
               arg_min(height, coalesce(caption_index, 0)) AS height,
               list(caption ORDER BY coalesce(caption_index, 0)) AS captions,
               list(uid ORDER BY coalesce(caption_index, 0)) AS caption_uids,
               count(*) AS n_captions
        FROM samples
        WHERE status = 'kept' AND shard IS NOT NULL AND shard_row IS NOT NULL
        GROUP BY shard, shard_row"""
    )


def open(dataset_dir, read_only: bool = True, version: int | None = None):  # noqa: A001
    """A DuckDB connection over a dataset folder with views samples, images, pages, origins,
    consent, removals, shards, stats: of its committed version, or of version `version` (DIR/versions)."""
    layout = DatasetLayout(dataset_dir)
    if not layout.root.is_dir():
        raise NotADatasetError(f"{layout.root} does not exist")
    if not layout.is_dataset():
        raise NotADatasetError(
            f"{layout.root} is not a dataset folder (no run.json or manifests/); "
            "build one with `pipeline build ... --out DIR`"
        )
    con = storage.duckdb_connect(layout.root)
    record = read_dataset_json(layout, version)  # the committed version: one read

    def files(kind: str) -> list:
        return committed_files(layout, kind, record=record)

    _parquet_view(con, "samples", files("samples"), schema.SAMPLES)
    _embeddings_view(con, layout.root / "embeddings")
    _parquet_view(con, "pages", files("pages"), schema.PAGES)
    _parquet_view(con, "origins", files("origins"), schema.ORIGINS)
    _parquet_view(con, "removals", files("removals"), schema.REMOVALS)
    _consent_view(con)
    _images_view(con)
    _stats_table(con, layout.stats)
    _shards_view(con, shard_index(layout, record), files("shards"))
    return con


def _subset_dirs(dataset_dir) -> list[Path]:
    dirs = [PACKAGE_SUBSETS]
    if dataset_dir is not None:
        dirs.insert(0, DatasetLayout(dataset_dir).subsets)
    return dirs


def list_subsets(dataset_dir=None) -> dict[str, Path]:
    """Named subsets: the dataset's own `DIR/subsets/*.sql` first, then the packaged ones."""
    found: dict[str, Path] = {}
    for folder in reversed(_subset_dirs(dataset_dir)):
        for path in sorted(folder.glob("*.sql")) if folder.is_dir() else []:
            found[path.stem] = path
    return dict(sorted(found.items()))


def subset_sql(name: str, dataset_dir=None) -> str:
    subsets = list_subsets(dataset_dir)
    if name not in subsets:
        known = ", ".join(subsets) or "none"
        raise UnknownSubsetError(f"unknown subset {name!r}; known subsets: {known}")
    return storage.location(subsets[name]).read_text().strip().rstrip(";")
