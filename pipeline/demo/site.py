"""The embedded sample web: pages of emoji whose <img alt> texts are their names in five
languages, with a robots.txt, a private folder robots forbids, and one page or image per opt-out
signal (SIGNAL_PAGES, SIGNAL_IMAGES: robots.txt Content-Usage, TDMRep, ai.txt, headers, meta).
Served by pipeline.loopback's server, which logs every path it is asked for."""

import html
import json
import re
from collections import defaultdict
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.loopback import LoopbackServer

DATA = Path(__file__).parent / "data"
ROBOTS = "User-agent: *\nDisallow: /private/\nContent-Usage: /usage/ train-ai=n\n"
TDMREP = [{"location": "/tdm/", "tdm-reservation": 1}]
AI_TXT = "User-agent: *\nDisallow: /aitxt/*.png\n"
# Pages that opt out, each in its own way: (path, response headers, <head> markup)
SIGNAL_PAGES = (
    ("/optout.html", {}, "<meta name='robots' content='noai, noimageai'>"),
    ("/usage/notes.html", {}, ""),  # robots.txt: Content-Usage: /usage/ train-ai=n
    ("/noml.html", {"X-Robots-Tag": "noml"}, ""),
    ("/tdm-meta.html", {}, "<meta name='tdm-reservation' content='1'>"),
    ("/tdm/gallery.html", {}, ""),  # tdmrep.json reserves /tdm/
)
# Images that opt out, on an otherwise open page (/signals.html): URL prefix -> image headers
SIGNAL_IMAGES = (
    ("/tdm/img/", {}),  # tdmrep.json
    ("/aitxt/", {}),  # ai.txt: Disallow: /aitxt/*.png
    ("/hdr/noml/", {"X-Robots-Tag": "noml"}),
    ("/hdr/usage/", {"Content-Usage": "train-ai=n"}),
    ("/hdr/tdm/", {"tdm-reservation": "1"}),
)
STOPWORDS = {"a", "an", "and", "the", "of", "with", "in", "on", "for", "to", "at", "by"}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class SampleWeb:
    def __init__(self, data_dir: Path = DATA):
        self.data_dir = Path(data_dir)

    @cached_property
    def emoji(self) -> list[dict]:
        with open(self.data_dir / "emoji.jsonl", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]

    def queries(self) -> list[str]:
        """A query list for the demo: every word of the English names, bar a few stopwords."""
        words = set()
        for row in self.emoji:
            words.update(w for w in re.findall(r"[a-z]+", row["labels"]["en"].lower()))
        return sorted(w for w in words if len(w) > 2 and w not in STOPWORDS)

    def _page(self, title: str, body: str, head: str = "") -> bytes:
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"{head}</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
        ).encode()

    @staticmethod
    def _img(style: str, row: dict, lang: str) -> str:
        alt = html.escape(row["labels"].get(lang) or row["labels"]["en"], quote=True)
        return f'<figure><img src="/img/{style}/{row["image"]}" alt="{alt}" width="64"></figure>'

    @cached_property
    def pages(self) -> dict[str, bytes]:
        by_cat, by_sub = defaultdict(list), defaultdict(list)
        for row in self.emoji:
            by_cat[row["category"]].append(row)
            by_sub[row["subcategory"]].append(row)
        pages = {}
        links = "".join(
            f'<li><a href="category/{slug(c)}.html">{html.escape(c)}</a></li>'
            for c in sorted(by_cat)
        )
        pages["/"] = self._page(
            "Emoji sample web",
            f"<ul>{links}</ul><p><a href='/private/drafts.html'>drafts</a> "
            + "".join(f"<a href='{p}'>no AI training</a> " for p, _, _ in SIGNAL_PAGES)
            + "<a href='/signals.html'>images that say no</a></p>",
        )
        for cat, rows in by_cat.items():
            subs = sorted({r["subcategory"] for r in rows})
            sub_links = "".join(
                f'<a href="../sub/{slug(s)}.html">{html.escape(s)}</a> ' for s in subs
            )
            figures = "".join(self._img("google", r, "en") for r in rows)
            pages[f"/category/{slug(cat)}.html"] = self._page(cat, f"<p>{sub_links}</p>{figures}")
        langs = ("fr", "de", "es", "ja", "en")
        for sub, rows in by_sub.items():
            # The other art style, captioned in a rotation of languages: multilingual alt texts.
            figures = "".join(
                self._img("twitter", r, langs[i % len(langs)]) for i, r in enumerate(rows)
            )
            pages[f"/sub/{slug(sub)}.html"] = self._page(sub, figures + "<a href='/'>home</a>")
        sample = self.emoji[:5]
        for i, (path, _, head) in enumerate(SIGNAL_PAGES):
            rows = self.emoji[5 + 2 * i : 7 + 2 * i]
            figures = "".join(self._img("google", r, "en") for r in rows)
            pages[path] = self._page("Not for AI training", figures, head=head)
        pages["/signals.html"] = self._page("Images that say no", self._signal_figures())
        pages["/private/drafts.html"] = self._page(
            "Drafts", "".join(self._img("google", r, "en") for r in sample)
        )
        return pages

    def _signal_rows(self) -> list[tuple[str, dict, dict]]:
        """(image URL path, its headers, its emoji row) of the images that opt out."""
        rows = self.emoji[20 : 20 + len(SIGNAL_IMAGES)]
        return [(f"{p}{r['image']}", h, r) for (p, h), r in zip(SIGNAL_IMAGES, rows, strict=True)]

    def _signal_figures(self) -> str:
        return "".join(
            f'<figure><img src="{path}" alt="{html.escape(r["labels"]["en"], quote=True)}">'
            "</figure>"
            for path, _, r in self._signal_rows()
        )

    def routes(self) -> dict:
        """path -> (status, headers, body): robots.txt, the pages and both styles' images."""
        html_type = {"Content-Type": "text/html; charset=utf-8"}
        text = {"Content-Type": "text/plain"}
        routes = {
            "/robots.txt": (200, text, ROBOTS.encode()),
            "/.well-known/tdmrep.json": (200, {}, json.dumps(TDMREP).encode()),
            "/ai.txt": (200, text, AI_TXT.encode()),
        }
        routes.update((path, (200, html_type, body)) for path, body in self.pages.items())
        for path, headers, _ in SIGNAL_PAGES:
            routes[path] = (200, {**html_type, **headers}, self.pages[path])
        for path, headers, row in self._signal_rows():
            body = (self.data_dir / "google" / row["image"]).read_bytes()
            routes[path] = (200, {"Content-Type": "image/png", **headers}, body)
        for style in ("google", "twitter"):
            for image in sorted((self.data_dir / style).glob("*.png")):
                body = image.read_bytes()
                routes[f"/img/{style}/{image.name}"] = (200, {"Content-Type": "image/png"}, body)
        return routes

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> "LoopbackServer":
        """The sample web on a loopback server; `with` starts and stops it."""
        from pipeline.loopback import LoopbackServer

        return LoopbackServer(host, self.routes(), port)
