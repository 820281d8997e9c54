"""Stage `shards`: the images of the rows still pending, in training shards, each stored once
with every caption kept for it.

The plan numbers the images (pipeline/stages/shardgroups.py: an image with several caption
rows is gathered across parts into one, under its image row's part) and counts each part's;
images are numbered in source order and cut into shards of `shard_size`, so shard i holds
images [i*size, (i+1)*size) and its content does not depend on which task wrote it. One task
per shard reads its images' rows and the encoded images the `images` stage stored, and writes
the shard with img2dataset's columns, `captions` and `_stats.json` (pipeline.shards). The
`publish` stage then gives each manifest row its shard, row and caption_index."""

from dataclasses import dataclass

from manifests import commit, schema
from manifests.layout import write_json_atomic
from pipeline.stages.base import PartOutput, PartStats, PartTask, Stage, StageRun


@dataclass(frozen=True)
class ShardTask(PartTask):
    index: int = 0
    ranges: tuple[tuple[str, int, int], ...] = ()  # (part, first, end) of its images' numbers


def shard_part(index: int) -> str:
    return f"shard-{index:05d}"


def read_plan(layout) -> dict:
    """{"offsets": {part: number of its first image}, "total" (images), "shard_size",
    "buckets" (of the gather phase), "captions" (caption rows placed)}."""
    import json

    return json.loads((layout.stage_dir(ShardsStage.name) / "plan.json").read_text())


class ShardsStage(Stage):
    name, inputs, samples = "shards", ("clip", "images"), False
    reads_part_rows = False  # a shard's rows come from several parts

    def enabled(self, config) -> bool:
        return config.fetch

    def plan(self, run: StageRun) -> None:
        from pipeline.stages.shardgroups import plan_phases

        write_json_atomic(plan_phases(run), run.dir / "plan.json")

    def run_phase(self, task) -> PartStats:
        from pipeline.stages.shardgroups import PHASES

        return PHASES[task.phase](task)

    def all_parts(self, run: StageRun) -> list[str]:
        plan = read_plan(run.layout)
        return [shard_part(i) for i in range(-(-plan["total"] // plan["shard_size"]))]

    def tasks(self, run: StageRun) -> list[PartTask]:
        plan = read_plan(run.layout)
        size, parts = plan["shard_size"], run.parts
        ends = [plan["offsets"][p] for p in parts[1:]] + [plan["total"]]
        tasks = []
        for index, part_name in enumerate(self.all_parts(run)):
            if run.is_done(part_name):
                continue
            low, high = index * size, (index + 1) * size
            ranges = tuple(
                (
                    p,
                    max(low, plan["offsets"][p]) - plan["offsets"][p],
                    min(high, end) - plan["offsets"][p],
                )
                for p, end in zip(parts, ends, strict=True)
                if plan["offsets"][p] < high and end > low
            )
            tasks.append(run.task(part_name, ShardTask, index=index, ranges=ranges))
        return tasks

    def process(self, task: ShardTask, rows) -> PartOutput:
        from pipeline.images.process import ProcessedImage
        from pipeline.shards import ShardWriter

        config = task.config
        writer = ShardWriter(
            task.layout.shards,
            task.index,
            config.images.encode_format,
            webdataset=config.shards.webdataset,
            samples_per_shard=config.shards.shard_size,
        )
        with writer:
            for row, captions, data, exif in self._rows(task):
                image = ProcessedImage(
                    "kept",
                    image=data,
                    encode_format=config.images.encode_format,
                    width=row["width"],
                    height=row["height"],
                    original_width=row["original_width"],
                    original_height=row["original_height"],
                    sha256=row["sha256"],
                    exif=exif,
                )
                writer.write(row["uid"], row["url"], captions[0], image, captions=captions)
        n = len(writer)
        groups = -(-n // writer.row_group_size)
        extra = {"shard": writer.name, "rows": n, "row_groups": groups}
        extra["bytes"] = writer.parquet_path.stat().st_size
        written = {"shard": writer.parquet_path, "stats": writer.stats_path}
        if writer.tar_path is not None:
            written["tar"] = writer.tar_path
        files = {kind: commit.relative(task.layout, path) for kind, path in written.items()}
        return PartOutput(
            None,
            stats=PartStats(rows_in=n, rows_out=n, extra=extra, files=files),
        )

    def _rows(self, task: ShardTask):
        """(samples row of the image row, its captions, encoded image, exif) of the shard's
        images, in order."""
        from pipeline.stages.shardgroups import part_images

        for part, first, end in task.ranges:
            placed = part_images(task.layout, part, first, end)
            uids = [uid for uid, _ in placed]
            if not uids:  # a part without images inside the shard's range
                continue
            table = self.read(task, "clip", part=part, filters=[("uid", "in", uids)])
            rows = {row["uid"]: row for row in table.to_pylist()}
            stored = self.read(
                task,
                "images",
                "images",
                part=part,
                columns=["uid", "image", "exif"],
                filters=[("uid", "in", uids)],
            )
            images = dict(
                zip(
                    stored["uid"].to_pylist(),
                    zip(stored["image"].to_pylist(), stored["exif"].to_pylist(), strict=True),
                    strict=True,
                )
            )
            for uid, captions in placed:
                yield (rows[uid], captions, *images[uid])

    def summarise(self, run: StageRun, parts) -> dict | None:
        """The shards' index (shard, rows, row groups, bytes: the `shards` view, so a query
        reads no shard), under a new name each time; the dataset commit names it."""
        import pyarrow as pa

        from manifests.layout import write_parquet_atomic

        if run.config.shards.webdataset:
            from pipeline.shards import write_webdataset_sizes

            write_webdataset_sizes(run.layout.shards)  # open_clip_train reads it
        rows = [
            {k: stats.extra.get(k) for k in ("shard", "rows", "row_groups", "bytes")}
            for stats in parts.values()
            if "rows" in stats.extra
        ]
        path = run.dir / f"index-{commit.new_token()}.parquet"
        write_parquet_atomic(pa.Table.from_pylist(rows, schema=schema.SHARDS), path)
        return {"index": commit.relative(run.layout, path)}
