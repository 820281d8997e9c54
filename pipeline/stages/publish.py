"""Stage `publish`: the last stage's rows become the dataset's manifests, DIR/manifests/samples/.

Every row still pending gets status `kept` and its place in the shards (`shard`, `shard_row`,
by arithmetic on the shards stage's plan: no row is looked up). With --no-fetch the text stage's
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

        from pipeline.stages.shards import placement, read_plan

        stats = PartStats(extra={"from": task.inputs[0]})
        if task.inputs[1] != "shards":  # --no-fetch: no shards, nothing is kept yet
            return PartOutput(rows, stats=stats)
        out = rows.to_pylist()
        pending = [row for row in out if row["status"] == schema.PENDING]
        for row, (shard, shard_row) in zip(
            pending, placement(read_plan(task.layout), task.part, len(pending)), strict=True
        ):
            row["status"], row["shard"], row["shard_row"] = schema.KEPT, shard, shard_row
        return PartOutput(pa.Table.from_pylist(out, schema=schema.SAMPLES), stats=stats)
