"""A run's frozen selection: RUN_DIR/selection.parquet, the RowIndex its first start resolved.

The dataset can change under a run (`pipeline recheck` opts rows out, `pipeline remove` takes
them down). A resume that queried the manifests again would get other units, hence another
shuffled order. So a resume streams the frozen index, in the original order, and asks the current
manifests only which of its rows are still served: a row is *withdrawn* when no `kept` row names
its (shard, shard_row) any more. The stream still moves withdrawn rows through its shuffle buffer
(every other row keeps its place, positions count as before) and skips them, unread, when they
come out. Servable means the current kept set, not the run's subset and --where again: opted-out
and removed rows always leave it (the manifest is the exclusion list), while a subset's predicate
can drift for other reasons (a later `pipeline embed` fills clip_score, an edited DIR/subsets
file) that must not change what a running run trains on.

Format: one Parquet file, rows in the index's unit order, with columns `shard` (int32, index into
the shard list), `row_group` (int32), `group_start` (int64, the shard row its row group starts at)
and `row` (int64, the manifests' shard_row, delta-encoded): 0.03 to 0.08 byte a row when most
of each shard is selected, 0.4 when half of it is (measured on 10^6 rows). Its schema metadata (key `trainer.selection`) is JSON: `format`,
`shards` (names), `image_columns`, `subset`, `where`, `rows`. The row groups are stored, not
re-read from the shards: a resume opens no shard footer (one request each on an object store),
and `pipeline remove` rewrites shards with the same row groups, so they stay true.
"""

import json
import logging

import numpy as np

from manifests import storage
from trainer.data.select import DataError, RowIndex, Unit, resolve

log = logging.getLogger(__name__)

FILE = "selection.parquet"
META_KEY = b"trainer.selection"
FORMAT = 1
CHUNK_ROWS = 1 << 20  # rows per Parquet row group, and per batch given to DuckDB

_SERVED = """
SELECT f.shard, f.row_group, f.row - f.group_start AS row
FROM _frozen f JOIN _frozen_shards n ON f.shard = n.shard_index
ANTI JOIN (SELECT shard, shard_row FROM samples WHERE status = 'kept') k
    ON k.shard = n.name AND k.shard_row = f.row
"""


def selection_path(run_dir) -> storage.Location:
    return storage.location(run_dir) / FILE


def _schema(metadata: dict | None = None):
    import pyarrow as pa

    fields = [
        ("shard", pa.int32()),
        ("row_group", pa.int32()),
        ("group_start", pa.int64()),
        ("row", pa.int64()),
    ]
    meta = {META_KEY: json.dumps(metadata)} if metadata else None
    return pa.schema(fields, metadata=meta)


def _table(units: list[Unit], schema):
    import pyarrow as pa

    sizes = [len(u.rows) for u in units]
    columns = [
        np.repeat(np.array([u.shard for u in units], np.int32), sizes),
        np.repeat(np.array([u.row_group for u in units], np.int32), sizes),
        np.repeat(np.array([u.start for u in units], np.int64), sizes),
        np.concatenate([u.rows + u.start for u in units]).astype(np.int64),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _tables(units: list[Unit], schema):
    """The units as tables of about CHUNK_ROWS rows each (never the whole index at once)."""
    part, size = [], 0
    for unit in units:
        part.append(unit)
        size += len(unit.rows)
        if size >= CHUNK_ROWS:
            yield _table(part, schema)
            part, size = [], 0
    if part:
        yield _table(part, schema)


def save(index: RowIndex, run_dir, *, subset: str = "", where: str = "") -> storage.Location:
    """Write `index` to RUN_DIR/selection.parquet, put whole."""
    import pyarrow.parquet as pq

    from manifests.layout import atomic_path

    meta = {"format": FORMAT, "shards": index.shards, "image_columns": index.image_columns}
    meta.update(subset=subset, where=where, rows=index.num_rows)
    schema, target = _schema(meta), selection_path(run_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        atomic_path(target) as tmp,
        pq.ParquetWriter(
            tmp,
            schema,
            compression="zstd",
            use_dictionary=["shard", "row_group", "group_start"],  # runs: a few bytes each
            column_encoding={"row": "DELTA_BINARY_PACKED"},  # ascending: a few bits a row
        ) as writer,
    ):
        for table in _tables(index.units, schema):
            writer.write_table(table, row_group_size=CHUNK_ROWS)
    return target


def _extend(units: list[Unit], batch) -> None:
    """Append the units of one batch of the file; a unit cut by the batch edge is joined."""
    shard, group, start, row = (batch.column(i).to_numpy() for i in range(4))
    cuts = np.flatnonzero((shard[1:] != shard[:-1]) | (group[1:] != group[:-1])) + 1
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(row)], strict=True):
        s, g, first = int(shard[lo]), int(group[lo]), int(start[lo])
        rows = row[lo:hi] - first
        if units and (units[-1].shard, units[-1].row_group) == (s, g):
            rows = np.concatenate([units.pop().rows, rows])
        units.append(Unit(s, g, rows, first))


