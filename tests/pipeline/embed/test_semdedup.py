"""SemDeDup on small real embeddings: planted near-copies, distinct rows, determinism, eps."""

import numpy as np
import pytest

from pipeline.embed.semdedup import default_clusters, semantic_duplicates

pytestmark = pytest.mark.timeout(60)


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def planted(n=1500, copies=80, dim=48, noise=0.01, seed=0):
    """n random unit rows plus `copies` near-copies (cosine ≈ 0.995) of distinct random rows."""
    rng = np.random.default_rng(seed)
    x = unit(rng.standard_normal((n, dim)))
    src = rng.choice(n, copies, replace=False)
    near = unit(x[src] + noise * rng.standard_normal((copies, dim)))
    return np.vstack([x, near]), src


def test_planted_near_copies_are_found_and_point_at_a_kept_row():
    x, src = planted()
    n = x.shape[0] - src.size
    dup = semantic_duplicates(x, eps=0.05, seed=0)
    assert dup.dtype == np.int64 and dup.shape == (x.shape[0],)
    # Each pair loses exactly one row, and the loser points at its partner, which is kept.
    assert (dup >= 0).sum() == src.size
    for i, s in enumerate(src):
        a, b = int(s), n + i
        assert (dup[a] == b) != (dup[b] == a)
    assert (dup[dup[dup >= 0]] == -1).all()


def test_distinct_items_are_all_kept():
    x = unit(np.random.default_rng(3).standard_normal((800, 32)))
    assert (semantic_duplicates(x, eps=0.05) == -1).all()


def test_the_row_least_similar_to_the_centroid_is_kept():
    # One cluster of three near-identical rows: the paper keeps the one farthest from the centroid.
    base = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    x = unit(np.stack([base + [0, 0.01, 0], base + [0, 0.04, 0], base + [0, 0.02, 0]]))
    dup = semantic_duplicates(x, eps=0.05, n_clusters=1)
    assert dup.tolist() == [1, -1, 1]


def test_same_seed_same_answer_and_input_scale_does_not_matter():
    x, _ = planted(seed=5)
    a = semantic_duplicates(x, seed=1)
    assert np.array_equal(a, semantic_duplicates(x, seed=1))
    assert np.array_equal(a, semantic_duplicates(x.astype(np.float64) * 3.0, seed=1))


def test_eps_sets_the_cosine_threshold():
    rng = np.random.default_rng(2)
    x = unit(rng.standard_normal((400, 32)))
    # A copy at cosine ~0.98 from its source: a duplicate for eps 0.05, not for eps 0.01.
    noise = unit(rng.standard_normal((1, 32)))
    noise -= (noise @ x[0]) * x[0]
    copy = unit(x[:1] * 0.98 + unit(noise) * np.sqrt(1 - 0.98**2))
    y = np.vstack([x, copy])
    cos = float(y[0] @ y[-1])
    assert 0.975 < cos < 0.985
    assert (semantic_duplicates(y, eps=0.05, seed=0) >= 0).sum() == 1
    assert (semantic_duplicates(y, eps=0.01, seed=0) >= 0).sum() == 0
    # A larger eps never finds fewer duplicates.
    counts = [(semantic_duplicates(y, eps=e, seed=0) >= 0).sum() for e in (0.01, 0.05, 0.3, 0.9)]
    assert counts == sorted(counts) and counts[-1] > counts[1]


def test_big_cluster_is_processed_in_blocks(monkeypatch):
    import pipeline.embed.semdedup as sd

    x, src = planted(n=600, copies=40)
    whole = semantic_duplicates(x, n_clusters=1)
    monkeypatch.setattr(sd, "BLOCK_FLOATS", 640 * 7)  # 7 rows a block
    assert np.array_equal(whole, semantic_duplicates(x, n_clusters=1))
    assert (whole >= 0).sum() == src.size


def test_default_clusters_is_about_sqrt_n_and_bounded():
    assert default_clusters(1) == 1 and default_clusters(10_000) == 100
    assert default_clusters(10**12) == 50_000


@pytest.mark.parametrize(
    ("embeddings", "kwargs", "message"),
    [
        (np.zeros((0, 4), np.float32), {}, "non-empty"),
        (np.ones(4, np.float32), {}, "2-D"),
        (np.ones((3, 4), np.int64), {}, "floating"),
        (np.array([[1, np.nan], [0, 1]], np.float32), {}, "NaN"),
        (np.array([[1, 0], [0, 0]], np.float32), {}, "row 1 is all zeros"),
        (np.eye(4, dtype=np.float32), {"eps": 0}, "eps"),
        (np.eye(4, dtype=np.float32), {"eps": 1.5}, "eps"),
        (np.eye(4, dtype=np.float32), {"n_clusters": 5}, "n_clusters"),
        (np.eye(4, dtype=np.float32), {"n_clusters": 0}, "n_clusters"),
    ],
)
def test_bad_input_gets_a_clear_error(embeddings, kwargs, message):
    with pytest.raises(ValueError, match=message):
        semantic_duplicates(embeddings, **kwargs)
