"""Perceptual hashes of one image, as the manifests store them.

Every image goes through the same preparation, so that a copy and its original meet the same
pipeline: transparent pixels composited onto white, grayscale (colour jitter and grayscale copies
then differ little), a box reduction to at most `WORK_SIDE` pixels (speed; the hashes look at
32x32 and 64x64 anyway). Three hashes come out, each a hex string (the bit order of imagehash's
`str(hash)`, so `imagehash.hex_to_hash` reads them back):

- `phash`: imagehash.phash, 64 bits (8x8 lowest DCT frequencies of a 32x32 reduction). The
  manifest's contract column; near-duplicate clusters use it (`--near-dup-radius` counts its bits).
- `phash256`: phash with hash_size 16, 256 bits (16x16 frequencies of a 64x64 reduction). More
  discriminative: on the emoji benchmark it separates copies from the same emoji drawn by another
  artist where 64 bits cannot (bench/leaks.py).
- `phash256_trim`: the same after trimming uniform borders (padding, letterboxing, the empty
  margin around a drawing, a screenshot's title bar and page), so that padded copies hash like
  their original.

Tried on the emoji benchmark and left out: dhash (64 and 256 bits: lower recall than phash at
the same false-positive rate), imagehash's colour hash (cannot match grayscale or colour-jittered
copies; alone it separates nothing among emoji), autocontrast before hashing (phash ignores
brightness and contrast already; the trim tolerance is relative instead), and the
crop-resistant hash (about 1 s per image here against a few ms, and a variable number of segment
hashes fits no FAISS index). Mirrored and cropped copies are matched on the eval side instead
(pipeline.dedup.evalsets hashes mirrored and cropped variants of each eval image), so the pool
pays nothing for them.
"""

from __future__ import annotations

import io

import numpy as np

WORK_SIDE = 128  # px: images are box-reduced to at most this (hashes look at 64x64 at most)
BACKGROUND = (255, 255, 255)  # transparent pixels are composited onto this colour

# Trimming (see trim_borders). Values from the emoji benchmark (bench/leaks.py).
TRIM_REL_TOL = 0.12  # a pixel is background within 12% of the image's 1..99th percentile range
TRIM_MIN_TOL = 8.0  # gray levels: the tolerance never drops below this (flat images)
TRIM_ROW_FRACTION = 0.04  # a row/column with <= 4% non-background pixels is border (JPEG noise)
TRIM_FRAME_UNIFORM = 0.9  # the outer ring counts as a frame when 90% of it is background colour
TRIM_MIN_KEEP = 0.25  # never trim to less than a quarter of either side
TRIM_ROUNDS = 2  # padding around an image that has its own margin: two frames
TRIM_BAR_MAX = 0.15  # a bar on one side (a title bar) is at most 15% of the side: a flag's stripe
# is a third or a half
MIN_CONTENT_STD = 8.0  # gray levels: a trim that leaves a flat blob is undone (no shape left)


def to_gray(image, background: tuple[int, int, int] = BACKGROUND):
    """Grayscale (PIL mode L) version of `image`, transparency composited onto `background` and
    reduced to at most WORK_SIDE pixels on the long side (box filter, integer factor)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        image = Image.alpha_composite(base, rgba)
    elif image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits by the actual range, not by clipping.
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        image = Image.fromarray(arr.astype(np.uint8), "L")
    elif image.mode == "F":
        arr = np.nan_to_num(np.asarray(image, dtype=np.float64))
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        image = Image.fromarray(arr.astype(np.uint8), "L")
    gray = image.convert("L")
    factor = -(-max(gray.size) // WORK_SIDE)  # ceil: the result is at most WORK_SIDE
    if factor >= 2:
        gray = gray.reduce(factor)
    return gray


def _border_widths(arr: np.ndarray, color: float, tol: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) rows/columns of `arr` (h×w) that are background `color`."""
    foreground = np.abs(arr - color) > tol
    rows = np.flatnonzero(foreground.mean(axis=1) > TRIM_ROW_FRACTION)
    cols = np.flatnonzero(foreground.mean(axis=0) > TRIM_ROW_FRACTION)
    if rows.size == 0 or cols.size == 0:
        return 0, 0, 0, 0  # all background: nothing to keep, so nothing to trim
    h, w = arr.shape
    return int(rows[0]), int(h - 1 - rows[-1]), int(cols[0]), int(w - 1 - cols[-1])


def _uniform(line: np.ndarray, color: float, tol: float) -> bool:
    return float((np.abs(line - color) <= tol).mean()) >= TRIM_FRAME_UNIFORM


