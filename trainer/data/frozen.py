"""A run's frozen selection: RUN_DIR/selection.parquet, the RowIndex its first start resolved.

The dataset can change under a run (`pipeline recheck` opts rows out, `pipeline remove` takes
them down). A resume that queried the manifests again would get other units, hence another
shuffled order. So a resume streams the frozen index, in the original order, and asks the current
manifests only which of its captions are still served: a selected caption is *withdrawn* when no
`kept` row names its (shard, shard_row, caption_index) any more, and a row is withdrawn when all
its selected captions are. The stream still moves withdrawn rows through its shuffle buffer
(every other row keeps its place, positions count as before) and skips them, unread, when they
come out; a row that lost only some captions keeps its place too, and its visits draw among the
captions it has left (with --caption-sampling all its withdrawn captions' visits are skipped).
Servable means the current kept set, not the run's subset and --where again: opted-out and
removed rows always leave it (the manifest is the exclusion list), while a subset's predicate
can drift for other reasons (a later `pipeline embed` fills clip_score, an edited DIR/subsets
file) that must not change what a running run trains on.

Format 2: one Parquet file, one row per selected (shard row, caption) in the index's unit order
(a row's captions ascending; repeated where --caption-weights weighs them), with columns `shard`
(int32, index into the shard list), `row_group` (int32), `group_start` (int64, the shard row its row group starts at), `row` (int64,
the manifests' shard_row, delta-encoded) and `caption` (int32, the caption_index, dictionary
encoded). Measured on 10^6 shard rows (1000-row groups): 0.033 byte a row when every row is
selected with one caption (format 1: 0.029), 0.36 when half of them are (0.35), 0.09 when
every row has 3 captions, 0.44 when a quarter have 2 to 4, 0.70 when a --where keeps about half
of 3 captions each. Loaded, the index takes 8.3 bytes a row with one caption each (as before),
24 with 3 each, 18 with a quarter at 2 to 4 (select.Unit's CSR caption sets). Format 1 files
(no `caption` column: every row's set is {0}) are still read. Its schema metadata (key
`trainer.selection`) is JSON: `format`, `shards` (names), `image_columns`, `subset`, `where`,
`rows` (shard rows), `captions` (selected captions). The row groups are stored, not re-read from
the shards: a resume opens no shard footer (one request each on an object store), and `pipeline
remove` rewrites shards with the same row groups, so they stay true.
"""

import json
import logging

import numpy as np

from manifests import storage
from trainer.data.select import DataError, RowIndex, Unit, make_unit, resolve

log = logging.getLogger(__name__)

FILE = "selection.parquet"
META_KEY = b"trainer.selection"
FORMAT = 2
FORMATS = (1, 2)  # 1: before caption sets (no `caption` column: every row's set is {0})
CHUNK_ROWS = 1 << 20  # rows per Parquet row group, and per batch given to DuckDB

_SERVED = """
SELECT f.unit, f.shard, f.row_group, f.row - f.group_start AS row, f.caption
FROM _frozen f JOIN _frozen_shards n ON f.shard = n.shard_index
ANTI JOIN (
    SELECT shard, shard_row, coalesce(caption_index, 0) AS caption FROM samples
    WHERE status = 'kept'
) k ON k.shard = n.name AND k.shard_row = f.row AND k.caption = f.caption
"""


def selection_path(run_dir) -> storage.Location:
    return storage.location(run_dir) / FILE


def _schema(metadata: dict | None = None, units: bool = False):
    import pyarrow as pa

    fields = [
        ("shard", pa.int32()),
        ("row_group", pa.int32()),
        ("group_start", pa.int64()),
        ("row", pa.int64()),
        ("caption", pa.int32()),
    ]
    fields += [("unit", pa.int64())] if units else []  # for DuckDB only, never stored
    meta = {META_KEY: json.dumps(metadata)} if metadata else None
    return pa.schema(fields, metadata=meta)


def _table(units: list[Unit], schema, first: int = 0):
    """One row per selected (row, caption) of `units`, which start at units[first]."""
    import pyarrow as pa

    pairs = [u.pairs() for u in units]
    sizes = [len(rows) for rows, _ in pairs]
    columns = [
        np.repeat(np.array([u.shard for u in units], np.int32), sizes),
        np.repeat(np.array([u.row_group for u in units], np.int32), sizes),
        np.repeat(np.array([u.start for u in units], np.int64), sizes),
        np.concatenate([rows + u.start for u, (rows, _) in zip(units, pairs, strict=True)]),
        np.concatenate([captions for _, captions in pairs]).astype(np.int32),
    ]
    if "unit" in schema.names:
        columns.append(np.repeat(np.arange(first, first + len(units), dtype=np.int64), sizes))
    return pa.Table.from_arrays(columns, schema=schema)


