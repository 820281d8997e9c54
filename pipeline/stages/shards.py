"""Stage `shards`: every row still `pending` becomes `kept` and goes into a training shard.

Kept rows are numbered in source order and cut into shards of `shard_size`; shard i holds rows
[i*size, (i+1)*size), so its content does not depend on which task wrote it. One Ray task per
shard reads the encoded images the `images` stage stored and writes the shard with img2dataset's
columns and `_stats.json` (pipeline.shards). A shard is done when its marker exists."""

import time
from pathlib import Path

from manifests import schema
from manifests.layout import DatasetLayout, write_parquet_atomic
from pipeline.stages.base import PartStats, StageRun, read_samples_part

STAGE = "shards"


def _kept_rows(
    layout: DatasetLayout, previous: str, parts: list[str]
) -> list[tuple[str, int, str]]:
    rows = []
    for part in parts:
        table = read_samples_part(layout, previous, part)
        for index, (uid, status) in enumerate(
            zip(table["uid"].to_pylist(), table["status"].to_pylist(), strict=True)
        ):
            if status == schema.PENDING:
                rows.append((part, index, uid))
    return rows


def write_shard_task(task: dict) -> dict:
    import pyarrow.parquet as pq

    from pipeline.images.process import ProcessedImage
    from pipeline.shards import ShardWriter

    started = time.perf_counter()
    layout = DatasetLayout(Path(task["root"]))
    by_part: dict[str, list[int]] = {}
    for part, row, _ in task["rows"]:
        by_part.setdefault(part, []).append(row)
    samples, images = {}, {}
    for part, indices in by_part.items():
        table = read_samples_part(layout, task["previous"], part).take(indices)
        for row in table.to_pylist():
            samples[row["uid"]] = row
        stored = pq.read_table(layout.stage_dir("images") / f"{part}.images.parquet")
        columns = (stored[c].to_pylist() for c in ("uid", "image", "exif"))
        for uid, data, exif in zip(*columns, strict=True):
            if uid in samples:
                images[uid] = (data, exif)
    with ShardWriter(layout.shards, task["index"], task["encode_format"],
                     webdataset=task["webdataset"], samples_per_shard=task["shard_size"]) as writer:  # fmt: skip
        for _, _, uid in task["rows"]:
            row, (data, exif) = samples[uid], images[uid]
            image = ProcessedImage(
                "kept", image=data, encode_format=task["encode_format"], width=row["width"],
                height=row["height"], original_width=row["original_width"],
                original_height=row["original_height"], sha256=row["sha256"], exif=exif,
            )  # fmt: skip
            writer.write(uid, row["url"], row["caption"], image)
        name = writer.name
    stats = PartStats(rows_in=len(task["rows"]), rows_out=len(task["rows"]))
    stats.seconds = time.perf_counter() - started
    stats.extra = {"shard": name}
    StageRun(layout, STAGE).mark_done(f"shard-{task['index']:05d}", stats)
    return {"shard": name}


def run_shards(layout, parts, previous: str, shard_size: int, encode_format: str,
               webdataset: bool, executor) -> None:  # fmt: skip
    import pyarrow as pa
    from tqdm import tqdm

    from pipeline.shards import shard_basename

    run = StageRun(layout, STAGE)
    kept = _kept_rows(layout, previous, parts)
    chunks = [kept[i : i + shard_size] for i in range(0, len(kept), shard_size)]
    todo = [
        {"root": str(layout.root), "previous": previous, "index": i, "rows": rows,
         "shard_size": shard_size, "encode_format": encode_format, "webdataset": webdataset}
        for i, rows in enumerate(chunks)
        if not run.is_done(f"shard-{i:05d}")
    ]  # fmt: skip
    for _ in tqdm(
        executor.map(write_shard_task, todo), total=len(todo), desc="shards", leave=False
    ):
        pass
    placed = {}
    for index, rows in enumerate(chunks):
        name = f"{shard_basename(index)}.parquet"
        placed.update({uid: (name, row) for row, (_, _, uid) in enumerate(rows)})
    for part in parts:
        rows = read_samples_part(layout, previous, part).to_pylist()
        for row in rows:
            if row["uid"] in placed and row["status"] == schema.PENDING:
                row["status"], (row["shard"], row["shard_row"]) = schema.KEPT, placed[row["uid"]]
        table = pa.Table.from_pylist(rows, schema=schema.SAMPLES)
        write_parquet_atomic(table, run.dir / f"{part}.parquet")
    run.finish([f"shard-{i:05d}" for i in range(len(chunks))])
