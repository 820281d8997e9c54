"""Extract (image url, alt text) pairs and outgoing links from an HTML page.

The same function serves a live crawl and a WARC replay, so a recorded crawl replays to exactly the
pairs it gave live. The page's own opt-out signals (X-Robots-Tag and meta robots `noai`,
`noimageai`, `noml`; the Content-Usage header; TDMRep's header and meta tags) become its consent
findings (pipeline.net.consent); any refusal empties its pairs.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from selectolax.lexbor import LexborHTMLParser

# The user agent name whose robots directives we obey besides the unprefixed ones (the default
# product token; a build passes its own through ConsentPolicy).
BOT_NAME = "clipengine-bot"
# Lazy-loading libraries keep the real image here while `src` holds a placeholder.
LAZY_SRC_ATTRS = ("data-src", "data-lazy-src", "data-original")
LAZY_SRCSET_ATTRS = ("data-srcset", "data-lazy-srcset")
_SKIP_SCHEMES = ("data:", "javascript:", "about:", "blob:")
_PLACEHOLDER_RE = re.compile(
    r"(?:^|/)(?:blank|spacer|pixel|placeholder|transparent|lazy|loading|loader|1x1)[^/]*"
    r"\.(?:gif|png|svg)$",
    re.IGNORECASE,
)
_URL_STRIP_RE = re.compile(r"[\t\n\r]")

# ---------------------------------------------------------------------------------------------
# Character set detection
# ---------------------------------------------------------------------------------------------
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_CT_CHARSET_RE = re.compile(r"charset\s*=\s*[\"']?\s*([^\"';,\s]+)", re.IGNORECASE)
_META_CHARSET_RE = re.compile(
    rb"<meta\b[^>]*?charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:\-]+)", re.IGNORECASE
)
# WHATWG Encoding Standard label mapping where it differs from Python's codec of the same name:
# browsers decode latin-1/ascii labels as windows-1252, GB2312 as GB18030, and so on.
_ENCODING_ALIASES = {
    **dict.fromkeys(
        (
            "iso-8859-1",
            "iso8859-1",
            "iso_8859-1",
            "latin1",
            "latin-1",
            "l1",
            "ascii",
            "us-ascii",
            "windows-1252",
            "x-cp1252",
            "x-user-defined",
        ),
        "cp1252",
    ),
    **dict.fromkeys(("iso-8859-9", "latin5"), "cp1254"),
    **dict.fromkeys(("windows-874", "tis-620", "iso-8859-11"), "cp874"),
    **dict.fromkeys(("gb2312", "gbk", "x-gbk"), "gb18030"),
    **dict.fromkeys(("euc-kr", "ks_c_5601-1987"), "cp949"),
    "big5": "big5hkscs",
    "x-sjis": "shift_jis",
    "utf-7": "utf-8",  # never honour UTF-7 (a classic XSS vector; browsers refuse it too)
}


def _python_codec(label: str | None) -> str | None:
    """Map a charset label to a Python text codec name, or None when it is unknown."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    name = _ENCODING_ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    # codecs.lookup also knows bytes-to-bytes codecs such as base64 or zlib.
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def _sniff_encoding(body: bytes, content_type: str | None) -> str:
    # A byte order mark is unambiguous, so (as in the WHATWG algorithm) it wins over the header.
    for bom, codec in _BOMS:
        if body.startswith(bom):
            return codec
    if content_type:
        match = _CT_CHARSET_RE.search(content_type)
        codec = _python_codec(match.group(1)) if match else None
        if codec:
            return codec
    match = _META_CHARSET_RE.search(body, 0, 2048)
    if match:
        codec = _python_codec(match.group(1).decode("ascii", "replace"))
        # A page that reached us as bytes cannot be UTF-16 without a BOM; browsers use UTF-8.
        if codec and not codec.startswith("utf-16"):
            return codec
    return "utf-8"


