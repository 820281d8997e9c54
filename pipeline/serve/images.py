"""Thumbnails for the explorer, behind signed URLs.

A page decides which rows may show an image (never one whose site opted out, never a removed
one) and signs each thumbnail URL with the server's secret and the dataset's committed version.
The thumbnail route only reads what a valid signature names: a shard row (its uid checked in the
shard), a row of a work/images/ part (a dropped row whose image got that far), or an eval image's
thumbnail the build stored in DIR/eval_thumbs.parquet. No request names a path: shard and part
names are reduced to a file name under their folder, and a new commit (a recheck, a takedown)
changes the version, so a URL signed before it stops working.
"""

import hashlib
import hmac
import os
from collections import OrderedDict
from pathlib import Path
from threading import Lock
from urllib.parse import urlencode

from manifests import schema, storage
from manifests.layout import DatasetLayout
from pipeline.report.thumbs import thumbnail_jpeg

SIZES = {"s": 192, "l": 384}  # grid and detail thumbnails (px, longest side)
NEVER_SHOWN = frozenset({"opted_out", schema.DropReason.REMOVED.value})
EVAL_THUMBS = "eval_thumbs.parquet"  # eval_id, jpg: written by the build's dedup stage
CACHE_ITEMS = 4096  # thumbnails kept in memory (~10 KB each)


class Thumbnails:
    def __init__(self, layout: DatasetLayout, max_bytes: int, max_pixels: int):
        self.layout, self.max_bytes, self.max_pixels = layout, max_bytes, max_pixels
        self.secret = os.urandom(32)  # per server: a URL is good while this server runs
        self._cache: OrderedDict = OrderedDict()
        self._lock = Lock()

    def _sign(self, version: str, fields: tuple) -> str:
        message = "\x1f".join(map(str, (version, *fields))).encode("utf-8")
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:32]

    def url(self, version: str, row: dict, size: str = "s") -> str | None:
        """The signed thumbnail URL of a grid or detail row, or None if it has no image to show."""
        if row.get("status") in NEVER_SHOWN:
            return None
        if row.get("shard") is not None and row.get("shard_row") is not None:
            # the shard row holds the image's uid: its image row's, for a caption beside it
            image = row.get("image_of") or row["uid"]
            fields = ("shard", Path(row["shard"]).name, int(row["shard_row"]), image)
        elif row.get("width") is not None and row.get("part"):  # the image stage decoded it
            fields = ("work", Path(row["part"]).name, 0, row["uid"])
        else:
            return None
        src, name, index, uid = fields
        query = {"src": src, "name": name, "row": index, "uid": uid, "size": size}
        return "/thumb?" + urlencode({**query, "sig": self._sign(version, fields)})

    def eval_url(self, version: str, eval_id: str, size: str = "l") -> str:
        fields = ("eval", eval_id, 0, "")
        query = {"src": "eval", "name": eval_id, "size": size}
        return "/thumb?" + urlencode({**query, "sig": self._sign(version, fields)})

    def get(self, version: str, params: dict) -> bytes | None:
        """The JPEG a signed URL names; None for a bad signature or an image not there."""
        src, name = params.get("src", ""), params.get("name", "")
        uid, size = params.get("uid", ""), params.get("size", "s")
        try:
            index = int(params.get("row", "0"))
        except ValueError:
            return None
        fields = (src, name, index, uid)
        if size not in SIZES or not hmac.compare_digest(
            params.get("sig", ""), self._sign(version, fields)
        ):
            return None
        key = (version, *fields, size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        data = self._source(src, name, index, uid)
        jpeg = None
        if data and len(data) <= self.max_bytes:
            jpeg = data if src == "eval" else thumbnail_jpeg(data, SIZES[size], self.max_pixels)
        with self._lock:
            self._cache[key] = jpeg
            if len(self._cache) > CACHE_ITEMS:
                self._cache.popitem(last=False)
        return jpeg

    def _source(self, src: str, name: str, index: int, uid: str) -> bytes | None:
        if src == "shard":
            return _shard_image(self.layout.shards / Path(name).name, index, uid)
        if src == "work":
            return _work_image(self.layout, Path(name).name, uid)
        if src == "eval":
            return _eval_image(self.layout.root / EVAL_THUMBS, name)
        return None


def _shard_image(path, index: int, uid: str) -> bytes | None:
    """The image of shard row `index`, if the row still holds `uid` (and was not emptied by a
    takedown: status `removed`, no bytes)."""
    import pyarrow as pa

    if not path.is_file():
        return None
    pf = storage.parquet_file(path)
    column = next((c for c in schema.IMAGE_COLUMNS if c in pf.schema_arrow.names), None)
    start = 0
    for group in range(pf.metadata.num_row_groups):
        rows = pf.metadata.row_group(group).num_rows
        if start <= index < start + rows:
            wanted = [column, "uid"] + (["status"] if "status" in pf.schema_arrow.names else [])
            record = pf.read_row_group(group, columns=wanted).slice(index - start, 1)
            record = pa.Table.to_pylist(record)[0]
            if record["uid"] != uid or record.get("status") == schema.DropReason.REMOVED:
                return None
            return record[column] or None
        start += rows
    return None


def _work_image(layout: DatasetLayout, part: str, uid: str) -> bytes | None:
    """A dropped row's image as the image stage stored it (work/images/<part>)."""
    import pyarrow.compute as pc

    from pipeline.stages import registry

    path = registry.get("images").file_path(layout, part, "images")
    if not path.is_file():
        return None
    table = storage.read_table(path, columns=["uid", "image"], filters=pc.field("uid") == uid)
    values = [v for v in table.column("image").to_pylist() if v]
    return values[0] if values else None


def _eval_image(path, eval_id: str) -> bytes | None:
    import pyarrow.compute as pc

    if not path.is_file():
        return None
    table = storage.read_table(path, filters=pc.field("eval_id") == eval_id)
    values = table.column("jpg").to_pylist()
    return values[0] if values else None
