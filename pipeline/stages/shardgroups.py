"""The shards stage's plan as phases of tasks (pipeline/stages/phases.py): which images the
shards hold, with which captions, in which order.

An image is stored once with every caption kept for it. Most images have one caption row
(`image_of` null) and are placed by their own part; the rows of an image with several (dedup's
`image_of`: its image row and the rows beside it) may lie in many parts and are gathered first:
- `captions-<part>` (map): the part's rows with an image_of, under the bucket of their image
  (captions/<part>.parquet): part_index, row, uid, image, caption, status, dup_of, error.
- `gather-<b>` (reduce): each image's rows still pending, its image row first, then source
  order: its captions, their uids and parts, under the image row's part (groups/<b>.parquet,
  by part_index). An image row the clip stage found to be a semantic duplicate takes its
  whole image out: the rows beside it follow it (dropped/<b>.parquet). A low CLIP score drops
  only that row's caption: the image stays while a caption of it does.
- `place-<part>` (map): the part's images in the source order of their image rows, numbered
  from 0 (images/<part>.parquet: row, uid, captions, uids), and each of their rows' place: home
  part, number and caption_index (placed/<part>.parquet for the part's own rows; away/<part>,
  by the bucket of the row's part, for rows of other parts).
- `route-<b>` (reduce): bucket b of every away file, by part (route/<b>.parquet), so `publish`
  reads its part's places from two files, not from every part's.
The plan counts each part's images into offsets: shard i holds images [i*size, (i+1)*size),
and `publish` gives a row its shard and shard_row by arithmetic on its image's number."""

from __future__ import annotations

import math

import pyarrow as pa

from manifests import schema, storage
from manifests.layout import write_parquet_atomic
from pipeline.stages.base import PartStats, StageRun
from pipeline.stages.phases import PhaseTask, bucket_of, read_bucket, read_part

ROWS_PER_BUCKET = 2_000_000  # caption rows one gather task holds (uids and captions: ~400 MB)
MAX_BUCKETS = 4096  # each gather task reads a footer of every part's file

# gather's outputs, by part: an image under its image row's part (its captions, their rows'
# uids and parts, in captions order), and a row dropped with its image
GROUPS = pa.schema(
    [
        ("part_index", pa.int32()),
        ("row", pa.int64()),
        ("uid", pa.string()),
        ("captions", pa.list_(pa.string())),
        ("uids", pa.list_(pa.string())),
        ("parts", pa.list_(pa.int32())),
    ]
)
IMAGES = pa.schema(  # place's images of a part, in number order
    [
        ("row", pa.int64()),
        ("uid", pa.string()),
        ("captions", pa.list_(pa.string())),
        ("uids", pa.list_(pa.string())),
    ]
)
PLACED = pa.schema(  # each caption row's image: home part, number there, caption_index
    [
        ("part_index", pa.int32()),
        ("uid", pa.string()),
        ("home", pa.int32()),
        ("number", pa.int64()),
        ("caption_index", pa.int32()),
    ]
)
DROPPED = pa.schema(
    [(n, pa.int32() if n == "part_index" else pa.string()) for n in ("part_index", "uid")]
    + [(n, pa.string()) for n in ("status", "dup_of", "error")]
)


def plan_phases(run: StageRun) -> dict:
    """Run the phases; {"buckets", "offsets", "total", "shard_size", "captions"}."""
    from pipeline.stages.phases import fixed_figures, phase_stats, run_phases

    source = StageRun(run.layout, run.input("clip"), ())
    rows = sum(source.part_stats(p).rows_out for p in run.parts)  # pending: enough for sizing
    wanted = max(run.parallelism, math.ceil(rows / ROWS_PER_BUCKET))
    figures = fixed_figures(run, {"buckets": max(1, min(MAX_BUCKETS, wanted))})
    buckets = range(figures["buckets"])
    phases = [[f"captions-{p}" for p in run.parts], [f"gather-{b}" for b in buckets]]
    phases += [[f"place-{p}" for p in run.parts], [f"route-{b}" for b in buckets]]
    run_phases(run, run.executor, phases, figures)
    offsets, total, captions = {}, 0, 0
    for part in run.parts:
        stats = phase_stats(run, f"place-{part}")
        offsets[part], total = total, total + stats.extra["images"]
        captions += stats.extra["captions"]
    size = run.config.shards.shard_size
    figures |= {"offsets": offsets, "total": total, "shard_size": size, "captions": captions}
    return figures


