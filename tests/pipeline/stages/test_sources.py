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
    assert pq.read_table(b.path("sources", "list-00000")).to_pylist() == [
        {"url": "http://a.test/1.jpg", "caption": "one", "page_url": None}
    ]
    second = pq.read_table(b.path("sources", "list-00001"))
    assert second["caption"].to_pylist() == ["two", ""]  # no caption: matches no query
    assert (record["rows_in"], record["rows_out"], record["drops"]) == (4, 3, {"empty_url": 1})
    assert (b.layout.work / "parts.json").read_text().count("list-") == 2


def test_warc_files_one_part_each_and_an_unreadable_one_is_a_recorded_drop(bench, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.arc.gz").write_bytes(gzip.compress(arc_file("http://old.test/p", PAGE)))
    (tmp_path / "in" / "b.arc").write_bytes(b"<html>this is no archive</html>")
    b = bench(url_list=None, warc=[str(tmp_path / "in" / "*.arc*")])
    record = b.run("sources")
    pairs = pq.read_table(b.path("sources", "warc-00000")).to_pylist()
    assert pairs == [
        {"url": "http://old.test/a.jpg", "caption": "a red fox", "page_url": "http://old.test/p"},
        {"url": "http://old.test/b.png", "caption": "two dogs", "page_url": "http://old.test/p"},
    ]
    bad = pq.read_table(b.path("sources", "warc-00001", "pages")).to_pylist()
    assert len(bad) == 1 and bad[0]["status"] == "unreadable_file"
    assert "not a WARC, WAT or ARC file" in bad[0]["error"] and bad[0]["source"] == "b.arc"
    assert record["drops"] == {"page_unreadable_file": 1}
    assert (record["rows_in"], record["rows_out"]) == (2, 2)


def test_a_warc_glob_matching_nothing_fails_before_any_work(bench, tmp_path):
    from manifests.config import ConfigError

    b = bench(url_list=None, warc=[str(tmp_path / "none-*.warc.gz")])
    with pytest.raises(ConfigError, match="matches no file"):
        b.run("sources")


def _rows(n: int) -> list[dict]:
    return [
        {"url": f"http://a.test/{i}.jpg" if i % 7 else "", "caption": f"row {i}"} for i in range(n)
    ]


def test_a_parquet_list_is_read_by_row_groups_in_tasks_into_the_same_parts_as_a_stream(tmp_path):
    import csv

    import pyarrow as pa

    from tests.pipeline.stages.conftest import StageBench

    rows = _rows(95)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "l.parquet", row_group_size=16)
    with open(tmp_path / "l.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["url", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    results = {}
    for name in ("l.parquet", "l.csv"):
        b = StageBench(
            tmp_path / f"ds-{name}", ["unused"], url_list=str(tmp_path / name), rows_per_part=20
        )
        record = b.run("sources")
        parts = sorted((b.layout.work / "sources").glob("list-*.parquet"))
        results[name] = ([pq.read_table(p).to_pylist() for p in parts], record["drops"])
        marker = (b.layout.work / "sources" / "list-stream.done").exists()
        assert marker == (name == "l.csv")  # a text list is one streaming task
    assert results["l.parquet"] == results["l.csv"]
    parts, drops = results["l.parquet"]
    assert [len(p) for p in parts] == [17, 17, 17, 17, 13]  # 20 rows each, empty URLs dropped
    assert drops == {"empty_url": 14}


def test_a_missing_column_fails_before_any_task_with_the_columns_there_are(bench, tmp_path):
    import pyarrow as pa

    from manifests.config import ConfigError

    pq.write_table(pa.table({"link": ["http://a.test/x.jpg"]}), tmp_path / "l.parquet")
    b = bench(url_list=str(tmp_path / "l.parquet"))
    with pytest.raises(
        ConfigError, match=r"url column 'url' not found; available columns: \['link'\]"
    ):
        b.run("sources")
