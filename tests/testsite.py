"""The loopback test site: every extraction case, robots.txt, opt-outs, redirects (one to a
second loopback address that must get no request), a redirect loop, a slow page, an oversized
page, broken HTML, a latin-1 page, 404 and 500. Each server logs the paths it was asked for."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROBOTS = "User-agent: *\nDisallow: /private/\n"
SLOW_SECONDS = 3.0  # the slow page's delay; tests use a shorter timeout
HUGE_BYTES = 30 * 1024 * 1024  # the oversized page's length, streamed in 64 KiB chunks


def page(body: str, head: str = "") -> bytes:
    return f"<!doctype html><html><head><meta charset='utf-8'>{head}</head><body>{body}</body></html>".encode()


INDEX_LINKS = [
    "gallery.html", "lazy.html", "latin1.html", "broken.html", "private/secret.html",
    "optout-header.html", "optout-meta.html", "redirect-internal", "redirect-external",
    "loop-a", "slow.html", "huge.html", "missing.html", "error.html", "deep/level1.html",
    "http://other.test/elsewhere.html",
]  # fmt: skip


def pages(external: str) -> dict[str, tuple[int, dict, bytes]]:
    """path → (status, headers, body). `external` is the second server's base URL."""
    html = "text/html; charset=utf-8"
    links = "".join(f'<a href="{link}">{link}</a> ' for link in INDEX_LINKS)
    return {
        "/": (200, {"Content-Type": html}, page(f'<img src="img/cat.png" alt="a cat on a sofa">{links}')),
        "/gallery.html": (200, {"Content-Type": html}, page(
            '<base href="/media/">'
            '<img src="dog.jpg" alt="  a dog &amp; a ball\n   in the&nbsp;park ">'
            '<img src="bird-small.jpg" srcset="bird-small.jpg 320w, bird-large.jpg 1280w, '
            'bird-mid.jpg 640w" alt="a red bird">'
            '<picture><source srcset="fish.webp 1x, fish@2x.webp 2x" type="image/webp">'
            '<img src="fish.jpg" alt="a gold fish"></picture>'
            '<img src="data:image/png;base64,iVBORw0KGgo=" alt="inline data">'
            '<img src="javascript:alert(1)" alt="script">'
            '<img src="noalt.jpg"><img src="emptyalt.jpg" alt="   ">'
            '<img src="dog.jpg" alt="a dog &amp; a ball in the park">'  # the same pair again
        )),
        "/lazy.html": (200, {"Content-Type": html}, page(
            '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="/img/owl.jpg" '
            'alt="an owl at night">'
        )),
        "/latin1.html": (200, {"Content-Type": "text/html; charset=iso-8859-1"},
                         '<html><body><img src="/img/cafe.jpg" alt="café crème"></body></html>'.encode("latin-1")),
        "/broken.html": (200, {"Content-Type": html},
                         b'<html><body><div><p><img src="/img/horse.png" alt="a brown horse"><table><tr><td><b>'),
        "/private/secret.html": (200, {"Content-Type": html}, page('<img src="/img/secret.png" alt="a secret cat">')),
        "/optout-header.html": (200, {"Content-Type": html, "X-Robots-Tag": "noai"},
                                page('<img src="/img/hidden1.png" alt="a cat opted out by header">')),
        "/optout-meta.html": (200, {"Content-Type": html}, page(
            '<img src="/img/hidden2.png" alt="a dog opted out by meta">',
            head="<meta name='robots' content='noimageai'>")),
        "/redirect-internal": (302, {"Location": "/moved.html"}, b""),
        "/moved.html": (200, {"Content-Type": html}, page('<img src="/img/moved.png" alt="a moved owl">')),
        "/redirect-external": (302, {"Location": f"{external}evil.html"}, b""),
        "/loop-a": (302, {"Location": "/loop-b"}, b""),
        "/loop-b": (302, {"Location": "/loop-a"}, b""),
        "/missing.html": (404, {"Content-Type": html}, page("not here")),
        "/error.html": (500, {"Content-Type": html}, page("broken server")),
        "/deep/level1.html": (200, {"Content-Type": html}, page('<img src="/img/l1.png" alt="a fish at depth one"><a href="level2.html">next</a>')),
        "/deep/level2.html": (200, {"Content-Type": html}, page('<img src="/img/l2.png" alt="a fish at depth two"><a href="level3.html">next</a>')),
        "/deep/level3.html": (200, {"Content-Type": html}, page('<img src="/img/l3.png" alt="a fish at depth three"><a href="level4.html">next</a>')),
        "/deep/level4.html": (200, {"Content-Type": html}, page('<img src="/img/l4.png" alt="a fish at depth four">')),
    }  # fmt: skip


def expected_pairs(base: str, max_depth: int = 3) -> set[tuple[str, str, str]]:
    """(image url, caption, page url) a crawl of the site from `base` must find."""
    pairs = {
        (f"{base}img/cat.png", "a cat on a sofa", base),
        (f"{base}media/dog.jpg", "a dog & a ball in the park", f"{base}gallery.html"),
        (f"{base}media/bird-large.jpg", "a red bird", f"{base}gallery.html"),
        (f"{base}media/fish@2x.webp", "a gold fish", f"{base}gallery.html"),
        (f"{base}img/owl.jpg", "an owl at night", f"{base}lazy.html"),
        (f"{base}img/cafe.jpg", "café crème", f"{base}latin1.html"),
        (f"{base}img/horse.png", "a brown horse", f"{base}broken.html"),
        (f"{base}img/moved.png", "a moved owl", f"{base}moved.html"),
    }
    depth_pairs = [
        (f"{base}img/l1.png", "a fish at depth one", f"{base}deep/level1.html"),
        (f"{base}img/l2.png", "a fish at depth two", f"{base}deep/level2.html"),
        (f"{base}img/l3.png", "a fish at depth three", f"{base}deep/level3.html"),
        (f"{base}img/l4.png", "a fish at depth four", f"{base}deep/level4.html"),
    ]
    return pairs | set(depth_pairs[:max_depth])


class Server:
    """A threaded HTTP server on a loopback address serving `routes`; `hits` logs every path."""

    def __init__(self, host: str = "127.0.0.1", routes=None):
        self.hits: list[str] = []
        self.routes = routes if routes is not None else {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                server.hits.append(self.path)
                path = self.path.split("?")[0]
                if path == "/robots.txt":
                    return self._send(200, {"Content-Type": "text/plain"}, ROBOTS.encode())
                if path == "/slow.html":
                    time.sleep(SLOW_SECONDS)
                    return self._send(200, {"Content-Type": "text/html"}, page("slow"))
                if path == "/huge.html":
                    return self._huge()
                status, headers, body = server.routes.get(path, (404, {}, b"not found"))
                return self._send(status, headers, body)

            def _send(self, status, headers, body):
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the slow page): expected

            def _huge(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()  # no Content-Length: the reader must stop by itself
                chunk = b"<p>" + b"x" * 65_530 + b"</p>"
                try:
                    for _ in range(HUGE_BYTES // len(chunk)):
                        self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def start_site() -> tuple[Server, Server]:
    """The test site on 127.0.0.1 and the 'external' server on 127.0.0.2 it redirects to."""
    external = Server(
        "127.0.0.2", routes={"/evil.html": (200, {"Content-Type": "text/html"}, page("evil"))}
    )
    site = Server("127.0.0.1")
    site.routes.update(pages(external.base))
    return site, external
