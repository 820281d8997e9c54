"""The loopback test site: every extraction case, robots.txt, opt-outs, redirects (one to a
second loopback address that must get no request), a redirect loop, a slow page, an oversized
page, broken HTML, a latin-1 page, 404 and 500, on pipeline.loopback's server, which logs every
request (`hits`)."""

import hashlib
import io
import struct
import zlib
from functools import cache

from pipeline.loopback import LoopbackServer

ROBOTS = "User-agent: *\nDisallow: /private/\n"
SLOW_SECONDS = 6.0  # the slow page's delay; tests time out after 3 s
HUGE_BYTES = 30 * 1024 * 1024  # the oversized page's length, streamed in 64 KiB chunks


def page(body: str, head: str = "") -> bytes:
    head = f"<meta charset='utf-8'>{head}"
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>".encode()


INDEX_LINKS = [
    "gallery.html",
    "lazy.html",
    "latin1.html",
    "broken.html",
    "private/secret.html",
    "optout-header.html",
    "optout-meta.html",
    "redirect-internal",
    "redirect-external",
    "loop-a",
    "slow.html",
    "huge.html",
    "missing.html",
    "error.html",
    "deep/level1.html",
    "http://other.test/elsewhere.html",
    "images.html",
]


@cache
def picture(name: str, fmt: str = "PNG", size: int = 96) -> bytes:
    """A distinct image per name: an 8x8 grid of seeded random colours, scaled up."""
    from PIL import Image

    seed = hashlib.sha256(name.encode()).digest() * 6
    grid = Image.frombytes("RGB", (8, 8), seed[:192])
    out = io.BytesIO()
    grid.resize((size, size), Image.NEAREST).save(out, fmt)
    return out.getvalue()


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A PNG whose header declares width x height pixels (valid CRC), with one tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


# (path, caption, served as, body or None for a special route, status the image stage gives)
IMAGE_CASES = [
    ("/img/truncated.jpg", "a truncated cat", "image/jpeg", "truncated", "decode_failed"),
    ("/img/html.png", "a fake cat", "image/png", "html", "not_an_image"),
    ("/img/empty.png", "an empty cat", "image/png", "empty", "not_an_image"),
    ("/img/bomb.png", "a bomb cat", "image/png", "bomb", "too_large"),
    ("/img/huge.jpg", "a huge cat", "image/jpeg", "huge", "too_large"),
    ("/img/optout.png", "an opted out cat", "image/png", "optout", "opted_out"),
    # cat.png's bytes under another caption: kept beside cat.png's image, stored once
    ("/img/copy-of-cat.png", "the same cat again", "image/png", "copy", "kept"),
    ("/private/cat.png", "a private cat", "image/png", "private", "robots_disallowed"),
    ("/img/tiny.png", "a tiny cat", "image/png", "tiny", "too_small"),
    (
        "/img/chat.webp",
        "un chat noir dort sur le canapé du salon",
        "image/webp",
        "webp",
        "language",
    ),
    ("/img/katze.gif", "eine schwarze Katze schläft auf dem Sofa", "image/gif", "gif", "language"),
]


HTML = {"Content-Type": "text/html; charset=utf-8"}
DEPTHS = ("one", "two", "three", "four")  # /deep/level1.html links to level2 ... to level4


def html_bodies() -> dict[str, str]:
    """path -> <body> of the pages served as 200 text/html with nothing else special."""
    bodies = {
        "/": '<img src="img/cat.png" alt="a cat on a sofa">'
        + "".join(f'<a href="{link}">{link}</a> ' for link in INDEX_LINKS),
        "/gallery.html": '<base href="/media/">'
        '<img src="dog.jpg" alt="  a dog &amp; a ball\n   in the&nbsp;park ">'
        '<img src="bird-small.jpg" srcset="bird-small.jpg 320w, bird-large.jpg 1280w, '
        'bird-mid.jpg 640w" alt="a red bird">'
        '<picture><source srcset="fish.webp 1x, fish@2x.webp 2x" type="image/webp">'
        '<img src="fish.jpg" alt="a gold fish"></picture>'
        '<img src="data:image/png;base64,iVBORw0KGgo=" alt="inline data">'
        '<img src="javascript:alert(1)" alt="script">'
        '<img src="noalt.jpg"><img src="emptyalt.jpg" alt="   ">'
        '<img src="dog.jpg" alt="a dog &amp; a ball in the park">',  # the same pair again
        "/lazy.html": '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" '
        'data-src="/img/owl.jpg" alt="an owl at night">',
        "/private/secret.html": '<img src="/img/secret.png" alt="a secret cat">',
        "/moved.html": '<img src="/img/moved.png" alt="a moved owl">',
        "/images.html": "".join(
            f'<img src="{path}" alt="{caption}">' for path, caption, *_ in IMAGE_CASES
        ),
    }
    for level, word in enumerate(DEPTHS, 1):
        link = f'<a href="level{level + 1}.html">next</a>' if level < len(DEPTHS) else ""
        img = f'<img src="/img/l{level}.png" alt="a fish at depth {word}">'
        bodies[f"/deep/level{level}.html"] = img + link
    return bodies