# Sides in _border_widths order (top, bottom, left, right) and the sides that may vouch for each:
# the opposite side (letterbox, pillarbox) and the adjacent ones (a margin left on two sides
# by a crop off a corner).
_PARTNERS = ((1, 2, 3), (0, 2, 3), (3, 0, 1), (2, 0, 1))


def _ring_sides(sub: np.ndarray, tol: float) -> tuple[list[float], list[bool], list[bool]]:
    """Per side of `sub` (_border_widths order): the colour of its outer line, whether that
    line is uniform, and whether the side is paired (uniform, and another uniform side,
    opposite or adjacent, has its colour)."""
    lines = (sub[0], sub[-1], sub[:, 0], sub[:, -1])
    colors = [float(np.median(line)) for line in lines]
    uniform = [_uniform(line, c, tol) for line, c in zip(lines, colors, strict=True)]
    paired = [
        uniform[side] and any(uniform[p] and abs(colors[p] - colors[side]) <= tol for p in partners)
        for side, partners in enumerate(_PARTNERS)
    ]
    return colors, uniform, paired


def _side_widths(sub: np.ndarray, tol: float, sides) -> list[int]:
    """Borders when the ring is not one colour: the paired sides (`sides` from _ring_sides) are
    trimmed. A lone uniform side (the top stripe of a flag) is not trimmed."""
    colors, _, paired = sides
    return [_border_widths(sub, colors[s], tol)[s] if paired[s] else 0 for s in range(4)]


def _without(sub: np.ndarray, side: int, k: int) -> np.ndarray:
    """`sub` less its k outermost lines on `side` (_border_widths order)."""
    h, w = sub.shape
    return (sub[k:], sub[: h - k], sub[:, k:], sub[:, : w - k])[side]


def _bar_widths(sub: np.ndarray, tol: float, sides, frame_only: bool = False) -> list[int] | None:
    """Borders of a screenshot-like canvas: a bar on one side (a title bar) in front of the
    page around the shot. The bar is a lone side (uniform, unpaired), so _side_widths keeps it,
    and its lines run across the other sides, so the ring is no frame and their columns hold
    no background. A bar is a stack of uniform lines (the bar, its edge blurred by a resize)
    that ends within TRIM_BAR_MAX of the side, on the colour of another uniform side (the
    page) or on the content. It goes when what is left is a frame, or has three paired sides (a
    page on three sides: the shot touches the bar or one edge); then those are trimmed too.
    Two paired sides are not enough: a crop of a bevelled button has them. `frame_only`: only
    the first. None when no side has a bar: a flag's stripe is too thick, and its other sides
    are no page."""
    colors, uniform, paired = sides
    views = (sub, sub[::-1], sub.T, sub[:, ::-1].T)  # each side's lines as rows, outermost first
    for side, view in enumerate(views):
        pages = [colors[o] for o in range(4) if o != side and uniform[o]]
        if not uniform[side] or paired[side] or not pages:
            continue
        for k in range(int(TRIM_BAR_MAX * view.shape[0])):
            line = view[k]
            color = float(np.median(line))
            if not _uniform(line, color, tol) or any(abs(color - c) <= tol for c in pages):
                break  # the bar ends: on content, or on the page
        else:
            continue  # no end in sight: a stripe, not a bar
        rest = _without(sub, side, k)
        if k == 0 or min(rest.shape) < 3:
            continue
        ring = np.concatenate((rest[0], rest[-1], rest[:, 0], rest[:, -1]))
        color = float(np.median(ring))
        if _uniform(ring, color, tol):
            widths = list(_border_widths(rest, color, tol))
        elif frame_only:
            continue
        else:
            rest_sides = _ring_sides(rest, tol)
            if sum(rest_sides[2]) < 3:
                continue
            widths = _side_widths(rest, tol, rest_sides)
        widths[side] += k
        return widths
    return None


