import io

import pyarrow as pa
import pytest
from PIL import Image

from manifests.config import ConfigError
from pipeline.stages import score
from pipeline.stages.images import IMAGE_COLUMNS
from tests.pipeline.stages.conftest import sample_rows
from tests.trainer.evaluation.helpers import save_checkpoint

pytestmark = pytest.mark.timeout(120)


def _jpeg(colour) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(out, "JPEG")
    return out.getvalue()


def _parts(b, images_per_part):
    for part, images in images_per_part.items():
        rows = sample_rows(
            [
                {"url": f"http://a.test/{part}/{i}.jpg", "caption": f"colour number {i}"}
                for i in range(len(images))
            ]
            + [{"url": f"http://a.test/{part}/dup.jpg", "caption": "x", "status": "duplicate"}]
        )
        pending = rows["uid"].to_pylist()[: len(images)]
        b.put("dedup", part, rows)
        n = len(images)
        table = {"uid": pending, "image": images, "exif": [None] * n}
        table |= {"phash256": ["0"] * n, "phash256_trim": ["0"] * n}
        types = pa.schema([(c, IMAGE_COLUMNS[c]) for c in IMAGE_COLUMNS])
        b.put("images", part, pa.table(table, schema=types), kind="images")


def test_score_embeds_every_pending_pair_and_loads_the_model_once_per_process(bench, tmp_path):
    score._MODELS.clear()
    ckpt = save_checkpoint(tmp_path / "nano.pt")  # clip-nano, random weights: scores differ
    b = bench(parts=["p0", "p1"], clip_model=str(ckpt), device="cpu")
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)]
    _parts(b, {"p0": [_jpeg(c) for c in colours[:3]], "p1": [_jpeg(colours[3]), b"not a jpeg"]})
    record = b.run("score")
    assert record["unit"] == "pairs" and (record["rows_in"], record["rows_out"]) == (5, 4)
    assert record["extra"] == {"model_loads": 1, "worker_processes": 1}
    p0, p1 = b.rows("score", "p0"), b.rows("score", "p1")
    assert len(p0) == 3 and all(-1 <= r["clip_score"] <= 1 for r in p0)
    assert p1[1]["clip_score"] != p1[1]["clip_score"]  # NaN: the image does not decode
    assert len(p0[0]["image"]) > 0 and len({r["clip_score"] for r in p0}) == 3


def test_a_checkpoint_rewritten_mid_build_is_an_error(bench, tmp_path):
    score._MODELS.clear()
    ckpt = save_checkpoint(tmp_path / "nano.pt")
    b = bench(parts=["p0", "p1"], clip_model=str(ckpt), device="cpu")
    _parts(b, {"p0": [_jpeg((1, 2, 3))], "p1": [_jpeg((3, 2, 1))]})
    b.run("score")
    (b.layout.stage_dir("score") / "p1.done").unlink()
    score._MODELS.clear()  # a fresh worker
    save_checkpoint(ckpt, seed=1)
    with pytest.raises(ConfigError, match="changed since this build began"):
        b.run("score")


def test_score_asks_for_a_gpu_unless_the_device_is_cpu(bench, tmp_path):
    ckpt = save_checkpoint(tmp_path / "nano.pt")
    stage = score.ScoreStage()
    assert stage.task_resources(bench(clip_model=str(ckpt), device="cpu").config) == {}
    assert stage.task_resources(bench(clip_model=str(ckpt)).config) == {"num_gpus": 1}
