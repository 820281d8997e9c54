import dataclasses
import gzip
import io
import json
import random
import zlib

import pytest
from multidict import CIMultiDict
from warcio.archiveiterator import ArchiveIterator as WarcioIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.extract import Pair, extract_page
from pipeline.sources.warc import (
    NotAWarcError,
    WarcRecorder,
    WarcStats,
    iter_warc_pages,
    pairs_from_warc,
    read_warc_file,
)

pytestmark = pytest.mark.timeout(60)

LATIN1 = '<img src="/caf\xe9.jpg" alt="Caf\xe9 cr\xe8me"><a href="/b">b</a>'.encode("latin-1")
RICH = b"""<html><head><base href="/imgs/"></head><body>
  <img src="a.jpg" alt="Plain &amp; simple">
  <img srcset="s.jpg 200w, l.jpg 1600w" alt="srcset">
  <picture><source srcset="p.webp 1200w"><img src="p.jpg" alt="picture"></picture>
  <img src="data:image/gif;base64,R0l" data-src="lazy.jpg" alt="lazy">
</body></html>"""

# (final url, status, headers, body) as a live fetch would hand them to extract_page.
LIVE = [
    ("http://site.test/rich", 200, {"Content-Type": "text/html"}, RICH),
    ("http://site.test/latin", 200, {"Content-Type": "text/html; charset=ISO-8859-1"}, LATIN1),
    (
        "http://site.test/noai",
        200,
        CIMultiDict(
            [
                ("Content-Type", "text/html"),
                ("X-Robots-Tag", "googlebot: nofollow"),
                ("X-Robots-Tag", "noai"),
            ]
        ),
        RICH,
    ),
    ("http://site.test/gz", 200, {"Content-Type": "text/html", "Content-Encoding": "gzip"}, RICH),
    ("http://site.test/missing", 404, {"Content-Type": "text/html"}, b"<img src=x.jpg alt=nf>"),
    ("http://site.test/img.jpg", 200, {"Content-Type": "image/jpeg"}, b"\xff\xd8\xff\xe0jpeg"),
    ("http://site.test/moved", 301, {"Location": "/rich", "Content-Type": "text/html"}, b""),
]


@pytest.fixture
def recorded(tmp_path):
    path = tmp_path / "crawl.warc.gz"
    with WarcRecorder(path) as recorder:
        for url, status, headers, body in LIVE:
            recorder.write_response(url, status, headers, body, ip_address="127.0.0.1")
    return path


def test_replay_gives_exactly_the_live_pairs(recorded):
    stats = WarcStats()
    replay = {info.url: (info, pairs) for info, pairs in pairs_from_warc(recorded, stats)}
    for url, status, headers, body in LIVE:
        if status != 200 or "image" in str(headers.get("Content-Type")):
            continue
        live = extract_page(url, body, headers)
        info, pairs = replay[url]
        assert pairs == live.pairs
        assert info.opted_out == live.opted_out and info.pairs == len(live.pairs)
    assert [p.caption for p in replay["http://site.test/rich"][1]] == [
        "Plain & simple",
        "srcset",
        "picture",
        "lazy",
    ]
    assert replay["http://site.test/rich"][1][1] == Pair(
        "http://site.test/imgs/l.jpg", "srcset", "http://site.test/rich"
    )
    assert replay["http://site.test/latin"][1] == [
        Pair("http://site.test/caf\xe9.jpg", "Caf\xe9 cr\xe8me", "http://site.test/latin")
    ]
    assert replay["http://site.test/noai"][0].status == "opted_out"
    assert replay["http://site.test/noai"][1] == []
    missing = replay["http://site.test/missing"][0]
    assert (missing.status, missing.http_status, missing.error) == ("fetch_failed", 404, "HTTP 404")
    assert replay["http://site.test/moved"][0].status == "fetch_failed"
    assert "http://site.test/img.jpg" not in replay
    assert (stats.records, stats.pages, stats.non_html, stats.errors) == (7, 6, 1, 0)
    assert stats.pairs == 4 + 1 + 4 and stats.opted_out == 1


