"""Stage `images`: fetch, check, resize and hash the image of every still-pending candidate.

One task per part. Inside a task the fetches are asynchronous (hundreds in flight, the
fetcher's per-host limits, robots.txt and address policy apply as for pages) and the decode and
resize work runs on a small thread pool beside the event loop. Output per part:
work/images/<part>.parquet (the samples rows, updated) and work/images/<part>.images.parquet
(uid -> encoded image bytes and hashes, IMAGE_COLUMNS), then the part's marker: a rerun fetches
no finished part again."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

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
MAX_QUEUED = 32  # fetched image bodies waiting to be resized, per task (memory bound)
# Fetch statuses that are manifest statuses as they are; anything else is `fetch_failed`.
FETCH_STATUSES = {"robots_disallowed", "blocked_address", "too_large", "fetch_failed"}


def _outcome(result, image_config, user_agent_token: str) -> dict:
    """One FetchResult → the columns of its samples row (plus `image` bytes when kept)."""
    from pipeline.dedup.hashes import image_hashes_from_bytes
    from pipeline.images.process import process_image
    from pipeline.net.robots import x_robots_opt_out

    if result.status != "ok":
        status = result.status if result.status in FETCH_STATUSES else "fetch_failed"
        return {"status": status, "error": result.error}
    if x_robots_opt_out(result.headers, user_agent_token):
        return {"status": "opted_out", "error": "X-Robots-Tag noai/noimageai on the image"}
    image = process_image(result.body, result.content_type, image_config)
    row = {
        "status": schema.PENDING if image.kept else image.status,
        "error": image.error,
        "width": image.width,
        "height": image.height,
        "original_width": image.original_width,
        "original_height": image.original_height,
        "sha256": image.sha256,
    }
    if image.kept:
        row["image"] = image.image
        row["exif"] = image.exif
        # Perceptual hashes of the encoded output (JPEGs decode at reduced scale for this):
        # phash goes to the manifest, the 256-bit ones serve the leak check (pipeline.dedup).
        row.update(image_hashes_from_bytes(image.image))
    return row


async def _fetch_part(urls: list[str], fetch_config, image_config, resolver) -> list[dict]:
    from pipeline.net.batch import iter_fetch
    from pipeline.net.fetch import Fetcher

    outcomes: list[dict | None] = [None] * len(urls)
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="resize") as pool:
        async with Fetcher(fetch_config, resolver=resolver) as fetcher:
            queued: dict[asyncio.Future, int] = {}
            async for index, result in iter_fetch(fetcher, urls, max_bytes=image_config.max_bytes):
                future = loop.run_in_executor(
                    pool, _outcome, result, image_config, fetch_config.user_agent_token
                )
                queued[future] = index
                # Bounded: fetched bodies wait for the resize threads, at most MAX_QUEUED of them.
                while len(queued) >= MAX_QUEUED:
                    done, _ = await asyncio.wait(queued, return_when=asyncio.FIRST_COMPLETED)
                    for future in done:
                        outcomes[queued.pop(future)] = future.result()
            for future, index in queued.items():
                outcomes[index] = await future
    return outcomes


class ImagesStage(Stage):
    name, inputs = "images", ("text",)

    def enabled(self, config) -> bool:
        return config.fetch

    def process(self, task, rows) -> PartOutput:
        import pyarrow as pa

        rows = rows.to_pylist()
        todo = [i for i, row in enumerate(rows) if row["status"] == schema.PENDING]
        config = task.config
        outcomes = asyncio.run(
            _fetch_part(
                [rows[i]["url"] for i in todo], config.image_fetch(), config.images, task.resolver
            )
        )
        images = {name: [] for name in IMAGE_COLUMNS}
        for i, outcome in zip(todo, outcomes, strict=True):
            stored = {name: outcome.pop(name, None) for name in list(IMAGE_COLUMNS)[1:]}
            rows[i].update(outcome)
            if stored["image"] is not None:
                for name, value in (("uid", rows[i]["uid"]), *stored.items()):
                    images[name].append(value)
        image_schema = pa.schema([(n, IMAGE_COLUMNS[n]) for n in IMAGE_COLUMNS])
        return PartOutput(
            pa.Table.from_pylist(rows, schema=schema.SAMPLES),
            files={"images": pa.table(images, schema=image_schema)},
        )
