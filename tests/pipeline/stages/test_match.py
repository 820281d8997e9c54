import pyarrow as pa
import pytest

from manifests.schema import sample_uid

pytestmark = pytest.mark.timeout(60)


def _candidates(pairs):
    urls, captions = zip(*pairs, strict=True)
    return pa.table({"url": list(urls), "caption": list(captions), "page_url": [None] * len(urls)})


def test_match_gives_uids_and_the_queries_each_caption_contains(bench, tmp_path):
    queries = tmp_path / "queries.txt"
    queries.write_text("red fox\nfox\ndog\n", encoding="utf-8")
    b = bench(parts=["p0", "p1"], query_list=str(queries))
    b.put(
        "sources",
        "p0",
        _candidates(
            [
                ("http://a.test/1.jpg", "A Red Fox at dusk"),
                ("http://a.test/2.jpg", "foxes and a dog"),
            ]
        ),
    )
    b.put("sources", "p1", _candidates([("http://a.test/3.jpg", "a cat")]))
    record = b.run("match")
    rows = b.rows("match", "p0") + b.rows("match", "p1")
    assert [r["uid"] for r in rows] == [sample_uid(r["url"], r["caption"]) for r in rows]
    # case-folded and word-bounded: "foxes" is not "fox"
    assert [sorted(r["matched_queries"]) for r in rows] == [["fox", "red fox"], ["dog"], []]
    assert (record["rows_in"], record["rows_out"]) == (3, 3)
    assert b.marker("match", "p0")["extra"] == {"matched": 2}


def test_a_missing_query_list_fails_before_any_part(bench, tmp_path):
    from manifests.config import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        bench(query_list=str(tmp_path / "none.txt"))
