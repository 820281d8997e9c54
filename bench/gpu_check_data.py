"""The GPU check's dataset: synthetic photo-like 224 px JPEGs in the pipeline's own layout.

Each shard is written by the pipeline's ShardWriter with `webdataset=True`, as `pipeline build
--webdataset` writes them: NNNNN.parquet (what `trainer run` and `pipeline embed` read) and
NNNNN.tar (what `open_clip_train --dataset-type webdataset` reads) hold the same images, so both
trainers see the same bytes. Shards are drawn and encoded in parallel processes (one per CPU this
process may use): 20k images take a few seconds on 16 CPUs instead of about two minutes on one.
The samples manifest and run.json follow pipeline/testing/toydata.py's legacy layout, which the
trainer's row selection and `pipeline embed` read as any built dataset.
"""

import hashlib
import multiprocessing
import os
import time
from pathlib import Path

CAPTION_WORDS = 8


def _shard(job: tuple[str, int, int, int]) -> list[dict]:
    """Write shard `index` (`rows` images, seeded by the index); its samples-manifest rows."""
    import io

    import numpy as np
    from bench_loader import WORDS, photo

    from manifests import schema
    from pipeline.images.process import KEPT, ProcessedImage
    from pipeline.shards import ShardWriter

    shards_dir, index, rows, group_rows = job
    rng = np.random.default_rng([index, 17])
    samples = []
    with ShardWriter(
        shards_dir, index, "jpg", webdataset=True, row_group_size=group_rows
    ) as writer:
        for row in range(rows):
            buf = io.BytesIO()
            photo(rng).save(buf, format="JPEG", quality=90)
            data = buf.getvalue()
            caption = " ".join(rng.choice(WORDS, CAPTION_WORDS))
            url = f"http://127.0.0.1/img/{index}/{row}.jpg"
            uid = schema.sample_uid(url, caption)
            image = ProcessedImage(
                KEPT,
                image=data,
                width=224,
                height=224,
                original_width=224,
                original_height=224,
                sha256=hashlib.sha256(data).hexdigest(),
            )
            shard, shard_row = writer.write(uid, url, caption, image)
            samples.append(
                {
                    "uid": uid,
                    "url": url,
                    "caption": caption,
                    "status": schema.KEPT,
                    "lang": "en",
                    "width": 224,
                    "height": 224,
                    "shard": shard,
                    "shard_row": shard_row,
                }
            )
    return samples


def build(root: Path, images: int, processes: int | None = None) -> dict:
    """Write `images` samples under `root` (a dataset folder), one shard per process (so all
    start and end together); returns what was written."""
    import pyarrow as pa

    from manifests import schema
    from manifests.layout import DatasetLayout, write_json_atomic, write_parquet_atomic
    from pipeline.shards import write_webdataset_sizes

    started = time.perf_counter()
    layout = DatasetLayout(Path(root)).create()
    processes = processes or max(1, len(os.sched_getaffinity(0)))
    shard_rows = min(10_000, -(-images // processes))  # ShardWriter's keys hold 10k rows a shard
    counts = [min(shard_rows, images - start) for start in range(0, images, shard_rows)]
    group_rows = min(shard_rows, 1000)  # the bench loader's row groups
    jobs = [(str(layout.shards), i, n, group_rows) for i, n in enumerate(counts)]
    # fork: the workers inherit sys.path (bench/ for bench_loader) and the imports done here.
    with multiprocessing.get_context("fork").Pool(min(processes, len(jobs))) as pool:
        parts = pool.map(_shard, jobs, chunksize=1)
    samples = [row for part in parts for row in part]
    write_parquet_atomic(
        schema.conform(pa.Table.from_pylist(samples), schema.SAMPLES),
        layout.samples / "part-00000.parquet",
    )
    write_json_atomic({"config": {"note": "written by bench/gpu_check_data.py"}}, layout.run_json)
    write_webdataset_sizes(layout.shards)
    size = sum(p.stat().st_size for p in layout.shards.glob("*.parquet"))
    return {
        "root": str(layout.root),
        "images": len(samples),
        "shards": len(counts),
        "kb_per_image": size / max(1, len(samples)) / 1e3,
        "seconds": time.perf_counter() - started,
        "processes": min(processes, len(jobs)),
        "tars": f"{layout.shards}/{{{0:05d}..{len(counts) - 1:05d}}}.tar",
    }
