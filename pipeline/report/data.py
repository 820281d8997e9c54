"""The report's figures, read from a dataset folder through the DuckDB views of `manifests`.

Every function here aggregates in SQL, so the report costs the same few queries for a dataset of a
hundred rows or of a hundred million; only bounded lists (top N, binned cells) reach Python."""

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from manifests import schema, storage
from manifests.layout import DatasetLayout
from manifests.storage import location

log = logging.getLogger(__name__)


@dataclass
class Stage:
    stage: str
    rows_in: int
    rows_out: int
    dropped: int
    drops: dict[str, int]
    seconds: float
    unit: str = "rows"


@dataclass
class Coverage:
    """How many kept pairs each query has (queries as matched in captions)."""

    cap: int | None
    queries_in_list: int | None  # None: the query list file is gone or there was none
    queries_matched: int  # queries that matched at least one candidate
    histogram: list[tuple[str, int]]  # (kept pairs bin label, queries)
    top: list[tuple[str, int, int]]  # (query, matched candidates, kept)
    over_cap: list[tuple[str, int, int]]  # (query, matched candidates, kept), most matched first
    over_cap_total: int


@dataclass
class Sizes:
    fetched: int  # rows with a known original size (their image was fetched and read)
    cells: list[tuple[float, float, int]]  # (log2 width, log2 height, images), quarter octaves
    shorter_side: list[tuple[str, int]]  # (px range label, images)
    output: list[tuple[int, int, int]]  # (width, height, kept images), most common first
    captions: list[tuple[str, int]]  # (kept captions per stored image, images)


@dataclass
class Overlap:
    rows: list[tuple[str, int, int]] = field(default_factory=list)  # (eval set, images, copies)
    note: str | None = None


def load_run(layout: DatasetLayout) -> dict | None:
    try:
        return json.loads(layout.run_json.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning(
            "%s is unreadable (%s); the report leaves out the settings", layout.run_json, exc
        )
        return None


def stages(con) -> list[Stage]:
    rows = con.execute(
        "SELECT stage, rows_in, rows_out, dropped, drops, seconds, unit FROM stats "
        'ORDER BY "order", stage'
    ).fetchall()
    return [Stage(s, i, o, d, json.loads(drops), sec, u) for s, i, o, d, drops, sec, u in rows]


def status_counts(con) -> list[tuple[str, int]]:
    """Final statuses: kept first, then drop reasons in pipeline order, then anything else."""
    counts = dict(con.execute("SELECT status, count(*) FROM samples GROUP BY 1").fetchall())
    order = [schema.KEPT, schema.PENDING, *schema.DROP_REASONS]
    known = [(s, counts.pop(s)) for s in order if s in counts]
    return known + sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))


def survivors(statuses: list[tuple[str, int]]) -> tuple[tuple[str, ...], str]:
    """The statuses that count as 'kept' in charts, and their label: a text-only or unfinished
    build has `pending` rows (passed every filter so far) instead of `kept` ones."""
    present = {s for s, _ in statuses}
    if schema.PENDING in present and schema.KEPT not in present:
        return (schema.PENDING,), "pending"
    if schema.PENDING in present:
        return (schema.KEPT, schema.PENDING), "kept or pending"
    return (schema.KEPT,), "kept"


def _in_list(statuses: tuple[str, ...]) -> str:
    return ", ".join("'" + s.replace("'", "''") + "'" for s in statuses)


def languages(con, kept: tuple[str, ...], top: int = 20) -> list[tuple[str, int, int]]:
    """(language, candidates, kept) for the `top` most common languages, the rest as 'other'."""
    rows = con.execute(
        f"""SELECT coalesce(lang, '(none)') AS lang, count(*) AS n,
                   count(*) FILTER (WHERE status IN ({_in_list(kept)})) AS k
            FROM samples GROUP BY 1 ORDER BY n DESC, lang"""
    ).fetchall()
    if len(rows) > top:
        rest = rows[top - 1 :]
        rows = rows[: top - 1] + [
            (f"other ({len(rest)})", sum(r[1] for r in rest), sum(r[2] for r in rest))
        ]
    return rows


def _pow2_label(k: int) -> str:
    lo, hi = 2 ** (k - 1), 2**k - 1
    return f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"


def _query_list_size(run: dict | None) -> int | None:
    from pipeline.queries import load_query_list

    path = ((run or {}).get("config") or {}).get("query_list")
    if not path:
        return None
    try:
        return len(load_query_list(path))
    except (OSError, ValueError) as exc:
        log.info("query list %s not read (%s): coverage counts matched queries only", path, exc)
        return None


