"""HTML of the report's sections. Every value that came from data (captions, URLs, queries,
errors, paths, config values) goes through `e()`: the page holds untrusted web text."""

import datetime
import json
from html import escape

from pipeline.report import svg
from pipeline.report.data import Coverage, Overlap, Sizes, Stage
from pipeline.report.thumbs import Sample


def e(value) -> str:
    return escape("" if value is None else str(value), quote=True)


def n(value) -> str:
    return f"{value:,}" if isinstance(value, int) else e(value)


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def human_bytes(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def note(text: str) -> str:
    return f'<p class="note">{e(text)}</p>'


def table(headers: list[str], rows: list[list], *, cls: str = "", row_attrs=None) -> str:
    """A table; cells are escaped unless they are `Raw`. Numbers are right-aligned."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        attrs = row_attrs(i) if row_attrs else ""
        cells = "".join(
            f'<td class="num">{n(c)}</td>'
            if isinstance(c, int | float) and not isinstance(c, bool)
            else f"<td>{c if isinstance(c, Raw) else e(c)}</td>"
            for c in row
        )
        body.append(f"<tr{attrs}>{cells}</tr>")
    return (
        f'<table class="{e(cls)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


class Raw(str):
    """Markup built here from escaped parts: a table cell that must not be escaped again."""


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{e(anchor)}"><h2>{e(title)}</h2>{body}</section>'


def row(*blocks: str) -> str:
    return '<div class="row">' + "".join(f"<div>{b}</div>" for b in blocks if b) + "</div>"


# --- header --------------------------------------------------------------------------------------

KEY_SETTINGS = (
    "query_list",
    "per_query_cap",
    "seed",
    "languages",
    "min_words",
    "max_words",
    "text_model",
    "min_text_score",
    "min_size",
    "max_aspect_ratio",
    "image_size",
    "resize_mode",
    "encode_format",
    "encode_quality",
    "shard_size",
    "webdataset",
    "max_pages",
    "max_depth",
    "allow_network",
    "eval_set",
    "fetch",
)


def source_kind_and_where(config: dict) -> tuple[str, str]:
    if config.get("seeds"):
        return "crawl", ", ".join(config["seeds"])
    if config.get("warc"):
        return "WARC/WAT files", ", ".join(config["warc"])
    if config.get("url_list"):
        return "URL list", str(config["url_list"])
    return "unknown", ""


def _setting(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return ", ".join(map(str, value)) if value else "(none)"
    return str(value)


def header(root, run: dict | None, totals: dict, statuses: list[tuple[str, int]]) -> str:
    config = (run or {}).get("config") or {}
    created = (run or {}).get("created")
    when = (
        datetime.datetime.fromtimestamp(created, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        if isinstance(created, int | float)
        else "unknown (no run.json)"
    )
    kind, where = source_kind_and_where(config)
    kept, cands = totals["kept"], totals["candidates"]
    tiles = [
        ("candidates", n(cands)),
        ("kept", f"{n(kept)} <small>({pct(kept, cands)})</small>"),
        ("shards", f"{n(totals['shards'])} <small>({human_bytes(totals['shard_bytes'])})</small>"),
    ]
    pending = dict(statuses).get("pending", 0)
    if pending:
        tiles.insert(
            2, ("pending (not yet fetched)", f"{n(pending)} <small>({pct(pending, cands)})</small>")
        )
    if totals["pages"] or kind in ("crawl", "WARC/WAT files"):
        tiles.append(("pages seen", n(totals["pages"])))
    tile_html = "".join(f'<div class="tile"><b>{v}</b><span>{e(k)}</span></div>' for k, v in tiles)
    settings = "".join(
        f"<div><dt>{e(k)}</dt><dd>{e(_setting(config[k]))}</dd></div>"
        for k in KEY_SETTINGS
        if k in config
    )
    full = e(json.dumps(run, indent=1, sort_keys=True, default=str)) if run else ""
    details = (
        f"<details><summary>run.json (resolved config and versions)</summary><pre>{full}</pre>"
        "</details>"
        if run
        else note("No run.json: settings unknown.")
    )
    source = f"{kind}: {where}" if where else kind
    return (
        f'<header><h1>Dataset report</h1><p class="path">{e(root)}</p>'
        f'<p class="built">built {e(when)} · source {e(source)}</p>'
        f'<div class="tiles">{tile_html}</div>'
        + (f'<dl class="settings">{settings}</dl>' if settings else "")
        + details
        + "</header>"
    )


# --- funnel --------------------------------------------------------------------------------------


def funnel(stages: list[Stage], statuses: list[tuple[str, int]], source_kind: str) -> str:
    if not stages:
        body = note("No stage statistics yet (DIR/stats/ is empty): the build has not run a stage.")
    else:
        rows = [
            [
                s.stage,
                s.rows_in,
                s.rows_out,
                s.unit,
                s.dropped,
                _drops_text(s.drops),
                f"{s.seconds:.2f}",
            ]
            for s in stages
        ]
        stage_table = table(
            ["stage", "in", "out", "counting", "dropped", "drops by reason", "seconds"],
            rows,
            cls="funnel",
            row_attrs=lambda i: f' data-stage="{e(stages[i].stage)}"',
        )
        chart = svg.hbar_chart(
            [(s.stage, s.rows_out, None) for s in stages if s.unit == "rows"],
            title="rows out per stage",
            width=400,
        )
        pages = (
            note("sources: rows in are pages, rows out are the (image URL, caption) pairs on them.")
            if source_kind in ("crawl", "WARC/WAT files")
            else ""
        )
        body = row(chart, stage_table + pages) + _drop_reasons(stages)
    if statuses:
        status_chart = svg.hbar_chart(
            [(s, c, None) for s, c in statuses],
            title="",
            colors=[_status_color(s) for s, _ in statuses],
        )
        body += "<h3>Final status of every candidate</h3>" + row(
            status_chart, table(["status", "rows"], [list(s) for s in statuses], cls="statuses")
        )
    else:
        body += note("No samples manifest yet (DIR/manifests/samples/ is empty).")
    return section("funnel", "Funnel", body)


def _status_color(status: str) -> str:
    return svg.BAR if status == "kept" else svg.PENDING if status == "pending" else svg.DROP


def _drops_text(drops: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(drops.items(), key=lambda kv: -kv[1]))


def _drop_reasons(stages: list[Stage]) -> str:
    reasons = [(r, c, s.stage) for s in stages for r, c in s.drops.items() if c]
    if not reasons:
        return "<h3>Drops by reason</h3>" + note("No stage dropped anything.")
    reasons.sort(key=lambda x: -x[1])
    chart = svg.hbar_chart([(r, c, None) for r, c, _ in reasons], title="", color=svg.DROP)
    rows = [[r, stage, c] for r, c, stage in reasons]
    return "<h3>Drops by reason</h3>" + row(
        chart, table(["reason", "stage", "rows"], rows, cls="drops")
    )


# --- distributions -------------------------------------------------------------------------------


def languages(langs: list[tuple[str, int, int]], kept_label: str) -> str:
    if not langs or all(lang == "(none)" for lang, _, _ in langs):
        body = note("No language identified: the text stage has not run on any candidate.")
    else:
        chart = svg.hbar_chart(
            [(lang, total, kept) for lang, total, kept in langs],
            title="candidates per language",
            inner_label=kept_label,
            outer_label="all candidates",
        )
        body = row(chart, table(["language", "candidates", kept_label], [list(x) for x in langs]))
    return section("languages", "Languages", body)


def coverage(cov: Coverage, kept_label: str) -> str:
    if not cov.histogram:
        return section(
            "queries", "Query coverage", note("No candidate matched a query (or no query list).")
        )
    listed = f" of the {cov.queries_in_list:,} in the query list" if cov.queries_in_list else ""
    intro = note(
        f"{cov.queries_matched:,} {plural(cov.queries_matched, 'query', 'queries')}{listed} "
        "matched at least one candidate."
    )
    chart = svg.hbar_chart(
        [(label, count, None) for label, count in cov.histogram],
        title=f"queries by number of {kept_label} pairs",
    )
    top = table(["query", "matched", kept_label], [list(x) for x in cov.top], cls="top")
    body = intro + row(chart, "<h3>Top queries</h3>" + top)
    if cov.cap is not None:
        body += f"<h3>Queries over the cap ({cov.cap:,} pairs per query)</h3>"
        if cov.over_cap:
            shown = (
                f" (the {len(cov.over_cap)} largest shown)"
                if cov.over_cap_total > len(cov.over_cap)
                else ""
            )
            body += note(
                f"{cov.over_cap_total:,} {plural(cov.over_cap_total, 'query', 'queries')} matched "
                f"more candidates than the cap{shown}; balancing sampled them down."
            )
            body += table(["query", "matched", kept_label], [list(x) for x in cov.over_cap])
        else:
            body += note("No query matched more candidates than the cap.")
    return section("queries", "Query coverage", body)


def sizes(sz: Sizes) -> str:
    if not sz.fetched:
        return section(
            "sizes",
            "Image sizes",
            note("No image was fetched and read yet (no shards or text-only build)."),
        )
    bubbles = svg.size_bubbles(sz.cells, title=f"original sizes of {sz.fetched:,} fetched images")
    shorter = svg.hbar_chart(
        [(b, c, None) for b, c in sz.shorter_side], title="shorter side (original)"
    )
    output = (
        table(["output size", "kept images"], [[f"{w}×{h}", c] for w, h, c in sz.output])
        if sz.output
        else note("No kept image yet.")
    )
    captions = ""
    if sz.captions:
        captions = svg.hbar_chart(
            [(label, count, None) for label, count in sz.captions],
            title="kept captions per stored image (one image, every caption it came with)",
        )
    body = row(bubbles, shorter + "<h3>Output sizes</h3>" + output)
    return section("sizes", "Image sizes", body + captions)


def clip_scores(histogram: list[tuple[str, int, int]]) -> str:
    if not histogram:
        return ""
    chart = svg.hbar_chart(
        [(label, total, kept) for label, total, kept in histogram],
        title="clip_score (cosine of image and caption embeddings)",
        inner_label="kept",
        outer_label="scored",
    )
    text = note(
        "Scored by the build's --clip-model (rows it dropped are low_clip_score), or by "
        "`pipeline embed` for kept rows the build did not score."
    )
    return section("clip", "CLIP scores", row(chart, text))


def overlap(ov: Overlap | None) -> str:
    if ov is None:
        return ""
    if ov.note:
        return section("overlap", "Overlap with eval sets", note(ov.note))
    rows = [[name, total, copies, pct(copies, total)] for name, total, copies in ov.rows]
    return section(
        "overlap",
        "Overlap with eval sets",
        table(["eval set", "images", "with a copy here", "overlap"], rows),
    )


# --- sample cards --------------------------------------------------------------------------------


def card(sample: Sample, *, dropped: bool) -> str:
    caption = sample.caption or ""
    if sample.image:
        picture = f'<img src="{e(sample.image)}" alt="{e(caption[:200])}">'
    else:
        text = "no image: dropped before it was stored" if dropped else "image not found"
        picture = f'<div class="noimg{" small" if dropped else ""}">{e(text)}</div>'
    meta = [sample.lang or "", f"{sample.width}×{sample.height}" if sample.width else ""]
    if sample.queries:
        meta.append("q: " + ", ".join(sample.queries[:4]))
    lines = [
        f'<p class="cap" title="{e(caption[:500])}">{e(caption) or "<i>(empty caption)</i>"}</p>',
        f'<p class="meta">{e(" · ".join(m for m in meta if m))}</p>',
    ]
    if dropped:
        lines.append(f'<p class="url">{e(sample.url)}</p>')
        why = sample.error or REASON_TEXT.get(sample.status)
        if why:
            lines.append(f'<p class="err">{e(why)}</p>')
        for label, uid in (("duplicate of", sample.dup_of), ("leak of", sample.leak_of)):
            if uid:
                lines.append(f'<p class="meta">{label} {e(uid)}</p>')
    return f'<figure class="card">{picture}<figcaption>{"".join(lines)}</figcaption></figure>'


def unpublished(anchor: str, title: str) -> str:
    return section(
        anchor,
        title,
        note(
            "No samples manifest yet (DIR/manifests/samples/ is empty): the build is still "
            "running or stopped before its end. The funnel shows the stages finished so far."
        ),
    )


def kept_grid(samples: list[Sample], totals: dict, limit: int, no_fetch: bool = False) -> str:
    if not samples:
        if no_fetch:
            why = "Text only (built with --no-fetch): no image was fetched, so there are no shards."
        elif not totals["shards"]:
            why = "No shards: the build has not written any yet."
        else:
            why = "No kept sample."
        return section("kept", "Kept samples", note(why))
    images = totals.get("shard_rows") or totals["kept"]
    intro = note(
        f"{len(samples)} of {images:,} kept images, each with its first caption (the lowest "
        f"uids: a fixed pseudo-random choice, at most {limit}); {totals['kept']:,} kept "
        "captions in all."
    )
    cards = "".join(card(s, dropped=False) for s in samples)
    return section("kept", "Kept samples", intro + f'<div class="grid">{cards}</div>')


# Why, for drop reasons whose rows carry no error text (the decision needs no detail).
REASON_TEXT = {
    "no_query_match": "the caption contains no query of the list",
    "over_query_cap": "balancing: its queries had more pairs than the cap and it was not drawn",
}


def _dropped_table(samples: list[Sample]) -> str:
    rows = [
        [
            s.caption or "",
            Raw(f'<span class="url">{e(s.url)}</span>'),
            s.error or REASON_TEXT.get(s.status, ""),
            s.lang or "",
        ]
        for s in samples
    ]
    return table(["caption", "image URL", "why", "lang"], rows, cls="dropped")


def dropped_grid(by_reason: dict[str, list[Sample]], statuses: list[tuple[str, int]]) -> str:
    """A card grid for reasons whose images are on disk, a table for the others."""
    if not by_reason:
        return section("dropped", "Dropped samples", note("No dropped sample."))
    counts = dict(statuses)
    parts = []
    for reason, _ in statuses:
        samples = by_reason.get(reason)
        if not samples:
            continue
        if any(s.image for s in samples):
            body = '<div class="grid">' + "".join(card(s, dropped=True) for s in samples) + "</div>"
        else:
            body = _dropped_table(samples)
        count = counts.get(reason, 0)
        parts.append(
            f'<h3 id="drop-{e(reason)}">{e(reason)} <small>({count:,} '
            f"{plural(count, 'row', 'rows')}, {len(samples)} shown)</small></h3>{body}"
        )
    return section("dropped", "Dropped samples by reason", "".join(parts))
