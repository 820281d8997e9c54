"""Taking removed rows' content out of a Parquet table, whatever stage wrote it.

A table is recognised by its columns, not by its stage, so a stage added later is covered:
- rows with a `uid` (samples manifests and every stage part that carries them): by uid;
- rows with `url` and `caption` but no uid (the sources stage's and the crawl's candidates):
  by the uid of the pair;
- pages (`url`, `final_url`, `depth`): by the page's URL;
- anything else with a `url` and content (the fetch stage's parts, keyed by image URL): by the
  image URLs that leave the dataset (no row of theirs is left);
- and in a table of images with their `captions` and the `uids` of their rows (the shards
  stage's work files), a removed row's caption is nulled in the list.
A matched row keeps its place (row counts, positions and the stage markers' counts stay true)
and loses its content: every binary column (image bytes, file bodies), its caption and exif,
its shard and shard row; its `status` becomes `removed` and its `error` says why. Its url,
page_url, uid and hashes stay: they say what was removed, and let a later request find it.
"""

from __future__ import annotations

from dataclasses import dataclass

from manifests import schema

TEXT_CONTENT = ("caption", "captions", "exif", "title", "text", "alt")  # nulled when matched
NULLED_REFS = ("shard", "shard_row")


@dataclass(frozen=True)
class Targets:
    uids: frozenset[str]  # caption rows removed
    urls: frozenset[str]  # image URLs none of whose rows is left: their bytes leave
    pages: frozenset[str]  # page URLs removed (urls and domains requests)
    error: str  # the removed rows' `error`


def key_columns(names: list[str], types: dict) -> list[str] | None:
    """The columns a table's matching reads (None: nothing of a removed row can be in it)."""
    if "uid" in names:
        return ["uid"]
    if {"url", "caption"} <= set(names):
        return ["url", "caption"]
    if {"url", "final_url", "depth"} <= set(names):
        return ["url", "final_url"]
    if "url" in names and any(_is_binary(types[n]) for n in names):
        return ["url"]
    return None


def matched(keys, targets: Targets):
    """A boolean array over the rows of `keys` (the key_columns of a table)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def among(column, values) -> pa.Array:
        found = pc.is_in(column, value_set=pa.array(sorted(values), pa.string()))
        return pc.fill_null(found, False)

    names = keys.column_names
    if names == ["uid"]:
        return among(keys["uid"], targets.uids)
    if names == ["url", "caption"]:
        uids = [
            schema.sample_uid(u, c) if u is not None and c is not None else None
            for u, c in zip(keys["url"].to_pylist(), keys["caption"].to_pylist(), strict=True)
        ]
        return among(pa.array(uids, pa.string()), targets.uids)
    if names == ["url", "final_url"]:
        return pc.or_(among(keys["url"], targets.pages), among(keys["final_url"], targets.pages))
    return among(keys["url"], targets.urls)


def scrub(table, mask, error: str):
    """`table` with the content of the rows under `mask` taken out (see the module doc)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks()
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        column = column.combine_chunks()
        name = field.name
        if _is_binary(field.type) or name in TEXT_CONTENT or name in NULLED_REFS:
            column = pc.if_else(mask, pa.scalar(None, field.type), column)
        elif name == "status" and pa.types.is_string(field.type):
            column = pc.if_else(mask, schema.DropReason.REMOVED.value, column)
        elif name in ("error", "error_message") and pa.types.is_string(field.type):
            column = pc.if_else(mask, error, column)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=table.schema)


def _is_binary(arrow_type) -> bool:
    import pyarrow as pa

    return pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type)


def scrub_file(path, targets: Targets):
    """The scrubbed table of the Parquet file `path`, or None when no row of it is matched or
    its matched rows hold nothing any more (a removal run again)."""
    from manifests import storage

    meta = storage.parquet_file(path).schema_arrow
    names = meta.names
    table = None
    if {"captions", "uids"} <= set(names):  # the captions of one image, each with its row's uid
        table = storage.read_table(path)
        listed = scrub_caption_lists(table, targets)
    keys = key_columns(names, {f.name: f.type for f in meta})
    if keys is None:
        return None if table is None or listed.equals(table) else listed
    mask = matched(storage.read_table(path, columns=keys), targets)
    if not mask.to_numpy(zero_copy_only=False).any():
        return None if table is None or listed.equals(table) else listed
    original = table if table is not None else storage.read_table(path)
    cleaned = scrub(listed if table is not None else original, mask, targets.error)
    return None if cleaned.equals(original) else cleaned


def scrub_caption_lists(table, targets: Targets):
    """`table` with each removed row's caption nulled in place in the `captions` lists, found by
    the `uids` list beside them (the shards stage's work files: one row per image)."""
    import pyarrow as pa

    captions, uids = table["captions"].to_pylist(), table["uids"].to_pylist()
    changed = False
    for i, (texts, owners) in enumerate(zip(captions, uids, strict=True)):
        if texts and owners and any(u in targets.uids for u in owners):
            captions[i] = [
                None if u in targets.uids else c for c, u in zip(texts, owners, strict=True)
            ]
            changed = True
    if not changed:
        return table
    at = table.column_names.index("captions")
    return table.set_column(at, "captions", pa.array(captions, table.schema.field(at).type))
