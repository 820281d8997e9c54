import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.stages.images import IMAGE_COLUMNS
from tests.pipeline.stages.conftest import sample_rows
from tests.trainer.evaluation.helpers import save_checkpoint

pytestmark = pytest.mark.timeout(120)


def _jpeg(colour) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(out, "JPEG")
    return out.getvalue()


def test_clip_scores_every_pending_pair_and_drops_outside_the_top_fraction(bench, tmp_path):
    ckpt = save_checkpoint(tmp_path / "nano.pt")  # clip-nano, random weights: scores differ
    b = bench(parts=["p0", "p1"], clip_model=str(ckpt), clip_top_fraction=0.5, device="cpu")
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0), (0, 250, 250), (9, 9, 9)]
    for index, part in enumerate(("p0", "p1")):
        rows = sample_rows(
            [
                {"url": f"http://a.test/{part}/{i}.jpg", "caption": f"colour number {i}"}
                for i in range(3)
            ]
            + [{"url": f"http://a.test/{part}/dup.jpg", "caption": "x", "status": "duplicate"}]
        )
        pending = rows["uid"].to_pylist()[:3]
        images = [_jpeg(c) for c in colours[3 * index : 3 * index + 3]]
        b.put("dedup", part, rows)
        b.put(
            "images",
            part,
            pa.table(
                {
                    "uid": pending,
                    "image": images,
                    "exif": [None] * 3,
                    "phash256": ["0"] * 3,
                    "phash256_trim": ["0"] * 3,
                },
                schema=pa.schema([(n, IMAGE_COLUMNS[n]) for n in IMAGE_COLUMNS]),
            ),
            kind="images",
        )
    record = b.run("clip")
    rows = b.rows("clip", "p0") + b.rows("clip", "p1")
    scored = [r for r in rows if r["status"] != "duplicate"]
    assert all(r["clip_score"] is not None and -1 <= r["clip_score"] <= 1 for r in scored)
    assert all(r["clip_score"] is None for r in rows if r["status"] == "duplicate")
    kept = sorted(r["clip_score"] for r in scored if r["status"] == "pending")
    low = [r for r in scored if r["status"] == "low_clip_score"]
    assert len(kept) == 3 and len(low) == 3  # the best half, over both parts
    assert max(r["clip_score"] for r in low) < kept[0]
    assert record["extra"]["scored"] == 6 and record["extra"]["threshold"] == pytest.approx(
        kept[0], abs=1e-6
    )
    scores = pq.read_table(b.layout.stage_dir("clip") / "p0.scores.parquet")
    assert scores.num_rows == 3 and scores["image"].type.list_size > 0  # embeddings kept
