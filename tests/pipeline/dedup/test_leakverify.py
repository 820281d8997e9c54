"""The leak check's verification stage: near misses of the hashes verified by local features."""

import io

import pytest

from pipeline.dedup.decide import DedupConfig, decide, leak_config
from pipeline.dedup.hashes import image_hashes
from pipeline.dedup.leaks import (
    LEAK_MIN_SIMILARITY,
    VERIFY_RADIUS,
    LeakConfig,
    find_leaks,
    leak_verify_config,
)
from pipeline.dedup.leakverify import FEATURES_FILE, EvalFeatures, write_eval_verification
from pipeline.dedup.verify import VerifyConfig
from tests.pipeline.dedup.images import scene
from tests.pipeline.dedup.test_verify import worst_copies


def png(image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def pool(images: dict) -> dict:
    rows = {"uid": list(images), "image": [png(im) for im in images.values()]}
    hashes = [image_hashes(im) for im in images.values()]
    for kind in ("phash256", "phash256_trim"):
        rows[kind] = [h[kind] for h in hashes]
    return rows


def leaks_of(eval_table, rows, config, eval_features=None):
    data = rows["image"]
    found = find_leaks(
        eval_table,
        rows["uid"],
        rows["phash256"],
        rows["phash256_trim"],
        config,
        images=lambda indexes: {i: data[i] for i in indexes},
        eval_features=eval_features,
    )
    return {leak.uid: leak for leak in found}


def test_verification_finds_the_geometric_copies_the_hashes_miss(evals):
    _, eval_table = evals
    edits = {f"{name}@{s}": im for s in (1, 3) for name, im in worst_copies(scene(s)).items()}
    others = {f"other{s}": scene(s) for s in range(20, 40)}  # same generator, not copies
    rows = pool(edits | others)
    hashed = leaks_of(eval_table, rows, LeakConfig())
    # Candidates as far as 96 bits (44 left the 20% corner crops out of reach), the leak's edge
    # threshold (stricter than verify.py's own)
    verified = leaks_of(eval_table, rows, LeakConfig(verify=leak_verify_config("orb")))
    assert set(hashed) <= set(verified)
    assert {u for u in verified if u.startswith("other")} == set()
    missed = set(edits) - set(hashed)
    assert {"crop_20_corner@1", "rotate_10@1", "rotate_minus_10@3"} <= missed  # hash gaps
    assert set(verified) == set(edits)  # every worst-setting geometric edit, verified
    for uid, leak in verified.items():
        assert leak.eval_id == f"pets/c{uid[-1]}/s{uid[-1]}.png"
        assert (leak.inliers is None) == (uid in hashed)
        if leak.inliers is not None:
            assert leak.kind == "orb" and leak.inliers >= VerifyConfig().min_inliers


def test_stored_eval_features_give_the_same_verdicts(evals, tmp_path):
    _, eval_table = evals
    config = LeakConfig(verify=VerifyConfig())
    rows = pool({name: im for name, im in worst_copies(scene(2)).items()})
    write_eval_verification(eval_table, tmp_path, config.verify)
    stored = EvalFeatures(eval_table, config.verify, tmp_path)
    assert leaks_of(eval_table, rows, config, stored) == leaks_of(eval_table, rows, config)
    assert stored.get([3])[3][0].reason == "eval image: not readable at build"  # broken.png
    computed = EvalFeatures(eval_table, config.verify)
    assert stored.variants()[0] == computed.variants()[0]
    assert stored.variants()[1].tolist() == computed.variants()[1].tolist()
    path = tmp_path / FEATURES_FILE
    before = path.stat().st_mtime_ns
    write_eval_verification(eval_table, tmp_path, config.verify)  # same images and settings
    assert path.stat().st_mtime_ns == before
    write_eval_verification(eval_table, tmp_path, VerifyConfig(max_features=300))
    assert path.stat().st_mtime_ns != before


def test_an_undecodable_pool_image_verifies_nothing(evals):
    _, eval_table = evals
    rows = pool({"cropped": worst_copies(scene(1))["crop_20_corner"]})
    rows["image"] = [b"\xff\xd8 truncated"]
    assert leaks_of(eval_table, rows, LeakConfig(verify=VerifyConfig())) == {}
    with pytest.raises(ValueError, match="needs the pool images"):
        find_leaks(
            eval_table,
            rows["uid"],
            rows["phash256"],
            rows["phash256_trim"],
            LeakConfig(verify=VerifyConfig()),
        )


def test_decide_verifies_with_the_build_flag(evals):
    folder, eval_table = evals
    rows = pool({"rotated": worst_copies(scene(1))["rotate_10"], "other": scene(50)})
    rows["width"], rows["height"] = [128, 128], [128, 128]
    rows["phash"] = [image_hashes(scene(1))["phash"], image_hashes(scene(50))["phash"]]
    off, _ = decide(rows, eval_table, DedupConfig(eval_set=[folder]))
    on, leaks = decide(rows, eval_table, DedupConfig(eval_set=[folder], leak_verify="orb"))
    assert "rotated" not in off and set(on) == {"rotated"}
    assert on["rotated"]["leak_of"] == "pets/c1/s1.png"
    assert "ORB keypoints match under one rotation, scale and shift" in on["rotated"]["error"]
    sift = leak_config(DedupConfig(eval_set=[folder], leak_verify="sift"))
    assert sift.verify.detector == "sift" and sift.verify.min_similarity == LEAK_MIN_SIMILARITY
    assert sift.verify_radius == VERIFY_RADIUS
    wide = leak_config(DedupConfig(eval_set=[folder], leak_verify="orb", leak_radius=100))
    assert wide.radius == wide.verify_radius == 100  # nothing left between them to verify
    with pytest.raises(Exception, match="leak_verify|leak-verify"):
        DedupConfig(leak_verify="surf")
    with pytest.raises(Exception, match="--leak-verify needs --eval-set"):
        DedupConfig(leak_verify="orb")


def test_the_build_flag_names_the_detectors_verify_has():
    from pipeline.dedup import decide, verify

    assert ("off", *verify.DETECTORS) == decide.LEAK_VERIFIERS


def test_a_large_variant_set_is_indexed_once_by_the_driver(evals, tmp_path, monkeypatch):
    from pipeline.dedup import leakverify

    _, eval_table = evals
    monkeypatch.setattr(leakverify, "VARIANT_FLAT_MAX", 16)  # 3 images x ~50 variants: IVF
    config = LeakConfig(verify=VerifyConfig())
    write_eval_verification(eval_table, tmp_path, config.verify)
    assert (tmp_path / leakverify.VARIANT_INDEX_FILE).exists()
    stored = EvalFeatures(eval_table, config.verify, tmp_path)
    index, owners = stored.variant_index(config.nprobe)
    assert index.ntotal == owners.size == len(stored.variants()[0])
    rows = pool({f"{n}@{s}": im for s in (1, 3) for n, im in worst_copies(scene(s)).items()})
    assert leaks_of(eval_table, rows, config, stored) == leaks_of(eval_table, rows, config)


def test_stored_features_keep_what_the_aligned_check_needs(evals, tmp_path):
    from pipeline.dedup.leakverify import decode_features, encode_features
    from pipeline.dedup.verify import features

    feats = features(scene(1), VerifyConfig())
    back = decode_features(encode_features(feats))
    assert (back.points == feats.points).all() and (back.descriptors == feats.descriptors).all()
    assert back.gray is not None and (back.gray == feats.gray).all()
