import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.sources.urllist import detect_format, iter_url_list_chunks, read_url_list

pytestmark = pytest.mark.timeout(60)


def rows(result) -> list[tuple[str, str | None]]:
    return list(
        zip(result.table["url"].to_pylist(), result.table["caption"].to_pylist(), strict=True)
    )


def test_txt_one_url_a_line(tmp_path):
    path = tmp_path / "urls.txt"
    path.write_bytes(b"http://a.test/1.jpg\r\n\n  http://a.test/2.jpg  \n   \nhttp://a.test/3.jpg")
    result = read_url_list(path)
    assert rows(result) == [
        ("http://a.test/1.jpg", None),
        ("http://a.test/2.jpg", None),
        ("http://a.test/3.jpg", None),
    ]
    assert (result.rows_in, result.dropped_empty_url, result.dropped_malformed) == (5, 2, 0)
    assert result.table.schema.field("url").type == pa.string()


def test_csv_quotes_newlines_bom_bad_rows(tmp_path):
    path = tmp_path / "list.csv"
    path.write_bytes(
        b"\xef\xbb\xbfid,url,caption\n"
        b'1,http://a.test/1.jpg,"a caption, with comma\nand newline"\n'
        b"2,http://a.test/2.jpg,plain\n"
        b"3,http://a.test/3.jpg,too,many,fields\n"
        b"4,,orphan caption\n"
        b"5,http://a.test/5.jpg,\n"
        b"6,http://a.test/\xff.jpg,caf\xe9\n"
    )
    result = read_url_list(path)
    assert rows(result) == [
        ("http://a.test/1.jpg", "a caption, with comma\nand newline"),
        ("http://a.test/2.jpg", "plain"),
        ("http://a.test/5.jpg", None),
        ("http://a.test/\ufffd.jpg", "caf\ufffd"),
    ]
    assert (result.rows_in, result.dropped_empty_url, result.dropped_malformed) == (6, 1, 1)


def test_tsv_keeps_quotes_and_custom_columns(tmp_path):
    path = tmp_path / "list.tsv"
    path.write_text('URL\tTEXT\nhttp://b.test/x.jpg\t"Best" 5" screen\nhttp://b.test/y.jpg\ty\n')
    result = read_url_list(path, url_col="URL", caption_col="TEXT")
    assert rows(result) == [
        ("http://b.test/x.jpg", '"Best" 5" screen'),
        ("http://b.test/y.jpg", "y"),
    ]


