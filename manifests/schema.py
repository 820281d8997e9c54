"""pyarrow schemas of the dataset tables: the columns other parts of the project rely on."""

import hashlib
from enum import StrEnum

import pyarrow as pa

# Statuses a `samples` row can end with. `pending` is the one non-final status: a candidate that
# passed matching and balancing and waits for the image stages.
KEPT = "kept"
PENDING = "pending"


class DropReason(StrEnum):
    """Every stable reason a row is dropped for: the one list. A stage's part is checked against
    it when it is written (pipeline.stages.base), so a typo never becomes a new status."""

    # statuses of `samples` rows (and, some of them, of `pages` rows)
    ROBOTS_DISALLOWED = "robots_disallowed"
    OPTED_OUT = "opted_out"
    BLOCKED_ADDRESS = "blocked_address"
    BAD_URL = "bad_url"
    FETCH_FAILED = "fetch_failed"
    NOT_AN_IMAGE = "not_an_image"
    TOO_LARGE = "too_large"
    TOO_SMALL = "too_small"
    BAD_ASPECT_RATIO = "bad_aspect_ratio"
    DECODE_FAILED = "decode_failed"
    LANGUAGE = "language"
    CAPTION_LENGTH = "caption_length"
    BOILERPLATE_CAPTION = "boilerplate_caption"
    LOW_TEXT_SCORE = "low_text_score"
    OVER_QUERY_CAP = "over_query_cap"
    NO_QUERY_MATCH = "no_query_match"
    DUPLICATE = "duplicate"
    NEAR_DUPLICATE = "near_duplicate"
    SEMANTIC_DUPLICATE = "semantic_duplicate"
    EVAL_LEAK = "eval_leak"
    LOW_CLIP_SCORE = "low_clip_score"
    REMOVED = "removed"  # a takedown request (`pipeline remove`): its error says whose and why
    # statuses only `pages` rows have
    NOT_HTML = "not_html"
    RECORD_ERROR = "record_error"  # a WARC/WAT record that cannot be read
    UNREADABLE_FILE = "unreadable_file"  # a --warc file that is no WARC, WAT or ARC, or is damaged
    # rows removed before they become samples (counted in stats, not in the manifests)
    REPEATED_PAIR = "repeated_pair"  # the same (url, caption) seen before, in source order
    EMPTY_URL = "empty_url"
    MALFORMED_ROW = "malformed_row"


DROP_REASONS = tuple(reason.value for reason in DropReason)
SAMPLE_STATUSES = frozenset({KEPT, PENDING, *DROP_REASONS})
PAGE_STATUSES = frozenset({"ok", *DROP_REASONS})


def check_statuses(values, allowed=SAMPLE_STATUSES, where: str = "") -> None:
    """Raise ValueError (a bug, not bad input) on a status outside the enum."""
    unknown = sorted({v for v in values if v not in allowed}, key=str)
    if unknown:
        raise ValueError(f"{where}: statuses outside schema.DropReason: {unknown}")


def is_drop_counter(name: str) -> bool:
    """A stats drop counter: a DropReason, or `page_<page status>` for a dropped page."""
    return name in DROP_REASONS or (name.startswith("page_") and name[5:] in PAGE_STATUSES)


# What the opt-out signals checked for a page or an image said (pipeline.net.consent): one entry
# per signal checked, whether it said anything or not.
CONSENT = pa.list_(
    pa.struct(
        [
            ("subject", pa.string()),  # what it was checked for: 'image' or 'page'
            ("signal", pa.string()),  # robots.txt, tdmrep.json, ai.txt, x-robots-tag, ...
            ("state", pa.string()),  # found, absent, or unavailable (a file: disallow all)
            ("value", pa.string()),  # what it said: header value, the rule that matched, ...
            ("opt_out", pa.bool_()),
            ("at", pa.timestamp("ms", tz="UTC")),  # the response or file fetch it comes from
        ]
    )
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
        # the row whose image bytes this caption row shares (the stored image of a group of
        # captions, its own uid for that row); null for an image with one caption
        ("image_of", pa.string()),
        ("leak_of", pa.string()),
        ("shard", pa.string()),  # file name under DIR/shards/
        ("shard_row", pa.int64()),  # row index inside that shard
        ("caption_index", pa.int32()),  # this caption's place in its shard row's `captions`
        ("consent", CONSENT),  # the image's signals, and its page's origin files when the build
        # did not fetch the page (an archive); the page's own are its `pages` row's
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
        ("consent", CONSENT),  # the page's signals: its headers, meta tags, per-origin files
    ]
)

# One row per per-origin file the build asked a site for (robots.txt, tdmrep.json, ai.txt): once per
# origin per build and reused by every task and by a resumed build; the audit of what each site
# said, and when.
ORIGINS = pa.schema(
    [
        ("origin", pa.string()),  # scheme://host[:port]
        ("file", pa.string()),  # 'robots.txt', 'tdmrep.json' or 'ai.txt'
        ("url", pa.string()),
        ("fetched_at", pa.timestamp("ms", tz="UTC")),
        ("status", pa.string()),  # the fetch's status: ok, fetch_failed, blocked_address, ...
        ("http_status", pa.int32()),
        ("error", pa.string()),
        ("body", pa.binary()),  # the file as served: its first robots_max_bytes
    ]
)

# The audit of takedown requests (`pipeline remove`): one row per (request entry, row it removed)
# and one per entry that matched nothing (uid null).
REMOVALS = pa.schema(
    [
        ("request_id", pa.string()),
        ("requested_by", pa.string()),  # who asked, as the request says (free text)
        ("reason", pa.string()),
        ("requested_at", pa.timestamp("ms", tz="UTC")),
        ("match", pa.string()),  # url, domain or uid: how the entry is compared
        ("value", pa.string()),  # the entry as the request wrote it
        ("uid", pa.string()),  # the row removed
        ("url", pa.string()),
        ("page_url", pa.string()),
        ("status_before", pa.string()),  # kept, or the drop reason it had
        ("image_removed", pa.bool_()),  # its image left the shards with it
    ]
)

# The `shards` view: one row per shard, as the shards stage's index holds it (so a query reads
# no shard) or as a dataset without that index gives it from the shards' footers.
SHARDS = pa.schema(
    [
        ("shard", pa.string()),  # file name under DIR/shards
        ("rows", pa.int64()),
        ("row_groups", pa.int32()),
        ("bytes", pa.int64()),
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
            ("caption", pa.string()),  # the first kept caption, = captions[0]
            # every kept caption of the image (samples rows with this shard row, in their
            # caption_index order); a caption `pipeline remove` took down becomes null in place
            ("captions", pa.list_(pa.string())),
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


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast `table` to `schema`, adding missing columns as nulls."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)
