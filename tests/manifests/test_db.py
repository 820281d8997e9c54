import json

import pyarrow as pa
import pytest

import manifests
from manifests import schema
from manifests.db import NotADatasetError, UnknownSubsetError
from manifests.layout import DatasetLayout, write_json_atomic, write_parquet_atomic


def _dataset(tmp_path):
    layout = DatasetLayout(tmp_path / "ds").create()
    write_json_atomic({"config": {}}, layout.run_json)
    return layout


def test_empty_dataset_has_every_view_with_the_contract_columns(tmp_path):
    con = manifests.open(_dataset(tmp_path).root)
    columns = [row[0] for row in con.execute("DESCRIBE samples").fetchall()]
    assert columns == schema.SAMPLES.names
    for view in ("samples", "pages", "shards", "stats"):
        assert con.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)


def test_samples_view_reads_parts_and_subsets_select_from_it(tmp_path):
    layout = _dataset(tmp_path)
    rows = [
        {
            "uid": "a",
            "url": "http://x/a.jpg",
            "caption": "a cat",
            "status": "kept",
            "lang": "en",
            "matched_queries": ["cat"],
        },
        {
            "uid": "b",
            "url": "http://x/b.jpg",
            "caption": "un chat",
            "status": "kept",
            "lang": "fr",
            "matched_queries": [],
        },
        {"uid": "c", "url": "http://x/c.jpg", "caption": "a dog", "status": "no_query_match"},
    ]
    table = schema.conform(pa.Table.from_pylist(rows), schema.SAMPLES)
    write_parquet_atomic(table.slice(0, 2), layout.samples / "part-00000.parquet")
    write_parquet_atomic(table.slice(2), layout.samples / "part-00001.parquet")
    write_json_atomic(
        {"stage": "match", "rows_in": 3, "rows_out": 3, "drops": {"x": 1}},
        layout.stats / "match.json",
    )
    con = manifests.open(layout.root)
    assert con.execute("SELECT count(*) FROM samples").fetchone() == (3,)
    english = con.execute(f"SELECT uid FROM ({manifests.subset_sql('english')})").fetchall()
    assert english == [("a",)]
    kept = con.execute(f"SELECT uid FROM ({manifests.subset_sql('kept')}) ORDER BY uid").fetchall()
    assert kept == [("a",), ("b",)]
    assert con.execute("SELECT stage, rows_in, dropped FROM stats").fetchall() == [("match", 3, 1)]


def test_dataset_subsets_override_packaged_ones(tmp_path):
    layout = _dataset(tmp_path)
    layout.subsets.mkdir()
    (layout.subsets / "cats.sql").write_text("SELECT * FROM samples WHERE caption LIKE '%cat%'")
    assert {"kept", "english", "cats"} <= set(manifests.list_subsets(layout.root))
    with pytest.raises(UnknownSubsetError, match="known subsets"):
        manifests.subset_sql("nope", layout.root)


def test_open_refuses_a_folder_that_is_not_a_dataset(tmp_path):
    with pytest.raises(NotADatasetError):
        manifests.open(tmp_path)
    with pytest.raises(NotADatasetError):
        manifests.open(tmp_path / "missing")


def test_sample_uid_is_stable_and_distinguishes_fields():
    assert schema.sample_uid("u", "c") == schema.sample_uid("u", "c")
    assert schema.sample_uid("ab", "c") != schema.sample_uid("a", "bc")
    assert len(schema.sample_uid("u", "c")) == 32
    json.dumps(schema.sample_uid("u", "é"))