def _input_rows(task: PhaseTask, part: str, columns: list[str]):
    import numpy as np

    from pipeline.stages import registry

    path = registry.get(task.inputs[0]).rows_path(task.layout, part)
    rows = storage.read_table(path, columns=columns)
    return rows.append_column("row", pa.array(np.arange(rows.num_rows), pa.int64()))


def captions_part(task: PhaseTask) -> PartStats:
    import pyarrow.compute as pc

    from pipeline.stages.dedupexact import sha_key

    columns = ["uid", "caption", "status", "image_of", "dup_of", "error"]
    rows = _input_rows(task, task.unit, columns)
    rows = rows.filter(pc.is_valid(rows["image_of"]))
    image = rows["image_of"].to_pylist()
    table = pa.table(
        {
            "bucket": pa.array(bucket_of(sha_key(image), task.figures["buckets"]), pa.int64()),
            "part_index": pa.array([task.part_index] * rows.num_rows, pa.int32()),
            **{name: rows[name] for name in ["row", "uid", "caption", "status", "dup_of", "error"]},
            "image": rows["image_of"],
        }
    ).sort_by("bucket")
    write_parquet_atomic(table, task.path("captions"), row_group_size=10_000)
    return PartStats(rows.num_rows, rows.num_rows)


def gather_bucket(task: PhaseTask) -> PartStats:
    rows = read_bucket(task, "captions", int(task.unit)).to_pylist()
    rows.sort(key=lambda r: (r["image"], r["uid"] != r["image"], r["part_index"], r["row"]))
    groups = {name: [] for name in GROUPS.names}
    dropped = {name: [] for name in DROPPED.names}
    for group in _runs(rows, "image"):
        head, live = group[0], [r for r in group if r["status"] == schema.PENDING]
        if head["uid"] != head["image"]:
            raise ValueError(f"image row {head['image']} of {head['uid']} is not in the build")
        if head["status"] == schema.DropReason.SEMANTIC_DUPLICATE:
            for r in live:  # the image left the dataset: its other captions go with it
                dropped["part_index"].append(r["part_index"])
                dropped["uid"].append(r["uid"])
                dropped["status"].append(head["status"])
                dropped["dup_of"].append(head["dup_of"])
                error = f"its image (image_of) is a semantic duplicate: {head['error']}"
                dropped["error"].append(error)
        elif live:
            groups["part_index"].append(head["part_index"])
            groups["row"].append(head["row"])
            groups["uid"].append(head["uid"])
            groups["captions"].append([r["caption"] for r in live])
            groups["uids"].append([r["uid"] for r in live])
            groups["parts"].append([r["part_index"] for r in live])
    for kind, columns, table_schema in (("groups", groups, GROUPS), ("dropped", dropped, DROPPED)):
        table = pa_table(columns, table_schema).sort_by("part_index")
        write_parquet_atomic(table, task.path(kind), row_group_size=10_000)
    return PartStats(len(rows), len(rows) - len(dropped["uid"]))


def _runs(rows: list[dict], key: str):
    """Consecutive runs of `rows` (sorted by `key`) with the same `key`."""
    start = 0
    while start < len(rows):
        end = start + 1
        while end < len(rows) and rows[end][key] == rows[start][key]:
            end += 1
        yield rows[start:end]
        start = end


def pa_table(columns: dict, table_schema):
    return pa.table({n: pa.array(columns[n], table_schema.field(n).type) for n in columns})