def trim_borders(gray):
    """Crop uniform borders off a grayscale image: padding, letterbox bars, a drawing's margin.

    A border is trimmed when the whole outer ring is one colour (a frame: padding, a margin),
    or, in the first round, a bar on one side in front of such a frame (a screenshot: title
    bar and page; see _bar_widths), else sides that share a colour with an opposite or adjacent
    side (letterbox bars, the margin left by a crop; see _side_widths). A second
    round trims a frame inside the first (padding around a drawing with its own margin; after
    a bar, also the blurred line between the bar and a shot that touched it). The
    image itself comes back when nothing is trimmed or when what is left would be a flat blob
    (a square drawn on white: its shape is in the margin)."""
    arr = np.asarray(gray, dtype=np.float32)
    height, width = arr.shape
    y0, y1, x0, x1 = 0, height, 0, width
    after_bar = False
    for round_no in range(TRIM_ROUNDS):
        sub = arr[y0:y1, x0:x1]
        if min(sub.shape) < 3:
            break
        ring = np.concatenate((sub[0], sub[-1], sub[:, 0], sub[:, -1]))
        color = float(np.median(ring))
        lo, hi = np.percentile(sub[::2, ::2], (1, 99))  # a quarter of the pixels is plenty
        tol = max(TRIM_MIN_TOL, TRIM_REL_TOL * float(hi - lo))
        if _uniform(ring, color, tol):
            widths = _border_widths(sub, color, tol)
        elif round_no == 0:
            sides = _ring_sides(sub, tol)
            widths = _bar_widths(sub, tol, sides)
            after_bar = widths is not None
            widths = widths or _side_widths(sub, tol, sides)
        elif after_bar:  # the line a resize blurred between the bar and a shot that touched it
            widths = _bar_widths(sub, tol, _ring_sides(sub, tol), frame_only=True)
            if widths is None:
                break
        else:
            break
        top, bottom, left, right = widths
        h, w = sub.shape
        if not any(widths) or h - top - bottom < TRIM_MIN_KEEP * height:
            break
        if w - left - right < TRIM_MIN_KEEP * width:
            break
        y0, y1, x0, x1 = y0 + top, y1 - bottom, x0 + left, x1 - right
    if (y0, y1, x0, x1) == (0, height, 0, width):
        return gray
    if float(arr[y0:y1, x0:x1].std()) < MIN_CONTENT_STD:
        return gray
    return gray.crop((x0, y0, x1, y1))


def bits_to_hex(bits: np.ndarray) -> str:
    """Boolean array → hex string, most significant bit first (imagehash's `str(hash)`)."""
    return np.packbits(np.asarray(bits, dtype=bool).ravel()).tobytes().hex()


def phash_bits(gray, hash_size: int = 8) -> np.ndarray:
    """imagehash.phash bits (hash_size² booleans, row-major) of a grayscale image."""
    import imagehash

    return imagehash.phash(gray, hash_size=hash_size).hash.ravel()


def gray_hashes(gray) -> dict[str, str]:
    """The manifest hash columns of an image already through `to_gray`."""
    phash256 = bits_to_hex(phash_bits(gray, 16))
    trimmed = trim_borders(gray)
    return {
        "phash": bits_to_hex(phash_bits(gray, 8)),
        "phash256": phash256,
        # Most images have no border to trim: trim_borders hands back `gray` itself, whose hash
        # is the one above (saves a third resize and DCT).
        "phash256_trim": phash256 if trimmed is gray else bits_to_hex(phash_bits(trimmed, 16)),
    }


def image_hashes(image) -> dict[str, str]:
    """{'phash', 'phash256', 'phash256_trim'} hex strings of a PIL image (any mode)."""
    return gray_hashes(to_gray(image))


def gray_from_bytes(data: bytes):
    """`to_gray` of encoded image bytes. JPEGs decode at a reduced scale (draft mode), which is
    several times faster for large images. Raises ValueError for bytes that are no image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format == "JPEG":
                image.draft("L", (WORK_SIDE, WORK_SIDE))
            image.load()
            return to_gray(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot decode image: {exc}") from exc


def image_hashes_from_bytes(data: bytes) -> dict[str, str]:
    """image_hashes of encoded image bytes (gray_from_bytes); ValueError for no image."""
    return gray_hashes(gray_from_bytes(data))


def hex_to_codes(hexes, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """Hex strings → (codes n×(nbits/8) uint8 for FAISS, valid n bool). Missing or malformed
    strings (None, wrong length, not hex) give a zero row and valid False."""
    nbytes = nbits // 8
    hexes = list(hexes)
    codes = np.zeros((len(hexes), nbytes), dtype=np.uint8)
    valid = np.array([isinstance(t, str) and len(t) == 2 * nbytes for t in hexes], dtype=bool)
    rows = np.flatnonzero(valid)
    try:  # one conversion for all rows: 10M hashes in seconds
        data = bytes.fromhex("".join(hexes[i] for i in rows))
        codes[rows] = np.frombuffer(data, dtype=np.uint8).reshape(-1, nbytes)
    except ValueError:  # some string is not hex: row by row
        for i in rows.tolist():
            try:
                codes[i] = np.frombuffer(bytes.fromhex(hexes[i]), dtype=np.uint8)
            except ValueError:
                valid[i] = False
    return codes, valid
