"""What the explorer's pages ask of a dataset: SQL over its committed manifests.

`Filters` is a grid's query string, checked (a bad value is a `BadRequest` that names what is
allowed) and turned into a parameterised WHERE clause: no value from a request is ever spliced
into SQL. `DatasetView` holds one DuckDB connection per server thread over the committed version
and notices a new commit (a rebuild, `pipeline recheck`, `pipeline remove`): it reopens, drops its
cached figures and changes its `version`, which every thumbnail signature includes, so a row
taken out of the dataset stops being shown at once.

The grid pages in file order (DuckDB keeps the scan's order without an ORDER BY), so page N is a
LIMIT/OFFSET that streams the Parquet files and stops early: no sort of the whole manifest.
"""

import hashlib
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from urllib.parse import urlencode

from manifests import schema
from manifests.config import ConfigError
from manifests.layout import DatasetLayout

PAGE_SIZE = 48  # thumbnails per grid page
MAX_PAGE = 10_000_000  # far past any dataset's end: a typo, not a page
RECHECK_S = 2.0  # how often (at most) dataset.json is read again to notice a new commit
UID = re.compile(r"[0-9a-f]{32}")
GRID_COLUMNS = (
    "uid, url, caption, page_url, status, error, lang, clip_score, matched_queries, dup_of, "
    "leak_of, shard, shard_row, width, height, part, image_of"
)
DROPPED = "dropped"  # the status filter's word for every drop reason at once


class BadRequest(ConfigError):
    """A request the explorer cannot answer; its message says what is allowed."""


def _float(name: str, text: str) -> float | None:
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"{name} must be a number, not {text!r}") from None
    if not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number, not {text!r}")
    return value


@dataclass(frozen=True)
class Filters:
    """A grid view; every field is a query-string parameter of the same name."""

    status: str = ""  # "", kept, dropped (any drop reason), or one status
    query: str = ""  # rows matched by this query of the query list
    lang: str = ""
    clip_min: float | None = None
    clip_max: float | None = None
    leak_of: str = ""  # "", "any" (every eval leak), or one eval image id
    cluster: str = ""  # a uid: the rows of its duplicate cluster (derived from dup_of)
    text: str = ""  # caption contains (case-insensitive)
    page: int = 1

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> "Filters":
        known = {f.name for f in fields(cls)}
        values = {k: v.strip() for k, v in params.items() if k in known}
        status = values.get("status", "")
        if status and status not in schema.SAMPLE_STATUSES | {DROPPED}:
            allowed = ", ".join(sorted(schema.SAMPLE_STATUSES | {DROPPED}))
            raise BadRequest(f"status must be one of {allowed}; not {status!r}")
        cluster = values.get("cluster", "")
        if cluster and not UID.fullmatch(cluster):
            raise BadRequest("cluster must be a row's uid (32 hexadecimal characters)")
        page_text = values.get("page", "1") or "1"
        if not page_text.isdigit() or not 1 <= int(page_text) <= MAX_PAGE:
            raise BadRequest(f"page must be a whole number from 1 to {MAX_PAGE}")
        return cls(
            status=status,
            query=values.get("query", ""),
            lang=values.get("lang", ""),
            clip_min=_float("clip_min", values.get("clip_min", "")),
            clip_max=_float("clip_max", values.get("clip_max", "")),
            leak_of=values.get("leak_of", ""),
            cluster=cluster,
            text=values.get("text", ""),
            page=int(page_text),
        )

    def where(self, scores_elsewhere: bool) -> tuple[str, list]:
        """(SQL condition over serve_rows, its parameters). `scores_elsewhere`: some clip
        scores live in the embeddings (the `samples` view joins them in), not the manifest."""
        terms, args = ["TRUE"], []
        if self.status == DROPPED:
            terms.append("status NOT IN (?, ?)")
            args += [schema.KEPT, schema.PENDING]
        elif self.status:
            terms.append("status = ?")
            args.append(self.status)
        if self.query:
            terms.append("list_contains(matched_queries, ?)")
            args.append(self.query)
        if self.lang:
            terms.append("lang = ?")
            args.append(self.lang)
        if self.clip_min is not None or self.clip_max is not None:
            low = -math.inf if self.clip_min is None else self.clip_min
            high = math.inf if self.clip_max is None else self.clip_max
            score = "clip_score BETWEEN ? AND ?"
            terms.append(
                f"uid IN (SELECT uid FROM samples WHERE {score})" if scores_elsewhere else score
            )
            args += [low, high]
        if self.leak_of == "any":
            terms.append("leak_of IS NOT NULL")
        elif self.leak_of:
            terms.append("leak_of = ?")
            args.append(self.leak_of)
        if self.cluster:  # the row its dup_of names (or itself), and every row naming that one
            root = "coalesce((SELECT any_value(dup_of) FROM serve_rows WHERE uid = ?), ?)"
            terms.append(f"(uid = {root} OR dup_of = {root})")
            args += [self.cluster] * 4
        if self.text:
            terms.append("contains(lower(caption), lower(?))")
            args.append(self.text)
        return " AND ".join(terms), args

    def link(self, **changes) -> str:
        """This view's query string with `changes`, defaults left out (short shareable URLs)."""
        view = replace(self, **changes)
        pairs = []
        for f in fields(self):
            value = getattr(view, f.name)
            if value not in (None, "") and not (f.name == "page" and value == 1):
                pairs.append((f.name, value))
        return urlencode(pairs)