def test_json_array_and_column_oriented(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(
        json.dumps(
            [
                {"url": "http://c.test/1.jpg", "caption": "one"},
                {"url": "", "caption": "empty"},
                {"url": "http://c.test/3.jpg"},
                {"url": 42, "caption": "not a url"},
                "not an object",
                {"url": "http://c.test/6.jpg", "caption": 6},
            ]
        )
    )
    result = read_url_list(path)
    assert rows(result) == [
        ("http://c.test/1.jpg", "one"),
        ("http://c.test/3.jpg", None),
        ("http://c.test/6.jpg", "6"),
    ]
    assert (result.rows_in, result.dropped_empty_url, result.dropped_malformed) == (6, 1, 2)
    # pandas' default DataFrame.to_json layout: {column: {row: value}}
    path.write_text(json.dumps({"url": {"0": "http://c.test/a.jpg"}, "caption": {"0": "a"}}))
    assert rows(read_url_list(path)) == [("http://c.test/a.jpg", "a")]


def test_jsonl_gzip_bad_lines_counted(tmp_path):
    path = tmp_path / "list.jsonl.gz"
    lines = [
        json.dumps({"url": "http://d.test/1.jpg", "caption": "one"}),
        "{not json",
        "",
        json.dumps({"url": None, "caption": "null url"}),
        json.dumps({"url": "http://d.test/2.jpg", "caption": None}),
    ]
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    result = read_url_list(path)
    assert rows(result) == [("http://d.test/1.jpg", "one"), ("http://d.test/2.jpg", None)]
    assert (result.rows_in, result.dropped_empty_url, result.dropped_malformed) == (4, 1, 1)


def test_parquet_with_other_types(tmp_path):
    path = tmp_path / "list.parquet"
    table = pa.table(
        {
            "link": pa.array([b"http://e.test/1.jpg", b"", None, b"http://e.test/4.jpg"]),
            "alt": pa.array(["one", "two", "three", None]),
            "extra": [1, 2, 3, 4],
        }
    )
    pq.write_table(table, path)
    result = read_url_list(path, url_col="link", caption_col="alt")
    assert rows(result) == [("http://e.test/1.jpg", "one"), ("http://e.test/4.jpg", None)]
    assert (result.rows_in, result.dropped_empty_url) == (4, 2)


def test_missing_columns_name_the_available_ones(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("link,text\nhttp://f.test/a.jpg,a\n")
    with pytest.raises(ValueError, match=r"url column 'url' not found.*\['link', 'text'\]"):
        read_url_list(csv)
    with pytest.raises(ValueError, match=r"caption column 'caption'.*caption_col=None"):
        read_url_list(csv, url_col="link")
    assert rows(read_url_list(csv, url_col="link", caption_col=None)) == [
        ("http://f.test/a.jpg", None)
    ]
    jsonl = tmp_path / "l.jsonl"
    jsonl.write_text('{"link": "http://f.test/a.jpg"}\n')
    with pytest.raises(ValueError, match=r"\['link'\]"):
        read_url_list(jsonl)
    parquet = tmp_path / "l.parquet"
    pq.write_table(pa.table({"link": ["x"]}), parquet)
    with pytest.raises(ValueError, match=r"\['link'\]"):
        read_url_list(parquet)


def test_format_detection_and_override(tmp_path):
    assert detect_format("a/b.CSV.gz") == "csv"
    assert detect_format("x.ndjson") == "jsonl"
    assert detect_format("x.dat", "tsv.gz") == "tsv"
    with pytest.raises(ValueError, match="input_format"):
        detect_format("x.dat")
    with pytest.raises(ValueError, match="unknown input format"):
        detect_format("x.csv", "xlsx")
    odd = tmp_path / "list.dat"
    odd.write_text("url\tcaption\nhttp://g.test/a.jpg\tA\n")
    with pytest.raises(ValueError, match="input_format"):
        read_url_list(odd)
    assert rows(read_url_list(odd, input_format="tsv")) == [("http://g.test/a.jpg", "A")]
    with pytest.raises(FileNotFoundError):
        read_url_list(tmp_path / "missing.csv")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "txt"])
def test_chunks_cover_fixed_input_rows(tmp_path, fmt):
    urls = [f"http://h.test/{i}.jpg" if i % 7 else "" for i in range(103)]
    path = tmp_path / f"big.{fmt}"
    if fmt == "csv":
        path.write_text("url,caption\n" + "".join(f"{u},c{i}\n" for i, u in enumerate(urls)))
    elif fmt == "jsonl":
        path.write_text(
            "".join(json.dumps({"url": u, "caption": f"c{i}"}) + "\n" for i, u in enumerate(urls))
        )
    elif fmt == "parquet":
        captions = [f"c{i}" for i in range(len(urls))]
        pq.write_table(pa.table({"url": urls, "caption": captions}), path, row_group_size=17)
    else:
        path.write_text("\n".join(urls) + "\n")
    chunks = list(iter_url_list_chunks(path, rows_per_chunk=25))
    assert [c.first_row for c in chunks] == [0, 25, 50, 75, 100]
    assert [c.rows_in for c in chunks] == [25, 25, 25, 25, 3]
    assert sum(c.dropped_empty_url for c in chunks) == 15  # i = 0, 7, ..., 98
    whole = read_url_list(path)
    assert pa.concat_tables([c.table for c in chunks]).equals(whole.table)
    assert whole.rows_out == 103 - 15
    # Chunk 1 holds input rows 25..49 minus the empty ones (28, 35, 42, 49).
    assert chunks[1].table["url"].to_pylist()[0] == "http://h.test/25.jpg"
    assert chunks[1].rows_out == 21
    with pytest.raises(ValueError, match="rows_per_chunk"):
        next(iter_url_list_chunks(path, rows_per_chunk=0))


def test_empty_list(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    result = read_url_list(path)
    assert result.rows_out == 0 and result.rows_in == 0
    assert result.table.column_names == ["url", "caption"]
