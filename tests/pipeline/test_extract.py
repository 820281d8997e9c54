import codecs
from urllib.parse import urljoin

import pytest
from multidict import CIMultiDict

from pipeline.extract import (
    Pair,
    UrlResolver,
    decode_html,
    extract_page,
    parse_srcset,
    resolve_url,
)

PAGE = "http://example.org/dir/page.html"


def pairs_of(html: str | bytes, headers=None, page: str = PAGE) -> list[tuple[str, str]]:
    body = html.encode() if isinstance(html, str) else html
    return [(p.url, p.caption) for p in extract_page(page, body, headers).pairs]


# --- decode_html --------------------------------------------------------------------------------


def test_decode_charset_from_content_type_header():
    body = "<p>café crème</p>".encode("latin-1")
    assert "café crème" in decode_html(body, "text/html; charset=ISO-8859-1")
    assert "café crème" in decode_html(body, 'text/html; charset="windows-1252"')


def test_decode_windows_1252_from_meta_tags():
    body = b'<html><head><meta charset="windows-1252"></head><p>caf\xe9 \x93q\x94</p>'
    assert "café “q”" in decode_html(body, "text/html")
    body = (
        b'<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"><p>na\xefve</p>'
    )
    assert "naïve" in decode_html(body, None)


def test_decode_header_wins_over_meta_and_bom_wins_over_header():
    body = '<meta charset="iso-8859-1"><p>é</p>'.encode()
    assert "<p>é</p>" in decode_html(body, "text/html; charset=utf-8")
    assert "é" in decode_html(codecs.BOM_UTF8 + "é".encode(), "text/html; charset=latin-1")
    utf16 = codecs.BOM_UTF16_LE + "<p>ü</p>".encode("utf-16-le")
    assert decode_html(utf16, None) == "<p>ü</p>"


def test_decode_defaults_and_never_raises():
    assert decode_html("ünïcode".encode(), None) == "ünïcode"
    assert decode_html(b"bad \xff\xfe byte", None) == "bad \ufffd\ufffd byte"
    for label in ("no-such-charset", "base64", "zlib", "utf-7", "", ";;;"):
        assert decode_html("é".encode(), f"text/html; charset={label}") == "é"
    assert decode_html(b"", None) == ""
    # A meta tag beyond the first 2 KB is not sniffed.
    late = b" " * 3000 + b'<meta charset="latin-1"><p>\xe9</p>'
    assert "\ufffd" in decode_html(late, None)


# --- srcset / URL helpers -----------------------------------------------------------------------


def test_parse_srcset_descriptors_and_commas_in_urls():
    assert parse_srcset("a.jpg 100w, b.jpg 2x,c.jpg") == [
        ("a.jpg", 100.0, None),
        ("b.jpg", None, 2.0),
        ("c.jpg", None, None),
    ]
    assert parse_srcset("https://cdn/w_100,h_50/x.jpg 1x, https://cdn/w_200,h_100/x.jpg 2x") == [
        ("https://cdn/w_100,h_50/x.jpg", None, 1.0),
        ("https://cdn/w_200,h_100/x.jpg", None, 2.0),
    ]
    assert parse_srcset("  ,, ") == []
    assert parse_srcset("x.jpg bogus") == [("x.jpg", None, None)]


def test_resolve_url_rules():
    assert resolve_url(PAGE, "../img/a.jpg#frag") == "http://example.org/img/a.jpg"
    assert resolve_url(PAGE, "//cdn.example.net/a.jpg") == "http://cdn.example.net/a.jpg"
    assert resolve_url(PAGE, " /a\n.jpg ") == "http://example.org/a.jpg"
    for bad in (
        "data:image/png;base64,AA",
        "javascript:void(0)",
        "about:blank",
        "blob:x",
        "ftp://example.org/a.jpg",
        "mailto:a@b.c",
        "",
        None,
        "http://[bad",
    ):
        assert resolve_url(PAGE, bad) is None


@pytest.mark.parametrize(
    "base",
    [
        "http://h.test/dir/page.html?q=1#f",
        "https://h.test",
        "http://u@h.test:8080/a/b/",
        "http://h.test?x",
    ],
)
def test_url_resolver_fast_paths_agree_with_urljoin(base):
    raws = [
        "a.jpg",
        "/b/c.jpg?x=1&y=2",
        "//cdn.test/d.jpg",
        "HTTPS://Other.test/E.jpg",
        "../up.jpg",
        "./same.jpg",
        "?page=2",
        "#top",
        "sub/dir/f.jpg#frag",
        "a:b/c.jpg",
        "g.jpg;p",
        "http:rel.jpg",
        "/x/./y/../z.jpg",
        "%20sp ace.jpg",
        "ünï.jpg",
    ]
    resolve = UrlResolver(base)
    for raw in raws:
        scheme, _, rest = urljoin(base, raw).split("#")[0].partition(":")
        expected = f"{scheme.lower()}:{rest}"  # we also lower-case an upper-case scheme
        if not expected.startswith(("http://", "https://")):
            expected = None
        assert resolve(raw) == expected, raw


