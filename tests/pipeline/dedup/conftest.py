import pytest


@pytest.fixture(scope="module")
def evals(tmp_path_factory):
    """An eval set of three scenes and an unreadable file: (folder, its hashed eval table)."""
    from pipeline.dedup.evalsets import hash_eval_sets
    from tests.pipeline.dedup.images import scene
    from tests.pipeline.dedup.test_leaks import make_eval_set

    root = tmp_path_factory.mktemp("evals")
    folder = make_eval_set(root, "pets", {f"c{s}/s{s}.png": scene(s) for s in (1, 2, 3)})
    (root / "pets" / "c9").mkdir()
    (root / "pets" / "c9" / "broken.png").write_bytes(b"\x89PNG not really")
    return folder, hash_eval_sets([folder])
