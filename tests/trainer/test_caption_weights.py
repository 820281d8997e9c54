"""--caption-weights occurrences: a caption the dataset carried several times for one image (its
`duplicate` rows: the same caption on the same bytes under other URLs) is drawn that much more
often; other drop reasons pointing at a row never count, and the weights survive the frozen
selection."""

from collections import Counter

import pyarrow as pa
import pytest

from manifests import schema, storage
from manifests.layout import DatasetLayout, write_parquet_atomic
from manifests.schema import DropReason
from pipeline.testing.toydata import write_dataset
from tests.trainer.test_captions import N, units_of, visits, write
from tests.trainer.test_data import numbered, stream
from trainer.config import ConfigError, TrainConfig, merge_for_resume
from trainer.data import DataError, frozen, resolve


def _uid(table, caption: str) -> str:
    return table.filter(pa.compute.equal(table["caption"], caption))["uid"][0].as_py()


def add_duplicates(root, of: list[str]) -> None:
    """A `duplicate` samples row for each caption in `of` (repeats allowed), pointing at it."""
    path = DatasetLayout(root).samples / "part-00000.parquet"
    table = storage.read_table(path)
    rows = [
        {
            "uid": f"dup{i}",
            "url": f"http://127.0.0.1/dup/{i}",
            "caption": caption,
            "status": DropReason.DUPLICATE,
            "dup_of": _uid(table, caption),
        }
        for i, caption in enumerate(of)
    ]
    more = schema.conform(pa.Table.from_pylist(rows), schema.SAMPLES)
    write_parquet_atomic(pa.concat_tables([table, more]), path)


@pytest.fixture(scope="module")
def repeated(tmp_path_factory):
    """The 30-image captioned dataset, plus rows that did not make it: two duplicates of `item 4
    cap 1`, one of `item 7 cap 0`, and a semantic duplicate and a near duplicate pointing at
    `item 5 cap 0` (another image's caption: no repeat of it)."""
    root = write(tmp_path_factory.mktemp("repeated"))
    path = DatasetLayout(root).samples / "part-00000.parquet"
    table = storage.read_table(path)
    extra = [
        ("item 4 cap 1", "item 4 cap 1", DropReason.DUPLICATE),
        ("ITEM 4  cap 1", "item 4 cap 1", DropReason.DUPLICATE),  # folded to the same caption
        ("item 7 cap 0", "item 7 cap 0", DropReason.DUPLICATE),
        ("a lookalike", "item 5 cap 0", DropReason.SEMANTIC_DUPLICATE),
        ("item 5 cap 0", "item 5 cap 0", DropReason.NEAR_DUPLICATE),
    ]
    rows = [
        {
            "uid": f"extra{i}",
            "url": f"http://127.0.0.1/other/{i}",
            "caption": caption,
            "status": status,
            "dup_of": _uid(table, of),
        }
        for i, (caption, of, status) in enumerate(extra)
    ]
    more = schema.conform(pa.Table.from_pylist(rows), schema.SAMPLES)
    write_parquet_atomic(pa.concat_tables([table, more]), path)
    return root


def _set(index, caption_row: int) -> list[int]:
    (unit,) = [u for u in index.units if u.shard == 0 and caption_row - u.start in u.rows]
    return unit.caption_set(caption_row - unit.start).tolist()


def test_each_duplicate_repeats_the_caption_it_names(repeated):
    plain, weighted = resolve(repeated), resolve(repeated, weights="occurrences")
    assert weighted.num_rows == plain.num_rows == N
    assert weighted.num_samples(per_caption=True) == plain.num_samples(per_caption=True) + 3
    assert _set(plain, 4) == [0, 1] and _set(weighted, 4) == [0, 1, 1, 1]
    assert _set(weighted, 7) == [0, 0, 1]
    assert _set(weighted, 5) == _set(plain, 5) == [0, 1, 2]  # other drop reasons never count
    # a duplicate of a caption --where leaves out brings it no weight
    french = resolve(repeated, where="caption LIKE '% cap 1'", weights="occurrences")
    assert _set(french, 4) == [1, 1, 1] and _set(french, 7) == [1]