def place_part(task: PhaseTask) -> PartStats:
    """The part's images numbered in source order, and every caption row's place."""
    import pyarrow.compute as pc

    rows = _input_rows(task, task.unit, ["uid", "caption", "status", "image_of"])
    alone = rows.filter(
        pc.and_(pc.equal(rows["status"], schema.PENDING), pc.is_null(rows["image_of"]))
    )
    groups = read_part(task.layout, task.stage, "groups", task.figures["buckets"], task.part_index)
    me = task.part_index
    images = [  # (image row, its uid, captions, their rows' uids, their parts)
        (row, uid, [caption], [uid], [me])
        for row, uid, caption in zip(*_lists(alone, "row", "uid", "caption"), strict=True)
    ]
    images += zip(*_lists(groups, "row", "uid", "captions", "uids", "parts"), strict=True)
    images.sort(key=lambda image: image[0])
    placed = {name: [] for name in PLACED.names}
    for number, (_, _, _, uids, parts) in enumerate(images):
        for caption_index, (uid, part) in enumerate(zip(uids, parts, strict=True)):
            placed["part_index"].append(part)
            placed["uid"].append(uid)
            placed["home"].append(me)
            placed["number"].append(number)
            placed["caption_index"].append(caption_index)
    table = pa_table(
        {n: [image[i] for image in images] for i, n in enumerate(IMAGES.names)}, IMAGES
    )
    write_parquet_atomic(table, task.path("images"), row_group_size=10_000)
    table = pa_table(placed, PLACED)
    here = pc.equal(table["part_index"], me)
    write_parquet_atomic(table.filter(here), task.path("placed"), row_group_size=10_000)
    # captions in other parts go through route's buckets (by their part), so a publish task
    # reads one file of them, not one per part of the build
    away = table.filter(pc.invert(here))
    bucket = pa.array(_part_bucket(away["part_index"], task.figures["buckets"]), pa.int64())
    away = away.append_column("bucket", bucket).sort_by("bucket")
    write_parquet_atomic(away, task.path("away"), row_group_size=10_000)
    n = len(placed["uid"])
    return PartStats(n, n, extra={"images": len(images), "captions": n})


def _part_bucket(part_index, buckets: int):
    import numpy as np

    return np.asarray(part_index, dtype=np.int64) % buckets


def route_bucket(task: PhaseTask) -> PartStats:
    """Bucket b of every part's captions placed away from home: route/<b>, by their part."""
    rows = read_bucket(task, "away", int(task.unit), PLACED.names)
    table = rows.sort_by("part_index")
    write_parquet_atomic(table, task.path("route"), row_group_size=10_000)
    return PartStats(table.num_rows, table.num_rows)


def _lists(table, *names):
    return [table[name].to_pylist() for name in names]


def part_images(layout, part: str, first: int, end: int):
    """Images [first, end) of `part` in number order: (image row uid, its captions)."""
    from pipeline.stages.phases import phase_dir

    table = storage.read_table(phase_dir(layout, "shards") / "images" / f"{part}.parquet")
    table = table.slice(first, end - first)
    return list(zip(table["uid"].to_pylist(), table["captions"].to_pylist(), strict=True))


def row_places(layout, figures: dict, parts: list[str], part_index: int) -> dict[str, dict]:
    """uid → its shard, shard_row and caption_index, or the drop its image took it with, for
    the rows of part `part_index` that were pending."""
    from pipeline.shards import shard_basename
    from pipeline.stages.phases import phase_dir

    folder, where = phase_dir(layout, "shards"), [("part_index", "=", part_index)]
    bucket = part_index % figures["buckets"]
    placed = pa.concat_tables(
        [
            storage.read_table(folder / "placed" / f"{parts[part_index]}.parquet"),
            storage.read_table(folder / "route" / f"{bucket}.parquet", filters=where),
        ]
    )
    size, out = figures["shard_size"], {}
    for uid, home, number, caption_index in zip(
        *_lists(placed, "uid", "home", "number", "caption_index"), strict=True
    ):
        g = figures["offsets"][parts[home]] + number
        shard = f"{shard_basename(g // size)}.parquet"
        out[uid] = {"shard": shard, "shard_row": g % size, "caption_index": caption_index}
    dropped = read_part(layout, "shards", "dropped", figures["buckets"], part_index)
    for record in dropped.to_pylist():
        out[record["uid"]] = {k: record[k] for k in ("status", "dup_of", "error")}
    return out


PHASES = {
    "captions": captions_part,
    "gather": gather_bucket,
    "place": place_part,
    "route": route_bucket,
}
