"""Evaluation results as JSON, Markdown, HTML and the zero-shot vs k-shot curve (PNG).

`--out FILE.json` writes:
- FILE.json: the contract: per eval set name {"zero_shot", "linear_probe", "overlap", "info"};
  nothing else at the top level, so a reader can iterate over eval sets.
- FILE.meta.json: the run (checkpoint, model, step, templates, options, seconds) and retrieval.
- FILE.md and FILE.html: the tables; FILE.kshot.png: the curve (when probes ran).
NaN is written as null (JSON has no NaN).
"""

import html
import json
import math
from pathlib import Path

from manifests.layout import atomic_path
from manifests.storage import location


def clean(obj):
    """JSON-safe copy: NaN/inf -> None, tuples -> lists, numpy scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str | bytes):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json_bytes(obj) -> bytes:
    return (json.dumps(clean(obj), indent=2, allow_nan=False) + "\n").encode("utf-8")


def _pct(value) -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{100 * value:.1f}")
    )


def _signed(value) -> str:
    return "–" if value is None else f"{100 * value:+.1f}"


def tables(results: dict, meta: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table in the report; percentages with one decimal."""
    out = []
    zs = [
        [
            name,
            str(r["info"]["n_images"]),
            str(r["info"]["n_classes"]),
            _pct(z["top1"]),
            _pct(z["top5"]),
            _pct(z["mean_per_class_recall"]),
        ]
        for name, r in results.items()
        for z in [r["zero_shot"]]
    ]
    out.append(
        (
            f"Zero-shot ({meta.get('templates', '?')}, {meta.get('n_templates', '?')} templates)",
            ["eval set", "images", "classes", "top-1 %", "top-5 %", "mean per-class recall %"],
            zs,
        )
    )
    probes = {n: r["linear_probe"] for n, r in results.items() if r["linear_probe"].get("k_shot")}
    if probes:
        shots = list(next(iter(probes.values()))["k_shot"])
        rows = []
        for name, p in probes.items():
            match = p["k_match"]
            k_txt = (
                "> " + shots[-1]
                if match["first"] is None
                else (f"{match['interpolated']:.1f} (first {match['first']})")
            )
            if match["bound"] == "at_most":
                k_txt = f"≤ {match['first']}"
            cells = [
                f"{_pct(p['k_shot'][k]['top1_mean'])} ± {_pct(p['k_shot'][k]['top1_std'])}"
                for k in shots
            ]
            rows.append([name, _pct(p["zero_shot_top1_test"]), *cells, _pct(p["top1"]), k_txt])
        header = [
            "eval set",
            "zero-shot %",
            *[f"{k}-shot %" for k in shots],
            "full probe %",
            "k matching zero-shot",
        ]
        out.append(
            ("Linear probe top-1 on the probe's test split (mean ± std over seeds)", header, rows)
        )
    overlaps = {n: r["overlap"] for n, r in results.items() if r["overlap"].get("available")}
    if overlaps:
        rows = [
            [
                name,
                f"{_pct(o['overlap_fraction'])}",
                str(o["n_overlap"]),
                _pct(o["top1_all"]),
                _pct(o["top1_clean"]),
                _pct(o["top1_overlap"]),
                _signed(o["all_minus_clean"]),
                _signed(o["overlap_minus_clean"]),
                "–" if o["p_value"] is None else f"{o['p_value']:.3g}",
            ]
            for name, o in overlaps.items()
        ]
        header = [
            "eval set",
            "overlap %",
            "overlap images",
            "All %",
            "Clean %",
            "Overlap %",
            "All − Clean",
            "Overlap − Clean",
            "p (binomial)",
        ]
        out.append(("Zero-shot top-1 on All, Clean and Overlap images", header, rows))
    ret = meta.get("retrieval") or {}
    if ret.get("available"):
        rows = [
            [direction.replace("_", " "), *[_pct(ret[direction][f"R@{k}"]) for k in (1, 5, 10)]]
            for direction in ("image_to_text", "text_to_image")
        ]
        title = (
            f"Retrieval on {ret['n_images']} held-out images of {ret['subset']} "
            f"({ret['n_texts']} distinct captions)"
        )
        out.append((title, ["direction", "R@1 %", "R@5 %", "R@10 %"], rows))
    return out


