import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from manifests.config import ConfigError
from pipeline.dedup.verify import (
    VerifyConfig,
    eval_features,
    features,
    match,
    verify_bytes,
    verify_images,
)
from tests.pipeline.dedup.images import jpeg, scene


def smiley(artist: int, size: int = 96) -> Image.Image:
    """The same concept drawn by two 'artists': a face, eyes and a mouth, on transparency."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    if artist == 0:
        draw.ellipse((6, 6, 90, 90), fill=(255, 204, 51, 255), outline=(120, 70, 0, 255), width=3)
        draw.ellipse((28, 30, 38, 46), fill=(60, 40, 20, 255))
        draw.ellipse((58, 30, 68, 46), fill=(60, 40, 20, 255))
        draw.arc((24, 36, 72, 74), 20, 160, fill=(60, 40, 20, 255), width=4)
    else:
        draw.ellipse((10, 12, 86, 88), fill=(250, 170, 30, 255))
        draw.rectangle((30, 34, 38, 40), fill=(20, 20, 20, 255))
        draw.rectangle((58, 34, 66, 40), fill=(20, 20, 20, 255))
        draw.chord((30, 50, 66, 76), 0, 180, fill=(150, 30, 30, 255))
    return image


def worst_copies(image: Image.Image) -> dict[str, Image.Image]:
    """Geometric edits at the far end of issue 16's ranges."""
    rgb = image.convert("RGB")
    w, h = rgb.size
    padded = Image.new("RGB", (round(1.5 * w), round(1.5 * h)), (0, 0, 0))
    padded.paste(rgb, (round(0.25 * w), round(0.25 * h)))
    return {
        "crop_20_corner": rgb.crop((0, 0, round(0.8 * w), round(0.8 * h))),
        "pad_25_black": padded,
        "letterbox_white": ImageOps.expand(rgb, border=(0, h // 4), fill=(255, 255, 255)),
        "rotate_10": rgb.rotate(10, Image.BICUBIC, expand=True, fillcolor=(255, 255, 255)),
        "rotate_minus_10": rgb.rotate(-10, Image.BICUBIC, expand=True, fillcolor=(0, 0, 0)),
        "mirror": ImageOps.mirror(rgb),
        "mirror_pad_jpeg": jpeg(ImageOps.expand(ImageOps.mirror(rgb), w // 5, "white"), 40),
        "screenshot": _screenshot(rgb),
    }


def _screenshot(rgb: Image.Image) -> Image.Image:
    w, h = rgb.size
    canvas = Image.new("RGB", (2 * w, 2 * h), (235, 235, 240))
    ImageDraw.Draw(canvas).rectangle((0, 0, 2 * w, h // 6), fill=(60, 60, 70))
    canvas.paste(rgb.resize((round(1.2 * w), round(1.2 * h))), (w // 3, h // 3))
    return canvas


@pytest.mark.parametrize("seed", [1, 3])
def test_geometric_copies_verify(seed):
    original = scene(seed)
    targets = eval_features(original)
    for name, copy in worst_copies(original).items():
        verdict = match(features(copy), targets)
        assert verdict.copy, (name, verdict)
        assert verdict.reason is None
        assert verdict.mirrored == name.startswith("mirror"), name


def test_sticker_copies_verify_against_its_alpha_original():
    # A flat drawing has a few dozen corners, not hundreds: below the default threshold (set
    # for emoji whose other drawings share their geometry), above a looser one.
    loose = VerifyConfig(min_inliers=20)
    original = smiley(0)  # RGBA: both sides are composited onto white as the hashes do
    on_white = Image.alpha_composite(Image.new("RGBA", original.size, "white"), original)
    for name in ("crop_20_corner", "pad_25_black", "letterbox_white", "mirror"):
        verdict = verify_images(worst_copies(on_white)[name], original, loose)
        assert verdict.copy, (name, verdict)
    assert verify_images(smiley(1), original, loose).inliers < 10


def test_worst_sticker_copies_verify_by_the_aligned_check():
    # Too few corners for min_inliers, but aligned their strokes agree: the default config
    # finds every worst copy of the flat drawing, and the other artist's smiley stays out.
    config = VerifyConfig()
    original = smiley(0)
    on_white = Image.alpha_composite(Image.new("RGBA", original.size, "white"), original)
    for name, copy in worst_copies(on_white).items():
        verdict = verify_images(copy, original, config)
        assert verdict.copy and verdict.reason is None, (name, verdict)
        if verdict.inliers < config.min_inliers:
            assert verdict.similarity >= config.min_similarity, (name, verdict)
    for a, b in ((0, 1), (1, 0)):
        verdict = verify_images(smiley(a), smiley(b), config)
        assert not verdict.copy and verdict.similarity < config.min_similarity, verdict


def test_aligned_check_needs_both_grays_and_enough_inliers():
    original = smiley(0)
    copy = worst_copies(Image.alpha_composite(Image.new("RGBA", (96, 96), "white"), original))
    pool, targets = features(copy["rotate_10"]), eval_features(original)
    assert pool.gray is not None and pool.gray.dtype == np.uint8 and max(pool.gray.shape) == 256
    aligned = match(pool, targets)
    assert aligned.copy and aligned.inliers < 80 and aligned.similarity > 0.9
    # Features stored without their gray (leakverify's Parquet): inliers decide alone.
    bare = match(replace(pool, gray=None), targets)
    assert (bare.inliers, bare.copy, bare.similarity) == (aligned.inliers, False, -1.0)
    # (search=False: the keypoint-free check of align.py would find the copy by itself.)
    off = match(pool, targets, VerifyConfig(aligned=False, search=False))
    assert not off.copy and off.similarity == -1.0
    strict = match(
        pool, targets, VerifyConfig(min_inliers_aligned=aligned.inliers + 1, search=False)
    )
    assert not strict.copy and strict.similarity == -1.0
    # Without refinement the RANSAC fit is scored as it is: a worse alignment, a lower score.
    unrefined = match(pool, targets, VerifyConfig(ecc_iterations=0))
    assert -1 < unrefined.similarity < aligned.similarity


def test_other_drawing_of_the_same_concept_is_not_a_copy():
    for a, b in ((0, 1), (1, 0)):
        verdict = verify_images(smiley(a), smiley(b))
        assert not verdict.copy and verdict.reason is None
        assert verdict.inliers < 10, verdict
    # Different scenes (same generator, same kinds of shapes) do not verify either.
    assert not verify_images(scene(1), scene(2)).copy
    assert not verify_images(ImageOps.mirror(scene(4)), scene(5)).copy


def test_corrupt_tiny_and_flat_images_give_a_reason():
    good = io.BytesIO()
    scene(1).save(good, "PNG")
    broken = verify_bytes(b"not an image", good.getvalue())
    assert not broken.copy and broken.reason.startswith("pool image: cannot decode image")
    broken = verify_bytes(good.getvalue(), good.getvalue()[:40])
    assert not broken.copy and broken.reason.startswith("eval image: cannot decode image")
    tiny = verify_images(scene(1).resize((4, 4)), scene(1))
    assert not tiny.copy and tiny.reason == "pool image: image smaller than 8 px"
    flat = verify_images(scene(1), Image.new("RGB", (64, 64), (40, 90, 200)))
    assert not flat.copy and flat.reason == "eval image: fewer than 3 keypoints"
    for verdict in (broken, tiny, flat):
        assert verdict.similarity == -1.0 and verdict.inliers == 0
    assert verify_bytes(good.getvalue(), good.getvalue()).copy


def test_sift_detector_verifies_too():
    config = VerifyConfig(detector="sift", min_inliers=10)
    original = scene(2)
    assert verify_images(worst_copies(original)["crop_20_corner"], original, config).copy
    assert not verify_images(smiley(0), smiley(1), config).copy


@pytest.mark.parametrize(
    "bad",
    [
        {"detector": "surf"},
        {"side": 0},
        {"min_inliers": 2.5},
        {"ratio": 1.5},
        {"min_scale": 1.2},
        {"ransac_px": 0},
        {"min_inliers_aligned": 0},
        {"min_similarity": 1.5},
        {"min_coverage": 0},
        {"edge_sigma": -1.0},
        {"ecc_iterations": -1},
        {"min_structure": 1.5},
        {"search": "yes"},
    ],
)
def test_bad_config_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        VerifyConfig(**bad)
