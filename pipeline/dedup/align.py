"""Keypoint-free verification of a candidate copy: search the alignment, then compare structure.

Flat art (emoji, logos, icons) has too few corners for keypoints to vote reliably, and another
artist's drawing of the same concept shares its layout, so an outline-dominated measure (the edge
correlation of verify.py's aligned check) cannot tell them apart either: two moons are one circle.
This check (verify.py calls it when the keypoints did not decide):

1. **Search.** Every similarity transform a copy of issue 16's edit list can carry: the eval
   image scaled by SCALES (its content is 0.36x the pool's side in a screenshot, 1.4x in a 20%
   crop of a turned image) and turned by ANGLES, slid over the pool image (or the pool's central
   part over the eval image, when the eval image is the larger) by normalised cross-correlation at
   COARSE px. The best placement, and the mirror image's, are refined by ECC (verify._refine).
2. **Structure.** The eval image warped into the pool's frame, both at the pool's own resolution
   (a 16 px thumbnail is compared at 16 px, so downscaling costs nothing), lightly blurred (JPEG
   blocks), then the local correlation of the two (SSIM's structure term, Gaussian window of
   WINDOW px, stabiliser STABILISER) averaged over the overlap. Flat areas agree in any drawing;
   textured ones agree only in a copy. The score is the best of that mean with one edge band or
   one corner box left out (OCCLUDERS): captions, watermarks and logos go there.

Chosen on the google half of bench/leaks.py (cross-style protocol); its report half is twitter.
"""

from __future__ import annotations

import numpy as np

COARSE = 32  # px: long side of the pool image during the search
ANGLES = (-8.0, 0.0, 8.0)  # degrees searched; ECC refines the rest (rotations reach 10)
# Eval content / pool side, 9.5% apart from 0.37 to 1.44, 1 among them (most copies keep the frame)
SCALES = tuple(1.095**k for k in range(-11, 5))
CENTRAL = 0.75  # share of each side of the pool image slid over a larger eval image (a rotated
# copy's filled corners are no part of the original)
PRE_BLUR = 0.7  # px (at the comparison grid): JPEG's 8 px blocks are no structure
WINDOW = 1.0  # px: Gaussian sigma of the local statistics
STABILISER = 4.0  # gray levels squared: two flat patches agree
BAND, BOX = 0.15, 0.35  # of the side: an edge band, a corner box that may be covered
MIN_PIXELS = 16  # of overlap at the comparison grid; fewer: no score
# A blank or flat image agrees with any other flat one: at least this share of the overlap must
# have texture (local standard deviation of TEXTURE gray levels) in the eval image.
TEXTURE, MIN_TEXTURED = 4.0, 0.03