def test_recorder_keeps_status_headers_and_body_faithfully(recorded):
    pages = {p.url: p for p in iter_warc_pages(recorded)}
    noai = pages["http://site.test/noai"]
    assert noai.headers["X-Robots-Tag"] == ["googlebot: nofollow", "noai"]
    assert noai.body == RICH and noai.http_status == 200
    # The body was recorded decoded, so the wire encoding header is kept under another name.
    gz = pages["http://site.test/gz"]
    assert gz.body == RICH and gz.headers["X-Crawler-Content-Encoding"] == ["gzip"]
    assert pages["http://site.test/missing"].http_status == 404
    # Non-HTML and redirect responses are in the file with status and bytes intact.
    with open(recorded, "rb") as handle:
        records = {
            r.rec_headers.get_header("WARC-Target-URI"): (
                r.http_headers.get_statuscode(),
                r.rec_headers.get_header("WARC-IP-Address"),
                r.content_stream().read(),
            )
            for r in WarcioIterator(handle)
            if r.rec_type == "response"
        }
    assert records["http://site.test/img.jpg"] == ("200", "127.0.0.1", b"\xff\xd8\xff\xe0jpeg")
    assert records["http://site.test/moved"][0] == "301"


def test_recorder_modes(tmp_path, recorded):
    with pytest.raises(FileExistsError, match="mode='a'"):
        WarcRecorder(recorded).open()
    with WarcRecorder(recorded, mode="a") as recorder:
        recorder.write_response(
            "http://site.test/extra",
            200,
            {"Content-Type": "text/html"},
            b"<img src=e.jpg alt=extra>",
        )
    urls = [info.url for info, _ in pairs_from_warc(recorded)]
    assert urls[-1] == "http://site.test/extra" and len(urls) == 7
    with pytest.raises(ValueError, match="mode"):
        WarcRecorder(tmp_path / "x.warc.gz", mode="r")
    closed = WarcRecorder(tmp_path / "y.warc.gz")
    with pytest.raises(RuntimeError, match="not open"):
        closed.write_response("http://a.test/", 200, {}, b"")


def _write_plain_warc(path, records, gzip_it=False):
    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=gzip_it)
        for url, status_line, headers, payload in records:
            http = StatusAndHeaders(status_line, headers, protocol="HTTP/1.1")
            writer.write_record(
                writer.create_warc_record(
                    url, "response", payload=io.BytesIO(payload), http_headers=http
                )
            )


def test_third_party_warc_with_encoded_payloads(tmp_path):
    html = b"<img src=/e.jpg alt=encoded>"
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(html), html)
    deflated = zlib.compress(html)
    path = tmp_path / "plain.warc"  # uncompressed WARC
    ct, gz = ("Content-Type", "text/html"), ("Content-Encoding", "gzip")
    chunked_te, deflate = ("Transfer-Encoding", "chunked"), ("Content-Encoding", "deflate")
    _write_plain_warc(
        path,
        [
            ("http://t.test/gz", "200 OK", [ct, gz], gzip.compress(html)),
            ("http://t.test/chunked", "200 OK", [ct, chunked_te], chunked),
            ("http://t.test/deflate", "200 OK", [ct, deflate], deflated),
            ("http://t.test/liar", "200 OK", [ct, gz], html),
            ("http://t.test/broken", "200 OK", [ct, gz], b"\x00\x01junk"),
            ("http://t.test/sniffed", "200 OK", [], b"<!DOCTYPE html>" + html),
            ("dns:t.test", "200 OK", [], b"1.2.3.4"),
        ],
    )
    results = {info.url: (info, pairs) for info, pairs in pairs_from_warc(path)}
    for name in ("gz", "chunked", "deflate", "liar", "sniffed"):
        info, pairs = results[f"http://t.test/{name}"]
        assert [(p.url, p.caption) for p in pairs] == [("http://t.test/e.jpg", "encoded")], name
    broken = results["http://t.test/broken"][0]
    assert broken.status == "record_error" and "decode" in broken.error
    assert "dns:t.test" not in results


# --- WAT ----------------------------------------------------------------------------------------