class DatasetView:
    """Read-only access to one dataset for a server's threads."""

    def __init__(self, root):
        import manifests

        self.layout = DatasetLayout(root)
        manifests.open(self.layout.root).close()  # NotADatasetError now, not on the first page
        self._local = threading.local()
        self._lock = threading.Lock()
        self._cache: dict = {}
        self._checked = 0.0
        self._version = ""
        self.version()

    def version(self) -> str:
        """A digest of the committed version's record; it changes with every commit."""
        now = time.monotonic()
        if now - self._checked >= RECHECK_S:
            try:
                record = self.layout.dataset_json.read_bytes()
            except FileNotFoundError:  # a dataset from before dataset.json: one version only
                record = b"legacy"
            digest = hashlib.sha256(record).hexdigest()[:16]
            with self._lock:
                if digest != self._version:
                    self._version, self._cache = digest, {}
                self._checked = now
        return self._version

    def con(self):
        """This thread's connection, reopened after a new commit."""
        version = self.version()
        if getattr(self._local, "version", None) != version:
            old = getattr(self._local, "con", None)
            if old is not None:
                old.close()
            self._local.con, self._local.version = self._open(), version
        return self._local.con

    def _open(self):
        import manifests
        from manifests.commit import committed_files

        con = manifests.open(self.layout.root)
        files = committed_files(self.layout, "samples")
        if not files:
            con.execute(
                "CREATE OR REPLACE VIEW serve_rows AS SELECT *, NULL::VARCHAR AS part "
                "FROM samples LIMIT 0"
            )
            return con
        listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
        # `part` (the manifest file's part name) finds a dropped row's image in work/images/
        source = f"read_parquet([{listed}], filename = true, union_by_name = true)"
        present = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        # a dataset built before captions were merged has no image_of: every image is its row's
        extra = "" if "image_of" in present else ", NULL::VARCHAR AS image_of"
        con.execute(
            "CREATE OR REPLACE VIEW serve_rows AS SELECT * EXCLUDE (filename), "
            f"split_part(parse_filename(filename), '.', 1) AS part{extra} FROM {source}"
        )
        return con

    def cached(self, name: str, compute):
        """`compute()` once per committed version (figures over the whole manifest)."""
        version = self.version()
        key = (version, name)
        if key not in self._cache:
            value = compute()
            with self._lock:
                if self._version == version:
                    self._cache[key] = value
            return value
        return self._cache[key]

    def has_embeddings(self) -> bool:
        return self.cached("embeddings", lambda: _has_view(self.con(), "embeddings"))

    def rows(self, sql: str, args: list | tuple = ()) -> list[dict]:
        cursor = self.con().execute(sql, list(args))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _has_view(con, name: str) -> bool:
    found = con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE view_name = ? AND NOT internal", [name]
    ).fetchone()
    return bool(found[0])
