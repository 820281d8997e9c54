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
from dataclasses import dataclass, replace

import numpy as np

from manifests.config import ConfigError

DETECTORS = ("orb", "sift")
_MOTION = "affine"


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
    # A pair with at least this many inliers is a copy. bench/leaks.py, cross-style, candidates
    # from the build's and leakverify's variants within 96 bits: 80 chosen tuned on either style.
    # Flat art other artists drew with the same geometry (flags, lettered squares) reaches
    # 50-70 inliers, so lower counts are no proof there.
    min_inliers: int = 80
    # The aligned check: a pair with fewer inliers is still a copy when at least
    # `min_inliers_aligned` of them fit and, the fit refined (ECC, at most `ecc_iterations`) and
    # the pool image warped into the eval frame, the edge maps (gradient magnitude after a
    # Gaussian of `edge_sigma` px) agree with a correlation of `min_similarity` over an overlap of
    # at least `min_coverage` of the eval frame. Another artist's drawing shares the layout (a
    # few dozen inliers) but not the strokes. Thresholds: bench in verify.py's docstring.
    aligned: bool = True
    min_inliers_aligned: int = 8
    min_similarity: float = 0.72
    ecc_iterations: int = 30  # 0: score the RANSAC fit as it is
    edge_sigma: float = 1.5
    min_coverage: float = 0.3
    # The keypoint-free check (align.py), off by default: where the keypoints did not decide,
    # the alignment is searched and the pair is a copy when the local structure agrees at least
    # `min_structure`. bench/leaks.py --limit 600, cross-style: tuned on twitter it chose 0.99
    # (candidates within 68 bits, no edge check): recall 0.81 on google against 0.80 without, but
    # at 0.67% false positives; tuned on google no setting stays within 0.3%, because other
    # artists' plain swatches and flags agree to 0.99 in structure. So it is a lever, not a default.
    search: bool = False
    min_structure: float = 0.99

    def __post_init__(self):
        if self.detector not in DETECTORS:
            raise ConfigError(f"verify detector must be one of {DETECTORS}, not {self.detector!r}")
        for name in ("side", "max_features", "min_side", "min_inliers", "min_inliers_aligned"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"verify {name} must be a positive integer, not {value!r}")
        if not 0 < self.ratio <= 1:
            raise ConfigError(f"verify ratio must be in (0, 1], not {self.ratio!r}")
        if not 0 < self.min_scale < 1 < self.max_scale:
            raise ConfigError("verify scales must satisfy 0 < min_scale < 1 < max_scale")
        if not (self.ransac_px > 0 and 0 <= self.max_rotation <= 180):
            raise ConfigError("verify ransac_px must be > 0 and max_rotation within 0..180")
        if not -1 <= self.min_similarity <= 1:
            raise ConfigError(
                f"verify min_similarity must be in [-1, 1], not {self.min_similarity!r}"
            )
        if not 0 < self.min_coverage <= 1:
            raise ConfigError(f"verify min_coverage must be in (0, 1], not {self.min_coverage!r}")
        if not self.edge_sigma > 0:
            raise ConfigError(f"verify edge_sigma must be > 0, not {self.edge_sigma!r}")
        if not -1 <= self.min_structure <= 1:
            raise ConfigError(
                f"verify min_structure must be in [-1, 1], not {self.min_structure!r}"
            )
        if not isinstance(self.search, bool):
            raise ConfigError(f"verify search must be true or false, not {self.search!r}")
        n = self.ecc_iterations
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ConfigError(f"verify ecc_iterations must be an integer >= 0, not {n!r}")


@dataclass(frozen=True)
class Features:
    points: np.ndarray  # n×2 float32 keypoint positions, px at `side`
    descriptors: np.ndarray | None  # n×d (uint8 for ORB, float32 for SIFT)
    reason: str | None = None  # why there are none: too small, no keypoints
    # The prepared grayscale (uint8, long side `side`) the points refer to: the aligned check
    # warps one image onto the other. None (features stored without it): inliers decide alone.
    gray: np.ndarray | None = None
    native: int = 0  # px: the image's long side before `side` scaling (0: unknown)

    def __len__(self) -> int:
        return int(self.points.shape[0])


@dataclass(frozen=True)
class Verdict:
    inliers: int  # matches one similarity explains (0 when none was found)
    copy: bool  # inliers >= config.min_inliers
    mirrored: bool = False  # the match was against the eval image's mirror
    reason: str | None = None  # why the pair could not be verified (no features, ...)
    similarity: float = -1.0  # edge correlation of the aligned pair; -1 when none was computed
    structure: float = -1.0  # align.py's score of the searched alignment; -1: not computed


