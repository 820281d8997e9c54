"""A loopback web with every opt-out signal in every form: one site (one origin: its own port)
per case, each with an image the signal covers and one it does not.

Used by the consent tests and benches: `ConsentWeb` starts the sites, `EXPECTED` says what a
build must make of each image (kept, or the status it is dropped with)."""

from __future__ import annotations

import json

from pipeline.loopback import LoopbackServer
from pipeline.testing.site import picture

PNG = {"Content-Type": "image/png"}
TEXT = {"Content-Type": "text/plain"}
ALLOWED_POLICY = "https://policies.test/research-ok"  # the tests pass it as --allow-tdm-policy


def _tdmrep(*rules: dict) -> tuple[int, dict, bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(list(rules)).encode()


def _robots(text: str) -> tuple[int, dict, bytes]:
    return 200, TEXT, text.encode()


def _images(covered: dict | None = None, free: dict | None = None) -> dict:
    """/img/covered.png (with `covered` headers) and /free/other.png (with `free` headers);
    ConsentWeb draws each site's own pictures (no two images of the web are duplicates)."""
    return {
        "/img/covered.png": (200, {**PNG, **(covered or {})}, b""),
        "/free/other.png": (200, {**PNG, **(free or {})}, b""),
    }


async def _redirect_loop(_request):
    from pipeline.loopback import respond

    return respond((302, {"Location": "/ai.txt"}, b""))


# site -> its routes; every site also serves robots.txt allowing everything unless it says
SITES: dict[str, dict] = {
    "tdmrep": {
        "/.well-known/tdmrep.json": _tdmrep(
            {"location": "/img/*", "tdm-reservation": 1, "tdm-policy": "https://a.test/p"}
        ),
        **_images(),
    },
    "tdmrep-allowed-policy": {
        "/.well-known/tdmrep.json": _tdmrep(
            {"location": "/", "tdm-reservation": 1, "tdm-policy": ALLOWED_POLICY}
        ),
        **_images(),
    },
    "robots-usage": {
        "/robots.txt": _robots(
            "User-agent: *\nAllow: /\nContent-Usage: train-ai=n\nContent-Usage: /free/ train-ai=y\n"
        ),
        **_images(),
    },
    "robots-usage-other-agent": {
        "/robots.txt": _robots(
            "User-agent: otherbot\nContent-Usage: train-ai=n\n\nUser-agent: *\nAllow: /\n"
        ),
        **_images(),
    },
    "ai-txt": {
        "/ai.txt": _robots(
            "User-agent: otherbot\nDisallow: /\n\nUser-agent: clipengine-bot\n"
            "Disallow: /img/*.png\n"
        ),
        **_images(),
    },
    "headers": _images(
        {"X-Robots-Tag": "noml", "Content-Usage": "train-ai=n", "tdm-reservation": "1"},
        {"X-Robots-Tag": "otherbot: noai"},
    ),
    "custom-token": _images({"X-Robots-Tag": "nofoundationmodels"}),
    "conflicting": {  # robots.txt says yes, TDMRep says no: the most restrictive wins
        "/robots.txt": _robots("User-agent: *\nAllow: /\nContent-Usage: train-ai=y\n"),
        "/.well-known/tdmrep.json": _tdmrep({"location": "/img/", "tdm-reservation": 1}),
        **_images(),
    },
    "malformed-files": {  # none of these is a rule: everything is allowed, and recorded
        "/.well-known/tdmrep.json": (200, {}, b"\x00\xff[{" * (2_500_000)),  # 10 MB garbage
        "/ai.txt": (200, TEXT, bytes(range(256)) * 64),
        "/robots.txt": _robots("User-agent: *\nContent-Usage: /img/ {]=?\n"),
        **_images(),
    },
    "invalid-json": {
        "/.well-known/tdmrep.json": (200, {}, b'[{"location": "/img/", "tdm-reservation": 1'),
        **_images(),
    },
    "unavailable-tdmrep": {  # a 503: disallow everything for the origin
        "/.well-known/tdmrep.json": (503, TEXT, b"busy"),
        **_images(),
    },
    "ai-txt-redirect-loop": {"/ai.txt": _redirect_loop, **_images()},
    "page-reserved": {  # the images are free; one of them was found on a reserved page
        "/.well-known/tdmrep.json": _tdmrep({"location": "/articles/", "tdm-reservation": 1}),
        **_images(),
    },
}

KEPT = "kept"
# (site, path) -> what a build makes of the image
EXPECTED = {
    ("tdmrep", "/img/covered.png"): "opted_out",
    ("tdmrep-allowed-policy", "/img/covered.png"): KEPT,
    ("robots-usage", "/img/covered.png"): "opted_out",
    ("robots-usage-other-agent", "/img/covered.png"): KEPT,
    ("ai-txt", "/img/covered.png"): "opted_out",
    ("headers", "/img/covered.png"): "opted_out",
    ("custom-token", "/img/covered.png"): "opted_out",  # with --opt-out-token nofoundationmodels
    ("conflicting", "/img/covered.png"): "opted_out",
    ("malformed-files", "/img/covered.png"): KEPT,
    ("invalid-json", "/img/covered.png"): KEPT,
    ("unavailable-tdmrep", "/img/covered.png"): "opted_out",
    ("ai-txt-redirect-loop", "/img/covered.png"): "opted_out",
    ("page-reserved", "/img/covered.png"): KEPT,  # its page is reserved: BUILD_EXPECTED
}
for _site in SITES:  # the other image of a site is covered by nothing, unless it all is
    whole = _site in ("unavailable-tdmrep", "ai-txt-redirect-loop")
    EXPECTED[(_site, "/free/other.png")] = "opted_out" if whole else KEPT


# The page each image was found on, for a URL list (page_url): a page the build does not read,
# whose origin's files still rule the use of its captions. The default page is covered by nothing.
PAGE_OF = {("page-reserved", "/img/covered.png"): "/articles/a.html"}
DEFAULT_PAGE = "/free/page.html"
# What a build from a URL list with those pages makes of each image
BUILD_EXPECTED = {**EXPECTED, ("page-reserved", "/img/covered.png"): "opted_out"}


class ConsentWeb:
    """Every site of SITES on its own loopback port (so its own origin)."""

    def __init__(self):
        self.servers: dict[str, LoopbackServer] = {}

    def __enter__(self) -> ConsentWeb:
        try:
            for name, routes in SITES.items():
                routes = {"/robots.txt": _robots("User-agent: *\nAllow: /\n"), **routes}
                for path in ("/img/covered.png", "/free/other.png"):
                    status, headers, _ = routes[path]
                    routes[path] = (status, headers, picture(f"{name}{path}", size=64))
                self.servers[name] = LoopbackServer(routes=routes).start()
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for server in self.servers.values():
            server.close()
        self.servers.clear()

    def url(self, site: str, path: str) -> str:
        return f"http://127.0.0.1:{self.servers[site].port}{path}"

    def image_urls(self) -> dict[str, tuple[str, str]]:
        """URL -> (site, path) of every image."""
        return {self.url(s, p): (s, p) for s, p in EXPECTED}

    def hits(self, site: str) -> list[str]:
        return list(self.servers[site].hits)


# Archived pages whose own headers or meta tags opt them out (their images are never asked for)
OPTED_OUT_PAGES = {
    "/noml.html": ({"X-Robots-Tag": "noml"}, ""),
    "/tdm-meta.html": ({}, "<meta name='tdm-reservation' content='1'>"),
    "/usage-header.html": ({"Content-Usage": "train-genai=n"}, ""),
}


def write_warc(path, web: ConsentWeb) -> None:
    """A WARC of the pages the images were found on (PAGE_OF), as a crawler archived them, plus
    the pages of OPTED_OUT_PAGES on the "headers" site."""
    from pipeline.sources.warc_recorder import WarcRecorder

    html = {"Content-Type": "text/html; charset=utf-8"}
    pages: dict[tuple[str, str], list[str]] = {}
    for site, image in EXPECTED:
        pages.setdefault((site, PAGE_OF.get((site, image), DEFAULT_PAGE)), []).append(image)
    with WarcRecorder(path, mode="w") as recorder:
        for (site, page), images in sorted(pages.items()):
            tags = "".join(
                f'<img src="{web.url(site, i)}" alt="a photo of a cat from {site}">' for i in images
            )
            body = f"<html><body>{tags}</body></html>".encode()
            recorder.write_response(web.url(site, page), 200, html, body)
        for page, (headers, head) in OPTED_OUT_PAGES.items():
            img = f'<img src="{web.url("headers", "/img/never.png")}" alt="a cat never asked for">'
            body = f"<html><head>{head}</head><body>{img}</body></html>".encode()
            recorder.write_response(web.url("headers", page), 200, {**html, **headers}, body)
