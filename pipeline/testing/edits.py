"""The copy edits of issue 16's list, each at a random and at its worst setting (the leak
benchmark and the copy-detection tests use them).

Every edit takes an RGB image, a numpy Generator and `worst` (the far end of every range) and
returns the edited RGB copy. Random settings are drawn from `rng`, so a seed fixes the pool.
"""

import io

import numpy as np

CROP_MAX = 0.20  # of each side length
PAD_MAX = 0.25  # of the side, on every side
ROTATE_MAX = 10.0  # degrees
RESIZE_RANGE = (0.25, 4.0)
JPEG_RANGE = (20, 95)
OVERLAY_MAX = 0.10  # of the image area


def composite(image):
    """RGBA emoji onto the same background the hashes use: a web copy has no alpha."""
    from PIL import Image

    from pipeline.dedup.hashes import BACKGROUND

    rgba = image.convert("RGBA")
    base = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
    return Image.alpha_composite(base, rgba).convert("RGB")


def _sign(rng) -> int:
    return 1 if rng.random() < 0.5 else -1


def crop(image, rng, worst: bool):
    """Keep (1 - f) of each side, f up to CROP_MAX; worst: the maximum, off one corner."""
    w, h = image.size
    fx, fy = (CROP_MAX, CROP_MAX) if worst else rng.uniform(0.02, CROP_MAX, 2)
    cw, ch = max(4, round(w * (1 - fx))), max(4, round(h * (1 - fy)))
    if worst:
        x, y = (0 if rng.random() < 0.5 else w - cw), (0 if rng.random() < 0.5 else h - ch)
    else:
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image.crop((x, y, x + cw, y + ch))


def _pad_fill(image, rng, worst: bool, size):
    """The canvas for a pad: white, black, or the image itself blurred and stretched."""
    from PIL import Image, ImageFilter

    style = ("white", "black", "blur")[int(rng.integers(0, 3))]
    if style == "blur":
        return image.resize(size, Image.BILINEAR).filter(ImageFilter.GaussianBlur(size[0] / 16))
    return Image.new("RGB", size, (255, 255, 255) if style == "white" else (0, 0, 0))


def pad(image, rng, worst: bool):
    """Pad or letterbox: a border of up to PAD_MAX of the side on two or four sides."""
    w, h = image.size
    f = PAD_MAX if worst else rng.uniform(0.05, PAD_MAX)
    shape = int(rng.integers(0, 3))  # 0: all four sides, 1: letterbox (top+bottom), 2: pillarbox
    bx = round(f * w) if shape in (0, 2) else 0
    by = round(f * h) if shape in (0, 1) else 0
    canvas = _pad_fill(image, rng, worst, (w + 2 * bx, h + 2 * by))
    canvas.paste(image, (bx, by))
    return canvas


def rotate(image, rng, worst: bool):
    """Rotation by up to ±ROTATE_MAX degrees, the corners filled white or black (expand)."""
    from PIL import Image

    angle = _sign(rng) * (ROTATE_MAX if worst else rng.uniform(1.0, ROTATE_MAX))
    fill = (255, 255, 255) if rng.random() < 0.5 else (0, 0, 0)
    return image.rotate(angle, Image.BICUBIC, expand=True, fillcolor=fill)


def resize(image, rng, worst: bool):
    """Scale by 0.25–4 (log-uniform); worst: 0.25, a 64 px emoji becomes 16 px."""
    from PIL import Image

    lo, hi = RESIZE_RANGE
    s = lo if worst else float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    w, h = image.size
    return image.resize((max(4, round(w * s)), max(4, round(h * s))), Image.BICUBIC)


def jpeg(image, rng, worst: bool, quality: int | None = None):
    from PIL import Image

    lo, hi = JPEG_RANGE
    q = quality or (lo if worst else int(rng.integers(lo, hi + 1)))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=q)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def gray(image, rng, worst: bool):
    return image.convert("L").convert("RGB")


def mirror(image, rng, worst: bool):
    from PIL import ImageOps

    return ImageOps.mirror(image)


def jitter(image, rng, worst: bool):
    """Brightness, contrast, saturation ×0.6–1.4, hue ±25°; worst: every factor at an end."""
    from PIL import Image, ImageEnhance

    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        f = 1 + _sign(rng) * 0.4 if worst else rng.uniform(0.6, 1.4)
        image = enhancer(image).enhance(f)
    shift = _sign(rng) * 18 if worst else int(rng.integers(-18, 19))  # 18/256 of the hue circle
    hsv = np.array(image.convert("HSV"))
    hsv[..., 0] = (hsv[..., 0].astype(int) + shift) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def overlay(image, rng, worst: bool):
    """A caption strip or a logo box covering up to OVERLAY_MAX of the area, in a corner or
    along an edge; text drawn in it."""
    from PIL import ImageDraw

    w, h = image.size
    area = OVERLAY_MAX if worst else rng.uniform(0.03, OVERLAY_MAX)
    image = image.copy()
    draw = ImageDraw.Draw(image)
    if rng.random() < 0.5:  # caption strip along the bottom or top
        bh = max(2, round(area * h))
        y = h - bh if rng.random() < 0.5 else 0
        box = (0, y, w, y + bh)
    else:  # logo box in a corner
        side = max(2, round(np.sqrt(area * w * h)))
        x = 0 if rng.random() < 0.5 else w - side
        y = 0 if rng.random() < 0.5 else h - side
        box = (x, y, x + side, y + side)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    draw.rectangle(box, fill=colour)
    ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
    draw.text((box[0] + 1, box[1]), "@copy", fill=ink)
    return image


def screenshot(image, rng, worst: bool):
    """Re-rendered as in a screenshot: the image scaled onto a larger canvas (page colour, a
    title bar), the whole shot then saved at another size."""
    from PIL import Image, ImageDraw

    w, h = image.size
    share = 0.4 if worst else rng.uniform(0.4, 0.8)  # of the canvas side the image takes
    scale = 1.5 if worst else rng.uniform(1.0, 3.0)  # drawn larger than it came
    iw, ih = round(w * scale), round(h * scale)
    cw, ch = round(iw / share), round(ih / share)
    page = tuple(int(c) for c in rng.integers(200, 256, 3))
    canvas = Image.new("RGB", (cw, ch), page)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, cw, max(2, ch // 12)), fill=(60, 60, 70))  # title bar
    x = int(rng.integers(0, cw - iw + 1))
    y = int(rng.integers(max(2, ch // 12), ch - ih + 1))
    canvas.paste(image.resize((iw, ih), Image.BILINEAR), (x, y))
    out = max(64, round(cw * (0.5 if worst else rng.uniform(0.5, 1.0))))
    return canvas.resize((out, round(ch * out / cw)), Image.BILINEAR)


def _combo(*edits):
    def apply(image, rng, worst: bool):
        for edit in edits:
            image = edit(image, rng, worst)
        return image

    return apply


EDITS = {
    "crop": crop,
    "pad": pad,
    "rotate": rotate,
    "resize": resize,
    "jpeg": jpeg,
    "gray": gray,
    "mirror": mirror,
    "jitter": jitter,
    "overlay": overlay,
    "screenshot": screenshot,
    "crop+jpeg": _combo(crop, jpeg),
    "mirror+pad": _combo(mirror, pad),
    "gray+resize": _combo(gray, resize),
    "rotate+crop": _combo(rotate, crop),
}