def how_verified(inliers: int, structure: float | None, detector: str, mirrored=False) -> str:
    """What made a pair a copy, for a row's reason text (`structure` None or < 0: the keypoints)."""
    if structure is None or structure < 0:
        how = f"{inliers} {detector.upper()} keypoints match under one rotation, scale and shift"
    else:
        how = f"their structure agrees ({structure:.3f}) once aligned"
    return how + (", mirrored" if mirrored else "")


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
    """(the grayscale array the detector sees, the long side in px before scaling to `side`),
    or None when the image is too small."""
    from PIL import Image

    from pipeline.dedup.hashes import to_gray

    gray = to_gray(image)
    w, h = gray.size
    if min(w, h) < config.min_side:
        return None
    s = config.side / max(w, h)
    gray = gray.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)
    return np.asarray(gray, dtype=np.uint8), max(w, h)


def features(image, config: VerifyConfig | None = None) -> Features:
    """Keypoints and descriptors of a PIL image (any mode)."""
    config = config or VerifyConfig()
    prepared = _prepare(image, config)
    empty = np.zeros((0, 2), dtype=np.float32)
    if prepared is None:
        return Features(empty, None, f"image smaller than {config.min_side} px")
    arr, native = prepared
    keypoints, descriptors = _detector(config).detectAndCompute(arr, None)
    if descriptors is None or len(keypoints) < 3:
        return Features(empty, None, "fewer than 3 keypoints", arr, native)
    points = np.array([k.pt for k in keypoints], dtype=np.float32)
    return Features(points, descriptors, gray=arr, native=native)


def eval_features(image, config: VerifyConfig | None = None) -> tuple[Features, Features]:
    """Features of an eval image and of its mirror image (a mirrored copy matches the second)."""
    from PIL import ImageOps

    return features(image, config), features(ImageOps.mirror(image.convert("RGBA")), config)


def _fit(pool: Features, target: Features, config: VerifyConfig, matcher):
    """(inliers, 2×3 similarity mapping pool px onto target px) of the best RANSAC fit."""
    import cv2

    pairs = matcher.knnMatch(pool.descriptors, target.descriptors, k=2)
    good = [m[0] for m in pairs if len(m) == 2 and m[0].distance < config.ratio * m[1].distance]
    if len(good) < 3:
        return 0, None
    src = pool.points[[m.queryIdx for m in good]]
    dst = target.points[[m.trainIdx for m in good]]
    transform, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=config.ransac_px
    )
    if transform is None or not _plausible(transform, config):
        # A copy is the eval image turned a little and scaled; a fit that flips, spins or
        # shrinks it to a dot is a coincidence of repeated texture.
        return 0, None
    return int(mask.sum()), transform


def _plausible(transform: np.ndarray, config: VerifyConfig) -> bool:
    scale = math.hypot(transform[0, 0], transform[1, 0])
    angle = math.degrees(math.atan2(transform[1, 0], transform[0, 0]))
    return config.min_scale <= scale <= config.max_scale and abs(angle) <= config.max_rotation


def _refine(pool: np.ndarray, target: np.ndarray, warp: np.ndarray, config: VerifyConfig):
    """The target→pool affine warp refined by ECC from the RANSAC estimate, at half size (the
    prepared images are upscaled from at most 128 px, so little is lost), or `warp` itself
    when ECC does not converge or wanders off to an implausible fit."""
    import cv2

    f = 0.5
    pool_h, target_h = (
        cv2.resize(a, None, fx=f, fy=f, interpolation=cv2.INTER_AREA).astype(np.float32)
        for a in (pool, target)
    )
    # Pixel centres: x_half = f * x + o on both sides, so the linear part stays and the
    # shift becomes f * c + o * (1 - row sums).
    o = 0.5 * f - 0.5
    linear = warp[:, :2]
    offset = o * (1 - linear.sum(axis=1))
    start = np.hstack([linear, (f * warp[:, 2] + offset)[:, None]]).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, config.ecc_iterations, 1e-4)
    try:
        if _MOTION == "affine":
            _, out = cv2.findTransformECC(
                target_h, pool_h, start, cv2.MOTION_AFFINE, criteria, None, 3
            )
        else:
            h, w = target_h.shape
            fl = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
            pre = cv2.warpAffine(pool_h, start, (w, h), flags=fl)
            m = cv2.warpAffine(
                np.ones(pool_h.shape, np.uint8),
                start,
                (w, h),
                flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
            )
            motion = cv2.MOTION_EUCLIDEAN if _MOTION == "euclidean" else cv2.MOTION_TRANSLATION
            _, w2 = cv2.findTransformECC(
                target_h, pre, np.eye(2, 3, dtype=np.float32), motion, criteria, m, 3
            )
            a = start[:, :2].astype(np.float64)
            out = np.hstack([a @ w2[:, :2], (a @ w2[:, 2] + start[:, 2])[:, None]])
    except cv2.error:  # did not converge
        return warp
    out = out.astype(np.float64)
    out[:, 2] = (out[:, 2] - o * (1 - out[:, :2].sum(axis=1))) / f
    if not np.all(np.isfinite(out)) or not _plausible(cv2.invertAffineTransform(out), config):
        return warp
    return out


