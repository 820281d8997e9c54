"""The embedded sample web: pages of emoji whose <img alt> texts are their names in five
languages, with a robots.txt, a private folder robots forbids and an opted-out page.
Served on loopback by a threaded HTTP server that logs every path it is asked for."""

import html
import json
import re
import threading
from collections import defaultdict
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> "RunningSite":
        return RunningSite(self, host, port)


class RunningSite:
    """The sample web on a loopback port, in a background thread. Use as a context manager."""

    def __init__(self, web: SampleWeb, host: str, port: int):
        self.web, self.hits = web, []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                site.hits.append(self.path)
                path = self.path.split("?")[0]
                if path == "/robots.txt":
                    return self._send(200, "text/plain", ROBOTS.encode())
                if path in site.web.pages:
                    return self._send(200, "text/html; charset=utf-8", site.web.pages[path])
                match = re.fullmatch(r"/img/(google|twitter)/([0-9a-f-]+\.png)", path)
                if match and (site.web.data_dir / match[1] / match[2]).is_file():
                    return self._send(
                        200, "image/png", (site.web.data_dir / match[1] / match[2]).read_bytes()
                    )
                return self._send(404, "text/plain", b"not found")

            def _send(self, code: int, ctype: str, body: bytes):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "RunningSite":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