def _wat_doc(url, status="200", headers=None, metas=(), links=(), base=None, warc_type="response"):
    head = {"Title": "t", "Metas": list(metas)}
    if base:
        head["Base"] = base
    response = {
        "Response-Message": {"Version": "HTTP/1.1", "Status": status, "Reason": "OK"},
        "Headers": headers or {"Content-Type": "text/html; charset=UTF-8"},
        "HTML-Metadata": {"Head": head, "Links": list(links)},
    }
    return {
        "Container": {"Filename": "x.warc.gz", "Compressed": True},
        "Envelope": {
            "Format": "WARC",
            "WARC-Header-Metadata": {"WARC-Type": warc_type, "WARC-Target-URI": url},
            "Payload-Metadata": {
                "Actual-Content-Type": "application/http; msgtype=response",
                "HTTP-Response-Metadata": response,
            },
        },
    }


def _write_wat(path, docs):
    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        writer.write_record(writer.create_warcinfo_record(path.name, {"format": "WAT"}))
        for url, payload in docs:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            writer.write_record(
                writer.create_warc_record(
                    url, "metadata", payload=io.BytesIO(data), warc_content_type="application/json"
                )
            )


IMG = {"path": "IMG@/src", "url": "pics/a.jpg#f", "alt": "Caf&eacute;  &amp; bar"}


def test_wat_pairs_with_base_resolution_and_opt_outs(tmp_path):
    path = tmp_path / "segment.warc.gz"  # a WAT under a WARC-like name: content decides
    a_link = {"path": "A@/href", "url": "/next", "text": "next"}
    docs = [
        (
            "http://w.test/p/",
            _wat_doc(
                "http://w.test/p/",
                links=[
                    IMG,
                    a_link,
                    IMG,
                    {"path": "IMG@/src", "url": "data:image/png;base64,AA", "alt": "inline"},
                    {"path": "IMG@/src", "url": "/noalt.jpg"},
                    {"path": "IMG@/src", "url": "//cdn.test/b.jpg", "alt": "protocol relative"},
                ],
            ),
        ),
        ("http://w.test/based", _wat_doc("http://w.test/based", base="/root/", links=[IMG])),
        (
            "http://w.test/hdr",
            _wat_doc(
                "http://w.test/hdr",
                links=[IMG],
                headers={"Content-Type": "text/html", "X-Robots-Tag": "noimageai"},
            ),
        ),
        (
            "http://w.test/meta",
            _wat_doc(
                "http://w.test/meta",
                links=[IMG],
                metas=[{"name": "Robots", "content": "index, NoAI"}],
            ),
        ),
        ("http://w.test/gone", _wat_doc("http://w.test/gone", status="410", links=[IMG])),
        (
            "http://w.test/pdf",
            _wat_doc("http://w.test/pdf", headers={"Content-Type": "application/pdf"}),
        ),
        ("http://w.test/req", _wat_doc("http://w.test/req", warc_type="request")),
        ("http://w.test/bad", b'{"Envelope": {"WARC-Header-Metadata": '),  # truncated JSON
        ("http://w.test/last", _wat_doc("http://w.test/last", links=[IMG])),
    ]
    _write_wat(path, docs)
    stats = WarcStats()
    results = {info.url: (info, pairs) for info, pairs in pairs_from_warc(path, stats)}
    info, pairs = results["http://w.test/p/"]
    assert [(p.url, p.caption) for p in pairs] == [
        ("http://w.test/p/pics/a.jpg", "Café & bar"),
        ("http://cdn.test/b.jpg", "protocol relative"),
    ]
    assert (info.kind, info.status, info.pairs, info.http_status) == ("wat", "ok", 2, 200)
    assert pairs[0].page_url == "http://w.test/p/"
    assert [p.url for p in results["http://w.test/based"][1]] == ["http://w.test/root/pics/a.jpg"]
    for url in ("http://w.test/hdr", "http://w.test/meta"):
        assert results[url][0].opted_out and results[url][0].status == "opted_out"
        assert results[url][1] == []
    assert results["http://w.test/gone"][0].status == "fetch_failed"
    bad = results["http://w.test/bad"][0]
    assert bad.status == "record_error" and bad.error and bad.kind == "error"
    assert results["http://w.test/last"][0].pairs == 1  # the bad record did not stop the file
    assert "http://w.test/pdf" not in results and "http://w.test/req" not in results
    assert (stats.non_html, stats.skipped, stats.errors, stats.opted_out) == (1, 1, 1, 2)
    assert stats.kinds == {"wat": 6, "error": 1}


