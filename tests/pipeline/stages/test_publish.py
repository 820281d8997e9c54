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


def _group_part(b, part: str, rows: list[dict], images: dict[str, bytes]):
    """Rows as the clip stage leaves them (image_of set by dedup), their images stored."""
    import pyarrow as pa

    from pipeline.stages import registry
    from pipeline.stages.base import PartStats, StageRun
    from pipeline.stages.images import IMAGE_COLUMNS

    base = {"width": 8, "height": 8, "original_width": 8, "original_height": 8}
    table = sample_rows([{**base, **r} for r in rows])
    b.put("dedup", part, table)
    uids = [u for u, r in zip(table["uid"].to_pylist(), rows, strict=True) if r["url"] in images]
    urls = [r["url"] for r in rows if r["url"] in images]
    columns = {
        "uid": uids,
        "image": [images[u] for u in urls],
        "exif": [None] * len(uids),
        "phash256": ["0"] * len(uids),
        "phash256_trim": ["0"] * len(uids),
    }
    b.put(
        "images", part, pa.table(columns, schema=pa.schema(list(IMAGE_COLUMNS.items()))), "images"
    )
    pending = sum(r.get("status", "pending") == "pending" for r in rows)
    StageRun(b.layout, registry.get("dedup"), ()).mark_done(part, PartStats(rows_out=pending))
    return table["uid"].to_pylist()


def test_an_image_is_stored_once_with_the_captions_left_across_parts(bench):
    """An image row in p0 with captions beside it in p0 and p1; a second image whose image row
    lost its caption to a low CLIP score (the image stays for the caption beside it); a third
    whose image row is a semantic duplicate (its other caption goes with it); one alone."""
    from manifests.schema import sample_uid
    from tests.pipeline.stages.test_shards import _jpeg

    b = bench(parts=["p0", "p1"], shard_size=3)
    u = {k: f"http://a.test/{k}.jpg" for k in ("a", "b", "c", "d")}
    images = {u[k]: _jpeg(i) for i, k in enumerate("abcd")}
    head = {k: sample_uid(u[k], f"{k} 1") for k in "abc"}
    p0 = [
        {"url": u["a"], "caption": "a 1", "image_of": head["a"]},
        {"url": u["b"], "caption": "b 1", "image_of": head["b"], "status": "low_clip_score"},
        {"url": u["a"], "caption": "a 2", "image_of": head["a"]},
        {
            "url": u["c"],
            "caption": "c 1",
            "image_of": head["c"],
            "status": "semantic_duplicate",
            "dup_of": "f" * 32,
            "error": "cosine > 0.980 to " + "f" * 32,
        },
    ]
    p1 = [
        {"url": u["d"], "caption": "d 1"},
        {"url": u["b"], "caption": "b 2", "image_of": head["b"]},
        {"url": u["a"], "caption": "a 3", "image_of": head["a"]},
        {"url": u["c"], "caption": "c 2", "image_of": head["c"]},
    ]
    _group_part(b, "p0", p0, images)
    _group_part(b, "p1", p1, images)
    b.run("shards")
    b.run("publish")
    shard = pq.read_table(b.layout.shards / "00000.parquet").to_pylist()
    assert [(r["uid"], r["captions"], r["caption"]) for r in shard] == [
        (head["a"], ["a 1", "a 2", "a 3"], "a 1"),
        (head["b"], ["b 2"], "b 2"),  # b's image row's bytes, its surviving caption
        (sample_uid(u["d"], "d 1"), ["d 1"], "d 1"),  # p1's images come after p0's
    ]
    assert shard[1]["jpg"] == images[u["b"]]
    rows = {r["caption"]: r for r in b.rows("publish", "p0") + b.rows("publish", "p1")}
    for caption, index in (("a 1", 0), ("a 2", 1), ("a 3", 2), ("b 2", 0)):
        assert rows[caption]["status"] == "kept"
        place = (rows[caption]["shard"], rows[caption]["shard_row"])
        assert place == ("00000.parquet", 0 if caption[0] == "a" else 1)
        assert rows[caption]["caption_index"] == index
    assert (rows["d 1"]["shard"], rows["d 1"]["shard_row"], rows["d 1"]["status"]) == (
        "00000.parquet",
        2,
        "kept",
    )
    assert len(list(b.layout.shards.glob("*.parquet"))) == 1  # c's image left: 3 images
    assert rows["b 1"]["status"] == "low_clip_score" and rows["b 1"]["shard"] is None
    follower = rows["c 2"]
    assert (follower["status"], follower["dup_of"]) == ("semantic_duplicate", "f" * 32)
    assert "its image (image_of) is a semantic duplicate: cosine" in follower["error"]
