"""Inline SVG charts for the report: plain markup, no fonts or scripts to fetch, crisp at any zoom.

Every label is untrusted (captions, queries, language codes from a model) and is escaped here."""

import math
from html import escape

BAR = "#3b6fd8"
BAR_LIGHT = "#c9d7f5"
PENDING = "#8fa8d6"
DROP = "#d9653b"
AXIS = "#888"
LABEL_CHARS = 26  # longer labels are cut with an ellipsis (the tables beside show them whole)


def _label(text: str) -> str:
    text = str(text)
    return escape(text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…")


def _num(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def hbar_chart(
    rows: list[tuple[str, float, float | None]],
    *,
    title: str,
    color: str = BAR,
    inner_label: str | None = None,
    outer_label: str | None = None,
    colors: list[str] | None = None,
    width: int = 480,
) -> str:
    """Horizontal bars, one per (label, value, inner value or None). An inner value is drawn
    darker on top of a lighter outer bar (e.g. kept rows within all rows of a language)."""
    if not rows:
        return ""
    longest = max(min(len(str(label)), LABEL_CHARS) for label, _, _ in rows)
    row_h, top, right = 22, 28 if title else 4, 78
    left = min(190, 16 + 7 * longest)  # about 7 px per character at 12 px
    legend = 18 if inner_label else 0
    height = top + legend + row_h * len(rows) + 8
    scale = (width - left - right) / max(max(v for _, v, _ in rows), 1)
    has_inner = any(inner is not None for _, _, inner in rows)
    parts = [
        f'<svg class="chart" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        f"<title>{escape(title or 'bar chart')}</title>",
        f'<text x="0" y="16" class="ct">{escape(title)}</text>' if title else "",
    ]
    if inner_label:
        parts.append(_legend(left, top + 4, [(color, inner_label), (BAR_LIGHT, outer_label)]))
    for i, (label, value, inner) in enumerate(rows):
        y = top + legend + i * row_h
        bar_color = colors[i] if colors else color
        outer_color = BAR_LIGHT if has_inner else bar_color
        parts.append(
            f'<text x="{left - 6}" y="{y + 15}" text-anchor="end" class="cl">'
            f"<title>{escape(str(label))}</title>{_label(label)}</text>"
            f'<rect x="{left}" y="{y + 3}" width="{max(value * scale, 1 if value else 0):.1f}" '
            f'height="{row_h - 6}" fill="{outer_color}"/>'
        )
        if inner is not None:
            parts.append(
                f'<rect x="{left}" y="{y + 3}" width="{inner * scale:.1f}" '
                f'height="{row_h - 6}" fill="{bar_color}"/>'
            )
        shown = _num(value) if inner is None else f"{_num(inner)} / {_num(value)}"
        parts.append(
            f'<text x="{left + value * scale + 5:.1f}" y="{y + 15}" class="cv">{shown}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _legend(x: int, y: int, items: list[tuple[str, str | None]]) -> str:
    out = []
    for color, text in items:
        if text is None:
            continue
        out.append(
            f'<rect x="{x}" y="{y}" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14}" y="{y + 9}" class="cv">{escape(text)}</text>'
        )
        x += 24 + 7 * len(text)
    return "".join(out)


def size_bubbles(cells: list[tuple[float, float, int]], *, title: str, size: int = 420) -> str:
    """Original image sizes as bubbles on log2 axes: cells are (log2 width, log2 height, count),
    already binned (quarter octaves), so the chart stays small for any number of images."""
    if not cells:
        return ""
    pad, top = 46, 26
    lo = math.floor(min(min(x, y) for x, y, _ in cells)) - 0.5
    hi = math.ceil(max(max(x, y) for x, y, _ in cells)) + 0.5
    hi = max(hi, lo + 3)
    plot = size - pad - 10
    height = top + plot + pad

    def px(v: float) -> float:
        return pad + (v - lo) / (hi - lo) * plot

    def py(v: float) -> float:
        return top + plot - (v - lo) / (hi - lo) * plot

    biggest = max(c for _, _, c in cells)
    parts = [
        f'<svg class="chart" role="img" '
        f'viewBox="0 0 {size} {height}" width="{size}" height="{height}">',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="16" class="ct">{escape(title)}</text>',
        f'<rect x="{pad}" y="{top}" width="{plot}" height="{plot}" fill="none" stroke="{AXIS}"/>',
        # the square-image diagonal
        f'<line x1="{px(lo):.1f}" y1="{py(lo):.1f}" x2="{px(hi):.1f}" y2="{py(hi):.1f}" '
        f'stroke="#ddd" stroke-dasharray="4 3"/>',
    ]
    for exp in range(math.ceil(lo), math.floor(hi) + 1):
        label = f"{2**exp:,}"
        parts.append(
            f'<text x="{px(exp):.1f}" y="{top + plot + 14}" text-anchor="middle" class="cv">'
            f"{label}</text>"
            f'<text x="{pad - 4}" y="{py(exp) + 4:.1f}" text-anchor="end" class="cv">{label}</text>'
        )
    parts.append(
        f'<text x="{pad + plot / 2:.0f}" y="{top + plot + 32}" text-anchor="middle" class="cl">'
        f"original width (px)</text>"
        f'<text x="12" y="{top + plot / 2:.0f}" text-anchor="middle" class="cl" '
        f'transform="rotate(-90 12 {top + plot / 2:.0f})">original height (px)</text>'
    )
    max_r = min(plot / (hi - lo) / 4 * 1.4, 22)  # cells are a quarter octave apart
    for x, y, count in sorted(cells, key=lambda c: -c[2]):
        r = max(1.5, max_r * math.sqrt(count / biggest))
        parts.append(
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="{r:.1f}" fill="{BAR}" '
            f'fill-opacity="0.55"><title>~{2**x:,.0f}×{2**y:,.0f}: {count:,}</title></circle>'
        )
    parts.append("</svg>")
    return "".join(parts)
