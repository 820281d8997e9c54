import pyarrow as pa
import pytest

from pipeline.stages.images import IMAGE_COLUMNS
from tests.pipeline.stages.conftest import sample_rows

pytestmark = pytest.mark.timeout(60)

HASH = "0" * 64


def _images(uids):
    return pa.table(
        {
            "uid": uids,
            "image": [b"x"] * len(uids),
            "exif": [None] * len(uids),
            "phash256": [HASH] * len(uids),
            "phash256_trim": [HASH] * len(uids),
        },
        schema=pa.schema([(n, IMAGE_COLUMNS[n]) for n in IMAGE_COLUMNS]),
    )


def test_exact_duplicates_across_parts_point_at_the_first_copy(bench):
    b = bench(parts=["p0", "p1"])
    first = sample_rows(
        [
            {"url": "http://a.test/1.jpg", "caption": "one", "sha256": "aa", "phash": "0" * 16},
            {"url": "http://a.test/2.jpg", "caption": "two", "sha256": "bb", "phash": "f" * 16},
            {
                "url": "http://a.test/3.jpg",
                "caption": "gone",
                "sha256": "aa",
                "status": "too_small",
            },
        ]
    )
    second = sample_rows(
        [
            {
                "url": "http://b.test/1.jpg",
                "caption": "one again",
                "sha256": "aa",
                "phash": "0" * 16,
            },
        ]
    )
    for part, rows in (("p0", first), ("p1", second)):
        b.put("images", part, rows)
        pending = [
            u
            for u, s in zip(rows["uid"].to_pylist(), rows["status"].to_pylist(), strict=True)
            if s == "pending"
        ]
        b.put("images", part, _images(pending), kind="images")
    record = b.run("dedup")
    p0, p1 = b.rows("dedup", "p0"), b.rows("dedup", "p1")
    assert [r["status"] for r in p0] == ["pending", "pending", "too_small"]
    assert p1[0]["status"] == "duplicate" and p1[0]["dup_of"] == p0[0]["uid"]
    assert p0[2]["dup_of"] is None  # not pending: no decision reaches it
    assert (record["rows_in"], record["rows_out"], record["drops"]) == (3, 2, {"duplicate": 1})
    assert b.marker("dedup", "p1")["drops"] == {"duplicate": 1}  # each part applies its own
