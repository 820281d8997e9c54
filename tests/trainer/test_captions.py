"""Images with several captions (issue 18, trainer side): selection per caption, one caption per
visit (--caption-sampling first|random|all), taken-down captions never used, caption sets frozen
for --resume, and shards from before the `captions` column trained as before."""

import json
from collections import Counter, defaultdict

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from manifests.layout import DatasetLayout, write_parquet_atomic
from pipeline.testing.toydata import write_dataset
from tests.trainer.test_data import numbered, stream
from tests.trainer.test_frozen import withdraw
from tests.trainer.test_train import FAST, losses, run
from trainer import checkpoint
from trainer.config import ConfigError, TrainConfig, merge_for_resume
from trainer.data import frozen, resolve
from trainer.data.reader import SAMPLING
from trainer.evaluation.retrieval import IMAGE_ID, heldout_sql, read_heldout
from trainer.train import read_config

N = 30  # images; image i has 1 + i % 3 captions `item i cap j`: 60 captions in all
ALL = {f"item {i} cap {j}" for i in range(N) for j in range(1 + i % 3)}
FRENCH = {c for c in ALL if c.endswith("cap 1")}  # an image's second caption


def multi(n: int = N):
    pairs = numbered(n)
    return [(img, [f"{c} cap {j}" for j in range(1 + i % 3)]) for i, (img, c) in enumerate(pairs)]


def lang(caption: str) -> str:
    return "fr" if caption in FRENCH else "en"


def image(caption: str) -> str:
    return caption.rsplit(" cap ", 1)[0]


def write(root):
    """30 images in 3 shards of 12 rows (row groups of 5), each caption a kept samples row."""
    return write_dataset(root, multi(), shard_rows=12, group_rows=5, lang=lang)


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    return write(tmp_path_factory.mktemp("captioned"))


def visits(s, count: int, worker: int = 0, start: int = 0) -> list:
    """The captions of `count` samples of a worker's stream (None: skipped as withdrawn)."""
    out = []
    for _, item in s._samples(worker, start):
        out.append(None if item is None else item[1])
        if len(out) == count:
            return out


def units_of(index) -> list:
    return [
        (u.shard, u.row_group, u.start, u.rows.tolist())
        + ((None, None) if u.offsets is None else (u.offsets.tolist(), u.captions.tolist()))
        for u in index.units
    ]


def test_selection_is_per_caption_and_costs_nothing_for_one_caption_datasets(
    captioned, shapes_dataset
):
    index = resolve(captioned)
    assert (index.num_rows, index.num_samples(per_caption=True)) == (N, len(ALL))
    sets = sorted(len(u.caption_set(r)) for u in index.units for r in u.rows)
    assert sets == sorted(1 + i % 3 for i in range(N))
    french = resolve(captioned, where="lang = 'fr'")  # only second captions: 20 images
    assert (french.num_rows, french.num_samples(per_caption=True)) == (20, 20)
    assert {tuple(u.caption_set(r)) for u in french.units for r in u.rows} == {(1,)}
    # the common dataset: no caption sets at all, the index as small as before
    plain = resolve(shapes_dataset)
    assert all(u.offsets is None and u.captions is None for u in plain.units)


def test_first_trains_on_the_lowest_selected_caption(captioned):
    s = stream(resolve(captioned), caption_sampling="first", shuffle_buffer=1)
    assert sorted(visits(s, 2 * N)) == sorted(f"item {i} cap 0" for i in range(N) for _ in "ab")
    s = stream(resolve(captioned, where="lang = 'fr'"), caption_sampling="first", shuffle_buffer=1)
    assert Counter(visits(s, 3 * 20)) == Counter({c: 3 for c in FRENCH})


def test_random_draws_one_caption_per_image_and_epoch_the_same_in_every_process(captioned):
    index = resolve(captioned)
    epochs = 12
    drawn = visits(stream(index, caption_sampling="random", shuffle_buffer=1), epochs * N)
    per_image = defaultdict(set)
    for e in range(epochs):
        epoch = drawn[e * N : (e + 1) * N]
        assert sorted(map(image, epoch)) == sorted(f"item {i}" for i in range(N))  # once each
        for caption in epoch:
            per_image[image(caption)].add(caption)
    assert set(drawn) <= ALL and len(set(drawn)) >= 0.9 * len(ALL)
    assert all(len(per_image[f"item {i}"]) >= 2 for i in range(N) if i % 3)  # several each
    again = visits(stream(index, caption_sampling="random", shuffle_buffer=1), epochs * N)
    assert again == drawn  # the same seed draws the same
    other = visits(stream(index, caption_sampling="random", shuffle_buffer=1, seed=1), 3 * N)
    assert {image(c) for c in other} == {f"item {i}" for i in range(N)} and other != drawn[:90]
    # two loader workers stream other orders but draw the same caption per image and epoch
    s = stream(index, caption_sampling="random", shuffle_buffer=1, num_workers=2)
    split = visits(s, s._rows_per_epoch(0), 0) + visits(s, s._rows_per_epoch(1), 1)
    assert sorted(split) == sorted(drawn[:N])