# --- images -------------------------------------------------------------------------------------


def test_img_alt_entities_whitespace_and_relative_urls():
    html = '<img src="../i/a.jpg#x" alt="  Caf&eacute;&nbsp;&amp;\n\t cr&#232;me  ">'
    assert pairs_of(html) == [("http://example.org/i/a.jpg", "Café & crème")]
    pair = extract_page(PAGE, html.encode(), None).pairs[0]
    assert pair == Pair("http://example.org/i/a.jpg", "Café & crème", PAGE)


def test_img_without_usable_alt_or_url_is_skipped():
    html = """
      <img src="a.jpg"><img src="b.jpg" alt=""><img src="c.jpg" alt=" &nbsp; ">
      <img src="data:image/gif;base64,R0lGOD" alt="inline">
      <img src="javascript:alert(1)" alt="js"><img src="about:blank" alt="ab">
      <img src="blob:http://example.org/1" alt="blob"><img src="ftp://h/x.jpg" alt="ftp">
      <img alt="no src"><img src="ok.jpg" alt="ok">"""
    assert pairs_of(html) == [("http://example.org/dir/ok.jpg", "ok")]


def test_base_href_is_used_for_images_and_links():
    html = '<head><base href="/static/"></head><img src="a.jpg" alt="a"><a href="next">n</a>'
    page = extract_page(PAGE, html.encode(), None)
    assert [(p.url, p.caption) for p in page.pairs] == [("http://example.org/static/a.jpg", "a")]
    assert page.links == ["http://example.org/static/next"]


def test_srcset_largest_width_then_density_then_src():
    html = """
      <img src="s.jpg" srcset="m.jpg 400w, l.jpg 1200w, s2.jpg 200w" alt="w">
      <img src="one.jpg" srcset="two.jpg 2x, onefive.jpg 1.5x" alt="x">
      <img src="plain.jpg" srcset="" alt="p">
      <img src="keep.jpg" srcset="data:image/png;base64,AA 3x" alt="k">"""
    assert pairs_of(html) == [
        ("http://example.org/dir/l.jpg", "w"),
        ("http://example.org/dir/two.jpg", "x"),
        ("http://example.org/dir/plain.jpg", "p"),
        ("http://example.org/dir/keep.jpg", "k"),
    ]


def test_picture_takes_largest_candidate_and_inner_alt():
    html = """
      <picture>
        <source type="image/webp" srcset="p-800.webp 800w, p-1600.webp 1600w">
        <source srcset="p-1000.jpg 1000w">
        <img src="p.jpg" alt="A picture">
      </picture>
      <picture><source srcset="noalt.webp 900w"><img src="noalt.jpg"></picture>"""
    assert pairs_of(html) == [("http://example.org/dir/p-1600.webp", "A picture")]


def test_lazy_images():
    html = """
      <img src="data:image/gif;base64,R0lGOD" data-src="/lazy1.jpg" alt="one">
      <img data-lazy-src="/lazy2.jpg" alt="two">
      <img src="/img/blank.gif" data-original="/lazy3.jpg" alt="three">
      <img src="data:," data-srcset="/l4-small.jpg 300w, /l4-big.jpg 900w" alt="four">
      <img src="/real.jpg" data-src="/other.jpg" alt="five">
      <picture><source data-srcset="/p5.webp 700w"><img data-src="/p5.jpg" alt="six"></picture>"""
    assert pairs_of(html) == [
        ("http://example.org/lazy1.jpg", "one"),
        ("http://example.org/lazy2.jpg", "two"),
        ("http://example.org/lazy3.jpg", "three"),
        ("http://example.org/l4-big.jpg", "four"),
        ("http://example.org/real.jpg", "five"),
        ("http://example.org/p5.webp", "six"),
    ]


def test_duplicates_removed_keeping_first_order():
    html = """<img src="a.jpg" alt="A"><img src="b.jpg" alt="B"><img src="a.jpg#2" alt=" A ">
              <img src="a.jpg" alt="other caption"><img src="b.jpg" alt="B">"""
    assert pairs_of(html) == [
        ("http://example.org/dir/a.jpg", "A"),
        ("http://example.org/dir/b.jpg", "B"),
        ("http://example.org/dir/a.jpg", "other caption"),
    ]


# --- links --------------------------------------------------------------------------------------


def test_links_absolute_deduplicated_in_order_without_nofollow():
    html = """
      <a href="b.html#top">b</a><a href="https://other.net/x">x</a><a href="b.html">again</a>
      <a href="/c" rel="NoFollow noopener">c</a><a href="mailto:x@y.z">m</a>
      <a href="javascript:go()">j</a><a href="#self">self</a><a>no href</a><a href="/d">d</a>"""
    page = extract_page(PAGE, html.encode(), None)
    assert page.links == [
        "http://example.org/dir/b.html",
        "https://other.net/x",
        "http://example.org/d",
    ]
    assert page.nofollow is False and page.opted_out is False