def test_a_random_draw_follows_the_weights(repeated):
    epochs = 60
    s = stream(
        resolve(repeated, weights="occurrences"), caption_sampling="random", shuffle_buffer=1
    )
    drawn = Counter(c for c in visits(s, epochs * N) if c.startswith("item 4 "))
    assert sum(drawn.values()) == epochs
    assert 0.6 < drawn["item 4 cap 1"] / epochs < 0.9  # 3 of its 4 entries
    s = stream(resolve(repeated), caption_sampling="random", shuffle_buffer=1)
    drawn = Counter(c for c in visits(s, epochs * N) if c.startswith("item 4 "))
    assert 0.3 < drawn["item 4 cap 1"] / epochs < 0.7  # 1 of 2


def test_all_makes_a_sample_of_every_occurrence_and_resumes_exactly(repeated):
    index = resolve(repeated, weights="occurrences")
    samples = index.num_samples(per_caption=True)  # 60 captions + 3 repeats
    epoch = Counter(visits(stream(index, caption_sampling="all", shuffle_buffer=1), samples))
    assert epoch["item 4 cap 1"] == 3 and epoch["item 7 cap 0"] == 2 and epoch["item 4 cap 0"] == 1
    assert sum(epoch.values()) == 63
    # a shuffle buffer holds one caption's copies at once; a resume replays to the same place
    whole = visits(stream(index, caption_sampling="all", shuffle_buffer=16), 3 * samples)
    again = visits(stream(index, caption_sampling="all", shuffle_buffer=16), samples, start=100)
    assert again == whole[100 : 100 + samples]


def test_the_frozen_selection_keeps_the_weights(repeated, tmp_path):
    index = resolve(repeated, weights="occurrences")
    frozen.save(index, tmp_path / "run")
    assert units_of(frozen.load(tmp_path / "run", repeated)) == units_of(index)


def test_weights_on_a_one_caption_dataset_survive_the_frozen_selection(tmp_path):
    """Every caption index is 0 there, yet rows repeat: the file must not read as plain rows."""
    root = write_dataset(tmp_path / "one", numbered(12), shard_rows=12, group_rows=5)
    add_duplicates(root, ["item 3", "item 3", "item 8"])
    index = resolve(root, weights="occurrences")
    assert (index.num_rows, index.num_samples(per_caption=True)) == (12, 15)
    frozen.save(index, tmp_path / "run")
    back = frozen.load(tmp_path / "run", root)
    assert units_of(back) == units_of(index) and back.num_rows == 12


def test_weights_need_the_uid_column_and_a_known_name(repeated):
    (DatasetLayout(repeated).root / "subsets").mkdir(exist_ok=True)
    (DatasetLayout(repeated).root / "subsets" / "bare.sql").write_text(
        "SELECT shard, shard_row, caption_index FROM samples WHERE status = 'kept'"
    )
    assert resolve(repeated, "bare").num_rows == N
    with pytest.raises(DataError, match="does not select the uid column"):
        resolve(repeated, "bare", weights="occurrences")
    with pytest.raises(ConfigError, match="caption_weights|caption-weights"):
        TrainConfig(synthetic=True, caption_weights="popular")


@pytest.mark.parametrize("option", [{"caption_weights": "occurrences"}, {"ema": 0.99}])
def test_an_option_given_to_a_run_from_before_it_existed_is_refused(option):
    stored = TrainConfig(synthetic=True).to_dict()
    for name in ("caption_weights", "ema", "crop_scale"):
        del stored[name]  # a run stored before these options
    with pytest.raises(ConfigError, match="options differ from the stored run"):
        merge_for_resume(stored, option)
    merged = merge_for_resume(stored, {"caption_weights": "distinct", "ema": 0.0})
    assert (merged["caption_weights"], merged["ema"], merged["crop_scale"]) == ("distinct", 0, 0.9)