def _heading(meta: dict) -> str:
    step = f", step {meta['step']}" if meta.get("step") is not None else ""
    return f"Evaluation of {meta.get('checkpoint', '?')} ({meta.get('model', '?')}{step})"


def markdown(results: dict, meta: dict) -> str:
    lines = [f"# {_heading(meta)}", ""]
    for title, header, rows in tables(results, meta):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    ret = meta.get("retrieval") or {}
    if ret and not ret.get("available"):
        lines += [f"Retrieval not run: {ret.get('reason')}", ""]
    for name, r in results.items():
        if not r["overlap"].get("available") and meta.get("data"):
            lines.append(f"Clean vs overlap for {name} not available: {r['overlap']['reason']}")
    return "\n".join(lines).rstrip() + "\n"


def html_page(results: dict, meta: dict, png_name: str | None) -> str:
    esc = html.escape
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>{esc(_heading(meta))}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child{text-align:left}</style>",
        f"<h1>{esc(_heading(meta))}</h1>",
    ]
    for title, header, rows in tables(results, meta):
        parts.append(f"<h2>{esc(title)}</h2><table><tr>")
        parts += [f"<th>{esc(h)}</th>" for h in header]
        parts.append("</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
    if png_name:
        parts.append(f"<h2>Zero-shot vs k-shot</h2><img src='{esc(png_name)}' width='640'>")
    return "\n".join(parts) + "\n"


def plot_kshot(results: dict, path) -> Path | None:
    """Probe top-1 (mean ± std) against k, log2 axis, one colour per eval set, its zero-shot
    top-1 as a dashed line and the matching k marked; None when no probe ran."""
    probes = {n: r["linear_probe"] for n, r in results.items() if r["linear_probe"].get("k_shot")}
    if not probes:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, p) in enumerate(probes.items()):
        colour = f"C{i % 10}"
        ks = [int(k) for k in p["k_shot"]]
        means = [100 * p["k_shot"][str(k)]["top1_mean"] for k in ks]
        stds = [100 * p["k_shot"][str(k)]["top1_std"] for k in ks]
        ax.errorbar(
            ks, means, yerr=stds, marker="o", capsize=3, color=colour, label=f"{name}: linear probe"
        )
        zs = 100 * p["zero_shot_top1_test"]
        ax.axhline(zs, linestyle="--", color=colour, label=f"{name}: zero-shot")
        if p["k_match"]["interpolated"] is not None:
            ax.plot([p["k_match"]["interpolated"]], [zs], marker="*", markersize=14, color=colour)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("labelled training images per class (k)")
    ax.set_ylabel("top-1 accuracy on the probe's test split (%)")
    ax.set_title("Zero-shot vs k-shot linear probe")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = location(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def out_paths(out) -> dict[str, Path]:
    out = location(out)
    stem = out.with_suffix("") if out.suffix == ".json" else out
    return {
        "json": stem.with_name(stem.name + ".json"),
        "meta": stem.with_name(stem.name + ".meta.json"),
        "md": stem.with_name(stem.name + ".md"),
        "html": stem.with_name(stem.name + ".html"),
        "png": stem.with_name(stem.name + ".kshot.png"),
    }


def write_all(out, results: dict, meta: dict) -> dict[str, Path]:
    """Write every output next to `out`; returns the paths written."""
    from manifests.layout import write_bytes_atomic

    paths = out_paths(out)
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    written = {"json": write_bytes_atomic(_json_bytes(results), paths["json"])}
    png = plot_kshot(results, paths["png"])
    if png:
        written["png"] = png
    meta = {**meta, "files": {k: str(v) for k, v in {**written, **paths}.items() if k != "meta"}}
    if not png:
        meta["files"].pop("png", None)
    written["meta"] = write_bytes_atomic(_json_bytes(meta), paths["meta"])
    written["md"] = write_bytes_atomic(markdown(results, meta).encode(), paths["md"])
    page = html_page(results, meta, png.name if png else None)
    written["html"] = write_bytes_atomic(page.encode(), paths["html"])
    return written
