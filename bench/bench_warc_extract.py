"""Benchmark: (image url, alt text) extraction from WARC records on one core.

Writes a synthetic but realistic WARC (default 2,000 HTML pages of 20-60 KB, 10-40 images each,
with srcset, <picture>, lazy-loaded images, decorative images, navigation and footer boilerplate,
scripts and styles, a few latin-1 pages and opt-outs) with WarcRecorder into a temp dir, then
times, in this single process:
  read     iter_warc_pages only (WARC parsing + gzip), no HTML work
  extract  extract_page on bodies already in memory (HTML decode + parse + pair/link extraction)
  total    pairs_from_warc end to end (what the pipeline runs per WARC file)

    python bench/bench_warc_extract.py [--pages 2000] [--seed 0] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from pipeline.extract import extract_page
from pipeline.sources.warc import WarcRecorder, iter_warc_pages, pairs_from_warc

WORDS = (  # noqa: SIM905 (a word list reads better as one string)
    "the a of and to in photo image view red blue green old new house garden city river mountain "
    "dog cat bird car train street market festival portrait landscape sunset beach forest lake "
    "winter summer recipe bread cake kitchen table chair lamp design modern vintage wooden stone "
    "bridge tower museum painting sculpture concert stage crowd team match player goal"
).split()


def words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def image_markup(rng: random.Random, host: str, i: int) -> str:
    name = f"/media/{rng.randrange(10**6)}-{i}"
    alt = words(rng, 2, 12).capitalize() + rng.choice(
        ["", " &amp; more", "&nbsp;2024", " &eacute;t&eacute;"]
    )
    kind = rng.random()
    if kind < 0.30:
        return f'<img src="{name}.jpg" alt="{alt}" width="640" height="480">'
    if kind < 0.45:
        sizes = ", ".join(f"{name}-{w}.jpg {w}w" for w in (320, 640, 1024, 1600))
        return (
            f'<img src="{name}.jpg" srcset="{sizes}" sizes="(max-width: 600px) 100vw" alt="{alt}">'
        )
    if kind < 0.55:
        return f'<img src="{name}.jpg" srcset="{name}@2x.jpg 2x, {name}@3x.jpg 3x" alt="{alt}">'
    if kind < 0.68:
        return (
            f'<picture><source type="image/avif" srcset="{name}-800.avif 800w, {name}-1600.avif 1600w">'
            f'<source type="image/webp" srcset="{name}-800.webp 800w, {name}-1600.webp 1600w">'
            f'<img src="{name}.jpg" alt="{alt}" loading="lazy"></picture>'
        )
    if kind < 0.80:
        return (
            '<img src="data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"'
            f' data-src="https://cdn.{host}{name}.jpg" class="lazyload" alt="{alt}">'
        )
    if kind < 0.86:
        return f'<img data-srcset="{name}-480.jpg 480w, {name}-960.jpg 960w" alt="{alt}">'
    if kind < 0.93:
        return f'<img src="{name}-deco.png" alt="" role="presentation">'  # decorative: no pair
    return f'<img src="/static/logo.svg" alt="{host} logo">'  # repeated on the page: de-duplicated


def make_page(rng: random.Random, index: int) -> tuple[str, dict, bytes]:
    host = f"site{index % 97}.test"
    url = f"https://www.{host}/articles/{index}/{words(rng, 1, 3).replace(' ', '-')}"
    target = rng.randint(20_000, 60_000)  # body bytes
    nav = "".join(f'<li><a href="/section/{w}">{w}</a></li>' for w in words(rng, 15, 40).split())
    head = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{words(rng, 3, 8)}</title>'
        f'<meta name="viewport" content="width=device-width"><link rel="stylesheet" href="/s.css">'
        f"<style>{'.c{margin:0;padding:1px}' * rng.randint(20, 80)}</style>"
        f"<script>window.dataLayer=[];{'var x=1;' * rng.randint(50, 200)}</script></head>"
        f"<body><header><nav><ul>{nav}</ul></nav></header><main><article><h1>{words(rng, 4, 9)}</h1>"
    )
    n_images = rng.randint(10, 40)
    parts = []
    for i in range(n_images):
        parts.append(f"<p>{words(rng, 40, 120)} <a href='/tag/{rng.choice(WORDS)}'>tag</a></p>")
        parts.append(
            f"<figure>{image_markup(rng, host, i)}<figcaption>{words(rng, 3, 10)}</figcaption></figure>"
        )
    tail = (
        '</article></main><footer><a href="/about" rel="nofollow">About</a>'
        f'<a href="https://social.test/{host}">Follow</a><!-- {words(rng, 5, 10)} --></footer>'
    )
    html = head + "".join(parts)
    while len(html) + len(tail) < target:
        html += f"<p>{words(rng, 60, 150)}</p>"
    html += tail + "</body></html>"
    headers = {"Content-Type": "text/html; charset=utf-8", "Server": "bench"}
    if rng.random() < 0.05:
        headers["Content-Type"] = "text/html; charset=iso-8859-1"
        return url, headers, html.replace("article", "artícle").encode("latin-1", "replace")
    if rng.random() < 0.01:
        headers["X-Robots-Tag"] = "noai"
    return url, headers, html.encode()


def write_warc(path: Path, pages: int, seed: int) -> int:
    rng = random.Random(seed)
    total = 0
    with WarcRecorder(path) as recorder:
        for index in range(pages):
            url, headers, body = make_page(rng, index)
            total += len(body)
            recorder.write_response(url, 200, headers, body)
    return total


def best_of(repeat: int, func) -> tuple[float, float, object]:
    """Best wall and best CPU seconds over `repeat` runs (CPU time is robust to other load)."""
    wall = cpu = float("inf")
    result = None
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = func()
        wall = min(wall, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - started_cpu)
    return wall, cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.warc.gz"
        started = time.perf_counter()
        html_bytes = write_warc(path, args.pages, args.seed)
        write_s = time.perf_counter() - started
        mb = html_bytes / 1e6
        print(
            f"WARC: {args.pages} pages, {mb:.1f} MB HTML, {path.stat().st_size / 1e6:.1f} MB "
            f"gzip'd, written in {write_s:.1f} s"
        )

        read = best_of(args.repeat, lambda: list(iter_warc_pages(path)))
        records = read[2]
        extract = best_of(
            args.repeat,
            lambda: sum(len(extract_page(r.url, r.body, r.headers).pairs) for r in records),
        )
        total = best_of(args.repeat, lambda: list(pairs_from_warc(path)))
        total_pairs = sum(len(p) for _, p in total[2])
        assert total_pairs == extract[2], (total_pairs, extract[2])
        opted = sum(info.opted_out for info, _ in total[2])
        print(
            f"pairs: {total_pairs} ({total_pairs / args.pages:.1f}/page), opted-out pages: {opted}"
        )
        print("single process, one core; rates from CPU seconds (wall seconds in brackets)")
        print(f"{'stage':<9}{'cpu s':>7}{'wall s':>9}{'pages/s':>9}{'pairs/s':>9}{'MB/s':>7}")
        for name, (wall, cpu, _) in (("read", read), ("extract", extract), ("total", total)):
            print(
                f"{name:<9}{cpu:>7.2f}{f'({wall:.2f})':>9}{args.pages / cpu:>9.0f}"
                f"{total_pairs / cpu:>9.0f}{mb / cpu:>7.1f}"
            )


if __name__ == "__main__":
    main()
