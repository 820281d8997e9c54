"""CLIP-score filtering in `pipeline build`: a model trained on matched pairs drops mismatched
captions; SemDeDup; the options' errors."""

import csv
import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import manifests
from manifests.config import ConfigError
from pipeline.build import run_build
from pipeline.buildconfig import BuildConfig
from pipeline.testing.shapesite import shapes_site


def _build(tmp_path, rows, name: str, **options) -> str:
    urls = tmp_path / f"{name}.csv"
    with open(urls, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["url", "caption"])
        writer.writerows((r["url"], r["caption"]) for r in rows)
    config = BuildConfig.of(
        out=str(tmp_path / name),
        url_list=str(urls),
        executor="local",
        allow_network=["127.0.0.1/32"],
        timeout=5.0,
        image_size=32,
        shard_size=50,
        **options,
    )
    run_build(config)
    return config.out


def precision_recall(out: str, rows: list[dict]) -> tuple[float, float, float]:
    """(precision, recall) of `low_clip_score` as a detector of mismatched captions, and the
    fraction of matched rows dropped."""
    con = manifests.open(out)
    status = dict(con.execute("SELECT url, status FROM samples").fetchall())
    dropped = {u for u, s in status.items() if s == "low_clip_score"}
    wrong = {r["url"] for r in rows if not r["matched"]}
    right = {r["url"] for r in rows if r["matched"]}
    caught = len(dropped & wrong)
    return caught / max(1, len(dropped)), caught / len(wrong), len(dropped & right) / len(right)


@pytest.mark.timeout(900)
def test_clip_filter_drops_mismatched_captions(tmp_path, shapes_model):
    server, rows = shapes_site(per_class=5, mismatch=0.3, seed=11)
    try:
        out = _build(tmp_path, rows, "top", clip_model=str(shapes_model), clip_top_fraction=0.7)
        precision, recall, matched_lost = precision_recall(out, rows)
        print(
            f"top 70%: precision {precision:.3f} recall {recall:.3f} "
            f"matched dropped {matched_lost:.3f}"
        )
        assert precision >= 0.8 and recall >= 0.8 and matched_lost <= 0.1
        con = manifests.open(out)
        scored, kept_min, dropped_max, unscored = con.execute(
            "SELECT count(clip_score), min(clip_score) FILTER (status = 'kept'), "
            "max(clip_score) FILTER (status = 'low_clip_score'), "
            "count(*) FILTER (status IN ('kept', 'low_clip_score') AND clip_score IS NULL) "
            "FROM samples"
        ).fetchone()
        assert scored == len(rows) and unscored == 0 and dropped_max <= kept_min
        kept = con.execute("SELECT count(*) FROM samples WHERE status = 'kept'").fetchone()[0]
        assert kept == round(0.7 * len(rows))
        stats = con.execute("SELECT rows_in, rows_out FROM stats WHERE stage = 'clip'").fetchone()
        assert stats == (len(rows), kept)
        # a rerun of the finished build changes nothing, the run-wide figures included
        before = json.loads((Path(out) / "stats" / "clip.json").read_text())["extra"]
        assert before["scored"] == len(rows) and "threshold" in before
        _build(tmp_path, rows, "top", clip_model=str(shapes_model), clip_top_fraction=0.7)
        assert json.loads((Path(out) / "stats" / "clip.json").read_text())["extra"] == before
        # the same pairs under a fixed threshold, then SemDeDup among the rows kept
        out = _build(
            tmp_path,
            rows,
            "min",
            clip_model=str(shapes_model),
            min_clip_score=0.2,
            semdedup_eps=0.02,
        )
        con = manifests.open(out)
        low = con.execute(
            "SELECT count(*) FILTER (status = 'kept' AND clip_score < 0.2), "
            "count(*) FILTER (status = 'low_clip_score' AND clip_score >= 0.2) FROM samples"
        ).fetchone()
        assert low == (0, 0)
        precision, recall, matched_lost = precision_recall(out, rows)
        print(
            f"min 0.2: precision {precision:.3f} recall {recall:.3f} "
            f"matched dropped {matched_lost:.3f}"
        )
        _check_semantic_duplicates(con, rows)
    finally:
        server.close()