def test_all_visits_every_selected_caption_once_per_epoch(captioned):
    index = resolve(captioned)
    for workers in (1, 3):  # the workers split the (image, caption) samples, none twice
        s = stream(index, caption_sampling="all", shuffle_buffer=1, num_workers=workers)
        seen = []
        for w in range(workers):
            seen += visits(s, 2 * s._rows_per_epoch(w), w)
        assert Counter(seen) == Counter({c: 2 for c in ALL})
    mixed = visits(stream(index, caption_sampling="all", shuffle_buffer=25), 5 * len(ALL))
    counts = Counter(mixed)
    assert set(counts) == ALL and max(counts.values()) - min(counts.values()) <= 2
    french = stream(resolve(captioned, where="lang = 'fr'"), caption_sampling="all")
    assert set(visits(french, 100)) == FRENCH  # images without a French caption: never


def null_captions(root, shard: str, taken: dict[int, list[int]]) -> None:
    """Rewrite a shard as `pipeline remove` does for single captions: the row stays, the taken
    captions become null in place in `captions` (and `caption` follows captions[0])."""
    path = DatasetLayout(root).shards / shard
    source = pq.ParquetFile(path)
    table = source.read()
    lists = table["captions"].to_pylist()
    for row, indexes in taken.items():
        lists[row] = [None if i in indexes else c for i, c in enumerate(lists[row])]
    table = table.set_column(
        table.schema.get_field_index("captions"), "captions", pa.array(lists, pa.list_(pa.string()))
    )
    first = pa.array([c[0] for c in lists], pa.string())
    table = table.set_column(table.schema.get_field_index("caption"), "caption", first)
    write_parquet_atomic(table, path, row_group_size=source.metadata.row_group(0).num_rows)


def test_taken_down_captions_are_never_used(tmp_path):
    root = write(tmp_path / "data")
    index = resolve(root)  # a run's selection, made before the takedown
    # item 0's only caption, item 1's first, two of item 2's three
    null_captions(root, "00000.parquet", {0: [0], 1: [0], 2: [1, 2]})
    gone = {"item 0 cap 0", "item 1 cap 0", "item 2 cap 1", "item 2 cap 2"}
    for sampling in SAMPLING:
        s = stream(index, caption_sampling=sampling, shuffle_buffer=1)
        seen = visits(s, 4 * index.num_samples(per_caption=sampling == "all"))
        assert not gone & set(seen) and set(seen) - {None} <= ALL, sampling
        per_epoch = 1 if sampling != "all" else len(gone)  # item 0; in `all` every one gone
        assert seen.count(None) == 4 * per_epoch, sampling
        if sampling != "all":  # item 1 and item 2 train on the caption they have left
            assert {c for c in seen if c and image(c) in ("item 1", "item 2")} == {
                "item 1 cap 1",
                "item 2 cap 0",
            }
    skipped = 0
    for _, _, meta in stream(index, batch_size=5, shuffle_buffer=1):
        skipped += meta["withdrawn"]
        if meta["position"] >= 2 * N:
            break
    assert skipped == 2  # item 0, once an epoch, counted as withdrawn


def test_the_selection_file_keeps_caption_sets(captioned, tmp_path, monkeypatch):
    where = "caption NOT IN ('item 4 cap 1', 'item 7 cap 0')"
    index = resolve(captioned, where=where)
    monkeypatch.setattr(frozen, "CHUNK_ROWS", 7)  # file row groups cut units and caption lists
    path = frozen.save(index, tmp_path / "run", where=where)
    source = pq.ParquetFile(path.path)
    assert source.metadata.num_row_groups > 1 and source.metadata.num_rows == len(ALL) - 2
    meta = json.loads(source.schema_arrow.metadata[frozen.META_KEY])
    assert (meta["format"], meta["rows"], meta["captions"]) == (2, N, len(ALL) - 2)
    assert units_of(frozen.load(tmp_path / "run", captioned)) == units_of(index)


