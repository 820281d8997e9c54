"""FAISS index choice, recall tuning, search, save/load, on small real vectors."""

import json

import numpy as np
import pytest

from pipeline.embed import index as fi

pytestmark = pytest.mark.timeout(120)


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((40, 32)))
    x = centres[rng.integers(0, 40, 3000)] + 0.15 * rng.standard_normal((3000, 32))
    return unit(x)


def test_choice_by_size():
    assert fi.choose_index(99_999, 512) == ("flat", "Flat")
    # full vectors fit the budget: IVF-Flat (autofaiss would build HNSW; see the module doc)
    assert fi.choose_index(1_000_000, 128) == ("ivfflat", "IVF4096,Flat")
    assert fi.factory_for("hnsw", 1_000_000, 128) == "HNSW32,Flat"
    # 200 MB cannot hold 1M × 128 floats: IVF-PQ.
    kind, factory = fi.choose_index(1_000_000, 128, 200 << 20)
    assert kind == "ivfpq" and factory == "OPQ16_128,IVF4096,PQ16x8,Refine(SQ8)"
    # No room for the SQ8 re-ranking codes: PQ codes only.
    assert fi.choose_index(1_000_000, 128, 40 << 20)[1] == "OPQ16_128,IVF4096,PQ16x8"
    with pytest.raises(ValueError, match="do not fit"):
        fi.choose_index(1_000_000, 128, 1 << 20)


@pytest.mark.parametrize("kind", ["ivfflat", "hnsw", "ivfpq"])
def test_forced_kinds_reach_the_recall_target_and_record_it(vectors, kind):
    index, info = fi.build_index(vectors, kind=kind, recall_target=0.9, recall_queries=200)
    assert info.kind == kind and info.n == 3000 and info.dim == 32 and info.recall_queries == 200
    assert info.recall_at_10 >= 0.9
    assert set(info.search_params) <= {"efSearch", "nprobe", "k_factor_rf"} and info.search_params
    # The recorded recall is the one measured with the recorded parameters on the same queries.
    queries = fi._held_out(fi._validate(vectors), 200, 0)
    fi._set_params(index, info.search_params)
    assert fi.measure_recall(index, vectors, queries) == pytest.approx(info.recall_at_10, abs=1e-4)
    scores, ids = fi.search(index, info, vectors[:5], 10)
    assert ids.shape == (5, 10) and (ids[:, 0] == np.arange(5)).all()
    assert np.allclose(scores[:, 0], 1.0, atol=0.02)


def test_flat_is_exact_and_pads_missing_results(vectors):
    index, info = fi.build_index(vectors[:7])
    assert info.kind == "flat" and info.recall_at_10 is None and info.search_params == {}
    scores, ids = fi.search(index, info, vectors[0], 10)  # one 1-D query
    assert ids.shape == (1, 10) and ids[0, 0] == 0 and (ids[0, 7:] == -1).all()
    assert np.allclose(scores[0, :7], np.sort(vectors[:7] @ vectors[0])[::-1], atol=1e-5)


def test_measure_recall_matches_a_hand_computed_case():
    import faiss

    # Two inverted lists (angles 0°, 5°, 10° and 80°, 85°, 90°) and nprobe = 1. Query at 42° goes
    # to the first list: exact top-3 {10°, 5°, 80°}, found {10°, 5°, 0°}: 2/3. Query at 48° goes to
    # the second: exact {80°, 85°, 10°}, found {80°, 85°, 90°}: 2/3. recall@3 = 2/3.
    def at(degrees):
        r = np.radians(np.asarray(degrees, dtype=np.float64))
        return np.stack([np.cos(r), np.sin(r)], axis=1).astype(np.float32)

    x = at([0, 5, 10, 80, 85, 90])
    quantizer = faiss.IndexFlatIP(2)
    index = faiss.IndexIVFFlat(quantizer, 2, 2, faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    index.nprobe = 1
    assert fi.measure_recall(index, x, at([42, 48]), k=3) == pytest.approx(2 / 3)
    index.nprobe = 2
    assert fi.measure_recall(index, x, at([42, 48]), k=3) == 1.0


def test_save_load_round_trip(vectors, tmp_path):
    index, info = fi.build_index(vectors, kind="hnsw", recall_target=0.9, recall_queries=100)
    fi.save_index(index, info, tmp_path / "emb")
    assert sorted(p.name for p in (tmp_path / "emb").iterdir()) == [
        "image.faiss",
        "image.index.json",
    ]
    loaded, info2 = fi.load_index(tmp_path / "emb")
    assert info2 == info
    a = fi.search(index, info, vectors[:20], 5)
    b = fi.search(loaded, info2, vectors[:20], 5)
    assert np.array_equal(a[1], b[1]) and np.allclose(a[0], b[0])


def test_load_errors_are_clear(vectors, tmp_path):
    with pytest.raises(fi.IndexFileError, match="does not exist"):
        fi.load_index(tmp_path)
    index, info = fi.build_index(vectors[:50])
    fi.save_index(index, info, tmp_path)
    (tmp_path / "image.index.json").write_text(json.dumps({**info.__dict__, "n": 51}))
    with pytest.raises(fi.IndexFileError, match="rebuild"):
        fi.load_index(tmp_path)
    (tmp_path / "image.index.json").write_text("{not json")
    with pytest.raises(fi.IndexFileError, match="not a valid index info"):
        fi.load_index(tmp_path)
    fi.save_index(index, info, tmp_path)
    (tmp_path / "image.faiss").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable FAISS index"):
        fi.load_index(tmp_path)


@pytest.mark.parametrize(
    ("vectors_", "message"),
    [
        (np.zeros((0, 8), np.float32), "non-empty"),
        (np.ones(8, np.float32), "2-D"),
        (np.ones((4, 8), np.int32), "floating"),
        (np.array([[np.nan, 1.0]], np.float32), "NaN"),
        (np.array([[1.0, 0.0], [0.0, 0.0]], np.float32), "all zeros"),
    ],
)
def test_bad_vectors_get_a_clear_error(vectors_, message):
    with pytest.raises(ValueError, match=message):
        fi.build_index(vectors_)


def test_bad_arguments_get_a_clear_error(vectors):
    with pytest.raises(ValueError, match="kind"):
        fi.build_index(vectors, kind="annoy")
    with pytest.raises(ValueError, match="recall_target"):
        fi.build_index(vectors, recall_target=1.5)
    index, info = fi.build_index(vectors[:20])
    with pytest.raises(ValueError, match="k must be"):
        fi.search(index, info, vectors[:1], 0)
    with pytest.raises(ValueError, match="dimension 16"):
        fi.search(index, info, np.ones((1, 16), np.float32), 3)
    # float16 vectors (as stored on disk) are accepted and normalised.
    _, info16 = fi.build_index(vectors[:20].astype(np.float16) * 4)
    assert info16.n == 20