def pages(external: str) -> dict[str, tuple[int, dict, bytes]]:
    """path -> (status, headers, body). `external` is the second server's base URL."""
    routes = {path: (200, HTML, page(body)) for path, body in html_bodies().items()}
    latin1 = '<html><body><img src="/img/cafe.jpg" alt="café crème"></body></html>'
    broken = '<html><body><div><p><img src="/img/horse.png" alt="a brown horse"><table><tr><td>'
    routes |= {
        "/robots.txt": (200, {"Content-Type": "text/plain"}, ROBOTS.encode()),
        "/latin1.html": (
            200,
            {"Content-Type": "text/html; charset=iso-8859-1"},
            latin1.encode("latin-1"),
        ),
        "/broken.html": (200, HTML, broken.encode() + b"<b>"),
        "/optout-header.html": (
            200,
            {**HTML, "X-Robots-Tag": "noai"},
            page('<img src="/img/hidden1.png" alt="a cat opted out by header">'),
        ),
        "/optout-meta.html": (
            200,
            HTML,
            page(
                '<img src="/img/hidden2.png" alt="a dog opted out by meta">',
                head="<meta name='robots' content='noimageai'>",
            ),
        ),
        "/redirect-internal": (302, {"Location": "/moved.html"}, b""),
        "/redirect-external": (302, {"Location": f"{external}evil.html"}, b""),
        "/loop-a": (302, {"Location": "/loop-b"}, b""),
        "/loop-b": (302, {"Location": "/loop-a"}, b""),
        "/missing.html": (404, HTML, page("not here")),
        "/error.html": (500, HTML, page("broken server")),
    }
    return routes | image_routes()


GOOD_IMAGES = {
    "/img/cat.png": "PNG",
    "/media/dog.jpg": "JPEG",
    "/media/bird-large.jpg": "JPEG",
    "/media/fish@2x.webp": "WEBP",
    "/img/owl.jpg": "JPEG",
    "/img/cafe.jpg": "JPEG",
    "/img/horse.png": "PNG",
    "/img/moved.png": "PNG",
    "/img/l1.png": "PNG",
    "/img/l2.png": "PNG",
    "/img/l3.png": "PNG",
    "/img/l4.png": "PNG",
}
TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


def image_routes() -> dict:
    routes = {
        path: (200, {"Content-Type": TYPES[fmt]}, picture(path, fmt))
        for path, fmt in GOOD_IMAGES.items()
    }
    special = {
        "truncated": picture("truncated", "JPEG")[:300],
        "html": page("<p>not an image</p>"),
        "empty": b"",
        "bomb": bomb_png(),
        "copy": picture("/img/cat.png", "PNG"),
        "private": picture("private", "PNG"),
        "tiny": picture("tiny", "PNG", size=8),
        "webp": picture("chat", "WEBP"),
        "gif": picture("katze", "GIF"),
    }
    for path, _, ctype, kind, _ in IMAGE_CASES:
        headers = {"Content-Type": ctype}
        if kind == "optout":
            headers["X-Robots-Tag"] = "noimageai"
            routes[path] = (200, headers, picture("optout", "PNG"))
        elif kind in special:
            routes[path] = (200, headers, special[kind])
    return routes


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
        (f"{base}img/l{level}.png", f"a fish at depth {word}", f"{base}deep/level{level}.html")
        for level, word in enumerate(DEPTHS, 1)
    ]
    images = {
        (f"{base}{path[1:]}", caption, f"{base}images.html") for path, caption, *_ in IMAGE_CASES
    }
    return pairs | set(depth_pairs[:max_depth]) | images


def start_site() -> tuple[LoopbackServer, LoopbackServer]:
    """The test site on 127.0.0.1 and the 'external' server on 127.0.0.2 it redirects to, both
    started; close() each when done."""
    external = LoopbackServer(
        "127.0.0.2", routes={"/evil.html": (200, {"Content-Type": "text/html"}, page("evil"))}
    ).start()
    site = LoopbackServer("127.0.0.1", routes=pages(external.base))
    site.slow("/slow.html", SLOW_SECONDS, page("slow"), headers={"Content-Type": "text/html"})
    for path in ("/huge.html", "/img/huge.jpg"):
        # no Content-Length: the reader must stop by itself
        site.stream(path, HUGE_BYTES, headers={"Content-Type": "text/html"})
    try:
        return site.start(), external
    except BaseException:
        external.close()
        raise