def coverage(con, kept: tuple[str, ...], run: dict | None, top: int = 20) -> Coverage:
    cap = ((run or {}).get("config") or {}).get("per_query_cap")
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _per_query AS
            SELECT q, count(*) AS matched,
                   count(*) FILTER (WHERE status IN ({_in_list(kept)})) AS kept
            FROM (SELECT unnest(matched_queries) AS q, status FROM samples) GROUP BY q"""
    )
    bins = con.execute(
        """SELECT CASE WHEN kept = 0 THEN 0 ELSE floor(log2(kept))::INT + 1 END AS b, count(*)
           FROM _per_query GROUP BY 1 ORDER BY 1"""
    ).fetchall()
    histogram = [("0" if b == 0 else _pow2_label(b), n) for b, n in bins]
    matched = sum(n for _, n in bins)
    in_list = _query_list_size(run)
    if in_list is not None and in_list > matched:
        histogram.insert(0, ("no candidate matched", in_list - matched))
    top_rows = con.execute(
        f"SELECT q, matched, kept FROM _per_query ORDER BY kept DESC, matched DESC, q LIMIT {top}"
    ).fetchall()
    over, over_total = [], 0
    if isinstance(cap, int):
        over = con.execute(
            "SELECT q, matched, kept FROM _per_query WHERE matched > ? "
            f"ORDER BY matched DESC, q LIMIT {top}",
            [cap],
        ).fetchall()
        over_total = con.execute(
            "SELECT count(*) FROM _per_query WHERE matched > ?", [cap]
        ).fetchone()[0]
    return Coverage(cap, in_list, matched, histogram, top_rows, over, over_total)


def sizes(con) -> Sizes:
    where = "original_width > 0 AND original_height > 0"
    fetched = con.execute(f"SELECT count(*) FROM samples WHERE {where}").fetchone()[0]
    cells = con.execute(
        f"""SELECT round(log2(original_width) * 4) / 4, round(log2(original_height) * 4) / 4,
                   count(*) FROM samples WHERE {where} GROUP BY 1, 2"""
    ).fetchall()
    shorter = con.execute(
        f"""SELECT floor(log2(least(original_width, original_height)))::INT + 1 AS b, count(*)
            FROM samples WHERE {where} GROUP BY 1 ORDER BY 1"""
    ).fetchall()
    output = con.execute(
        """SELECT width, height, count(*) FROM images WHERE width IS NOT NULL
            GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 12"""
    ).fetchall()
    captions = con.execute(
        f"""SELECT least(n_captions, {CAPTIONS_CAP}) AS n, count(*) FROM images
            GROUP BY 1 ORDER BY 1"""
    ).fetchall()
    return Sizes(
        fetched,
        [(float(x), float(y), n) for x, y, n in cells if math.isfinite(x) and math.isfinite(y)],
        [(_pow2_label(b) + " px", n) for b, n in shorter],
        output,
        [(f"{n}+" if n == CAPTIONS_CAP else str(n), c) for n, c in captions],
    )


CAPTIONS_CAP = 10  # the captions-per-image chart's last bar: this many or more


def overlap(root: Path) -> Overlap | None:
    """Per eval set: images and how many have a copy in this dataset, from DIR/overlap.parquet
    (written by the leak check). None when there is no such file."""

    path = location(root) / "overlap.parquet"
    if not path.exists():
        return None
    try:
        table = storage.read_table(path)
    except Exception as exc:  # a half-written or foreign file must not sink the whole report
        return Overlap(note=f"overlap.parquet is unreadable: {exc}")
    flag = next((c for c in ("has_copy", "overlap", "leaked") if c in table.column_names), None)
    if flag is None:
        return Overlap(
            note="overlap.parquet has no has_copy column (columns: "
            + ", ".join(table.column_names)
            + ")"
        )
    sets = (
        table["eval_set"].to_pylist()
        if "eval_set" in table.column_names
        else ["(all)"] * table.num_rows
    )
    totals: dict[str, list[int]] = {}
    for name, has in zip(sets, table[flag].to_pylist(), strict=True):
        entry = totals.setdefault(str(name), [0, 0])
        entry[0] += 1
        entry[1] += bool(has)
    return Overlap(rows=[(name, n, k) for name, (n, k) in sorted(totals.items())])


def totals(con) -> dict:
    samples = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    kept = con.execute(f"SELECT count(*) FROM samples WHERE status = '{schema.KEPT}'").fetchone()[0]
    shards, shard_rows, shard_bytes = con.execute(
        "SELECT count(*), coalesce(sum(rows), 0), coalesce(sum(bytes), 0) FROM shards"
    ).fetchone()
    pages = con.execute("SELECT count(*) FROM pages").fetchone()[0]
    return {
        "candidates": samples,
        "kept": kept,
        "shards": shards,
        "shard_rows": shard_rows,
        "shard_bytes": shard_bytes,
        "pages": pages,
    }


def clip_scores(con, bins: int = 10) -> list[tuple[str, int, int]]:
    """(score bin label, scored rows, kept rows) over equal-width bins from the lowest to the
    highest score; [] when no row has a clip_score (no --clip-model, no `pipeline embed`)."""
    low, high = con.execute("SELECT min(clip_score), max(clip_score) FROM samples").fetchone()
    if low is None:
        return []
    width = max((high - low) / bins, 1e-6)
    counts = con.execute(
        f"""SELECT least(floor((clip_score - {low}) / {width}), {bins - 1})::INT AS b,
                   count(*), count(*) FILTER (status = 'kept')
            FROM samples WHERE clip_score IS NOT NULL GROUP BY 1 ORDER BY 1"""
    ).fetchall()
    found = {b: (n, k) for b, n, k in counts}
    return [
        (f"{low + b * width:.2f} to {low + (b + 1) * width:.2f}", *found.get(b, (0, 0)))
        for b in range(bins)
    ]
