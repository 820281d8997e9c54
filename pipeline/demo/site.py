"""The embedded sample web: pages of emoji whose <img alt> texts are their names in five
languages, with a robots.txt, a private folder robots forbids and an opted-out page.
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
ROBOTS = "User-agent: *\nDisallow: /private/\n"
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
            "<a href='/optout.html'>no AI training</a></p>",
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
        pages["/optout.html"] = self._page(
            "Opted out",
            "".join(self._img("google", r, "en") for r in sample),
            head="<meta name='robots' content='noai, noimageai'>",
        )
        pages["/private/drafts.html"] = self._page(
            "Drafts", "".join(self._img("google", r, "en") for r in sample)
        )
        return pages

    def routes(self) -> dict:
        """path -> (status, headers, body): robots.txt, the pages and both styles' images."""
        html_type = {"Content-Type": "text/html; charset=utf-8"}
        routes = {"/robots.txt": (200, {"Content-Type": "text/plain"}, ROBOTS.encode())}
        routes.update((path, (200, html_type, body)) for path, body in self.pages.items())
        for style in ("google", "twitter"):
            for image in sorted((self.data_dir / style).glob("*.png")):
                body = image.read_bytes()
                routes[f"/img/{style}/{image.name}"] = (200, {"Content-Type": "image/png"}, body)
        return routes

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> "LoopbackServer":
        """The sample web on a loopback server; `with` starts and stops it."""
        from pipeline.loopback import LoopbackServer

        return LoopbackServer(host, self.routes(), port)
