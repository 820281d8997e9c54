import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.trainer.evaluation.helpers import solid, write_image_folder
from trainer.evaluation.errors import EvalError
from trainer.evaluation.evalsets import load_eval_set, load_eval_sets
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
    flags = read_overlap(tmp_path).flags
    assert flags == {("pets", "big cat", "1.jpg"): True, ("pets", "dog", "2.jpg"): False}


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


def test_eval_set_layout_labels_and_ids(tmp_path):
    root = write_image_folder(tmp_path / "pets", {"big_cat": [solid(0)] * 2, "dog": [solid(0)]})
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    (root / "empty_class").mkdir()
    s = load_eval_set(root)
    assert (s.name, s.classes, s.labels) == ("pets", ["big_cat", "dog"], ["big cat", "dog"])
    assert s.targets == [0, 0, 1] and s.ignored == ["dog/notes.txt"]
    assert s.item_id(2) == "pets/dog/000.png"
    # images in subfolders of a class folder belong to it (as in torchvision's ImageFolder)
    (root / "dog" / "more").mkdir()
    solid(0).save(root / "dog" / "more" / "x.png")
    (root / "dog" / ".cache").mkdir()
    solid(0).save(root / "dog" / ".cache" / "y.png")
    s = load_eval_set(root)
    assert s.targets == [0, 0, 1, 1] and s.item_id(3) == "pets/dog/more/x.png"


def test_eval_set_errors(tmp_path):
    with pytest.raises(EvalError, match="is not a folder"):
        load_eval_set(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    solid(0).save(tmp_path / "flat" / "a.png")
    with pytest.raises(EvalError, match="no class folders.*a.png"):
        load_eval_set(tmp_path / "flat")
    write_image_folder(tmp_path / "one", {"cat": [solid(0)]})
    (tmp_path / "one" / "dog").mkdir()
    (tmp_path / "one" / "dog" / "x.txt").write_text("")
    with pytest.raises(EvalError, match="1 class folder"):
        load_eval_set(tmp_path / "one")
    a = write_image_folder(tmp_path / "a" / "pets", {"cat": [solid(0)], "dog": [solid(0)]})
    b = write_image_folder(tmp_path / "b" / "pets", {"cat": [solid(0)], "dog": [solid(0)]})
    with pytest.raises(EvalError, match="pets given more than once"):
        load_eval_sets([a, b])