def test_a_format_1_selection_means_each_rows_first_caption(captioned, tmp_path):
    """A run frozen before caption sets: its file has one row per shard row, no `caption`."""
    index = resolve(captioned)
    path = frozen.save(index, tmp_path / "run")
    table = pq.read_table(path.path)
    meta = json.loads(table.schema.metadata[frozen.META_KEY])
    del meta["captions"]
    first = pa.array(np.r_[True, np.diff(table["row"].to_numpy()) != 0])  # a row's first entry
    old = table.filter(first).drop_columns(["caption"])
    old = old.replace_schema_metadata({frozen.META_KEY: json.dumps({**meta, "format": 1})})
    pq.write_table(old, path.path)
    back = frozen.load(tmp_path / "run", captioned)
    assert back.num_rows == N and all(u.offsets is None for u in back.units)
    assert [u.rows.tolist() for u in back.units] == [u.rows.tolist() for u in index.units]
    s = stream(back, caption_sampling="random", shuffle_buffer=1)
    assert sorted(visits(s, N)) == sorted(f"item {i} cap 0" for i in range(N))


def test_withdrawn_is_per_caption(tmp_path):
    root = write(tmp_path / "data")
    frozen.save(resolve(root), tmp_path / "run")
    gone = {"item 0 cap 0", "item 1 cap 0", "item 1 cap 1", "item 2 cap 1"}
    withdraw(root, gone)
    later = frozen.load(tmp_path / "run", root)
    rows, captions = frozen.withdrawn(later, root)
    # item 0 (its one caption) and item 1 (both) are gone whole; item 2 lost one of its three
    assert rows == {(0, 0, 0), (0, 0, 1)} and captions == {(0, 0, 2): frozenset({1})}
    later.withdrawn, later.withdrawn_captions = rows, captions
    for sampling, skipped in (("first", 2), ("random", 2), ("all", 4)):
        s = stream(later, caption_sampling=sampling, shuffle_buffer=1)
        seen = visits(s, 3 * later.num_samples(per_caption=sampling == "all"))
        assert not gone & set(seen) and seen.count(None) == 3 * skipped, sampling
        item2 = {c for c in seen if c and image(c) == "item 2"}
        assert item2 == (
            {"item 2 cap 0"} if sampling == "first" else {"item 2 cap 0", "item 2 cap 2"}
        )


def _argv(data, out, *extra) -> list:
    common = ["--data", data, "--out", out, "--batch-size", 6, "--workers", 0, "--warmup", 2]
    return [*common, *FAST, *extra]


@pytest.mark.timeout(240)
def test_trainer_run_trains_on_the_sampled_captions(captioned, tmp_path, captions_seen):
    one_epoch = ["--samples", N, "--shuffle-buffer", 1]
    assert run(_argv(captioned, tmp_path / "first", *one_epoch, "--caption-sampling", "first")) == 0
    assert sorted(captions_seen) == sorted(f"item {i} cap 0" for i in range(N))
    assert read_config(tmp_path / "first")["config"]["caption_sampling"] == "first"
    del captions_seen[:]
    two_epochs = ["--samples", 2 * len(ALL), "--shuffle-buffer", 1, "--caption-sampling", "all"]
    assert run(_argv(captioned, tmp_path / "all", *two_epochs)) == 0
    assert Counter(captions_seen) == Counter({c: 2 for c in ALL})
    del captions_seen[:]
    six = ["--samples", 6 * N, "--shuffle-buffer", 1]  # the default: random
    assert run(_argv(captioned, tmp_path / "random", *six)) == 0
    drawn = list(captions_seen)
    assert read_config(tmp_path / "random")["config"]["caption_sampling"] == "random"
    assert set(drawn) <= ALL and len(set(drawn)) > N  # several captions of an image
    images = sorted(f"item {i}" for i in range(N))
    assert all(sorted(map(image, drawn[e * N : e * N + N])) == images for e in range(6))
    del captions_seen[:]
    assert run(_argv(captioned, tmp_path / "again", *six)) == 0
    assert captions_seen == drawn  # the same seed: the same draws
    del captions_seen[:]
    where = ["--where", "lang = 'fr'", "--samples", 60, "--caption-sampling", "random"]
    assert run(_argv(captioned, tmp_path / "fr", *where)) == 0
    assert set(captions_seen) == FRENCH


@pytest.mark.timeout(240)
def test_resume_with_random_captions_reproduces_the_uninterrupted_run(captioned, tmp_path):
    common = ["--data", captioned, "--samples", 6 * 14, "--batch-size", 6, "--workers", 2]
    common += ["--shuffle-buffer", 16, "--warmup", 3, "--caption-sampling", "random", *FAST]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run([*common, "--out", full]) == 0
    assert run([*common, "--out", cut, "--stop-after", 7, "--save-every", 4]) == 0
    (cut / "latest.pt").unlink()  # a crash after step 7: resume from step 4
    (cut / "latest.pt").write_bytes((cut / "checkpoints" / "step_00000004.pt").read_bytes())
    assert run([*common, "--out", cut, "--resume"]) == 0
    assert losses(cut) == losses(full) and len(losses(full)) == 14
    full_ckpt, cut_ckpt = (checkpoint.load(p / "latest.pt") for p in (full, cut))
    for key, value in full_ckpt["state_dict"].items():
        assert torch.equal(value, cut_ckpt["state_dict"][key]), key


