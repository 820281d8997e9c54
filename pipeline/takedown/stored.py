"""Removed images out of the training shards, their tar copies, the shards' index and the
embeddings with their FAISS index.

A shard is rewritten under its own name (img2dataset's `NNNNN.parquet`, which open_clip's brace
patterns, the manifests' `shard` column and every training run's frozen selection name), one
whole-object put, with the same row groups and every other row in its place: a removed row keeps
its key and uid, its image becomes empty bytes, its caption and url empty strings, its `status`
`removed`. So `shard_row` of every other row stays true and no manifest must change for them.
The tar loses the removed keys' members; `_stats.json` and `sizes.json` count what is left.
"""

from __future__ import annotations

import json
import logging

from manifests import schema, storage
from manifests.layout import atomic_path, write_json_atomic

log = logging.getLogger(__name__)


def rewrite_shard(path, rows: set[int], error: str, captions: dict | None = None) -> dict:
    """Empty `rows` (row indexes) of the shard at `path`, and null the `captions` (row → caption
    indexes) of rows that stay, `caption` becoming the first caption left; {rows, bytes,
    removed, keys, texts} (texts: key → the captions left, for the tar)."""
    import pyarrow.parquet as pq

    source = storage.parquet_file(path)
    arrow_schema = source.schema_arrow
    image = next(c for c in schema.IMAGE_COLUMNS if c in arrow_schema.names)
    compression = {name: "zstd" for name in arrow_schema.names}
    compression[image] = "none"  # as pipeline.shards writes them: images are compressed
    keys, offset, total, texts = [], 0, source.metadata.num_rows, {}
    captions = {r: c for r, c in (captions or {}).items() if r not in rows}
    if any(r < 0 or r >= total for r in [*rows, *captions]):
        raise ValueError(f"{path}: rows outside 0..{total - 1}")
    with atomic_path(path) as tmp:
        writer = pq.ParquetWriter(
            tmp,
            arrow_schema,
            compression=compression,
            write_statistics=[n for n in arrow_schema.names if n != image],
        )
        with writer:
            for group in range(source.metadata.num_row_groups):
                table = source.read_row_group(group)
                local = sorted(r - offset for r in rows if offset <= r < offset + table.num_rows)
                if local:
                    keys += [table["key"][i].as_py() for i in local]
                    table = _emptied(table, local, image, error)
                mine = {r - offset: c for r, c in captions.items() if 0 <= r - offset < len(table)}
                if mine:
                    table, changed = _without_captions(table, mine)
                    texts.update(changed)
                writer.write_table(table, row_group_size=max(1, table.num_rows))
                offset += table.num_rows
    size = path.stat().st_size
    return {"rows": total, "removed": len(rows), "keys": keys, "bytes": size, "texts": texts}


def _without_captions(table, rows: dict[int, set[int]]):
    """`table` with caption indexes `rows[i]` of row i nulled in `captions` (their places kept:
    the manifests' caption_index of the others stays true) and `caption` the first left."""
    import pyarrow as pa

    if "captions" not in table.column_names:  # a shard of before: one caption per image
        return table, {}
    captions = table["captions"].to_pylist()
    first = table["caption"].to_pylist()
    changed = {}
    for i, gone in rows.items():
        captions[i] = [None if k in gone else c for k, c in enumerate(captions[i] or [])]
        first[i] = next((c for c in captions[i] if c is not None), "")
        changed[table["key"][i].as_py()] = captions[i]
    at = table.column_names.index
    table = table.set_column(at("captions"), "captions", pa.array(captions, pa.list_(pa.string())))
    table = table.set_column(at("caption"), "caption", pa.array(first, pa.string()))
    return table, changed


def _emptied(table, local: list[int], image: str, error: str):
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = np.zeros(table.num_rows, dtype=bool)
    mask[local] = True
    mask = pa.array(mask)
    blank = {image: b"", "caption": "", "url": "", "status": schema.DropReason.REMOVED.value}
    blank["error_message"] = error
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if field.name in blank:
            value = pa.scalar(blank[field.name], field.type)
        elif field.name in ("key", "uid"):
            columns.append(column)
            continue
        else:  # sizes, exif, sha256: nothing of the image is left
            value = pa.scalar(None, field.type)
        columns.append(pc.if_else(mask, value, column.combine_chunks()))
    return pa.Table.from_arrays(columns, schema=table.schema)


def rewrite_tar(path, keys: set[str], texts: dict | None = None) -> None:
    """The tar at `path` without the members of `keys` (`<key>.<ext>`), and with the captions
    `texts` (key → captions left, None where taken down) in `<key>.txt` and `<key>.json`, put
    whole."""
    import io
    import tarfile

    texts = texts or {}

    with (
        storage.local_copy(path) as local,
        atomic_path(path) as tmp,
        tarfile.open(local) as source,
        tarfile.open(tmp, "w") as out,
    ):
        for member in source:
            key, _, ext = member.name.partition(".")
            if key in keys:
                continue
            data = source.extractfile(member) if member.isfile() else None
            if key in texts and ext in ("txt", "json"):
                body = _restated(data.read(), ext, texts[key])
                member.size, data = len(body), io.BytesIO(body)
            out.addfile(member, data)


def _restated(body: bytes, ext: str, captions: list) -> bytes:
    """A tar member's text with its captions taken down: txt = the first caption left."""
    first = next((c for c in captions if c is not None), "")
    if ext == "txt":
        return first.encode()
    meta = json.loads(body)
    meta["caption"], meta["captions"] = first, captions
    return json.dumps(meta, indent=4).encode()


def recount_stats(path, removed: int) -> None:
    """img2dataset's `_stats.json` of a shard less `removed` successes (counted as removed)."""
    stats = json.loads(path.read_text())
    stats["successes"] = max(0, int(stats.get("successes", 0)) - removed)
    status = dict(stats.get("status_dict", {}))
    status["success"] = max(0, int(status.get("success", 0)) - removed)
    status["removed"] = int(status.get("removed", 0)) + removed
    stats["status_dict"] = status
    write_json_atomic(stats, path)


def empty_embeddings(folder, shard: str, rows: set[int]) -> bool:
    """NaN the vectors (and null the score) of `rows` of one shard's embeddings; False if the
    shard has none. NaN is the embeddings' own 'no vector' (an image that did not decode): the
    index leaves such rows out, and `pipeline embed` keeps the file (same row count)."""
    import numpy as np

    from pipeline.embed import store

    part = store.part_path(folder, shard)
    if not part.exists():
        return False
    table = storage.read_table(part)
    take = np.isin(np.asarray(table["shard_row"]), sorted(rows))
    if not take.any():
        return False
    image, text = store.to_matrix(table["image"]), store.to_matrix(table["text"])
    image[take], text[take] = np.nan, np.nan
    score = table["clip_score"].to_numpy(zero_copy_only=False).astype(np.float32)
    score[take] = np.nan
    uids = table["uid"].to_pylist()
    emb = _Pairs(image, text, score)
    store.write_part(part, uids, table["shard"][0].as_py(), emb)
    return True


class _Pairs:
    """The fields store.write_part reads of an embed.encode.PairEmbeddings."""

    def __init__(self, image, text, score):
        self.image, self.text, self.score = image, text, score
