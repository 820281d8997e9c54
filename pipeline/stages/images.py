"""Stage `images`: every pending row gets what the fetch stage found at its URL.

Per part: the part's URLs and the fetch parts that hold them (work/fetch/where/part=<part>/),
then those fetch results: the row's status (pending when its image is kept, else the reason),
sizes, sha256 and phash; the encoded image, its EXIF and the leak check's hashes go to
work/images/<part>.images.parquet (IMAGE_COLUMNS), which dedup, clip and shards read. Rows that
share a URL share its one fetch."""

from manifests import schema
from pipeline.stages.base import PartOutput, Stage

# work/images/<part>.images.parquet: what later stages need of a kept image beyond its manifest row
IMAGE_COLUMNS = {
    "uid": "string",
    "image": "binary",
    "exif": "string",
    "phash256": "string",
    "phash256_trim": "string",
}
ROW_COLUMNS = (
    "status",
    "error",
    "width",
    "height",
    "original_width",
    "original_height",
    "sha256",
    "phash",
)


class ImagesStage(Stage):
    name, inputs = "images", ("text", "fetch")

    def enabled(self, config) -> bool:
        return config.fetch

    def process(self, task, rows) -> PartOutput:
        import pyarrow as pa

        rows = rows.to_pylist()
        fetched = self._fetched(task)
        images = {name: [] for name in IMAGE_COLUMNS}
        for row in rows:
            if row["status"] != schema.PENDING:
                continue
            outcome = fetched[row["url"]]
            row.update({k: outcome[k] for k in ROW_COLUMNS})
            if outcome["image"] is not None:
                images["uid"].append(row["uid"])
                for name in list(IMAGE_COLUMNS)[1:]:
                    images[name].append(outcome[name])
        image_schema = pa.schema([(n, IMAGE_COLUMNS[n]) for n in IMAGE_COLUMNS])
        return PartOutput(
            pa.Table.from_pylist(rows, schema=schema.SAMPLES),
            files={"images": pa.table(images, schema=image_schema)},
        )

    def _fetched(self, task) -> dict[str, dict]:
        """url -> its FETCHED row, for every pending URL of the part."""
        from manifests import storage

        where_dir = self.input_stage(task, "fetch").where_dir(task.layout, task.part)
        if not where_dir.is_dir():  # no pending row in this part
            return {}
        where = storage.parquet_dataset(where_dir, format="parquet").to_table().to_pylist()
        by_part: dict[tuple[int, int], list[str]] = {}
        for w in where:
            by_part.setdefault((w["lane"], w["sub"]), []).append(w["url"])
        fetched = {}
        for (lane, sub), urls in sorted(by_part.items()):
            table = self.read(
                task, "fetch", part=_part_name(lane, sub), filters=[("url", "in", urls)]
            )
            fetched.update((r["url"], r) for r in table.to_pylist())
        return fetched


def _part_name(lane: int, sub: int) -> str:
    from pipeline.stages.fetch import part_name

    return part_name(lane, sub)