@pytest.mark.timeout(240)
def test_a_resume_never_trains_on_a_caption_withdrawn_since(tmp_path, captions_seen):
    root = write(tmp_path / "data")
    full, cut = tmp_path / "full", tmp_path / "cut"
    args = ["--samples", 6 * 20, "--shuffle-buffer", 12]
    assert run(_argv(root, full, *args)) == 0
    uninterrupted = list(captions_seen)
    assert run(_argv(root, cut, *args, "--stop-after", 8, "--save-every", 4)) == 0
    later = uninterrupted[48:]
    gone = next(c for c in later if int(image(c).split()[1]) % 3)  # an image with others left
    withdraw(root, {gone})
    del captions_seen[:]
    assert run(_argv(root, cut, *args, "--resume")) == 0
    assert gone not in captions_seen and len(captions_seen) == len(later)  # no row skipped
    for before, after in zip(later, captions_seen, strict=True):
        if image(before) != image(gone):
            assert after == before  # every other image: the same caption in the same place
        else:
            assert image(after) == image(gone)  # its image: redrawn among those left
    assert checkpoint.load(cut / "latest.pt")["withdrawn"] == 0


def test_a_shard_without_captions_trains_as_before(tmp_path):
    old = write_dataset(
        tmp_path / "old", numbered(40), shard_rows=16, group_rows=5, captions_column=False
    )
    new = write_dataset(tmp_path / "new", numbered(40), shard_rows=16, group_rows=5)
    assert "captions" not in pq.read_schema(old / "shards" / "00000.parquet").names
    con = duckdb.connect()
    nulls = con.execute(
        f"SELECT count(*) FROM read_parquet('{old}/manifests/samples/*.parquet') "
        "WHERE status = 'kept' AND caption_index IS NULL"
    ).fetchone()
    assert nulls == (40,)  # an older dataset: no caption_index
    before, after = resolve(old), resolve(new)
    assert units_of(before) == units_of(after) and all(u.offsets is None for u in before.units)
    for sampling in SAMPLING:
        a = visits(stream(before, caption_sampling=sampling, shuffle_buffer=9), 100)
        assert a == visits(stream(after, caption_sampling=sampling, shuffle_buffer=9), 100)
    assert run(_argv(old, tmp_path / "run", "--samples", 24)) == 0


def test_held_out_retrieval_splits_by_image_and_reads_first_captions(captioned):
    rows = read_heldout(captioned, "", 1000, limit=10_000)
    assert sorted(c for _, c in rows) == sorted(f"item {i} cap 0" for i in range(N))
    con = duckdb.connect()
    mixed = con.execute(
        f"SELECT count(*) FROM (SELECT {IMAGE_ID}, bool_or({heldout_sql(500, IMAGE_ID)}) <> "
        f"bool_and({heldout_sql(500, IMAGE_ID)}) AS split FROM "
        f"read_parquet('{captioned}/manifests/samples/*.parquet') WHERE status = 'kept' "
        "GROUP BY 1) WHERE split"
    ).fetchone()
    assert mixed == (0,)  # an image's captions are held out together or not at all
    half = read_heldout(captioned, "", 500, limit=10_000)
    assert 0 < len(half) < N and all(c.endswith("cap 0") for _, c in half)


def test_caption_sampling_is_a_checked_option_and_older_runs_resume_with_first(tmp_path, capsys):
    assert TrainConfig().caption_sampling == "random"
    with pytest.raises(ConfigError, match="must be one of first, random, all"):
        TrainConfig(caption_sampling="every")
    stored = TrainConfig(data="d", out="o").to_dict()
    del stored["caption_sampling"]  # a run stored before the option
    assert merge_for_resume(stored, {})["caption_sampling"] == "first"
    with pytest.raises(ConfigError, match="--caption-sampling 'all' \\(the run has 'random'\\)"):
        merge_for_resume(TrainConfig().to_dict(), {"caption_sampling": "all"})
    assert run(["--synthetic", "--caption-sampling", "every", "--out", tmp_path]) == 2
    err = capsys.readouterr().err.strip()
    assert "invalid choice: 'every'" in err and len(err.splitlines()) == 1
