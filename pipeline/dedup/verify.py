"""Geometric verification of a candidate copy: local features matched under one similarity.

The hash stage (leaks.py) proposes pairs (pool image, eval image); a hash moves with every crop,
pad or rotation, so its radius trades recall for false positives. This stage looks at a pair
itself: keypoints of both images (OpenCV ORB or SIFT), matches that pass Lowe's ratio test, and
the largest set of matches one rotation + uniform scale + translation explains (RANSAC,
cv2.estimateAffinePartial2D). A copy cropped, padded, rotated or re-rendered keeps that set
large; another artist's drawing of the same concept has the same layout but not the same
corners. The count of such inliers is the verdict; the threshold is chosen on a benchmark
(bench/leaks.py), never here.

Both images go through the hashes' preparation (alpha onto white, grayscale, at most 128 px),
then are scaled so the long side is `side` px: 64 px art has few keypoints at its own size.
The eval side is small, so its features, and those of its mirror image (mirrored copies), are
computed once per eval image (`eval_features`) and reused for every candidate pair.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from manifests.config import ConfigError

DETECTORS = ("orb", "sift")


@dataclass(frozen=True)
class VerifyConfig:
    detector: str = "orb"  # 'orb' (binary, fast) or 'sift'
    side: int = 256  # px: the long side both images are scaled to before detection
    max_features: int = 500  # keypoints kept per image
    ratio: float = 0.8  # Lowe's ratio test: best match must beat the second best by this
    ransac_px: float = 6.0  # reprojection error of an inlier, in px at `side`
    max_rotation: float = 25.0  # degrees: a fitted transform turning more is no copy
    min_scale: float = 0.25  # relative scale of the copy's content (pads, screenshots shrink it)
    max_scale: float = 4.0  # (crops enlarge it)
    min_side: int = 8  # px: a smaller image is not verified (a reason, not an error)
    # A pair with at least this many inliers is a copy. bench/leaks.py, cross-style, hash
    # candidates of the build within r1 bits: chosen 80 tuned on google (r1 100) and 60 tuned
    # on twitter (r1 84); the lower one. Flat art other artists drew with the same geometry
    # (flags, lettered squares) reaches 50-70 inliers, so lower counts are no proof there.
    min_inliers: int = 60

    def __post_init__(self):
        if self.detector not in DETECTORS:
            raise ConfigError(f"verify detector must be one of {DETECTORS}, not {self.detector!r}")
        for name in ("side", "max_features", "min_side", "min_inliers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"verify {name} must be a positive integer, not {value!r}")
        if not 0 < self.ratio <= 1:
            raise ConfigError(f"verify ratio must be in (0, 1], not {self.ratio!r}")
        if not 0 < self.min_scale < 1 < self.max_scale:
            raise ConfigError("verify scales must satisfy 0 < min_scale < 1 < max_scale")
        if not (self.ransac_px > 0 and 0 <= self.max_rotation <= 180):
            raise ConfigError("verify ransac_px must be > 0 and max_rotation within 0..180")


@dataclass(frozen=True)
class Features:
    points: np.ndarray  # n×2 float32 keypoint positions, px at `side`
    descriptors: np.ndarray | None  # n×d (uint8 for ORB, float32 for SIFT)
    reason: str | None = None  # why there are none: too small, no keypoints

    def __len__(self) -> int:
        return int(self.points.shape[0])


@dataclass(frozen=True)
class Verdict:
    inliers: int  # matches one similarity explains (0 when none was found)
    copy: bool  # inliers >= config.min_inliers
    mirrored: bool = False  # the match was against the eval image's mirror
    reason: str | None = None  # why the pair could not be verified (no features, ...)


_DETECTORS: dict = {}


def _detector(config: VerifyConfig):
    """One OpenCV detector per configuration and process (creating one costs more than a use)."""
    import cv2

    key = (config.detector, config.max_features)
    if key not in _DETECTORS:
        if config.detector == "sift":
            _DETECTORS[key] = cv2.SIFT_create(nfeatures=config.max_features)
        else:
            # Smaller patches and a lower FAST threshold than the defaults: upscaled flat art
            # has soft corners, and the default 31 px border hides a 256 px image's edges.
            _DETECTORS[key] = cv2.ORB_create(
                nfeatures=config.max_features, edgeThreshold=15, patchSize=15, fastThreshold=5
            )
    return _DETECTORS[key]


def _prepare(image, config: VerifyConfig):
    """The grayscale array the detector sees, or None when the image is too small."""
    from PIL import Image

    from pipeline.dedup.hashes import to_gray

    gray = to_gray(image)
    w, h = gray.size
    if min(w, h) < config.min_side:
        return None
    s = config.side / max(w, h)
    gray = gray.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)
    return np.asarray(gray, dtype=np.uint8)


def features(image, config: VerifyConfig | None = None) -> Features:
    """Keypoints and descriptors of a PIL image (any mode)."""
    config = config or VerifyConfig()
    arr = _prepare(image, config)
    empty = np.zeros((0, 2), dtype=np.float32)
    if arr is None:
        return Features(empty, None, f"image smaller than {config.min_side} px")
    keypoints, descriptors = _detector(config).detectAndCompute(arr, None)
    if descriptors is None or len(keypoints) < 3:
        return Features(empty, None, "fewer than 3 keypoints")
    points = np.array([k.pt for k in keypoints], dtype=np.float32)
    return Features(points, descriptors)


def eval_features(image, config: VerifyConfig | None = None) -> tuple[Features, Features]:
    """Features of an eval image and of its mirror image (a mirrored copy matches the second)."""
    from PIL import ImageOps

    return features(image, config), features(ImageOps.mirror(image.convert("RGBA")), config)


def _inliers(pool: Features, target: Features, config: VerifyConfig, matcher) -> int:
    import cv2

    pairs = matcher.knnMatch(pool.descriptors, target.descriptors, k=2)
    good = [m[0] for m in pairs if len(m) == 2 and m[0].distance < config.ratio * m[1].distance]
    if len(good) < 3:
        return 0
    src = pool.points[[m.queryIdx for m in good]]
    dst = target.points[[m.trainIdx for m in good]]
    transform, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=config.ransac_px
    )
    if transform is None:
        return 0
    # A copy is the eval image turned a little and scaled; a fit that flips, spins or
    # shrinks it to a dot is a coincidence of repeated texture.
    scale = math.hypot(transform[0, 0], transform[1, 0])
    angle = math.degrees(math.atan2(transform[1, 0], transform[0, 0]))
    if not config.min_scale <= scale <= config.max_scale or abs(angle) > config.max_rotation:
        return 0
    return int(mask.sum())


def match(pool: Features, targets, config: VerifyConfig | None = None) -> Verdict:
    """Verdict for a pool image's features against an eval image's (features, mirror features)."""
    import cv2

    config = config or VerifyConfig()
    if pool.reason:
        return Verdict(0, False, reason=f"pool image: {pool.reason}")
    usable = [(i, t) for i, t in enumerate(targets) if t.reason is None]
    if not usable:
        return Verdict(0, False, reason=f"eval image: {targets[0].reason}")
    norm = cv2.NORM_HAMMING if config.detector == "orb" else cv2.NORM_L2
    matcher = cv2.BFMatcher(norm)
    best, mirrored = 0, False
    for i, target in usable:
        n = _inliers(pool, target, config, matcher)
        if n > best:
            best, mirrored = n, i == 1
    return Verdict(best, best >= config.min_inliers, mirrored)


def _open(data: bytes, which: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.copy(), None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        return None, f"{which} image: cannot decode image: {exc}"


def verify_images(pool_image, eval_image, config: VerifyConfig | None = None) -> Verdict:
    """Verdict for one pair of PIL images (pool copy, eval original)."""
    config = config or VerifyConfig()
    return match(features(pool_image, config), eval_features(eval_image, config), config)


def verify_bytes(pool_data: bytes, eval_data: bytes, config: VerifyConfig | None = None) -> Verdict:
    """verify_images on encoded bytes; bytes that are no image give a Verdict with a reason."""
    pool_image, reason = _open(pool_data, "pool")
    eval_image, eval_reason = _open(eval_data, "eval")
    if reason or eval_reason:
        return Verdict(0, False, reason=reason or eval_reason)
    return verify_images(pool_image, eval_image, config)
