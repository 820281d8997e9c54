"""Sample cards for the report: kept rows with thumbnails read from the shards, dropped rows per
reason with thumbnails from work/images/ where the image got that far (duplicates, leaks, ...).

Nothing is fetched: an image that is not on disk is shown as its URL and error. The choice of rows
is the lowest uids (uids are hashes, so this is a fixed pseudo-random sample): the same dataset
gives the same report."""

import base64
import bisect
import io
import logging
from dataclasses import dataclass
from pathlib import Path

from manifests import schema, storage
from manifests.layout import DatasetLayout

log = logging.getLogger(__name__)
MAX_THUMB_SOURCE_PIXELS = 50_000_000  # never decode more than this (the images are ours, still)


@dataclass
class Sample:
    uid: str
    url: str | None
    caption: str | None
    status: str
    error: str | None
    lang: str | None
    width: int | None
    height: int | None
    queries: list[str]
    dup_of: str | None
    leak_of: str | None
    image: str | None = None  # a data: URI of the thumbnail, when the bytes are on disk


_COLUMNS = "uid, url, caption, status, error, lang, width, height, matched_queries, dup_of, leak_of"


def thumbnail(data: bytes, px: int) -> str | None:
    """Encoded image bytes → a JPEG data URI at most px × px; None if it does not decode."""
    jpeg = thumbnail_jpeg(data, px)
    return None if jpeg is None else "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def thumbnail_jpeg(
    data: bytes, px: int, max_pixels: int = MAX_THUMB_SOURCE_PIXELS, quality: int = 80
) -> bytes | None:
    """Encoded image bytes → JPEG bytes at most px × px (transparency on white); None if it does
    not decode or declares more than `max_pixels` pixels (checked before decoding)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > max_pixels:
                return None
            image.draft("RGB", (px, px))  # JPEG: decode at a reduced scale, much faster
            image.thumbnail((px, px))
            if image.mode in ("RGBA", "LA", "P"):
                image = image.convert("RGBA")
                background = Image.new("RGB", image.size, "white")
                background.paste(image, mask=image.getchannel("A"))
                image = background
            out = io.BytesIO()
            image.convert("RGB").save(out, "JPEG", quality=quality, optimize=True)
    except Exception as exc:  # PIL raises many types on bad input; a card without image is fine
        log.debug("thumbnail failed: %s", exc)
        return None
    return out.getvalue()


def _rows_from_parquet(path: Path, rows: list[int], columns: list[str]) -> dict[int, dict]:
    """Rows (by index) of a Parquet file, reading only the row groups that hold them."""

    pf = storage.parquet_file(path)
    starts, start = [], 0
    for g in range(pf.metadata.num_row_groups):
        starts.append(start)
        start += pf.metadata.row_group(g).num_rows
    wanted: dict[int, list[int]] = {}
    for row in rows:
        if 0 <= row < start:
            wanted.setdefault(bisect.bisect_right(starts, row) - 1, []).append(row)
    found = {}
    for group, group_rows in wanted.items():
        table = pf.read_row_group(group, columns=columns)
        for row in group_rows:
            found[row] = table.slice(row - starts[group], 1).to_pylist()[0]
    return found


def _image_column(path: Path) -> str | None:

    names = storage.parquet_file(path).schema_arrow.names
    return next((c for c in schema.IMAGE_COLUMNS if c in names), None)


def _sample(row: tuple) -> Sample:
    uid, url, caption, status, error, lang, width, height, queries, dup_of, leak_of = row[:11]
    return Sample(
        uid, url, caption, status, error, lang, width, height, list(queries or []), dup_of, leak_of
    )


def kept_samples(con, layout: DatasetLayout, limit: int, px: int) -> list[Sample]:
    """One card per kept image: its first caption's row (an image stored with several
    captions is one shard row; its shard uid is the image row's, `image_of`)."""
    rows = con.execute(
        f"""SELECT {_COLUMNS}, shard, shard_row, coalesce(image_of, uid) FROM samples
            WHERE status = '{schema.KEPT}' AND shard IS NOT NULL
              AND coalesce(caption_index, 0) = 0
            ORDER BY uid LIMIT {int(limit)}"""
    ).fetchall()
    samples = [_sample(r) for r in rows]
    by_shard: dict[str, list[tuple[int, Sample]]] = {}
    image_uid = {}
    for sample, row in zip(samples, rows, strict=True):
        by_shard.setdefault(row[11], []).append((row[12], sample))
        image_uid[sample.uid] = row[13]
    for shard, items in by_shard.items():
        path = layout.shards / Path(shard).name  # a file name, never a path out of shards/
        try:
            column = _image_column(path) if path.is_file() else None
            if column is None:
                continue
            records = _rows_from_parquet(path, [r for r, _ in items], ["uid", column])
        except Exception as exc:  # a shard being written or damaged: its cards show text
            log.warning("could not read %s: %s", path, exc)
            continue
        for row, sample in items:
            record = records.get(row)
            if record and record["uid"] == image_uid[sample.uid] and record[column]:
                sample.image = thumbnail(record[column], px)
    return samples


def _sample_files(layout: DatasetLayout) -> list:
    from manifests.commit import committed_files

    return committed_files(layout, "samples")


def dropped_samples(layout: DatasetLayout, per_reason: int, px: int) -> dict[str, list[Sample]]:
    """status → up to `per_reason` dropped rows, with thumbnails where work/images/ has them."""
    files = _sample_files(layout)
    if not files or per_reason <= 0:
        return {}
    file_list = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    rows = (
        storage.duckdb_connect(layout.root)
        .execute(
            f"""SELECT {_COLUMNS}, part FROM (
                SELECT {_COLUMNS}, split_part(parse_filename(filename), '.', 1) AS part,
                       row_number() OVER (PARTITION BY status ORDER BY uid) AS n
                FROM read_parquet([{file_list}], filename = true, union_by_name = true)
                WHERE status NOT IN ('{schema.KEPT}', '{schema.PENDING}'))
            WHERE n <= {int(per_reason)} ORDER BY status, uid"""
        )
        .fetchall()
    )
    out: dict[str, list[Sample]] = {}
    wanted: dict[str, dict[str, Sample]] = {}  # part → uid → sample whose image may be stored
    for row in rows:
        sample = _sample(row)
        out.setdefault(sample.status, []).append(sample)
        # the image stage read it: its bytes may be stored (never shown once its site opted out:
        # a recheck leaves the bytes in work/ and the shards, not in front of anyone)
        if sample.width is not None and sample.status != "opted_out":
            wanted.setdefault(row[11], {})[sample.uid] = sample
    for part, by_uid in wanted.items():
        _attach_stored_images(layout, part, by_uid, px)
    return out


def _attach_stored_images(layout: DatasetLayout, part: str, by_uid: dict, px: int) -> None:

    from pipeline.stages import registry

    path = registry.get("images").file_path(layout, Path(part).name, "images")
    if not path.is_file():
        return
    try:
        uids = storage.read_table(path, columns=["uid"])["uid"].to_pylist()
        index = [i for i, uid in enumerate(uids) if uid in by_uid]
        for record in _rows_from_parquet(path, index, ["uid", "image"]).values():
            if record["image"]:
                by_uid[record["uid"]].image = thumbnail(record["image"], px)
    except Exception as exc:  # a work file of an interrupted build: the cards show text
        log.warning("could not read stored images from %s: %s", path, exc)
