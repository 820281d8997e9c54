import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.stages import registry
from pipeline.stages.base import PartStats, StageRun
from pipeline.stages.images import IMAGE_COLUMNS
from tests.pipeline.stages.conftest import sample_rows

pytestmark = pytest.mark.timeout(60)


def _jpeg(i: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (i * 20 % 256, 0, 0)).save(out, "JPEG")
    return out.getvalue()


def put_dedup_part(b, part: str, n: int, dropped: int = 0):
    """`n` pending rows (and `dropped` duplicates) with stored images, as dedup leaves them,
    and dedup's marker (its rows_out is the count the shards plan reads)."""
    rows = sample_rows(
        [
            {
                "url": f"http://a.test/{part}/{i}.jpg",
                "caption": f"{part} {i}",
                "width": 8,
                "height": 8,
                "original_width": 8,
                "original_height": 8,
                "sha256": f"{part}{i}",
            }
            for i in range(n)
        ]
        + [
            {"url": f"http://a.test/{part}/d{i}.jpg", "caption": "d", "status": "duplicate"}
            for i in range(dropped)
        ]
    )
    b.put("dedup", part, rows)
    uids = rows["uid"].to_pylist()[:n]
    b.put(
        "images",
        part,
        pa.table(
            {
                "uid": uids,
                "image": [_jpeg(i) for i in range(n)],
                "exif": [None] * n,
                "phash256": ["0"] * n,
                "phash256_trim": ["0"] * n,
            },
            schema=pa.schema([(k, IMAGE_COLUMNS[k]) for k in IMAGE_COLUMNS]),
        ),
        kind="images",
    )
    StageRun(b.layout, registry.get("dedup"), ()).mark_done(part, PartStats(rows_out=n))
    return uids


def test_shards_cut_the_pending_rows_in_source_order_across_parts(bench):
    b = bench(parts=["p0", "p1", "p2"], shard_size=4)
    uids = put_dedup_part(b, "p0", 3, dropped=1) + put_dedup_part(b, "p1", 0)
    uids += put_dedup_part(b, "p2", 6)
    record = b.run("shards")
    assert (record["rows_in"], record["rows_out"]) == (9, 9)
    names = sorted(p.name for p in b.layout.shards.glob("*.parquet"))
    assert names == ["00000.parquet", "00001.parquet", "00002.parquet"]
    shards = [pq.read_table(b.layout.shards / n) for n in names]
    assert [t.num_rows for t in shards] == [4, 4, 1]
    assert sum((t["uid"].to_pylist() for t in shards), []) == uids  # in source order
    assert shards[0]["key"].to_pylist() == ["000000", "000001", "000002", "000003"]  # img2dataset
    assert shards[0]["jpg"][0].as_py()[:2] == b"\xff\xd8"
    assert (b.layout.shards / "00000_stats.json").exists()
    marker = b.marker("shards", "shard-00001")
    assert marker["extra"] == {
        "shard": "00001.parquet",
        "rows": 4,
        "row_groups": 1,
        "bytes": (b.layout.shards / "00001.parquet").stat().st_size,
    }
    assert marker["files"] == {"shard": "shards/00001.parquet", "stats": "shards/00001_stats.json"}
