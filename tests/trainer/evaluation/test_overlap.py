import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainer.evaluation.errors import EvalError
from trainer.evaluation.overlap import overlap_section, read_overlap, split_accuracy


def test_split_accuracy_by_hand():
    hits = [True, True, False, True, False, True, False, True]
    flags = [True, True, True, False, False, False, False, None]  # 3 overlap, 4 clean, 1 unchecked
    out = split_accuracy(hits, flags)
    assert (out["n_all"], out["n_overlap"], out["n_clean"], out["n_unchecked"]) == (8, 3, 4, 1)
    assert out["top1_all"] == pytest.approx(5 / 8)
    assert out["top1_overlap"] == pytest.approx(2 / 3)
    assert out["top1_clean"] == pytest.approx(2 / 4)
    assert out["all_minus_clean"] == pytest.approx(5 / 8 - 1 / 2)
    assert out["overlap_minus_clean"] == pytest.approx(2 / 3 - 1 / 2)
    assert out["overlap_fraction"] == pytest.approx(3 / 7)
    # P(X >= 2) for X ~ Binomial(3, 1/2) = 4/8
    assert out["p_value"] == pytest.approx(0.5)
    none = split_accuracy([True, False], [False, False])
    assert none["top1_overlap"] is None and none["overlap_minus_clean"] is None
    assert none["p_value"] is None


def _write(path, columns):
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path / "overlap.parquet")


def test_read_overlap_with_id_column_merges_rows_and_skips_nulls(tmp_path):
    _write(
        tmp_path,
        {
            "eval_id": [
                "pets/big_cat/1.jpg",
                "pets/big_cat/1.jpg",
                "pets/dog/2.jpg",
                "pets/dog/3.jpg",
            ],
            "has_copy": [False, True, False, None],
            "extra": [1, 2, 3, 4],
        },
    )
    table = read_overlap(tmp_path)
    assert table.eval_sets == {"pets"}
    assert read_overlap(tmp_path).flags.get(("pets", "dog", "2.jpg")) is False
    assert table.flags == {("pets", "big cat", "1.jpg"): True, ("pets", "dog", "2.jpg"): False}
    ids = ["pets/big_cat/1.jpg", "pets/dog/2.jpg", "pets/dog/3.jpg"]
    out = overlap_section(table, "pets", ids, [True, False, True], tmp_path)
    assert out["available"] and (out["n_overlap"], out["n_clean"], out["n_unchecked"]) == (1, 1, 1)
    assert out["top1_all"] == pytest.approx(2 / 3) and out["all_minus_clean"] == pytest.approx(
        2 / 3
    )
    assert not overlap_section(table, "flowers", ids, [True] * 3, tmp_path)["available"]


def test_read_overlap_with_separate_columns_and_paths(tmp_path):
    _write(
        tmp_path,
        {
            "eval_set": ["pets", "pets"],
            "class_name": ["big cat", "dog"],  # label text instead of the folder name
            "path": ["/evals/pets/big_cat/1.jpg", "evals\\pets\\dog\\2.jpg"],
            "is_overlap": [True, False],
        },
    )
    table = read_overlap(tmp_path)
    assert table.flags == {("pets", "big cat", "1.jpg"): True, ("pets", "dog", "2.jpg"): False}
    # full paths name files by base name: an image in a subfolder of its class still matches
    assert table.flag("pets/big_cat/sub/1.jpg") is True and table.flag("pets/dog/9.jpg") is None


def test_images_in_subfolders_keep_their_own_flags(tmp_path):
    """Two images of one class with the same file name in different subfolders are two images."""
    ids = ["pets/cat/a/1.jpg", "pets/cat/b/1.jpg", "pets/cat/1.jpg"]
    _write(tmp_path, {"eval_id": ids, "has_copy": [True, False, None]})
    table = read_overlap(tmp_path)
    assert [table.flag(i) for i in ids] == [True, False, None]
    out = overlap_section(table, "pets", ids, [True, True, False], tmp_path)
    assert (out["n_overlap"], out["n_clean"], out["n_unchecked"]) == (1, 1, 1)


def test_overlap_unavailable_or_malformed(tmp_path):
    assert read_overlap(tmp_path) is None
    assert "does not exist" in overlap_section(None, "pets", [], [], tmp_path)["reason"]
    assert overlap_section(None, "pets", [], [], None) == {
        "available": False,
        "reason": "no --data DIR given",
    }
    _write(tmp_path / "a", {"eval_id": ["pets/cat/1.jpg"], "score": [0.3]})
    with pytest.raises(EvalError, match="no copy flag column"):
        read_overlap(tmp_path / "a")
    _write(tmp_path / "b", {"file": ["1.jpg"], "has_copy": [True]})
    with pytest.raises(EvalError, match="no image id column"):
        read_overlap(tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "overlap.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(EvalError, match="cannot read"):
        read_overlap(tmp_path / "c")