def test_mixed_file_reads_both_record_kinds(tmp_path):
    path = tmp_path / "mixed.wat"
    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=False)
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
        writer.write_record(
            writer.create_warc_record(
                "http://m.test/warc",
                "response",
                payload=io.BytesIO(b"<img src=r.jpg alt=resp>"),
                http_headers=http,
            )
        )
        writer.write_record(
            writer.create_warc_record(
                "http://m.test/wat",
                "metadata",
                warc_content_type="application/json",
                payload=io.BytesIO(json.dumps(_wat_doc("http://m.test/wat", links=[IMG])).encode()),
            )
        )

    kinds = {info.url: (info.kind, info.pairs) for info, _ in pairs_from_warc(path)}
    assert kinds == {"http://m.test/warc": ("warc", 1), "http://m.test/wat": ("wat", 1)}


# --- not a WARC / broken streams ----------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, this is text\n" * 50, gzip.compress(b"<html>not a warc</html>"), b"\x1f\x8b"],
)
def test_not_a_warc_raises_clear_error(tmp_path, content):
    path = tmp_path / "thing.warc.gz"
    path.write_bytes(content)
    with pytest.raises(NotAWarcError, match="thing.warc.gz"):
        list(pairs_from_warc(path))
    with pytest.raises(NotAWarcError):
        list(iter_warc_pages(path))


def test_garbage_after_valid_records_is_reported_not_raised(recorded):
    data = recorded.read_bytes()
    recorded.write_bytes(data + gzip.compress(b"THIS IS NOT A WARC RECORD\r\n\r\n" * 20))
    results = list(pairs_from_warc(recorded))
    assert sum(len(p) for _, p in results) == 9  # every good page still read
    assert results[-1][0].status == "record_error" and results[-1][0].error
    with pytest.raises(NotAWarcError):
        list(iter_warc_pages(recorded))
    result = read_warc_file(recorded)  # the same, with the break as the file's error, not a row
    assert result.pages == [info for info, _ in results[:-1]] and len(result.pairs) == 9
    assert result.error.startswith(f"{recorded}: unreadable WARC stream after record 7: ")


def test_page_info_to_row_has_pages_columns(recorded):
    from manifests.schema import PAGES

    info, _ = next(pairs_from_warc(recorded))
    row = info.to_row()
    assert set(row) == set(PAGES.names)
    assert row["source"] == "crawl.warc.gz" and row["status"] == "ok" and row["pairs"] == 4


def test_truncated_last_record_is_an_error_row(tmp_path):
    path = tmp_path / "cut.warc"
    with WarcRecorder(tmp_path / "full.warc.gz") as recorder:
        for i in range(3):
            body = b"<img src=a.jpg alt=a>" * 50
            recorder.write_response(f"http://c.test/{i}", 200, {"Content-Type": "text/html"}, body)
    path.write_bytes(gzip.decompress((tmp_path / "full.warc.gz").read_bytes())[:-300])
    infos = [info for info, _ in pairs_from_warc(path)]
    assert [i.status for i in infos] == ["ok", "ok", "record_error"]
    assert "truncated" in infos[-1].error and infos[-1].url == "http://c.test/2"


