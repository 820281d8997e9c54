import itertools

import numpy as np
import pytest

from pipeline.dedup.neardup import (
    _covering,
    cluster_labels,
    cluster_near_duplicates,
    join_plan,
    near_duplicate_pairs,
)


def codes_from_ints(values) -> np.ndarray:
    return np.asarray(values, dtype=np.uint64).astype(">u8").view(np.uint8).reshape(-1, 8)


def planted_codes(n: int, radius: int, seed: int) -> np.ndarray:
    """n random 64-bit codes, a quarter of them copies of another with up to `radius` flips."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    for copy in rng.choice(n, n // 4, replace=False):
        source = int(rng.integers(0, n))
        bits = rng.choice(64, int(rng.integers(0, radius + 1)), replace=False)
        values[copy] = values[source] ^ np.uint64(sum(1 << int(b) for b in bits))
    return codes_from_ints(values)


def brute_force_pairs(codes: np.ndarray, radius: int) -> set:
    v = codes.view(">u8").ravel()
    d = np.bitwise_count(v[:, None] ^ v[None, :])
    i, j = np.nonzero(np.triu(d <= radius, k=1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("radius", [0, 3, 6, 8])
def test_flat_multihash_sortjoin_find_the_same_pairs(radius):
    codes = planted_codes(1500, radius, seed=radius)
    expected = brute_force_pairs(codes, radius)
    assert len(expected) > 300  # the planted pairs, and the identical codes among them
    for method in ("flat", "multihash", "sortjoin"):
        i, j = near_duplicate_pairs(codes, radius, method)
        assert set(zip(i.tolist(), j.tolist(), strict=True)) == expected, method


@pytest.mark.timeout(60)
def test_methods_give_the_same_clusters():
    codes = planted_codes(3000, 6, seed=11)
    labels = {m: cluster_labels(codes, 6, m) for m in ("flat", "multihash", "sortjoin")}
    ref = labels["flat"]
    assert np.unique(ref).size < 3000 - 500  # clusters formed
    for method, got in labels.items():
        # The same partition, whatever the label numbers.
        pairs = np.unique(np.stack([ref, got]), axis=1)
        assert pairs.shape[1] == np.unique(ref).size == np.unique(got).size, method


def test_sortjoin_checks_big_key_groups_all_pairs():
    # 300 codes that agree on their first 40 bits: every sortjoin key of those bits is shared
    # by all of them, far beyond the neighbour window.
    rng = np.random.default_rng(3)
    base = int(rng.integers(0, 2**40)) << 24
    values = [base | int(x) for x in rng.choice(2**24, 300, replace=False)]
    values += [int(v) for v in rng.integers(0, 2**63, 300)]
    codes = codes_from_ints(values)
    i, j = near_duplicate_pairs(codes, 6, "sortjoin")
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == brute_force_pairs(codes, 6)


@pytest.mark.parametrize("radius,n", [(0, 10**6), (2, 10**4), (4, 10**6), (6, 10**7), (8, 10**5)])
def test_join_plan_covers_every_pair_within_radius(radius, n):
    plan = join_plan(radius, n)
    m = len(plan.chunks)
    assert sum(size for _, size in plan.chunks) == 64
    keys = [set(k) for k in plan.keys]
    # Any pair within `radius` differs in at most `radius` chunks: the other chunks must
    # contain a whole key.
    for spoiled in itertools.combinations(range(m), min(radius, m)):
        equal = set(range(m)) - set(spoiled)
        assert any(key <= equal for key in keys), spoiled


def test_covering_is_a_covering():
    family = _covering(7, 4, 2)
    for target in itertools.combinations(range(7), 4):
        assert any(set(k) <= set(target) for k in family)


def test_representative_is_the_largest_then_smallest_uid():
    a = 0x0123456789ABCDEF
    values = [a, a ^ 1, a ^ 0b110, a ^ 0b111000, ~a & (2**64 - 1), (~a & (2**64 - 1)) ^ 8]
    codes = codes_from_ints(values)
    uids = ["u5", "u2", "u3", "u4", "v1", "v0"]
    areas = [100, 400, 400, 50, 10, 10]
    dup_of = cluster_near_duplicates(uids, codes, areas, radius=3)
    # u2 and u3 tie on the largest area: the smaller uid wins. v0/v1 tie: v0.
    assert dup_of == ["u2", None, "u2", "u2", "v0", None]
    # Chains join clusters (single linkage): radius 2 still links u5-u2-u3 but not u4.
    assert cluster_near_duplicates(uids, codes, areas, radius=2) == [
        "u2",
        None,
        "u2",
        None,
        "v0",
        None,
    ]


def test_missing_areas_and_empty_input():
    codes = codes_from_ints([7, 7, 2**63])
    assert cluster_near_duplicates(["b", "a", "c"], codes, [None, float("nan"), 5], 0) == [
        "a",
        None,
        None,
    ]
    assert cluster_near_duplicates([], np.zeros((0, 8), np.uint8), [], 4) == []


def test_bad_arguments_are_clear_errors():
    codes = codes_from_ints([1, 2])
    with pytest.raises(ValueError, match="radius"):
        near_duplicate_pairs(codes, 17)
    with pytest.raises(ValueError, match="method"):
        near_duplicate_pairs(codes, 2, "annoy")
    with pytest.raises(ValueError, match="n×8"):
        cluster_labels(np.zeros((2, 4), np.uint8), 2)
    with pytest.raises(ValueError, match="same length"):
        cluster_near_duplicates(["a"], codes, [1, 2], 2)


def test_the_build_config_names_the_methods_and_radius_neardup_has():
    from pipeline.dedup import decide, neardup

    assert decide.NEAR_DUP_METHODS == neardup.METHODS
    assert decide.NEAR_DUP_MAX_RADIUS == neardup.MAX_RADIUS
