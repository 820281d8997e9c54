import pyarrow.parquet as pq
import pytest

from tests.pipeline.stages.conftest import sample_rows
from tests.pipeline.stages.test_shards import put_dedup_part

pytestmark = pytest.mark.timeout(60)


def test_publish_gives_every_pending_row_its_place_in_the_shards(bench):
    b = bench(parts=["p0", "p1"], shard_size=2)
    put_dedup_part(b, "p0", 3, dropped=1)
    put_dedup_part(b, "p1", 2)
    b.run("shards")
    b.run("publish")
    rows = b.rows("publish", "p0") + b.rows("publish", "p1")
    assert b.path("publish", "p0").parent == b.layout.samples  # the manifests themselves
    placed = [(r["shard"], r["shard_row"]) for r in rows if r["status"] == "kept"]
    assert placed == [
        ("00000.parquet", 0),
        ("00000.parquet", 1),
        ("00001.parquet", 0),
        ("00001.parquet", 1),
        ("00002.parquet", 0),
    ]
    dropped = [r for r in rows if r["status"] == "duplicate"]
    assert len(dropped) == 1 and dropped[0]["shard"] is None
    for r in rows:  # each kept row points at its own image
        if r["status"] == "kept":
            shard = pq.read_table(b.layout.shards / r["shard"])
            assert shard["uid"][r["shard_row"]].as_py() == r["uid"]
    assert not (b.layout.stats / "publish.json").exists()  # bookkeeping, not a stats row


def test_publish_with_no_fetch_publishes_the_text_rows_as_they_are(bench):
    b = bench(fetch=False)
    b.put("text", "p0", sample_rows([{"url": "http://a.test/1.jpg", "caption": "x"}]))
    b.run("publish")
    assert [r["status"] for r in b.rows("publish", "p0")] == ["pending"]
    # continued into a full build later: the part is published again from the new last stage
    b.config = type(b.config).of(out=b.config.out, url_list="unused.csv", shard_size=2)
    put_dedup_part(b, "p0", 1)
    b.run("shards")
    b.run("publish")
    assert [r["status"] for r in b.rows("publish", "p0")] == ["kept"]