def decode_html(body: bytes, content_type: str | None) -> str:
    """Decode an HTML body: charset from BOM, then Content-Type, then `<meta>`, else UTF-8."""
    codec = _sniff_encoding(body, content_type)
    try:
        return body.decode(codec, errors="replace")
    except (LookupError, ValueError, TypeError):
        return body.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------
# Robots directives
# ---------------------------------------------------------------------------------------------
def header_values(headers: Mapping[str, object] | Iterable | None, name: str) -> list[str]:
    """All values of header `name` (case-insensitive); a value may be a str or a list of str.

    Accepts a plain mapping, a multidict (whose items() repeats keys) or (key, value) pairs.
    """
    if not headers:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    wanted = name.lower()
    values: list[str] = []
    for key, value in items:
        if str(key).lower() != wanted:
            continue
        if isinstance(value, (list, tuple)):
            values.extend(str(v) for v in value)
        elif value is not None:
            values.append(str(value))
    return values


def nofollow(x_robots_tag: Iterable[str], metas: Iterable[tuple[str, str]], token: str) -> bool:
    """Whether X-Robots-Tag values or meta (name, content) pairs tell us not to follow links
    (opt-outs are the consent findings' business: pipeline.net.consent)."""
    from pipeline.net.consent_rules import meta_robots_tokens, x_robots_tokens

    tokens = x_robots_tokens(x_robots_tag, token) | meta_robots_tokens(metas, token)
    return "nofollow" in tokens or "none" in tokens


# ---------------------------------------------------------------------------------------------
# URLs, captions, srcset
# ---------------------------------------------------------------------------------------------
def _valid_http(url: str) -> str | None:
    """`url` without its fragment if it is http(s) with a host, else None."""
    url = url.split("#", 1)[0]
    lower = url[:8].lower()
    if lower.startswith("http://"):
        rest = url[7:]
    elif lower.startswith("https://"):
        rest = url[8:]
    else:
        return None
    if not rest or rest[0] in "/?\\":  # no host
        return None
    if "[" in rest or "]" in rest:  # IPv6 literal: let urlsplit reject malformed brackets
        try:
            urlsplit(url).hostname  # noqa: B018 (validation only)
        except ValueError:
            return None
    return url


