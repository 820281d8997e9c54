"""Resolve a subset of a dataset to the shard rows that hold its images, and their captions.

DuckDB runs the subset's SELECT (and an optional WHERE) over the `samples` view; the answer,
(shard, shard_row, caption_index) triples, is grouped by Parquet row group, the unit the loader
reads. Selection is per caption: several `kept` samples rows may name one shard row (the
captions of one stored image, `caption_index` = the caption's place in the row's `captions`),
and a row is selected when any of its captions is; datasets older than `caption_index` read as 0.

Caption sets: a unit whose every row has exactly the caption set {0} (every one-caption dataset)
stores none (`offsets` and `captions` are None): the index costs what it did before captions
were sets. Other units store them as a CSR pair: row `rows[i]` has the caption indexes
`captions[offsets[i]:offsets[i + 1]]` (int32, ascending), 4 bytes a row and 4 a caption. With
`--caption-weights occurrences` a set is a multiset: a caption repeated once per duplicate row
that carried it (a random draw picks an entry, so it is weighted; `all` visits every entry).
"""

from dataclasses import dataclass, field

import numpy as np

from manifests import storage
from manifests.config import ConfigError
from manifests.schema import IMAGE_COLUMNS


class DataError(ConfigError):
    """Bad input that stops a run before it starts: reported as one line, no traceback."""


FIRST_ONLY = np.zeros(1, np.int32)  # the caption set of a row in a unit without sets