def test_clip_options_are_checked(tmp_path):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"not a checkpoint")
    (tmp_path / "urls.csv").write_text("url,caption\n")
    base = dict(out=str(tmp_path / "ds"), url_list=str(tmp_path / "urls.csv"))
    with pytest.raises(ConfigError, match="need.*--clip-model"):
        BuildConfig.of(**base, min_clip_score=0.3)
    with pytest.raises(ConfigError, match="not both"):
        BuildConfig.of(**base, clip_model=str(ckpt), min_clip_score=0.3, clip_top_fraction=0.3)
    with pytest.raises(ConfigError, match=r"clip-top-fraction must be in \(0, 1\]"):
        BuildConfig.of(**base, clip_model=str(ckpt), clip_top_fraction=1.5)
    with pytest.raises(ConfigError, match="is not a file"):
        BuildConfig.of(**base, clip_model=str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match="semdedup-eps"):
        BuildConfig.of(**base, clip_model=str(ckpt), semdedup_eps=0.0)
    config = BuildConfig.of(**base, clip_model=str(ckpt))
    with pytest.raises(ConfigError, match="not a readable torch checkpoint"):
        run_build(config)


def _check_semantic_duplicates(con, rows) -> None:
    """Some rows are semantic duplicates, each of a kept row drawn in the same colour (the tiny
    model's embeddings of one class are close; colour is what it knows best)."""
    colour = {r["url"]: r["colour"] for r in rows}
    pairs = con.execute(
        "SELECT d.url, k.url, k.status, d.clip_score IS NOT NULL FROM samples d "
        "JOIN samples k ON d.dup_of = k.uid WHERE d.status = 'semantic_duplicate'"
    ).fetchall()
    print(f"semantic duplicates: {len(pairs)} of {len(rows)}")
    assert 0 < len(pairs) < len(rows) / 2
    for dup, kept, kept_status, scored in pairs:
        assert kept_status == "kept" and scored and colour[dup] == colour[kept]
    stats = con.execute("SELECT drops FROM stats WHERE stage = 'clip'").fetchone()[0]
    assert f'"semantic_duplicate": {len(pairs)}' in stats


@pytest.mark.timeout(900)
def test_a_low_score_drops_a_caption_not_the_image_its_other_captions_keep(tmp_path, shapes_model):
    """Each image under three captions, the first (its image row's) a wrong one: the CLIP
    threshold drops captions, an image stays while one of its captions does, and SemDeDup
    takes an image out with all its captions, never a caption for its own image's sake."""
    from pipeline.testing.shapesite import mismatched_caption

    server, pictures = shapes_site(per_class=2, mismatch=0.0, seed=5)
    rng = random.Random(5)
    rows = []
    for p in pictures:
        wrong = mismatched_caption(p["colour"], p["shape"], rng)
        right = f"a {p['colour']} {p['shape']}"
        rows += [{"url": p["url"], "caption": c} for c in (wrong, right, f"{right} drawn flat")]
    try:
        out = _build(tmp_path, rows, "captions", clip_model=str(shapes_model), min_clip_score=0.2)
        con = manifests.open(out)
        status = dict(con.execute("SELECT caption || url, status FROM samples").fetchall())
        image_rows = [status[r["caption"] + r["url"]] for r in rows[::3]]
        assert image_rows.count("low_clip_score") >= len(pictures) // 2  # most wrong ones
        images = con.execute("SELECT uid, url, captions FROM images").fetchall()
        with_kept = con.execute(
            "SELECT count(DISTINCT url) FROM samples WHERE status = 'kept'"
        ).fetchone()[0]
        assert len(images) == with_kept  # one stored image per URL that kept a caption
        shards = {
            (row["url"], tuple(row["captions"]))
            for path in sorted(Path(out, "shards").glob("*.parquet"))
            for row in pq.read_table(path).to_pylist()
        }
        assert shards == {(url, tuple(captions)) for _, url, captions in images}
        dropped_heads = [
            uid
            for (uid,) in con.execute(
                "SELECT uid FROM samples WHERE status = 'low_clip_score' AND image_of = uid"
            ).fetchall()
        ]
        stored = {uid for uid, _, _ in images}
        assert dropped_heads and set(dropped_heads) <= stored  # their images stay for the others
        out = _build(
            tmp_path,
            rows,
            "semdedup",
            clip_model=str(shapes_model),
            min_clip_score=0.2,
            semdedup_eps=0.02,
        )
        con = manifests.open(out)
        followers = con.execute(
            "SELECT s.status, s.dup_of = h.dup_of FROM samples s JOIN samples h "
            "ON s.image_of = h.uid WHERE h.status = 'semantic_duplicate' AND s.uid != h.uid "
            "AND s.clip_score >= 0.2"
        ).fetchall()
        assert followers and all(f == ("semantic_duplicate", True) for f in followers)
        (mates,) = con.execute(
            "SELECT count(*) FROM samples s JOIN samples k ON s.dup_of = k.uid "
            "WHERE s.status = 'semantic_duplicate' AND s.url = k.url"
        ).fetchone()
        assert mates == 0  # no caption is a semantic duplicate of its own image's caption
    finally:
        server.close()