@pytest.mark.parametrize("content", ["nofollow", "NOINDEX, NOFOLLOW", "none"])
def test_meta_robots_nofollow_empties_links(content):
    html = f'<meta name="robots" content="{content}"><a href="/x">x</a><img src=a.jpg alt=a>'
    page = extract_page(PAGE, html.encode(), None)
    assert page.nofollow is True and page.links == []
    assert len(page.pairs) == 1  # nofollow is not an opt-out


# --- opt-outs -----------------------------------------------------------------------------------

OPT_HTML = '<img src="a.jpg" alt="a"><a href="/next">next</a>'


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Robots-Tag": "noai"},
        {"x-robots-tag": "NoImageAI"},
        {"X-ROBOTS-TAG": "noindex, noai"},
        {"X-Robots-Tag": ["googlebot: noindex", "noimageai"]},
        {"X-Robots-Tag": "clipengine-bot: noai"},
        {"X-Robots-Tag": "otherbot: noindex, clipengine-bot: noimageai"},
        CIMultiDict([("X-Robots-Tag", "googlebot: nofollow"), ("x-robots-tag", "noai")]),
    ],
)
def test_x_robots_tag_opt_out(headers):
    page = extract_page(PAGE, OPT_HTML.encode(), headers)
    assert page.opted_out is True and page.pairs == []
    assert page.links == ["http://example.org/next"]  # still crawlable


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {"X-Robots-Tag": "otherbot: noai"},
        {"X-Robots-Tag": "googlebot: noindex, noimageai"},  # the prefix covers the whole value
        {"X-Robots-Tag": ["unavailable_after: 25 Jun 2010 15:00:00 PST", "noindex"]},
        {"X-Robots-Tag-Extra": "noai"},
        {"X-Robots-Tag": "snoai, noaix"},
    ],
)
def test_x_robots_tag_not_for_us(headers):
    page = extract_page(PAGE, OPT_HTML.encode(), headers)
    assert page.opted_out is False and len(page.pairs) == 1


@pytest.mark.parametrize(
    "meta, opted_out",
    [
        ('<meta name="robots" content="noai">', True),
        ('<meta name="ROBOTS" content="index, NoImageAI">', True),
        ('<meta name="clipengine-bot" content="noai">', True),
        ('<meta http-equiv="X-Robots-Tag" content="noai">', True),
        ('<meta name="googlebot" content="noai">', False),
        ('<meta name="description" content="noai">', False),
    ],
)
def test_meta_robots_opt_out(meta, opted_out):
    page = extract_page(PAGE, f"<head>{meta}</head>{OPT_HTML}".encode(), {})
    assert page.opted_out is opted_out
    assert len(page.pairs) == (0 if opted_out else 1)


def test_header_opt_out_with_meta_nofollow():
    html = '<meta name="robots" content="nofollow">' + OPT_HTML
    page = extract_page(PAGE, html.encode(), {"X-Robots-Tag": "noai"})
    assert (page.opted_out, page.nofollow, page.pairs, page.links) == (True, True, [], [])


# --- encodings and broken input -----------------------------------------------------------------


def test_latin1_page_end_to_end():
    body = '<img src="café.jpg" alt="Crème brûlée à la française">'.encode("latin-1")
    assert pairs_of(body, {"Content-Type": "text/html; charset=iso-8859-1"}) == [
        ("http://example.org/dir/café.jpg", "Crème brûlée à la française")
    ]
    meta_body = b'<meta charset="latin1">' + body
    assert pairs_of(meta_body)[0][1] == "Crème brûlée à la française"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00\xff\xfe garbage \x00",
        b"<html><body><img src=a.jpg alt='unterminated",
        b"<img src=ok.jpg alt=ok><div><p><table><tr><td><img src=b.jpg alt=b",
        b"<<<img>>> </a></a></body></html><img src=c.jpg alt=c",
        b"<svg><img src=d.jpg alt=d></svg><template><img src=e.jpg alt=e></template>",
        b"<a href='http://[::1'>x</a><img src='http://[bad' alt='v6'>",
        ("<img src=x.jpg alt='" + "x" * 100_000 + "'>").encode(),
    ],
)
def test_broken_html_never_raises(body):
    page = extract_page(PAGE, body, {"Content-Type": "text/html"})
    assert page.error is None
    for pair in page.pairs:
        assert pair.url.startswith("http://example.org/") and pair.caption


def test_broken_html_keeps_what_is_parseable():
    body = b"<img src=ok.jpg alt=ok><div><p><table><tr><td><img src=b.jpg alt=b"
    assert [c for _, c in pairs_of(body)] == ["ok"]  # the unterminated tag is dropped
    body = b"<<<img>>> </a></a></body></html><img src=c.jpg alt=c>"
    assert pairs_of(body) == [("http://example.org/dir/c.jpg", "c")]