def load(run_dir, data_dir) -> RowIndex | None:
    """The frozen index of the run in `run_dir` over the shards of `data_dir` (None: no file)."""
    try:
        source = storage.parquet_file(selection_path(run_dir))
    except FileNotFoundError:
        return None
    meta = json.loads(source.schema_arrow.metadata[META_KEY])
    if meta.get("format") != FORMAT:
        raise DataError(f"{selection_path(run_dir)}: unknown format {meta.get('format')!r}")
    units: list[Unit] = []
    for batch in source.iter_batches(batch_size=CHUNK_ROWS):
        _extend(units, batch)
    root = storage.location(data_dir) / "shards"
    return RowIndex(root, list(meta["shards"]), list(meta["image_columns"]), units)


def withdrawn(index: RowIndex, data_dir) -> set[tuple[int, int, int]]:
    """The rows of `index` no kept row of the current manifests names: (shard, group, row)."""
    import pyarrow as pa

    import manifests

    schema = _schema()
    batches = (b for t in _tables(index.units, schema) for b in t.to_batches())
    names = pa.table(
        {"shard_index": pa.array(range(len(index.shards)), pa.int32()), "name": index.shards}
    )
    con = manifests.open(data_dir)
    try:
        con.register("_frozen_shards", names)
        con.register("_frozen", pa.RecordBatchReader.from_batches(schema, batches))
        found = con.execute(_SERVED).fetchnumpy()
    finally:
        con.close()
    return set(zip(*(found[c].tolist() for c in ("shard", "row_group", "row")), strict=True))


def for_run(cfg, *, resuming: bool, is_main: bool) -> RowIndex:
    """The run's index: resolved and frozen (rank 0 writes) on a fresh run; on a resume the
    frozen one with its withdrawn rows, or (a run started before this file) resolved again."""
    index = load(cfg.out, cfg.data) if resuming else None
    if index is not None:
        index.withdrawn = withdrawn(index, cfg.data)
        _report(index, cfg.out)
        return index
    if resuming:
        log.warning(
            "%s has no %s (the run started before selections were frozen): the subset is "
            "resolved again from the current manifests, so the order may differ from the "
            "original run's",
            cfg.out,
            FILE,
        )
    index = resolve(cfg.data, cfg.subset, cfg.where)
    if is_main:  # after a fallback too: later resumes follow this order
        save(index, cfg.out, subset=cfg.subset, where=cfg.where)
    return index


def _report(index: RowIndex, run_dir) -> None:
    count, total = len(index.withdrawn), index.num_rows
    if count == total:
        raise DataError(
            f"--resume: none of the {total} rows {run_dir} trains on is still kept in the "
            "dataset (opted out or removed since the run started)"
        )
    if count:
        log.warning(
            "--resume: %d of the %d rows of %s are withdrawn (opted out or removed since the "
            "run started): they are skipped where they come, every other row keeps its place",
            count,
            total,
            selection_path(run_dir),
        )