def _edges(image: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    image = cv2.GaussianBlur(image, (0, 0), sigma)
    return cv2.magnitude(cv2.Sobel(image, cv2.CV_32F, 1, 0), cv2.Sobel(image, cv2.CV_32F, 0, 1))


def _similarity(pool: np.ndarray, target: np.ndarray, transform, config: VerifyConfig) -> float:
    """Correlation of the edge maps of the target and of the pool image warped onto it by
    `transform` (pool→target, refined), over their eroded overlap; -1 when it is too small."""
    import cv2

    warp = cv2.invertAffineTransform(transform)  # target px -> pool px
    if config.ecc_iterations:
        warp = _refine(pool, target, warp, config)
    h, w = target.shape
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(pool.astype(np.float32), warp, (w, h), flags=flags)
    ones = np.ones(pool.shape, np.uint8)
    valid = cv2.warpAffine(ones, warp, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    # The warped image's own border is an edge no original has.
    k = max(3, 2 * math.ceil(2 * config.edge_sigma) + 1)
    valid = cv2.erode(valid, np.ones((k, k), np.uint8)) > 0
    if valid.mean() < config.min_coverage:
        return -1.0
    a = _edges(warped, config.edge_sigma)[valid]
    b = _edges(target.astype(np.float32), config.edge_sigma)[valid]
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else -1.0


def match(pool: Features, targets, config: VerifyConfig | None = None) -> Verdict:
    """Verdict for a pool image's features against an eval image's (features, mirror features):
    the keypoints first; where they do not decide, the searched alignment (align.py)."""
    config = config or VerifyConfig()
    keyed = [(i, t) for i, t in enumerate(targets) if t.reason is None]
    verdict = Verdict(0, False)
    if pool.reason is None and keyed:
        verdict = _keypoint_verdict(pool, keyed, config)
        if verdict.copy:
            return verdict
    if config.search and searchable(pool, targets):
        score, which = searched_structure(pool, targets, config)
        if score >= 0:  # -1: no overlap, or an eval image too plain to compare
            copy = score >= config.min_structure
            mirrored = which == 1 if copy else verdict.mirrored
            return replace(verdict, copy=copy, mirrored=mirrored, structure=score)
    if pool.reason:
        return Verdict(0, False, reason=f"pool image: {pool.reason}")
    if not keyed:
        return Verdict(0, False, reason=f"eval image: {targets[0].reason}")
    return verdict


def searchable(pool: Features, targets) -> bool:
    """Whether align.py's search can look at the pair: both sides kept their prepared gray."""
    return pool.gray is not None and any(t.gray is not None for t in targets)


def searched_structure(pool: Features, targets, config: VerifyConfig) -> tuple[float, int]:
    """align.py's (structure score, index of the target it came from) for a searchable pair."""
    from pipeline.dedup.align import aligned_structure

    def refine(p, t, warp):
        return _refine(p, t, warp, config) if config.ecc_iterations else warp

    return aligned_structure(pool.gray, [t.gray for t in targets], pool.native, refine)


def _keypoint_verdict(pool: Features, keyed, config: VerifyConfig) -> Verdict:
    """Inliers of the best fit over the (index, Features) in `keyed`, and the aligned edge check."""
    import cv2

    norm = cv2.NORM_HAMMING if config.detector == "orb" else cv2.NORM_L2
    matcher = cv2.BFMatcher(norm)
    best, mirrored, transform, target = 0, False, None, None
    for i, candidate in keyed:
        n, fit = _fit(pool, candidate, config, matcher)
        if n > best:
            best, mirrored, transform, target = n, i == 1, fit, candidate
    similarity = -1.0
    if (
        config.aligned
        and best >= config.min_inliers_aligned
        and pool.gray is not None
        and target.gray is not None
    ):
        similarity = _similarity(pool.gray, target.gray, transform, config)
    copy = best >= config.min_inliers or (
        best >= config.min_inliers_aligned and similarity >= config.min_similarity
    )
    return Verdict(best, copy, mirrored, similarity=similarity)


def open_image(data: bytes, which: str):
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
    pool_image, reason = open_image(pool_data, "pool")
    eval_image, eval_reason = open_image(eval_data, "eval")
    if reason or eval_reason:
        return Verdict(0, False, reason=reason or eval_reason)
    return verify_images(pool_image, eval_image, config)