def _tables(units: list[Unit], schema):
    """The units as tables of about CHUNK_ROWS rows each (never the whole index at once)."""
    first, size = 0, 0
    for i, unit in enumerate(units):
        size += unit.num_samples(True)
        if size >= CHUNK_ROWS:
            yield _table(units[first : i + 1], schema, first)
            first, size = i + 1, 0
    if first < len(units):
        yield _table(units[first:], schema, first)


def save(index: RowIndex, run_dir, *, subset: str = "", where: str = "") -> storage.Location:
    """Write `index` to RUN_DIR/selection.parquet, put whole."""
    import pyarrow.parquet as pq

    from manifests.layout import atomic_path

    meta = {"format": FORMAT, "shards": index.shards, "image_columns": index.image_columns}
    meta.update(subset=subset, where=where, rows=index.num_rows)
    meta.update(captions=index.num_samples(per_caption=True))
    schema, target = _schema(meta), selection_path(run_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        atomic_path(target) as tmp,
        pq.ParquetWriter(
            tmp,
            schema,
            compression="zstd",
            # runs (and, for captions, mostly zeros): a few bytes each
            use_dictionary=["shard", "row_group", "group_start", "caption"],
            column_encoding={"row": "DELTA_BINARY_PACKED"},  # ascending: a few bits a row
        ) as writer,
    ):
        for table in _tables(index.units, schema):
            writer.write_table(table, row_group_size=CHUNK_ROWS)
    return target


def _extend(units: list[Unit], batch) -> None:
    """Append the units of one batch of the file; a unit cut by the batch edge is joined."""
    shard, group, start, row = (batch.column(i).to_numpy() for i in range(4))
    names = batch.schema.names
    caption = (
        batch.column(names.index("caption")).to_numpy()
        if "caption" in names
        else np.zeros(len(row), np.int32)  # format 1
    )
    # only first captions, none repeated (--caption-weights repeats them): one file row a shard row
    plain = not caption.any() and bool(np.all(row[1:] != row[:-1]))
    cuts = np.flatnonzero((shard[1:] != shard[:-1]) | (group[1:] != group[:-1])) + 1
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(row)], strict=True):
        s, g, first = int(shard[lo]), int(group[lo]), int(start[lo])
        rows, captions = row[lo:hi] - first, caption[lo:hi]
        if units and (units[-1].shard, units[-1].row_group) == (s, g):
            before_rows, before_captions = units.pop().pairs()
            rows = np.concatenate([before_rows, rows])
            captions = np.concatenate([before_captions, captions])
        elif plain:
            units.append(Unit(s, g, rows, first))
            continue
        units.append(make_unit(s, g, first, rows, captions))


def load(run_dir, data_dir) -> RowIndex | None:
    """The frozen index of the run in `run_dir` over the shards of `data_dir` (None: no file)."""
    try:
        source = storage.parquet_file(selection_path(run_dir))
    except FileNotFoundError:
        return None
    meta = json.loads(source.schema_arrow.metadata[META_KEY])
    if meta.get("format") not in FORMATS:
        raise DataError(f"{selection_path(run_dir)}: unknown format {meta.get('format')!r}")
    units: list[Unit] = []
    for batch in source.iter_batches(batch_size=CHUNK_ROWS):
        _extend(units, batch)
    root = storage.location(data_dir) / "shards"
    return RowIndex(root, list(meta["shards"]), list(meta["image_columns"]), units)


def withdrawn(index: RowIndex, data_dir) -> tuple[set, dict]:
    """The selected captions of `index` no kept row of the current manifests names, as
    (rows all of whose captions went: {(shard, group, row)}, rows that lost only some:
    {(shard, group, row): frozenset of caption indexes})."""
    import pyarrow as pa

    import manifests

    schema = _schema(units=True)
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
    gone: dict[tuple[int, int, int], tuple[int, set[int]]] = {}
    columns = (found[c].tolist() for c in ("unit", "shard", "row_group", "row", "caption"))
    for unit, shard, group, row, caption in zip(*columns, strict=True):
        gone.setdefault((shard, group, row), (unit, set()))[1].add(caption)
    rows, captions = set(), {}
    for key, (unit, lost) in gone.items():
        if lost.issuperset(index.units[unit].caption_set(key[2]).tolist()):
            rows.add(key)
        else:
            captions[key] = frozenset(lost)
    return rows, captions


def for_run(cfg, *, resuming: bool, is_main: bool) -> RowIndex:
    """The run's index: resolved and frozen (rank 0 writes) on a fresh run; on a resume the
    frozen one with its withdrawn rows, or (a run started before this file) resolved again."""
    index = load(cfg.out, cfg.data) if resuming else None
    if index is not None:
        index.withdrawn, index.withdrawn_captions = withdrawn(index, cfg.data)
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
    index = resolve(cfg.data, cfg.subset, cfg.where, cfg.caption_weights)
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
    if index.withdrawn_captions:
        log.warning(
            "--resume: %d more rows of %s lost some of their captions since the run started: "
            "their other captions are still trained on, the withdrawn ones never",
            len(index.withdrawn_captions),
            selection_path(run_dir),
        )
