"""The frozen selection (trainer.data.frozen): a resume streams the rows the run started with, in
the same order, and skips the rows withdrawn since (opted out or removed) without moving any
other row."""

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from manifests import storage
from manifests.commit import DATASET_KINDS, committed_files, new_token, read_dataset_json, relative
from manifests.layout import DatasetLayout, write_json_atomic, write_parquet_atomic
from pipeline.testing.toydata import write_dataset
from tests.trainer.test_data import emitted_captions, numbered, stream
from tests.trainer.test_train import FAST, run
from trainer import checkpoint
from trainer.config import TrainConfig
from trainer.data import DataError, frozen, resolve
from trainer.metrics import read_rows


@pytest.fixture
def items(tmp_path):
    """100 kept rows `item 0` ... in 3 shards of 40 rows, 8-row row groups (changed by tests)."""
    return write_dataset(tmp_path / "items", numbered(100), shard_rows=40, group_rows=8)


def withdraw(root, captions: set[str], status: str = "removed") -> None:
    """A new dataset version in which the kept rows with these captions are `status` with no
    shard row, as `pipeline recheck` / `pipeline remove` commit it: each changed samples file
    written under a new name, then dataset.json naming it (no file rewritten in place)."""
    layout = DatasetLayout(root)
    record = read_dataset_json(layout) or {
        "version": 0,
        "files": {
            k: [relative(layout, p) for p in committed_files(layout, k)] for k in DATASET_KINDS
        },
    }
    samples = []
    for path in committed_files(layout, "samples", record=record):
        table = storage.read_table(path)
        hit = pc.and_(
            pc.is_in(table["caption"], pa.array(sorted(captions))),
            pc.equal(table["status"], "kept"),
        )
        if pc.any(hit).as_py():
            table = _withdrawn(table, hit, status)
            path = path.with_name(f"{path.name.split('.')[0]}.{new_token()}.parquet")
            write_parquet_atomic(table, path)
        samples.append(relative(layout, path))
    record = {**record, "version": record["version"] + 1}
    record["files"] = {**record["files"], "samples": samples}
    write_json_atomic(record, layout.dataset_json)


def _withdrawn(table, hit, status: str):
    columns = {
        "status": pc.if_else(hit, pa.scalar(status), table["status"]),
        "shard": pc.if_else(hit, pa.scalar(None, pa.string()), table["shard"]),
        "shard_row": pc.if_else(hit, pa.scalar(None, pa.int64()), table["shard_row"]),
    }
    for name, column in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def remove_in_shard(root, shard: str, rows: list[int]) -> None:
    """Rewrite a shard as `pipeline remove` does: the same row groups, the rows in place with
    empty bytes and caption and status `removed`."""
    path = DatasetLayout(root).shards / shard
    source = pq.ParquetFile(path)
    table = source.read()
    hit = pa.array(np.isin(np.arange(table.num_rows), rows))
    for name, value in (("jpg", b""), ("caption", ""), ("status", "removed")):
        column = pc.if_else(hit, pa.scalar(value, table.schema.field(name).type), table[name])
        table = table.set_column(table.schema.get_field_index(name), name, column)
    write_parquet_atomic(table, path, row_group_size=source.metadata.row_group(0).num_rows)


def same_index(a, b) -> bool:
    units = [(u.shard, u.row_group, u.start, u.rows.tolist()) for u in a.units]
    return (a.shards, a.image_columns, units) == (
        b.shards,
        b.image_columns,
        [(u.shard, u.row_group, u.start, u.rows.tolist()) for u in b.units],
    )


def test_the_selection_file_rebuilds_the_same_index(items, tmp_path, monkeypatch):
    index = resolve(items, where="caption NOT LIKE 'item 3%'")
    monkeypatch.setattr(frozen, "CHUNK_ROWS", 5)  # units cut across the file's row groups
    path = frozen.save(index, tmp_path / "run", where="caption NOT LIKE 'item 3%'")
    assert pq.ParquetFile(path.path).metadata.num_row_groups > 1
    back = frozen.load(tmp_path / "run", items)
    assert same_index(index, back) and back.root == index.root and back.withdrawn == set()
    assert frozen.load(tmp_path / "elsewhere", items) is None


