import pyarrow as pa
import pytest

from manifests.schema import sample_uid

pytestmark = pytest.mark.timeout(60)


def _matched(rows):
    return pa.table(
        {
            "url": [u for u, _, _ in rows],
            "caption": [c for _, c, _ in rows],
            "page_url": [None] * len(rows),
            "uid": [sample_uid(u, c) for u, c, _ in rows],
            "matched_queries": pa.array([q for _, _, q in rows], pa.list_(pa.string())),
        }
    )


def test_balance_keeps_first_copies_caps_queries_and_counts_every_row(bench, tmp_path):
    queries = tmp_path / "q.txt"
    queries.write_text("cat\ndog\n", encoding="utf-8")
    b = bench(parts=["p0", "p1"], query_list=str(queries), per_query_cap=2, seed=3)
    cats = [(f"http://a.test/cat{i}.jpg", "a cat", ["cat"]) for i in range(6)]
    b.put(
        "match",
        "p0",
        _matched(
            [
                *cats[:3],
                ("http://a.test/d.jpg", "a dog", ["dog"]),
                ("http://a.test/n.jpg", "nothing", []),
            ]
        ),
    )
    # p1 repeats a pair of p0: the copy in the earlier part is the one kept
    b.put("match", "p1", _matched([*cats[3:], cats[0]]))
    record = b.run("balance")
    rows = b.rows("balance", "p0") + b.rows("balance", "p1")
    assert len(rows) == 8  # the repeated pair is gone
    status = {r["url"].rsplit("/", 1)[1]: r["status"] for r in rows}
    assert status["d.jpg"] == "pending"  # under its cap
    assert status["n.jpg"] == "no_query_match"
    cat_status = [status[f"cat{i}.jpg"] for i in range(6)]
    assert set(cat_status) == {"pending", "over_query_cap"}
    assert 1 <= cat_status.count("pending") <= 4  # about cap / count = 1/3 of 6
    assert record["rows_in"] == 9  # every input row, the repeated one included
    assert record["rows_in"] == record["rows_out"] + sum(record["drops"].values())
    assert record["drops"]["repeated_pair"] == 1 and record["drops"]["no_query_match"] == 1
    again = b.run("balance")  # every part is done: nothing is redone, the totals stay
    assert (again["rows_in"], again["drops"]) == (record["rows_in"], record["drops"])


def test_without_a_query_list_every_unique_pair_goes_on(bench):
    b = bench()
    b.put(
        "match",
        "p0",
        _matched([("http://a.test/1.jpg", "x", []), ("http://a.test/1.jpg", "x", [])]),
    )
    record = b.run("balance")
    assert [r["status"] for r in b.rows("balance", "p0")] == ["pending"]
    assert record["drops"] == {"repeated_pair": 1}