@dataclass(frozen=True, slots=True)  # slots: a million units, ~40 bytes less each
class Unit:
    shard: int  # index into RowIndex.shards
    row_group: int
    rows: np.ndarray  # int64, rows inside the row group, ascending, distinct
    start: int = 0  # the shard row the row group starts at: shard_row = start + row
    offsets: np.ndarray | None = None  # int32 [len(rows) + 1]; None: every row has {0}
    captions: np.ndarray | None = None  # int32 caption indexes of the rows, in CSR

    def num_samples(self, per_caption: bool = False) -> int:
        """Samples of one epoch: one per row, or (per_caption) one per selected caption."""
        if per_caption and self.captions is not None:
            return len(self.captions)
        return len(self.rows)

    def caption_set(self, row: int) -> np.ndarray:
        """The selected caption indexes of `row` (a row inside the row group, in `rows`)."""
        if self.offsets is None:
            return FIRST_ONLY
        i = int(np.searchsorted(self.rows, row))
        return self.captions[self.offsets[i] : self.offsets[i + 1]]

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, caption index) per selected caption, in order: rows repeated per caption."""
        if self.offsets is None:
            return self.rows, np.zeros(len(self.rows), np.int32)
        return np.repeat(self.rows, np.diff(self.offsets)), self.captions


def make_unit(shard: int, group: int, start: int, rows: np.ndarray, captions: np.ndarray) -> Unit:
    """A unit from (row, caption index) pairs sorted by row then caption (a caption repeated
    only where it is weighted: --caption-weights occurrences)."""
    rows = rows.astype(np.int64, copy=False)
    if not captions.any() and (len(rows) < 2 or bool((rows[1:] > rows[:-1]).all())):
        return Unit(shard, group, rows, start)
    distinct, first = np.unique(rows, return_index=True)
    offsets = np.r_[first, len(rows)].astype(np.int32)
    return Unit(shard, group, distinct, start, offsets, captions.astype(np.int32))


@dataclass
class RowIndex:
    root: storage.Location  # DIR/shards (local or in an object store)
    shards: list[str]  # shard file names
    image_columns: list[str]  # per shard: jpg, webp or png
    units: list[Unit]
    # (shard index, row group, row in the row group) of rows the current manifests no longer
    # serve (trainer.data.frozen): streamed in place but never read (a resume's, usually few)
    withdrawn: set[tuple[int, int, int]] = field(default_factory=set)
    # rows some (not all) of whose selected captions are no longer served: the caption indexes
    # withdrawn; a draw never lands on them, a per-caption sample of them is skipped
    withdrawn_captions: dict[tuple[int, int, int], frozenset[int]] = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return int(sum(len(u.rows) for u in self.units))

    def num_samples(self, per_caption: bool = False) -> int:
        """Samples of one epoch: rows, or (per_caption, --caption-sampling all) captions."""
        if not per_caption:
            return self.num_rows
        return int(sum(u.num_samples(True) for u in self.units))


def _columns(con, select: str) -> set[str]:
    return {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM ({select}) AS s").fetchall()}


def _caption_column(names: set[str]) -> str:
    # A subset file that selects its own columns may leave caption_index out: its rows then
    # mean their images' first captions, as in datasets older than the column.
    return "coalesce(caption_index, 0)" if "caption_index" in names else "0"


# --caption-weights occurrences: a selected caption once more for every `duplicate` row (the same
# caption on the same image bytes under another URL or page, or with --near-dup-radius on a
# near-duplicate image) that names it as its dup_of. A row whose status has changed since (opted
# out, removed) no longer counts.
_REPEATS = """
SELECT c.shard, c.shard_row, c.caption_index FROM chosen c
JOIN samples d ON d.dup_of = c.uid AND d.status = 'duplicate'
"""


def _query(data_dir, subset: str, where: str, weights: str = "distinct"):
    import duckdb

    import manifests

    con = manifests.open(data_dir)  # NotADatasetError, UnknownSubsetError: ConfigErrors
    name = subset or "kept"
    select = manifests.subset_sql(name, data_dir)
    try:
        names = _columns(con, select)
        caption = _caption_column(names)
        if weights == "occurrences" and "uid" not in names:
            raise DataError(
                f"--caption-weights occurrences counts each caption's duplicates by uid; "
                f"subset {name!r} does not select the uid column"
            )
        uid = ", uid" if weights == "occurrences" else ""
        sql = (
            f"SELECT DISTINCT shard, shard_row, {caption} AS caption_index{uid} FROM ({select}) "
            "AS subset WHERE shard IS NOT NULL AND shard_row IS NOT NULL"
        )
        if where:
            sql += f" AND ({where})"
        if weights == "occurrences":
            sql = (
                f"WITH chosen AS ({sql}) SELECT shard, shard_row, caption_index FROM chosen "
                f"UNION ALL {_REPEATS}"
            )
        table = con.execute(sql + " ORDER BY shard, shard_row, caption_index").fetchnumpy()
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


def _shard_meta(root, name: str, rows: np.ndarray):
    path = root / name
    try:
        meta = storage.parquet_file(path).metadata  # one read of the footer
    except FileNotFoundError:
        raise DataError(f"the manifests point at shard {name}, which is not in {root}") from None
    if rows[-1] >= meta.num_rows or rows[0] < 0:
        raise DataError(f"shard_row {rows[-1]} is outside {path} ({meta.num_rows} rows)")
    return meta, _image_column(meta.schema.to_arrow_schema().names, path)


def resolve(data_dir, subset: str = "", where: str = "", weights: str = "distinct") -> RowIndex:
    """The rows of `subset` (default: kept) filtered by `where`, grouped by shard row group,
    each with its selected captions; with weights="occurrences" a caption is in its row's set
    once per row of the dataset that carried it (itself and its `duplicate`s), so a random
    draw weighs it by how often it occurred."""

    data_dir = storage.location(data_dir)
    table = _query(data_dir, subset, where, weights)
    shard_names = np.asarray(table["shard"], dtype=object)
    shard_rows = np.asarray(table["shard_row"], dtype=np.int64)
    caption_index = np.asarray(table["caption_index"], dtype=np.int32)
    root = data_dir / "shards"
    names, columns, units = [], [], []
    starts = np.flatnonzero(np.r_[True, shard_names[1:] != shard_names[:-1]])
    ends = np.r_[starts[1:], len(shard_names)]
    for start, end in zip(starts, ends, strict=True):
        name = str(shard_names[start])
        rows, captions = shard_rows[start:end], caption_index[start:end]
        meta, column = _shard_meta(root, name, rows)
        offsets = np.cumsum([0] + [meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
        group_of_row = np.searchsorted(offsets, rows, side="right") - 1
        shard_index = len(names)
        names.append(name)
        columns.append(column)
        bounds = np.flatnonzero(np.r_[True, group_of_row[1:] != group_of_row[:-1], True])
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            group = int(group_of_row[lo])
            first = int(offsets[group])
            units.append(make_unit(shard_index, group, first, rows[lo:hi] - first, captions[lo:hi]))
    return RowIndex(root=root, shards=names, image_columns=columns, units=units)
