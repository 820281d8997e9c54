"""The keypoint-free check (pipeline.dedup.align): the searched alignment recovers the edit, a
copy's structure agrees, another drawing's does not, and a plain image is no evidence."""

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.dedup import align
from pipeline.dedup.verify import (
    VerifyConfig,
    _refine,
    eval_features,
    features,
    how_verified,
    match,
)
from pipeline.testing.edits import EDITS
from tests.pipeline.dedup.images import scene
from tests.pipeline.dedup.test_verify import smiley

# The bar these test pictures clear (the emoji bench's tuned threshold is 0.99, see verify.py).
THRESHOLD = 0.95
SEARCH = VerifyConfig(search=True, min_structure=THRESHOLD)


def moon(artist: int, size: int = 64) -> Image.Image:
    """Two artists' moon: the same disc on white, different craters. Their outlines agree
    everywhere, so an edge correlation calls them copies; the craters tell them apart."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((4, 4, size - 5, size - 5), fill=(40, 60, 70) if artist == 0 else (110, 110, 115))
    rng = np.random.default_rng(artist + 10)
    for _ in range(7):
        x, y = rng.integers(16, size - 20, 2)
        r = int(rng.integers(3, 7))
        shade = (25, 40, 50) if artist == 0 else (90, 90, 95)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=shade)
    return image


def _structure(copy, original, config=VerifyConfig()):
    pool, targets = features(copy, config), eval_features(original, config)
    return align.aligned_structure(
        pool.gray, [t.gray for t in targets], pool.native, lambda p, t, w: _refine(p, t, w, config)
    )


def test_search_recovers_a_known_scale_and_shift():
    original = scene(3, size=128).convert("L")
    canvas = Image.new("L", (200, 200), 255)
    canvas.paste(original.resize((96, 96), Image.BICUBIC), (60, 40))
    pool, target = np.asarray(canvas), np.asarray(original)
    score, warp = align.search(pool, target)  # target px -> pool px
    assert score > 0.8  # at COARSE px, between two grid scales
    corners = np.array([[0, 0, 1], [128, 128, 1]], dtype=np.float64)
    np.testing.assert_allclose(corners @ warp.T, [[60, 40], [156, 136]], atol=8)


def test_search_recovers_a_known_crop():
    # The pool is the eval image's central part at the same size (as match prepares both at
    # `side` px), so the eval content is 4/3 larger there: the pool slides over the eval image.
    original = scene(3, size=128).convert("L")
    crop = original.crop((16, 24, 112, 120)).resize((128, 128), Image.BICUBIC)
    pool, target = np.asarray(crop), np.asarray(original)
    score, warp = align.search(pool, target)  # target px -> pool px
    assert score > 0.8
    corners = np.array([[16, 24, 1], [112, 120, 1]], dtype=np.float64)
    np.testing.assert_allclose(corners @ warp.T, [[0, 0], [128, 128]], atol=8)


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_every_edit_at_its_worst_keeps_the_structure(edit):
    original = smiley(0)
    white = Image.alpha_composite(Image.new("RGBA", original.size, "white"), original)
    copy = EDITS[edit](white.convert("RGB"), np.random.default_rng(7), True)
    score, _ = _structure(copy, original)  # (the smiley is symmetric: either side may win)
    assert score >= THRESHOLD, (edit, score)


def test_other_drawings_of_the_same_thing_do_not_agree():
    for a, b in ((0, 1), (1, 0)):
        assert _structure(smiley(a), smiley(b))[0] < THRESHOLD
        assert _structure(moon(a), moon(b))[0] < THRESHOLD
    assert _structure(moon(0), moon(0))[0] > 0.99
    assert _structure(scene(1), scene(2))[0] < THRESHOLD


def test_a_plain_eval_image_is_no_evidence():
    blank = Image.new("RGB", (64, 64), (40, 90, 200))
    assert _structure(Image.new("RGB", (64, 64), (200, 40, 40)), blank)[0] == -1.0
    verdict = match(features(scene(1)), eval_features(blank), SEARCH)
    assert not verdict.copy and verdict.reason == "eval image: fewer than 3 keypoints"


def test_match_falls_back_to_the_search_and_says_how():
    keypoints_never = replace(SEARCH, min_inliers=10**6, aligned=False)
    original = moon(0)
    copy = EDITS["pad"](original, np.random.default_rng(1), True)
    pool, targets = features(copy), eval_features(original)
    verdict = match(pool, targets, keypoints_never)
    assert verdict.copy and verdict.structure >= THRESHOLD and not verdict.mirrored
    assert "structure agrees" in how_verified(verdict.inliers, verdict.structure, "orb")
    off = match(pool, targets, replace(keypoints_never, search=False))
    assert not off.copy and off.structure == -1.0
    mirrored = match(
        features(EDITS["mirror+pad"](scene(2), np.random.default_rng(2), True)),
        eval_features(scene(2)),
        keypoints_never,
    )
    how = how_verified(mirrored.inliers, mirrored.structure, "orb", mirrored.mirrored)
    assert mirrored.copy and mirrored.mirrored and how.endswith(", mirrored")
    # Stored features without their gray cannot be searched: the keypoints decide alone.
    assert match(replace(pool, gray=None), targets, SEARCH).structure == -1.0
    # A pool image at its native 16 px is compared at 16 px: still a copy.
    small = features(original.resize((16, 16), Image.BICUBIC))
    assert small.native == 16 and match(small, targets, keypoints_never).copy
    # Off by default: the keypoints alone (and their edge check) decide.
    assert VerifyConfig().search is False and match(pool, targets).structure == -1.0


def test_the_build_names_the_structure_in_the_leak_reason(tmp_path):
    import io

    from pipeline.dedup.evalsets import hash_eval_sets
    from pipeline.dedup.hashes import image_hashes
    from pipeline.dedup.leaks import Leak, LeakConfig, find_leaks, leak_reason

    (tmp_path / "moons" / "c").mkdir(parents=True)
    moon(0).save(tmp_path / "moons" / "c" / "m.png")
    table = hash_eval_sets([str(tmp_path / "moons")])
    copy = EDITS["crop"](moon(0), np.random.default_rng(1), True)
    buf = io.BytesIO()
    copy.save(buf, "PNG")
    h = image_hashes(copy)
    config = LeakConfig(radius=0, verify_radius=128, verify=replace(SEARCH, aligned=False))
    images = {0: buf.getvalue()}
    found = find_leaks(
        table,
        ["u"],
        [h["phash256"]],
        [h["phash256_trim"]],
        config,
        images=lambda indexes: {i: images[i] for i in indexes},
    )
    assert len(found) == 1 and found[0].structure >= THRESHOLD
    assert "structure agrees" in leak_reason(found[0])
    keyed = Leak("u", "e", 40, "orb", 90)
    assert "90 ORB keypoints match" in leak_reason(keyed)
