"""Stage `images`: every pending row gets what the fetch stage found at its URL.

Per part: the part's URLs and the fetch parts that hold them (work/fetch/where/part=<part>/),
then those fetch results: the row's status (pending when its image is kept, else the reason),
sizes, sha256 and phash; the encoded image, its EXIF and the leak check's hashes go to
work/images/<part>.images.parquet (IMAGE_COLUMNS), which dedup, clip and shards read. Rows that
share a URL share its one fetch. A row whose page the build did not read (URL lists, archives)
also gets its page's per-origin file findings (from the dataset's store), and is opted out when
they refuse."""

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
    "consent",
)


class ImagesStage(Stage):
    name, inputs = "images", ("text", "fetch")

    def enabled(self, config) -> bool:
        return config.fetch

    def process(self, task, rows) -> PartOutput:
        import pyarrow as pa

        rows = rows.to_pylist()
        fetched = self._fetched(task)
        pages = _stored_files(task, rows)
        images = {name: [] for name in IMAGE_COLUMNS}
        for row in rows:
            if row["status"] != schema.PENDING:
                continue
            outcome = fetched[row["url"]]
            row.update({k: outcome.get(k) for k in ROW_COLUMNS})  # consent: not in old parts
            if pages is not None and row["page_url"]:
                _page_consent(row, pages)
            if outcome["image"] is not None and row["status"] == schema.PENDING:
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


def _stored_files(task, rows):
    """The stored per-origin files of the part's pages, when the build did not read its pages
    itself (a crawl checked them as it fetched each page); None when there is nothing to do."""
    if task.config.source.seeds or not task.config.net.respect_robots:
        return None
    from pipeline.net.consent import StoredFiles
    from pipeline.net.robots import origin_of
    from pipeline.origins import read_records

    origins = set()
    for row in rows:
        if row["status"] == schema.PENDING and row["page_url"]:
            try:
                origins.add(origin_of(row["page_url"]))
            except (ValueError, TypeError):
                continue
    return StoredFiles(read_records(task.layout, origins), task.config.net) if origins else None


def _page_consent(row: dict, pages) -> None:
    """Add the page's findings to the row's; a refusal opts a kept image's row out."""
    from pipeline.net.consent import opt_out_error, rows

    found = pages.page_findings(row["page_url"])
    row["consent"] = (row["consent"] or []) + rows(found, "page")
    refused = opt_out_error(found)
    if refused and row["status"] == schema.PENDING:
        row["status"], row["error"] = "opted_out", "page " + refused


def _part_name(lane: int, sub: int) -> str:
    from pipeline.stages.fetch import part_name

    return part_name(lane, sub)
