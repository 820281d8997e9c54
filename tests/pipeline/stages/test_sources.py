import gzip

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.timeout(60)

PAGE = (
    b"<html><body><img src='/a.jpg' alt='a red fox'><img src='b.png' alt='two dogs'></body></html>"
)


def _http(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


def arc_file(url: str, body: bytes) -> bytes:
    """A version-1 ARC file (old Common Crawl): the filedesc block, then one response record."""
    desc = b"1 0 clipengine\nURL IP-address Archive-date Content-type Archive-length\n"
    head = b"filedesc://test.arc 0.0.0.0 20080101000000 text/plain %d\n" % len(desc)
    record = _http(body)
    line = b"%s 127.0.0.1 20080101000000 text/html %d\n" % (url.encode(), len(record))
    return head + desc + b"\n" + line + record + b"\n"


def test_url_list_parts_are_cut_where_the_list_is_read(bench, tmp_path):
    src = tmp_path / "list.csv"
    src.write_text(
        "url,caption\nhttp://a.test/1.jpg,one\n,no url\nhttp://a.test/2.jpg,two\n"
        "http://a.test/3.jpg,\n"
    )
    b = bench(url_list=str(src), rows_per_part=2)
    record = b.run("sources")
    assert pq.read_table(b.layout.work / "sources" / "list-00000.parquet").to_pylist() == [
        {"url": "http://a.test/1.jpg", "caption": "one", "page_url": None}
    ]
    second = pq.read_table(b.layout.work / "sources" / "list-00001.parquet")
    assert second["caption"].to_pylist() == ["two", ""]  # no caption: matches no query
    assert (record["rows_in"], record["rows_out"], record["drops"]) == (4, 3, {"empty_url": 1})
    assert (b.layout.work / "parts.json").read_text().count("list-") == 2


def test_warc_files_one_part_each_and_an_unreadable_one_is_a_recorded_drop(bench, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.arc.gz").write_bytes(gzip.compress(arc_file("http://old.test/p", PAGE)))
    (tmp_path / "in" / "b.arc").write_bytes(b"<html>this is no archive</html>")
    b = bench(url_list=None, warc=[str(tmp_path / "in" / "*.arc*")])
    record = b.run("sources")
    pairs = pq.read_table(b.layout.work / "sources" / "warc-00000.parquet").to_pylist()
    assert pairs == [
        {"url": "http://old.test/a.jpg", "caption": "a red fox", "page_url": "http://old.test/p"},
        {"url": "http://old.test/b.png", "caption": "two dogs", "page_url": "http://old.test/p"},
    ]
    bad = pq.read_table(b.layout.pages / "warc-00001.parquet").to_pylist()
    assert len(bad) == 1 and bad[0]["status"] == "unreadable_file"
    assert "not a WARC, WAT or ARC file" in bad[0]["error"] and bad[0]["source"] == "b.arc"
    assert record["drops"] == {"page_unreadable_file": 1}
    assert (record["rows_in"], record["rows_out"]) == (2, 2)


def test_a_warc_glob_matching_nothing_fails_before_any_work(bench, tmp_path):
    from manifests.config import ConfigError

    b = bench(url_list=None, warc=[str(tmp_path / "none-*.warc.gz")])
    with pytest.raises(ConfigError, match="matches no file"):
        b.run("sources")