def test_recorder_shared_by_threads(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "threads.warc.gz"
    headers = [("Content-Type", "text/html"), ("X-Robots-Tag", "otherbot: noai")]

    def fetch(i: int) -> None:
        body = f"<img src=/{i}.jpg alt='image {i}'>".encode()
        recorder.write_response(f"http://t.test/{i}", 200, headers, body)

    with WarcRecorder(path) as recorder, ThreadPoolExecutor(4) as pool:
        list(pool.map(fetch, range(40)))
    assert recorder.records_written == 40
    found = {info.url: pairs[0].caption for info, pairs in pairs_from_warc(path)}
    assert found == {f"http://t.test/{i}": f"image {i}" for i in range(40)}


def test_read_warc_file_is_pairs_from_warc_flattened(recorded):
    result = read_warc_file(recorded)
    expected = list(pairs_from_warc(recorded))
    assert result.error is None and result.path == str(recorded)
    assert result.pages == [info for info, _ in expected]
    assert result.pairs == [pair for _, pairs in expected for pair in pairs]
    assert (result.stats.pages, result.stats.pairs, result.stats.error) == (6, 9, None)


def test_one_gzip_member_for_the_whole_warc_is_read_whole(tmp_path, recorded):
    path = tmp_path / "one-member.warc.gz"  # not member-per-record, as some tools write
    path.write_bytes(gzip.compress(gzip.decompress(recorded.read_bytes())))
    result = read_warc_file(path)
    assert result.error is None and result.pairs == read_warc_file(recorded).pairs


# --- ARC ----------------------------------------------------------------------------------------

# (URL, HTTP response as the server sent it): an ARC record holds exactly these bytes.
ARC_PAGES = [
    (
        "http://old.test/index.html",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n"
        b'<html><body><img src="/img/cat.jpg" alt="A grey cat">'
        b"<img src=dog.png alt='Dog &amp; ball'></body></html>",
    ),
    (
        "http://old.test/dir/page.htm",
        b"HTTP/1.0 200 OK\r\nServer: Apache/1.3.27\r\n"
        b"Content-Type: text/html; charset=iso-8859-1\r\n\r\n"
        b'<IMG SRC="../pics/caf\xe9.gif" ALT="Caf\xe9 au lait">',
    ),
    ("http://old.test/logo.gif", b"HTTP/1.1 200 OK\r\nContent-Type: image/gif\r\n\r\nGIF89a\x01"),
]
ARC_PAIRS = [
    Pair("http://old.test/img/cat.jpg", "A grey cat", "http://old.test/index.html"),
    Pair("http://old.test/dog.png", "Dog & ball", "http://old.test/index.html"),
    Pair("http://old.test/pics/caf\xe9.gif", "Caf\xe9 au lait", "http://old.test/dir/page.htm"),
]


def _arc_parts(name="old.arc"):
    """An ARC version-1 file as its pieces: the filedesc:// block, then one piece per record,
    each its `URL IP-address Archive-date Content-type Archive-length` line, the HTTP response
    and a newline."""
    block = b"1 0 Alexa Internet\nURL IP-address Archive-date Content-type Archive-length\n"
    desc = f"filedesc://{name} 0.0.0.0 20080517093000 text/plain {len(block)}\n"
    parts = [desc.encode() + block + b"\n"]
    for url, http in ARC_PAGES:
        kind = "image/gif" if url.endswith(".gif") else "text/html"
        parts.append(f"{url} 192.0.2.7 20080517093000 {kind} {len(http)}\n".encode() + http + b"\n")
    return parts


def _write_arc(tmp_path, variant):
    parts = _arc_parts()
    if variant == "plain":
        data = b"".join(parts)
    elif variant == "gzip-per-record":  # how crawlers wrote .arc.gz: one gzip member a record
        data = b"".join(gzip.compress(part) for part in parts)
    else:
        data = gzip.compress(b"".join(parts))
    path = tmp_path / ("old.arc" if variant == "plain" else "old.arc.gz")
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("variant", ["plain", "gzip-per-record", "gzip-one-member"])
def test_arc_file_gives_the_pairs_of_its_html_pages(tmp_path, variant):
    path = _write_arc(tmp_path, variant)
    result = read_warc_file(path)
    assert result.error is None
    assert [(p.url, p.status, p.kind, p.http_status, p.pairs) for p in result.pages] == [
        ("http://old.test/index.html", "ok", "warc", 200, 2),
        ("http://old.test/dir/page.htm", "ok", "warc", 200, 1),
    ]
    assert result.pairs == ARC_PAIRS
    assert (result.stats.records, result.stats.non_html) == (3, 1)  # the GIF; filedesc is none
    pages = list(iter_warc_pages(path))
    assert [p.warc_date for p in pages] == ["2008-05-17T09:30:00Z"] * 2
    assert pages[1].headers["Server"] == ["Apache/1.3.27"]


def test_arc_and_warc_holding_the_same_responses_give_the_same_pages(tmp_path):
    warc = tmp_path / "same.warc.gz"
    with open(warc, "wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        for url, http in ARC_PAGES:  # warcio parses the HTTP head out of the same bytes
            writer.write_record(writer.create_warc_record(url, "response", io.BytesIO(http)))
    arc = _write_arc(tmp_path, "gzip-per-record")

    def undated(info, **changes):  # the two files were written on different dates
        consent = [dataclasses.replace(f, at=None) for f in info.consent]
        return dataclasses.replace(info, consent=consent, **changes)

    as_warc = [(undated(i, source=arc.name), p) for i, p in pairs_from_warc(warc)]
    assert [(undated(i), p) for i, p in pairs_from_warc(arc)] == as_warc
    same = [(p.url, p.http_status, p.headers, p.body, p.error) for p in iter_warc_pages(warc)]
    assert [
        (p.url, p.http_status, p.headers, p.body, p.error) for p in iter_warc_pages(arc)
    ] == same


def test_arc_part_without_filedesc_is_read_and_arc_v2_is_refused(tmp_path):
    part = tmp_path / "part-00001.arc"  # records split off a larger file: no filedesc block
    part.write_bytes(b"".join(_arc_parts()[1:]))
    assert read_warc_file(part).pairs == ARC_PAIRS
    # Version 2 record lines have ten fields; read as version 1 they would give wrong URLs.
    v2 = tmp_path / "v2.arc"
    v2.write_bytes(b"filedesc://v2.arc 0.0.0.0 20080517093000 text/plain 12\n2 0 Alexa\n\n")
    result = read_warc_file(v2)
    assert (
        result.pages == [] and result.error == f"{v2}: ARC version 2 file, only version 1 is read"
    )


def test_arc_cut_part_way_keeps_the_pages_before_the_cut(tmp_path):
    parts = _arc_parts()
    members = [gzip.compress(part) for part in parts]
    gz = tmp_path / "cut.arc.gz"
    gz.write_bytes(b"".join(members[:2]) + members[2][: len(members[2]) // 2])  # in page 2
    result = read_warc_file(gz)
    assert [p.url for p in result.pages] == ["http://old.test/index.html"]
    assert result.pairs == ARC_PAIRS[:2]
    assert result.error == (
        f"{gz}: unreadable ARC stream after record 1: "
        "truncated gzip stream: the file ends inside a gzip member"
    )
    plain = tmp_path / "cut.arc"
    plain.write_bytes(b"".join(parts[:2]) + parts[2][:-12])  # inside page 2's HTML
    result = read_warc_file(plain)
    assert [(p.url, p.status) for p in result.pages] == [
        ("http://old.test/index.html", "ok"),
        ("http://old.test/dir/page.htm", "record_error"),
    ]
    assert "truncated record" in result.pages[1].error and result.pairs == ARC_PAIRS[:2]
    assert result.error == f"{plain}: the file ends inside record 2 (http://old.test/dir/page.htm)"
    plain.write_bytes(b"".join(parts)[:-4])  # inside the GIF, which is never read as a page
    result = read_warc_file(plain)
    assert result.pairs == ARC_PAIRS and len(result.pages) == 2
    assert result.error == (
        f"{plain}: unreadable ARC stream after record 3: the last record is cut short by 3 bytes"
    )


# --- read_warc_file never raises for bad content ------------------------------------------------


def _cut_warc_gz() -> bytes:
    """The first bytes of a real .warc.gz: its gzip header and a byte or two of deflate data."""
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=True)
    writer.write_record(writer.create_warcinfo_record("x.warc.gz", {"software": "test"}))
    return buffer.getvalue()[:12]


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("notes.txt", b"hello, this is text\n" * 50, "(starts with b'hello, this is text\\nhell')"),
        ("page.warc", b"<html><body>not an archive</body></html>", "(starts with b'<html><body>"),
        ("noise.arc", random.Random(7).randbytes(4096), '(starts with b"8\\xb4\\xe6R'),
        ("page.warc.gz", gzip.compress(b"<html>hi</html>"), "(gzip data starts with b'<html>hi"),
        ("empty.warc.gz", b"", "empty file, not a WARC, WAT or ARC file"),
        ("cut.warc.gz", _cut_warc_gz(), "truncated gzip stream: it ends before any data"),
        ("bad.arc.gz", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 64, "corrupt gzip"),
    ],
)
def test_a_file_that_is_no_archive_gives_an_error_and_no_pages(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    result = read_warc_file(path)
    assert (result.pages, result.pairs) == ([], [])
    assert result.error.startswith(f"{path}: ") and reason in result.error
    assert "\n" not in result.error
    if "starts with" in reason:
        assert "not a WARC, WAT or ARC file (" in result.error


def _gzip_member_starts(data: bytes) -> list[int]:
    starts, pos = [], 0
    while pos < len(data):
        starts.append(pos)
        inflate = zlib.decompressobj(wbits=31)
        inflate.decompress(data[pos:])
        pos = len(data) - len(inflate.unused_data)
    return starts


@pytest.fixture
def six_pages(tmp_path):
    path = tmp_path / "six.warc.gz"
    with WarcRecorder(path) as recorder:
        for i in range(6):
            body = f"<p>page {i}</p><img src=/{i}.jpg alt='picture {i}'>".encode() * 10
            recorder.write_response(
                f"http://cut.test/{i}", 200, {"Content-Type": "text/html"}, body
            )
    return path


def test_warc_gz_cut_half_way_keeps_the_pages_before_the_cut(tmp_path, six_pages):
    whole = read_warc_file(six_pages)
    data = six_pages.read_bytes()
    starts = _gzip_member_starts(data)  # warcinfo, then one member a page
    assert whole.error is None and len(whole.pages) == 6 and len(starts) == 7
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(data[: (starts[4] + starts[5]) // 2])  # inside page 3's member
    result = read_warc_file(path)
    assert result.pages == [dataclasses.replace(p, source=path.name) for p in whole.pages[:3]]
    assert result.pairs == [
        Pair(f"http://cut.test/{i}.jpg", f"picture {i}", f"http://cut.test/{i}") for i in range(3)
    ]
    assert result.error == (
        f"{path}: truncated gzip stream: the file ends inside a gzip member, after record 4"
    )
    path.write_bytes(data[:-4])  # only the last member's size trailer is missing: all pages read
    result = read_warc_file(path)
    assert len(result.pairs) == 6 and "truncated gzip stream" in result.error


def test_plain_warc_cut_half_way_keeps_the_pages_before_the_cut(tmp_path, six_pages):
    data = gzip.decompress(six_pages.read_bytes())
    path = tmp_path / "cut.warc"
    path.write_bytes(data[: data.index(b"alt='picture 3'") + 5])  # inside page 3's HTML
    result = read_warc_file(path)
    assert [(p.url, p.status) for p in result.pages] == [
        *((f"http://cut.test/{i}", "ok") for i in range(3)),
        ("http://cut.test/3", "record_error"),
    ]
    assert [p.caption for p in result.pairs] == ["picture 0", "picture 1", "picture 2"]
    assert result.error == f"{path}: the file ends inside record 4 (http://cut.test/3)"
    page_4 = data.rindex(b"WARC/1.0", 0, data.index(b"http://cut.test/4"))  # warcio writes 1.0
    path.write_bytes(data[: data.index(b"\r\n", page_4 + 40)])  # inside page 4's WARC headers
    result = read_warc_file(path)
    assert len(result.pages) == 4 and len(result.pairs) == 4
    assert result.error == (
        f"{path}: the file ends inside a record (no closing blank line), after record 4"
    )


def test_read_warc_file_raises_only_for_a_path_that_cannot_be_opened(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_warc_file(tmp_path / "missing.warc.gz")
    with pytest.raises(IsADirectoryError):
        read_warc_file(tmp_path)
