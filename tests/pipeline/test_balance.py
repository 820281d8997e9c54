import numpy as np
import pyarrow as pa
import pytest

from pipeline.balance import balance, count_queries, draws, merge_counts

pytestmark = pytest.mark.timeout(60)


def _dataset(n=6000, seed=0):
    """uids and matched queries: 'common' in every row, 'mid' in a third, 'rare' in 1%."""
    rng = np.random.default_rng(seed)
    uids = [f"{i:032x}" for i in range(n)]
    matched = []
    for _ in range(n):
        row = ["common"]
        if rng.random() < 1 / 3:
            row.append("mid")
        if rng.random() < 0.01:
            row.append("rare")
        matched.append(row)
    return uids, matched


def test_count_queries_lists_and_arrow():
    matched = [["a", "b"], ["a"], [], None, ["b", "b", "c"]]
    expected = {"a": 2, "b": 2, "c": 1}  # "b" twice in one row counts once
    assert count_queries(matched) == expected
    arr = pa.array(matched, type=pa.list_(pa.string()))
    assert count_queries(arr) == expected
    assert count_queries(pa.chunked_array([arr[:2], arr[2:]])) == expected
    assert count_queries(pa.chunked_array([], type=pa.list_(pa.string()))) == {}
    with pytest.raises(TypeError, match="list<string>"):
        count_queries(pa.array(["a"]))
    shards = [count_queries(matched[:2]), count_queries(matched[2:])]
    assert merge_counts(shards) == expected


def test_counts_under_cap_keep_everything():
    uids, matched = _dataset(n=500)
    counts = count_queries(matched)
    keep = balance(uids, matched, counts, cap=500, seed=3)
    assert keep.dtype == bool and keep.all()


def test_no_match_rows_are_not_kept():
    uids = ["u0", "u1", "u2", "u3"]
    matched = [["x"], [], None, ["y"]]
    counts = {"x": 1, "y": 1000}
    keep = balance(uids, matched, counts, cap=1, seed=0)
    assert keep[0] and not keep[1] and not keep[2]
    big = [["y"]] * 200
    keep_big = balance([f"v{i}" for i in range(200)], big, counts, cap=1, seed=0)
    assert 0 < keep_big.sum() < 200  # over the cap: some kept, most not


def test_same_seed_same_result_other_seed_other_sample():
    uids, matched = _dataset()
    counts = count_queries(matched)
    a = balance(uids, matched, counts, cap=300, seed=7)
    b = balance(list(uids), [list(r) for r in matched], dict(counts), cap=300, seed=7)
    c = balance(uids, matched, counts, cap=300, seed=8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert abs(a.mean() - c.mean()) < 0.05  # another sample of the same size


def test_order_and_shard_independence():
    uids, matched = _dataset()
    counts = count_queries(matched)  # global counts
    whole = dict(zip(uids, balance(uids, matched, counts, cap=300, seed=1), strict=True))
    perm = np.random.default_rng(5).permutation(len(uids))
    shuffled_uids = [uids[i] for i in perm]
    shuffled = balance(shuffled_uids, [matched[i] for i in perm], counts, cap=300, seed=1)
    assert dict(zip(shuffled_uids, shuffled, strict=True)) == whole
    merged = {}
    for shard in np.array_split(np.arange(len(uids)), 3):
        s_uids = [uids[i] for i in shard]
        s_keep = balance(s_uids, [matched[i] for i in shard], counts, cap=300, seed=1)
        merged.update(zip(s_uids, s_keep, strict=True))
    assert merged == whole


def test_expected_kept_fraction():
    n = 20_000
    uids = [f"u{i}" for i in range(n)]
    # disjoint single-query groups: 10,000 x "a", 6,000 x "b", 3,000 x "c", 1,000 x "d"
    matched = [["a"]] * 10_000 + [["b"]] * 6_000 + [["c"]] * 3_000 + [["d"]] * 1_000
    counts = count_queries(matched)
    cap = 1_500
    keep = balance(uids, matched, counts, cap=cap, seed=11)
    start = 0
    for query, count in (("a", 10_000), ("b", 6_000), ("c", 3_000), ("d", 1_000)):
        frac = keep[start : start + count].mean()
        expected = min(1.0, cap / count)
        sd = np.sqrt(expected * (1 - expected) / count)
        assert abs(frac - expected) <= max(4 * sd, 1e-9), (query, frac, expected)
        start += count


def test_any_matched_query_keeps_the_pair():
    n = 20_000
    uids = [f"p{i}" for i in range(n)]
    matched = [["a", "b"]] * n
    counts = {"a": 10 * n, "b": 5 * n}  # keep probabilities 0.1 and 0.2, independent draws
    keep = balance(uids, matched, counts, cap=n, seed=2)
    expected = 1 - 0.9 * 0.8
    assert abs(keep.mean() - expected) < 4 * np.sqrt(expected * (1 - expected) / n)


def test_arrow_input_matches_lists():
    uids, matched = _dataset(n=2000)
    counts = count_queries(matched)
    as_lists = balance(uids, matched, counts, cap=200, seed=4)
    as_arrow = balance(pa.array(uids), pa.array(matched), counts, cap=200, seed=4)
    assert np.array_equal(as_lists, as_arrow)
    sliced = balance(pa.array(uids)[500:], pa.array(matched)[500:], counts, cap=200, seed=4)
    assert np.array_equal(as_lists[500:], sliced)


def test_draws_are_deterministic_and_uniform():
    uids = [f"u{i}" for i in range(20_000)]
    u = draws(uids, ["q"] * len(uids), seed=0)
    assert np.array_equal(u, draws(uids, ["q"] * len(uids), seed=0))
    assert ((u >= 0) & (u < 1)).all()
    assert abs(u.mean() - 0.5) < 0.01
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 1800
    other_query = draws(uids, ["r"] * len(uids), seed=0)
    assert abs(np.corrcoef(u, other_query)[0, 1]) < 0.03


def test_balance_input_errors():
    with pytest.raises(ValueError, match="no positive count"):
        balance(["u"], [["q"]], {}, cap=5)
    with pytest.raises(ValueError, match="rows"):
        balance(["u", "v"], [["q"]], {"q": 1})
    with pytest.raises(ValueError, match="cap"):
        balance(["u"], [["q"]], {"q": 1}, cap=0)
    with pytest.raises(TypeError, match="seed"):
        balance(["u"], [["q"]], {"q": 1}, seed="1")
    with pytest.raises(TypeError, match="uid"):
        balance([None], [["q"]], {"q": 10}, cap=1)
    assert balance([], [], {}).shape == (0,)


def test_balance_follows_the_documented_rule():
    uids = [f"r{i}" for i in range(3000)]
    matched = [["a"] if i % 3 else ["a", "b"] for i in range(3000)]
    counts = {"a": 6000, "b": 2000}  # keep probabilities 0.25 and 0.75 at cap 1500
    keep = balance(uids, matched, counts, cap=1500, seed=9)
    u_a = draws(uids, ["a"] * 3000, seed=9)
    u_b = draws(uids, ["b"] * 3000, seed=9)
    has_b = np.array([len(row) == 2 for row in matched])
    assert np.array_equal(keep, (u_a < 0.25) | (has_b & (u_b < 0.75)))
