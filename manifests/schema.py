"""pyarrow schemas of the dataset tables: the columns other parts of the project rely on."""

import hashlib

import pyarrow as pa

# Statuses a `samples` row can end with. `pending` is the one non-final status: a candidate that
# passed matching and balancing and waits for the image stages.
KEPT = "kept"
PENDING = "pending"
DROP_REASONS = (
    "robots_disallowed",
    "opted_out",
    "blocked_address",
    "fetch_failed",
    "not_an_image",
    "too_large",
    "too_small",
    "bad_aspect_ratio",
    "decode_failed",
    "language",
    "caption_length",
    "boilerplate_caption",
    "low_text_score",
    "over_query_cap",
    "no_query_match",
    "duplicate",
    "near_duplicate",
    "semantic_duplicate",
    "eval_leak",
    "low_clip_score",
)

# One row per unique (image url, caption) candidate ever seen, kept or not.
SAMPLES = pa.schema(
    [
        ("uid", pa.string()),  # sample_uid(url, caption): 32 hex chars
        ("url", pa.string()),
        ("caption", pa.string()),
        ("page_url", pa.string()),
        ("matched_queries", pa.list_(pa.string())),
        ("status", pa.string()),
        ("error", pa.string()),  # human-readable detail for a drop; null when kept
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("original_width", pa.int32()),
        ("original_height", pa.int32()),
        ("sha256", pa.string()),
        ("phash", pa.string()),
        ("lang", pa.string()),
        ("lang_score", pa.float32()),
        ("clip_score", pa.float32()),
        ("dup_of", pa.string()),
        ("leak_of", pa.string()),
        ("shard", pa.string()),  # file name under DIR/shards/
        ("shard_row", pa.int64()),  # row index inside that shard
    ]
)

# One row per page a crawl or WARC/WAT file offered: the audit log of the page side.
PAGES = pa.schema(
    [
        ("url", pa.string()),
        ("final_url", pa.string()),
        ("depth", pa.int32()),
        ("status", pa.string()),  # 'ok' or a drop reason (robots_disallowed, opted_out, ...)
        ("http_status", pa.int32()),
        ("error", pa.string()),
        ("pairs", pa.int32()),  # (image url, alt text) pairs found on the page
        ("source", pa.string()),  # 'crawl', a WARC/WAT file name, or a URL-list file name
    ]
)

# Training shards: img2dataset's parquet columns, so open_clip and DataComp tooling read them.
# The image column is named after the encode format (`jpg`, `webp` or `png`).
IMAGE_COLUMNS = ("jpg", "webp", "png")


def shard_schema(image_column: str = "jpg") -> pa.Schema:
    if image_column not in IMAGE_COLUMNS:
        raise ValueError(f"image column must be one of {IMAGE_COLUMNS}, not {image_column!r}")
    return pa.schema(
        [
            ("key", pa.string()),
            (image_column, pa.binary()),
            ("caption", pa.string()),
            ("url", pa.string()),
            ("uid", pa.string()),
            ("status", pa.string()),
            ("error_message", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("original_width", pa.int32()),
            ("original_height", pa.int32()),
            ("exif", pa.string()),
            ("sha256", pa.string()),
        ]
    )


def sample_uid(url: str, caption: str) -> str:
    """Stable id of an (image url, caption) pair: the same pair gets the same uid in every run."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(url.encode("utf-8", "surrogatepass"))
    digest.update(b"\x00")
    digest.update(caption.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def empty_table(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast `table` to `schema`, adding missing columns as nulls."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)