class UrlResolver:
    """Resolves the URLs of one page against its base; same results as `urljoin` but with fast
    paths for the common shapes (absolute, root-relative, plain relative), which a page has
    hundreds of (urljoin was most of the extraction time)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self._origin = self._dir = None
        valid = _valid_http(base)
        if valid:
            scheme, _, rest = valid.partition("://")
            host_end = min((i for i in (rest.find(c) for c in "/?") if i >= 0), default=len(rest))
            path = rest[host_end:].split("?", 1)[0]
            self._scheme = scheme.lower()
            self._origin = f"{self._scheme}://{rest[:host_end]}"
            self._dir = self._origin + (path[: path.rfind("/") + 1] or "/")

    def __call__(self, raw: str | None) -> str | None:
        """Absolute http(s) URL of `raw`, fragment removed; None if not fetchable."""
        if not raw:
            return None
        raw = raw.strip()
        if "\t" in raw or "\n" in raw or "\r" in raw:
            raw = _URL_STRIP_RE.sub("", raw)
        if not raw or raw[:11].lower().startswith(_SKIP_SCHEMES):
            return None
        if "/." in raw or "\\" in raw or raw[0] in ".?#" or self._origin is None:
            return self._join(raw)  # dot segments, backslashes, query/fragment-only: the slow way
        head = raw[:8].lower()
        if head.startswith(("http://", "https://")):
            scheme, _, rest = raw.partition(":")
            return _valid_http(scheme.lower() + ":" + rest)
        if raw.startswith("//"):
            return _valid_http(self._scheme + ":" + raw)
        if raw[0] == "/":
            return _valid_http(self._origin + raw)
        colon = raw.find(":")
        if colon >= 0 and not any(c in raw[:colon] for c in "/?#"):
            return self._join(raw)  # some other scheme (or a port-like relative path)
        return _valid_http(self._dir + raw)

    def _join(self, raw: str) -> str | None:
        try:
            return _valid_http(urljoin(self.base, raw))
        except ValueError:  # e.g. an unbalanced IPv6 bracket
            return None


def resolve_url(base: str, raw: str | None) -> str | None:
    """Absolute http(s) URL of `raw` against `base`, fragment removed; None if not fetchable."""
    return UrlResolver(base)(raw)


def clean_caption(text: str | None) -> str:
    """Fold all whitespace runs (nbsp and other Unicode spaces included) into one space."""
    return " ".join(text.split()) if text else ""


_SRCSET_URL_RE = re.compile(r"[\s,]*(\S+)")


def _descriptor_values(descriptors: str) -> tuple[float | None, float | None]:
    width = density = None
    for desc in descriptors.split():
        unit, number = desc[-1:].lower(), desc[:-1]
        try:
            if unit == "w":
                width = float(int(number))
            elif unit == "x":
                density = float(number)
        except ValueError:
            pass
    return width, density


def parse_srcset(srcset: str) -> list[tuple[str, float | None, float | None]]:
    """(url, width descriptor, density descriptor) candidates, per the HTML srcset algorithm.

    URLs may contain commas (`w_100,h_80` on image CDNs): a URL is a run of non-whitespace, and
    only a comma after it (or trailing it) ends the candidate.
    """
    out: list[tuple[str, float | None, float | None]] = []
    pos, n = 0, len(srcset)
    while pos < n:
        match = _SRCSET_URL_RE.match(srcset, pos)
        if not match:
            break
        url, pos = match.group(1), match.end()
        descriptors = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            end = srcset.find(",", pos)
            end = n if end < 0 else end
            if "(" in srcset[pos:end]:  # a comma inside parentheses does not end the candidate
                depth, end = 0, pos
                while end < n and (srcset[end] != "," or depth):
                    depth += {"(": 1, ")": -1}.get(srcset[end], 0)
                    end += 1
            descriptors, pos = srcset[pos:end], end + 1
        if url:
            out.append((url, *_descriptor_values(descriptors)))
    return out


def _best_candidates(candidates: list[tuple[str, float | None, float | None]]) -> Iterator[str]:
    """Candidate URLs, best first: largest width descriptor, else largest density (default 1x)."""
    with_width = [c for c in candidates if c[1] is not None]
    if with_width:
        ranked = sorted(with_width, key=lambda c: -c[1])  # stable: first of equals wins
    else:
        ranked = sorted(candidates, key=lambda c: -(c[2] if c[2] is not None else 1.0))
    for url, _, _ in ranked:
        yield url


def _is_placeholder(src: str | None) -> bool:
    if not src or not src.strip():
        return True
    src = src.strip()
    return src[:5].lower() in ("data:", "about") or bool(_PLACEHOLDER_RE.search(src.split("?")[0]))


def _first_attr(attrs: Mapping[str, str | None], names: Iterable[str]) -> str | None:
    for name in names:
        value = attrs.get(name)
        if value and value.strip() and value.strip()[:5].lower() != "data:":
            return value
    return None


def _img_candidates(
    attrs: Mapping[str, str | None],
) -> list[tuple[str, float | None, float | None]]:
    src = attrs.get("src")
    if _is_placeholder(src):
        src = _first_attr(attrs, LAZY_SRC_ATTRS)
    srcset = attrs.get("srcset") or _first_attr(attrs, LAZY_SRCSET_ATTRS)
    candidates = parse_srcset(srcset) if srcset else []
    if src:
        candidates.append((src.strip(), None, None))
    return candidates


def _source_candidates(picture) -> list[tuple[str, float | None, float | None]]:
    candidates: list[tuple[str, float | None, float | None]] = []
    for child in picture.iter():
        if child.tag == "source":
            attrs = child.attributes
            srcset = attrs.get("srcset") or _first_attr(attrs, LAZY_SRCSET_ATTRS)
            if srcset:
                candidates.extend(parse_srcset(srcset))
    return candidates


# ---------------------------------------------------------------------------------------------
# Page extraction
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Pair:
    url: str  # absolute http(s) image URL, no fragment
    caption: str  # alt text, entities decoded, whitespace folded
    page_url: str


@dataclass(slots=True)
class PageExtract:
    pairs: list[Pair]
    links: list[str]  # absolute http(s) targets of followable <a href>, document order
    opted_out: bool  # a signal of the page refuses AI training: pairs is empty
    nofollow: bool  # robots nofollow / none: links is empty
    error: str | None = None  # set when the HTML could not be parsed at all
    consent: list = field(default_factory=list)  # pipeline.net.consent Findings of the page


def _page_pairs(page_url: str, resolve: UrlResolver, images: list) -> list[Pair]:
    pairs: list[Pair] = []
    seen: set[tuple[str, str]] = set()
    for img in images:
        attrs = img.attributes
        caption = clean_caption(attrs.get("alt"))
        if not caption:
            continue
        candidates = _img_candidates(attrs)
        parent = img.parent
        if parent is not None and parent.tag == "picture":
            candidates = _source_candidates(parent) + candidates
        for raw in _best_candidates(candidates):
            url = resolve(raw)
            if url:
                if (url, caption) not in seen:
                    seen.add((url, caption))
                    pairs.append(Pair(url, caption, page_url))
                break
    return pairs


def _page_links(page_url: str, resolve: UrlResolver, anchors: list) -> list[str]:
    links: list[str] = []
    seen = {page_url.split("#", 1)[0]}  # a link back to the page itself is not news
    for anchor in anchors:
        attrs = anchor.attributes
        rel = (attrs.get("rel") or "").lower().split()
        if "nofollow" in rel:
            continue
        url = resolve(attrs.get("href"))
        if url and url not in seen:
            seen.add(url)
            links.append(url)
    return links


def extract_page(
    page_url: str,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    policy=None,
    at: float | None = None,
) -> PageExtract:
    """Pairs and links of one HTML page fetched from `page_url` (the final URL after redirects).

    `headers` are the HTTP response headers (case-insensitive names; a value may be a list).
    `policy`: the build's ConsentPolicy (our token, opt-out tokens, allowed TDM policies);
    `at`: when the page was fetched (time.time()), for its findings.
    Never raises on page content; an opt-out empties `pairs`, a nofollow empties `links`.
    """
    from pipeline.net.consent import ConsentPolicy, header_findings, meta_findings, refusals

    policy = policy or ConsentPolicy(BOT_NAME)
    content_type = next(iter(header_values(headers, "content-type")), None)
    x_robots = header_values(headers, "x-robots-tag")
    said = header_findings(headers, policy, at)
    try:
        tree = LexborHTMLParser(decode_html(body, content_type))
        nodes = tree.css("base[href], meta[content], img, a[href]")
    except Exception as exc:  # lexbor rejects almost nothing; keep the crawl going if it does
        no_links = nofollow(x_robots, (), policy.token)
        error = f"html parse failed: {exc!r}"
        return PageExtract([], [], bool(refusals(said)), no_links, error=error, consent=said)
    base, metas, images, anchors = page_url, [], [], []
    base_seen = False
    for node in nodes:
        tag = node.tag
        if tag == "img":
            images.append(node)
        elif tag == "a":
            anchors.append(node)
        elif tag == "meta":
            attrs = node.attributes
            name = attrs.get("name") or attrs.get("http-equiv")
            if name:
                metas.append((name, attrs.get("content") or ""))
        elif tag == "base" and not base_seen:
            base_seen = True  # only the first <base href> counts
            resolved = resolve_url(page_url, node.attributes.get("href"))
            base = resolved or page_url
    no_links = nofollow(x_robots, metas, policy.token)
    said += meta_findings(metas, policy, said[0].at)
    opted_out = bool(refusals(said))
    resolve = UrlResolver(base)
    pairs = [] if opted_out else _page_pairs(page_url, resolve, images)
    links = [] if no_links else _page_links(page_url, resolve, anchors)
    return PageExtract(pairs, links, opted_out, no_links, consent=said)
