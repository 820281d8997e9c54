"""Stage `publish`: the last stage's rows become the dataset's manifests, DIR/manifests/samples/.

Every row still pending gets status `kept` and its place in the shards (`shard`, `shard_row`
and `caption_index`, by arithmetic on the number the shards stage's plan gave its image), or
the drop its image was taken out with (pipeline/stages/shardgroups.py). With --no-fetch the text stage's
rows are published as they are (pending rows wait for the image stages). It is bookkeeping, not
a filter, so it has no row in the `stats` view. A part is published again when the stage it
publishes changed (a --no-fetch build continued into a full one)."""

from manifests import schema
from pipeline.stages.base import PartOutput, PartStats, PartTask, Stage, StageRun


class PublishStage(Stage):
    name, inputs = "publish", ("clip", "shards")
    in_stats = False

    def rows_target(self, layout, part: str):
        return layout.samples / f"{part}.parquet"

    def tasks(self, run: StageRun) -> list[PartTask]:
        def stale(part: str) -> bool:
            return not run.is_done(part) or run.part_stats(part).extra.get("from") != run.inputs[0]

        return [run.task(part) for part in run.parts if stale(part)]

    def process(self, task, rows) -> PartOutput:
        import pyarrow as pa

        from pipeline.stages.shards import read_plan

        stats = PartStats(extra={"from": task.inputs[0]})
        if task.inputs[1] != "shards":  # --no-fetch: no shards, nothing is kept yet
            return PartOutput(rows, stats=stats)
        from pipeline.stages.base import StageRun
        from pipeline.stages.shardgroups import row_places

        out = rows.to_pylist()
        plan = read_plan(task.layout)
        parts = StageRun(task.layout, self, task.inputs).parts
        places = row_places(task.layout, plan, parts, parts.index(task.part))
        for row in out:
            if row["status"] != schema.PENDING:
                continue
            place = places.get(row["uid"])
            if place is None:
                raise ValueError(f"row {row['uid']} of part {task.part} has no place in the shards")
            row.update(place)
            if "shard" in place:
                row["status"] = schema.KEPT
        return PartOutput(pa.Table.from_pylist(out, schema=schema.SAMPLES), stats=stats)
