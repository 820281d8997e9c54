import numpy as np
import pyarrow as pa
import pytest

from pipeline.embed.store import vector_array
from tests.pipeline.stages.conftest import sample_rows
from tests.trainer.evaluation.helpers import save_checkpoint

pytestmark = pytest.mark.timeout(120)


def _oracle(uids, scores, vectors, top_fraction, eps, seed):
    """The single-process decisions the clip stage made before it ran in tasks (uid -> status,
    dup_of), kept as the oracle of the parallel path."""
    from pipeline.embed.semdedup import semantic_duplicates

    out = {}
    readable = ~np.isnan(scores)
    keep = max(1, round(top_fraction * int(readable.sum())))
    cut = float(np.sort(scores[readable])[::-1][keep - 1])
    mask = readable & (scores >= cut)
    for i in np.flatnonzero(~mask):
        out[uids[i]] = ("low_clip_score", None)
    kept = np.flatnonzero(mask)
    dup = semantic_duplicates(vectors[kept], eps=eps, seed=seed)
    for j in np.flatnonzero(dup >= 0):
        out[uids[kept[j]]] = ("semantic_duplicate", uids[kept[dup[j]]])
    return out, cut


def _scored_parts(b, sizes, seed=0):
    """Parts of pending rows with scores (some NaN: unreadable) and 16-d image embeddings in
    groups of near-copies; rows of status duplicate are not scored. Returns all scored
    (uids, scores, vectors) in source order."""
    rng = np.random.default_rng(seed)
    bases = rng.normal(size=(12, 16))
    all_uids, all_scores, all_vectors = [], [], []
    for part, n in sizes.items():
        rows = sample_rows(
            [{"url": f"http://a.test/{part}/{i}.jpg", "caption": f"c{i}"} for i in range(n)]
            + [{"url": f"http://a.test/{part}/d.jpg", "caption": "x", "status": "duplicate"}]
        )
        uids = rows["uid"].to_pylist()[:n]
        vectors = bases[rng.integers(0, 12, n)] + rng.normal(scale=0.08, size=(n, 16))
        scores = rng.uniform(0.1, 0.4, n).astype(np.float32)
        scores[rng.random(n) < 0.05] = np.nan
        b.put("dedup", part, rows)
        table = {"uid": uids, "clip_score": pa.array(scores, pa.float32())}
        b.put("score", part, pa.table({**table, "image": vector_array(vectors)}))
        all_uids += uids
        all_scores.append(scores)
        all_vectors.append(vectors.astype(np.float16).astype(np.float32))
    return all_uids, np.concatenate(all_scores), np.concatenate(all_vectors)


def test_threshold_and_semdedup_in_tasks_equal_the_single_process_decisions(bench, tmp_path):
    ckpt = save_checkpoint(tmp_path / "nano.pt")
    sizes = {"p0": 70, "p1": 45, "p2": 60}
    b = bench(
        parts=list(sizes), clip_model=str(ckpt), clip_top_fraction=0.7, semdedup_eps=0.05, seed=3
    )
    uids, scores, vectors = _scored_parts(b, sizes)
    record = b.run("clip")
    want, cut = _oracle(uids, scores, vectors, 0.7, 0.05, seed=3)
    rows = [r for p in sizes for r in b.rows("clip", p)]
    got = {
        r["uid"]: (r["status"], r["dup_of"])
        for r in rows
        if r["status"] in ("low_clip_score", "semantic_duplicate")
    }
    assert got == want
    assert sum(s == "semantic_duplicate" for s, _ in want.values()) > 10  # the test bites
    assert record["extra"]["threshold"] == pytest.approx(cut, abs=1e-6)
    assert record["extra"]["semantic_duplicates"] == len(got) - len(
        [u for u, (s, _) in want.items() if s == "low_clip_score"]
    )
    score_of = dict(zip(uids, scores.tolist(), strict=True))
    for r in rows:  # every scored row carries its score; unreadable and unscored rows none
        s = score_of.get(r["uid"])
        assert r["clip_score"] == (None if s is None or s != s else pytest.approx(s))
    assert all(r["status"] == "duplicate" for r in rows if r["uid"] not in score_of)


def test_a_rerun_skips_finished_semdedup_tasks(bench, tmp_path):
    ckpt = save_checkpoint(tmp_path / "nano.pt")
    b = bench(parts=["p0", "p1"], clip_model=str(ckpt), semdedup_eps=0.05)
    _scored_parts(b, {"p0": 30, "p1": 30})
    first = b.run("clip")
    folder = b.layout.stage_dir("clip") / "phases"
    assert {p.name for p in folder.glob("*.done")} >= {"kmeans-all.done", "assign-p0.done"}
    done = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.done")}
    for name in ("plan.done", "p0.done", "p1.done", "dups-0.done"):
        (b.layout.stage_dir("clip") / name).unlink(missing_ok=True)
        (folder / name).unlink(missing_ok=True)
    again = b.run("clip")
    assert (folder / "kmeans-all.done").stat().st_mtime_ns == done["kmeans-all.done"]  # not redone
    assert again["extra"] == first["extra"] and "threshold" not in first["extra"]


def test_min_clip_score_alone_keeps_rows_at_or_above_it(bench, tmp_path):
    ckpt = save_checkpoint(tmp_path / "nano.pt")
    b = bench(parts=["p0"], clip_model=str(ckpt), min_clip_score=0.25)
    uids, scores, _ = _scored_parts(b, {"p0": 40})
    record = b.run("clip")
    status = {r["uid"]: r["status"] for r in b.rows("clip", "p0")}
    for uid, s in zip(uids, scores, strict=True):
        assert status[uid] == ("pending" if s >= np.float32(0.25) else "low_clip_score")
    assert record["extra"] == {"scored": 40, "threshold": 0.25}
