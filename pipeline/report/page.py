"""`write_report`: one self-contained HTML file about a dataset folder: inline CSS, inline SVG
charts, thumbnails as data: URIs. It opens offline and references nothing outside itself."""

import logging
from dataclasses import dataclass
from html import escape
from pathlib import Path

from manifests.config import ConfigError, check_fields, option
from manifests.layout import DatasetLayout, write_bytes_atomic
from manifests.storage import location

log = logging.getLogger(__name__)


@dataclass
class ReportConfig:
    kept_samples: int = option(48, help="thumbnails in the kept grid")
    dropped_per_reason: int = option(6, help="cards per drop reason")
    thumb_px: int = option(160, help="longest thumbnail side, px (shown at 150 CSS px)")
    top_n: int = option(20, help="rows in the top-queries and languages lists")

    def __post_init__(self):
        check_fields(self)
        for name in ("kept_samples", "dropped_per_reason", "thumb_px", "top_n"):
            if getattr(self, name) < 0:
                raise ConfigError(f"report {name} must not be negative, not {getattr(self, name)}")
        if self.thumb_px < 16:
            raise ConfigError(f"report thumb_px must be at least 16, not {self.thumb_px}")


CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#222;
 background:#f6f7f9;margin:0}
main{max-width:1280px;margin:0 auto;padding:20px 28px 60px}
h1{margin:0 0 2px;font-size:26px}
h2{font-size:19px;margin:0 0 12px;padding-bottom:6px;border-bottom:1px solid #e3e5e8}
h3{font-size:15px;margin:18px 0 8px}
h3 small,.tile small{color:#777;font-weight:normal}
header,section{background:#fff;border:1px solid #e3e5e8;border-radius:8px;padding:18px 22px;
 margin:0 0 18px}
.path{font-family:ui-monospace,Menlo,Consolas,monospace;color:#555;margin:0 0 2px;
 word-break:break-all}
.built{color:#666;margin:0 0 12px;font-size:13px;overflow-wrap:anywhere}
table.funnel td:nth-child(5){max-width:300px}
table.dropped{width:100%;table-layout:fixed}
table.dropped td{overflow-wrap:anywhere}
table.dropped th:nth-child(4){width:60px}
table.dropped .url{-webkit-line-clamp:3}
nav{margin:0 0 18px;display:flex;flex-wrap:wrap;gap:6px}
nav a{color:#2b5bb8;text-decoration:none;background:#fff;border:1px solid #dfe3ea;
 border-radius:14px;padding:3px 11px;font-size:13px}
.tiles{display:flex;flex-wrap:wrap;gap:12px;margin:0 0 14px}
.tile{background:#f1f5fd;border-radius:8px;padding:10px 16px;min-width:150px}
.tile b{display:block;font-size:22px}
.tile span{color:#555;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.row{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}
.row>div{min-width:0;max-width:100%}
table{border-collapse:collapse;font-size:13px;margin:0 0 6px}
th,td{padding:3px 10px;border-bottom:1px solid #eceef1;text-align:left;vertical-align:top}
th{background:#f6f7f9;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
dl.settings{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:4px 18px;
 margin:0 0 8px;font-size:13px}
dl.settings div{display:flex;gap:8px;border-bottom:1px solid #eceef1;padding:2px 0}
dl.settings dt{color:#666;flex:none}
dl.settings dd{margin:0;overflow-wrap:anywhere}
details{margin-top:10px}
pre{background:#f6f7f9;padding:10px;font-size:12px;max-height:420px;overflow:auto;
 white-space:pre-wrap;word-break:break-all}
.note{color:#555;margin:6px 0}
svg.chart{font-size:12px;max-width:100%;height:auto}
svg .ct{font-weight:600;font-size:13px;fill:#222}
svg .cl{fill:#333}
svg .cv{fill:#555;font-size:11px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(136px,1fr));gap:10px}
.card{margin:0;border:1px solid #e3e5e8;border-radius:6px;overflow:hidden;background:#fff}
.card img,.noimg{display:block;width:100%;aspect-ratio:1;object-fit:contain;background:#eef0f3}
.noimg{display:flex;align-items:center;justify-content:center;color:#999;font-size:12px;
 text-align:center;padding:8px}
.noimg.small{aspect-ratio:auto;height:44px;background:#f6f1ee;color:#a0765f}
figcaption{padding:6px 8px 8px}
figcaption p{margin:0 0 3px;overflow-wrap:anywhere}
.cap{display:-webkit-box;-webkit-line-clamp:4;-webkit-box-orient:vertical;overflow:hidden}
.meta,.url{color:#777;font-size:11px}
.url{font-family:ui-monospace,Menlo,Consolas,monospace;display:-webkit-box;-webkit-line-clamp:2;
 -webkit-box-orient:vertical;overflow:hidden}
.err{color:#b4441d;font-size:12px}
footer{color:#888;font-size:12px;text-align:center}
"""

NAV = (
    ("funnel", "Funnel"),
    ("languages", "Languages"),
    ("queries", "Query coverage"),
    ("sizes", "Image sizes"),
    ("clip", "CLIP scores"),
    ("kept", "Kept samples"),
    ("dropped", "Dropped samples"),
    ("overlap", "Overlap"),
    ("consent", "Consent"),
)


def render(dataset_dir, config: ReportConfig | None = None) -> str:
    """The report's HTML for `dataset_dir`; NotADatasetError if it is not a dataset folder."""
    import manifests
    from pipeline.report import consent, data, thumbs
    from pipeline.report import sections as r

    config = config or ReportConfig()
    layout = DatasetLayout(dataset_dir)
    con = manifests.open(layout.root)  # raises NotADatasetError first of all
    run = data.load_run(layout)
    totals = data.totals(con)
    statuses = data.status_counts(con)
    kept_statuses, kept_label = data.survivors(statuses)
    source_kind = r.source_kind_and_where((run or {}).get("config") or {})[0]
    overlap = data.overlap(layout.root)
    settings = (run or {}).get("config") or {}
    # "no_fetch": datasets built before the option became `fetch`
    no_fetch = settings.get("fetch") is False or bool(settings.get("no_fetch"))
    sections = [
        r.header(layout.root, run, totals, statuses),
        r.funnel(data.stages(con), statuses, source_kind),
    ]
    if totals["candidates"]:
        sections += [
            r.languages(data.languages(con, kept_statuses, config.top_n), kept_label),
            r.coverage(data.coverage(con, kept_statuses, run, config.top_n), kept_label),
            r.sizes(data.sizes(con)),
            r.clip_scores(data.clip_scores(con)),
            r.kept_grid(
                thumbs.kept_samples(con, layout, config.kept_samples, config.thumb_px),
                totals,
                config.kept_samples,
                no_fetch,
            ),
            r.dropped_grid(
                thumbs.dropped_samples(layout, config.dropped_per_reason, config.thumb_px),
                statuses,
            ),
        ]
    else:
        sections += [r.unpublished(a, t) for a, t in NAV[1:7] if a != "clip"]
    sections.append(r.overlap(overlap))
    sections.append(consent.render(con))
    nav = "".join(
        f'<a href="#{anchor}">{escape(title)}</a>'
        for anchor, title in NAV
        if (anchor != "overlap" or overlap is not None)
        and (anchor != "clip" or 'id="clip"' in "".join(sections))
    )
    title = escape(f"Dataset report: {layout.root.name}")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{CSS}</style></head><body><main>"
        + sections[0]
        + f"<nav>{nav}</nav>"
        + "".join(sections[1:])
        + "<footer>written by <code>pipeline report</code> · self-contained: no external files"
        "</footer></main></body></html>\n"
    )


def write_report(dataset_dir, out=None, config: ReportConfig | None = None) -> Path:
    """Write the report of `dataset_dir` to `out` (default DIR/report.html) and return its path."""
    layout = DatasetLayout(dataset_dir)
    html = render(dataset_dir, config)
    path = location(out) if out is not None else layout.report
    write_bytes_atomic(html.encode("utf-8"), path)
    log.info("report written to %s (%.0f KiB)", path, len(html) / 1024)
    return path
