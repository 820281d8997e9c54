"""Verified near-duplicate clusters: mirrored and padded copies in the pool, other images not."""

import io

import pytest
from PIL import Image, ImageOps

from manifests.config import ConfigError
from pipeline.dedup.decide import DedupConfig, decide
from pipeline.dedup.hashes import image_hashes
from tests.pipeline.dedup.images import jpeg, scene


def png(image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def rows_of(images: dict) -> dict:
    rows = {"uid": list(images), "image": [png(im) for im in images.values()]}
    rows["width"] = [im.width for im in images.values()]
    rows["height"] = [im.height for im in images.values()]
    hashes = [image_hashes(im) for im in images.values()]
    for kind in ("phash", "phash256", "phash256_trim"):
        rows[kind] = [h[kind] for h in hashes]
    return rows


def pool() -> dict:
    original = scene(1, size=160)
    return {
        "a_original": original,
        "b_mirror": ImageOps.mirror(original),
        "c_padded": ImageOps.expand(original.resize((110, 110)), border=25, fill="black"),
        "d_mirror_jpeg": jpeg(ImageOps.mirror(original).resize((100, 100)), 50),
        "e_other": scene(2, size=160),
        "f_other_mirror": ImageOps.mirror(scene(3, size=160)),
        "g_flat": Image.new("RGB", (64, 64), (200, 30, 30)),
        "h_flat_again": Image.new("RGB", (48, 48), (200, 30, 30)),
    }


def test_mirrored_and_padded_copies_cluster_only_when_verified():
    rows = rows_of(pool())
    plain, _ = decide(rows, config=DedupConfig(near_dup_radius=8))
    verified, _ = decide(rows, config=DedupConfig(near_dup_radius=8, near_dup_verify="orb"))
    assert "b_mirror" not in plain and "c_padded" not in plain  # the hashes alone miss them
    copies = {"b_mirror", "c_padded", "d_mirror_jpeg"}
    assert {u for u, d in verified.items() if d["dup_of"] == "a_original"} == copies
    assert "ORB keypoints match" in verified["b_mirror"]["error"]
    assert verified["b_mirror"]["error"].endswith("mirrored)")
    # Two flat images have no keypoints: their equal phashes decide, as without verification.
    assert verified["h_flat_again"] == {
        **plain["h_flat_again"],
        "error": verified["h_flat_again"]["error"],
    }
    assert verified["h_flat_again"]["error"] == "near-duplicate of dup_of (phash within 8 bits)"
    assert not {"a_original", "e_other", "f_other_mirror", "g_flat"} & set(verified)


def test_verification_needs_a_radius():
    with pytest.raises(ConfigError, match="needs --near-dup-radius"):
        DedupConfig(near_dup_verify="orb")