def search(pool: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray | None]:
    """(correlation, 2x3 target px -> pool px) of the best coarse placement of `target` in
    `pool` (uint8 grayscale arrays, any size), or (-1, None) when none fits."""
    import cv2

    c = COARSE / max(pool.shape)
    small = cv2.resize(pool.astype(np.float32), None, fx=c, fy=c, interpolation=cv2.INTER_AREA)
    big = target.astype(np.float32)
    best: tuple[float, np.ndarray | None] = (-1.0, None)
    for s in SCALES:
        f = c * s  # target px -> coarse pool px
        scaled = cv2.resize(big, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        h, w = scaled.shape
        for angle in ANGLES:
            turn = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
            turned = cv2.warpAffine(scaled, turn, (w, h), borderMode=cv2.BORDER_REPLICATE)
            found = _place(small, turned, turn)
            if found is not None and found[0] > best[0]:
                score, coarse = found  # scaled-target px -> coarse pool px
                to_pool = np.diag([1 / c, 1 / c, 1.0]) @ coarse @ np.diag([f, f, 1.0])
                best = (score, to_pool[:2])
    return best


def _place(small: np.ndarray, turned: np.ndarray, turn: np.ndarray):
    """(score, 3x3 scaled-target px -> coarse pool px) of the best placement, or None."""
    import cv2

    h, w = turned.shape
    ph, pw = small.shape
    if min(h, w) < 6:
        return None
    if h <= ph and w <= pw:  # the target inside the pool: pads, screenshots, turns
        result = cv2.matchTemplate(small, turned, cv2.TM_CCOEFF_NORMED)
        _, score, _, (x, y) = cv2.minMaxLoc(result)
        place = np.array([[1, 0, x], [0, 1, y], [0, 0, 1]], dtype=np.float64)
    else:  # the pool's central part inside the target: crops
        th, tw = min(round(ph * CENTRAL), h), min(round(pw * CENTRAL), w)
        if min(th, tw) < 6:
            return None
        oy, ox = (ph - th) // 2, (pw - tw) // 2
        result = cv2.matchTemplate(turned, small[oy : oy + th, ox : ox + tw], cv2.TM_CCOEFF_NORMED)
        _, score, _, (x, y) = cv2.minMaxLoc(result)
        place = np.array([[1, 0, ox - x], [0, 1, oy - y], [0, 0, 1]], dtype=np.float64)
    if not np.isfinite(score):
        return None
    return float(score), place @ np.vstack([turn, [0, 0, 1]])


def structure(pool: np.ndarray, target: np.ndarray, warp: np.ndarray, native: int) -> float:
    """Occlusion-tolerant local structure agreement of `pool` and `target` warped onto it by
    `warp` (target px -> pool px), at the pool's native long side `native` px; -1 when the
    overlap is too small."""
    import cv2

    h, w = pool.shape
    # Replicated, not black, beyond the target's edge: the blurs reach across the valid border.
    warped = cv2.warpAffine(
        target.astype(np.float32),
        warp,
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    inside = cv2.warpAffine(np.ones(target.shape, np.uint8), warp, (w, h), flags=cv2.INTER_NEAREST)
    g = min(1.0, native / max(h, w)) if native > 0 else 1.0
    size = (max(4, round(w * g)), max(4, round(h * g)))
    a, b = (
        cv2.GaussianBlur(cv2.resize(x, size, interpolation=cv2.INTER_AREA), (0, 0), PRE_BLUR)
        for x in (pool.astype(np.float32), warped)
    )
    valid = cv2.resize(inside.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.999
    valid = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if valid.sum() < MIN_PIXELS:
        return -1.0

    def blur(x):
        return cv2.GaussianBlur(x, (0, 0), WINDOW)

    ma, mb = blur(a), blur(b)
    va = np.maximum(blur(a * a) - ma * ma, 0)
    vb = np.maximum(blur(b * b) - mb * mb, 0)
    if (vb[valid] > TEXTURE**2).mean() < MIN_TEXTURED:
        return -1.0
    local = (blur(a * b) - ma * mb + STABILISER) / (np.sqrt(va * vb) + STABILISER)
    best = float(local[valid].mean())
    for covered in _occluders(*local.shape):
        keep = valid.copy()
        keep[covered] = False
        if keep.sum() >= MIN_PIXELS:
            best = max(best, float(local[keep].mean()))
    return best


def _occluders(h: int, w: int) -> list[tuple[slice, slice]]:
    """Each edge band and each corner box, as array slices."""
    bh, bw = max(1, round(BAND * h)), max(1, round(BAND * w))
    ch, cw = max(1, round(BOX * h)), max(1, round(BOX * w))
    every = slice(None)
    bands = [
        (slice(0, bh), every),
        (slice(h - bh, h), every),
        (every, slice(0, bw)),
        (every, slice(w - bw, w)),
    ]
    boxes = [
        (y, x) for y in (slice(0, ch), slice(h - ch, h)) for x in (slice(0, cw), slice(w - cw, w))
    ]
    return bands + boxes


def aligned_structure(pool: np.ndarray, targets, native: int, refine) -> tuple[float, int]:
    """(best structure score, index of the target it came from) of the pool image against each
    target (the eval image, its mirror); `refine(pool, target, warp)` sharpens a placement."""
    best, which = -1.0, 0
    for i, target in enumerate(targets):
        if target is None:
            continue
        score, warp = search(pool, target)
        if warp is None:
            continue
        value = structure(pool, target, refine(pool, target, warp), native)
        if value > best:
            best, which = value, i
    return best, which