def test_a_resume_skips_exactly_the_withdrawn_rows_and_keeps_every_other_place(items, tmp_path):
    index = resolve(items)
    frozen.save(index, tmp_path / "run")
    full = emitted_captions(stream(index, shuffle_buffer=30), 0, 400)
    start = 57
    gone = {full[start + 1], full[start + 20], "item 0", "item 99"}  # due soon, and anywhere
    withdraw(items, gone)
    assert resolve(items).num_rows == 96  # a new query would stream another order
    later = frozen.load(tmp_path / "run", items)
    later.withdrawn, later.withdrawn_captions = frozen.withdrawn(later, items)
    assert len(later.withdrawn) == 4
    s = stream(later, shuffle_buffer=30)
    resumed = [(pos, item) for pos, item in _take(s._samples(0, start), 400 - start)]
    assert [pos for pos, _ in resumed] == list(range(start + 1, 401))  # positions count on
    kept = [item[1] for _, item in resumed if item is not None]
    assert kept == [c for c in full[start:] if c not in gone]


def test_withdrawn_rows_are_counted_apart_from_corrupt_ones(items, tmp_path):
    index = resolve(items)
    frozen.save(index, tmp_path / "run")
    withdraw(items, {"item 5", "item 6"}, status="opted_out")
    remove_in_shard(items, "00001.parquet", [0, 9])  # `pipeline remove` while the run goes
    later = frozen.load(tmp_path / "run", items)
    later.withdrawn, later.withdrawn_captions = frozen.withdrawn(later, items)
    withdrawn = corrupt = images = 0
    for batch, _, meta in stream(later, batch_size=4, shuffle_buffer=1):
        withdrawn, corrupt, images = (
            withdrawn + meta["withdrawn"],
            corrupt + meta["corrupt"],
            images + len(batch),
        )
        if meta["position"] >= 200:  # two epochs
            break
    assert (withdrawn, corrupt) == (8, 0) and images + withdrawn == meta["position"]


def test_a_resume_when_every_row_is_gone_is_an_error(items, tmp_path):
    cfg = TrainConfig(data=str(items), out=str(tmp_path / "run"), model="clip-nano")
    assert frozen.for_run(cfg, resuming=False, is_main=True).num_rows == 100
    withdraw(items, {f"item {i}" for i in range(100)})
    with pytest.raises(DataError, match="none of the 100 rows"):
        frozen.for_run(cfg, resuming=True, is_main=True)


def _take(iterator, n: int) -> list:
    out = []
    for item in iterator:
        out.append(item)
        if len(out) == n:
            return out


def _argv(data, out) -> list:
    common = ["--data", data, "--out", out, "--samples", 8 * 12, "--batch-size", 8]
    return [*common, "--workers", 0, "--shuffle-buffer", 24, "--warmup", 2, *FAST]


@pytest.mark.timeout(180)
def test_a_resumed_run_never_trains_on_rows_withdrawn_since_it_started(
    items, tmp_path, captions_seen
):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run(_argv(items, full)) == 0
    uninterrupted = list(captions_seen)
    assert run([*_argv(items, cut), "--stop-after", 6, "--save-every", 3]) == 0
    assert (cut / frozen.FILE).exists()
    gone = set(uninterrupted[48:60:3]) | {"item 42"}
    withdraw(items, gone)
    del captions_seen[:]
    assert run([*_argv(items, cut), "--resume"]) == 0
    assert not gone & set(captions_seen)
    expected = [c for c in uninterrupted[48:] if c not in gone]
    assert captions_seen[: len(expected)] == expected  # the same order, with the gaps closed
    rows = read_rows(cut / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, 13))
    ckpt = checkpoint.load(cut / "latest.pt")
    assert ckpt["step"] == 12 and ckpt["withdrawn"] >= 4
    assert rows[-1]["withdrawn_images"] == ckpt["withdrawn"] and rows[5]["withdrawn_images"] == 0


@pytest.mark.timeout(180)
def test_a_run_without_a_frozen_selection_resumes_as_before(items, tmp_path, caplog):
    out = tmp_path / "old"
    assert run([*_argv(items, out), "--stop-after", 4, "--save-every", 4]) == 0
    (out / frozen.FILE).unlink()  # a run started before selections were frozen ...
    old = checkpoint.load(out / "latest.pt")
    del old["withdrawn"]  # ... whose checkpoints have no count of withdrawn rows
    (out / "latest.pt").unlink()
    torch.save(old, out / "latest.pt")
    withdraw(items, {"item 1", "item 2"})
    with caplog.at_level(logging.WARNING, logger="trainer.data.frozen"):
        assert run([*_argv(items, out), "--resume"]) == 0
    assert "the order may differ" in caplog.text
    assert [r["step"] for r in read_rows(out / "metrics.csv")] == list(range(1, 13))
    again = frozen.load(out, items)  # frozen now: later resumes follow this order
    assert again.num_rows == 98 and same_index(again, resolve(items))
