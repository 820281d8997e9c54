"""Resolve a subset of a dataset to the shard rows that hold its images.

DuckDB runs the subset's SELECT (and an optional WHERE) over the `samples` view; the answer,
(shard, shard_row) pairs, is grouped by Parquet row group, the unit the loader reads.
"""

from dataclasses import dataclass, field

import numpy as np

from manifests import storage
from manifests.config import ConfigError
from manifests.schema import IMAGE_COLUMNS


class DataError(ConfigError):
    """Bad input that stops a run before it starts: reported as one line, no traceback."""


@dataclass(frozen=True)
class Unit:
    shard: int  # index into RowIndex.shards
    row_group: int
    rows: np.ndarray  # int64, rows inside the row group, ascending
    start: int = 0  # the shard row the row group starts at: shard_row = start + row


@dataclass
class RowIndex:
    root: storage.Location  # DIR/shards (local or in an object store)
    shards: list[str]  # shard file names
    image_columns: list[str]  # per shard: jpg, webp or png
    units: list[Unit]
    # (shard index, row group, row in the row group) of rows the current manifests no longer
    # serve (trainer.data.frozen): streamed in place but never read (a resume's, usually few)
    withdrawn: set[tuple[int, int, int]] = field(default_factory=set)

    @property
    def num_rows(self) -> int:
        return int(sum(len(u.rows) for u in self.units))


def _query(data_dir, subset: str, where: str):
    import duckdb

    import manifests

    con = manifests.open(data_dir)  # NotADatasetError, UnknownSubsetError: ConfigErrors
    name = subset or "kept"
    select = manifests.subset_sql(name, data_dir)
    sql = (
        f"SELECT DISTINCT shard, shard_row FROM ({select}) AS subset "
        "WHERE shard IS NOT NULL AND shard_row IS NOT NULL"
    )
    if where:
        sql += f" AND ({where})"
    try:
        table = con.execute(sql + " ORDER BY shard, shard_row").fetchnumpy()
        total = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    except duckdb.Error as exc:
        detail = str(exc).strip().splitlines()[0]
        raise DataError(
            f"subset {name!r} with --where {where!r} failed in DuckDB: {detail}"
        ) from None
    finally:
        con.close()
    if len(table["shard"]) == 0:
        what = f"subset {name!r}" + (f" with --where {where!r}" if where else "")
        raise DataError(
            f"{what} of {data_dir} selects no samples with images in shards "
            f"({total} samples in the manifests)"
        )
    return table


def _image_column(names: list[str], path) -> str:
    found = [c for c in IMAGE_COLUMNS if c in names]
    if not found:
        raise DataError(f"shard {path} has no image column (expected one of {IMAGE_COLUMNS})")
    return found[0]


def resolve(data_dir, subset: str = "", where: str = "") -> RowIndex:
    """The rows of `subset` (default: kept) filtered by `where`, grouped by shard row group."""

    data_dir = storage.location(data_dir)
    table = _query(data_dir, subset, where)
    shard_names = np.asarray(table["shard"], dtype=object)
    shard_rows = np.asarray(table["shard_row"], dtype=np.int64)
    root = data_dir / "shards"
    names, columns, units = [], [], []
    starts = np.flatnonzero(np.r_[True, shard_names[1:] != shard_names[:-1]])
    ends = np.r_[starts[1:], len(shard_names)]
    for start, end in zip(starts, ends, strict=True):
        name, rows = str(shard_names[start]), shard_rows[start:end]
        path = root / name
        try:
            meta = storage.parquet_file(path).metadata  # one read of the footer
        except FileNotFoundError:
            raise DataError(
                f"the manifests point at shard {name}, which is not in {root}"
            ) from None
        if rows[-1] >= meta.num_rows or rows[0] < 0:
            raise DataError(f"shard_row {rows[-1]} is outside {path} ({meta.num_rows} rows)")
        offsets = np.cumsum([0] + [meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
        group_of_row = np.searchsorted(offsets, rows, side="right") - 1
        shard_index = len(names)
        names.append(name)
        columns.append(_image_column(meta.schema.to_arrow_schema().names, path))
        for group in np.unique(group_of_row):
            local = rows[group_of_row == group] - offsets[group]
            start = int(offsets[group])
            units.append(Unit(shard_index, int(group), local.astype(np.int64), start))
    return RowIndex(root=root, shards=names, image_columns=columns, units=units)
