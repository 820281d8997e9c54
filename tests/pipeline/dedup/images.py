"""Small real test images, drawn with PIL: random scenes of shapes and textures, and the copy
transformations the leak detector must see through."""

import io

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps


def scene(seed: int, size: int = 128) -> Image.Image:
    """A random RGB scene: a gradient, a dozen filled shapes, a few lines."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size)
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    grad = a[None, None, :] * (1 - ramp)[None, :, None] + b[None, None, :] * ramp[:, None, None]
    image = Image.fromarray(grad.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.integers(0, size - 8, 2)
        x1, y1 = x0 + rng.integers(8, size // 2), y0 + rng.integers(8, size // 2)
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif shape == 1:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=fill)
    for _ in range(4):
        pts = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(2)]
        draw.line(pts, fill=tuple(int(c) for c in rng.integers(0, 256, 3)), width=3)
    return image


def drawing(seed: int, size: int = 96) -> Image.Image:
    """An RGBA 'sticker': shapes on a transparent background with an empty margin."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    m = size // 8
    draw.ellipse((m, m, size - m, size - m), fill=(250, 200, 40, 255))
    for _ in range(5):
        x0, y0 = rng.integers(2 * m, size - 3 * m, 2)
        x1, y1 = x0 + rng.integers(4, 2 * m), y0 + rng.integers(4, 2 * m)
        draw.rectangle((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 200, 3)))
    return image


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def copies(image: Image.Image) -> dict[str, Image.Image]:
    """One copy of `image` under each transformation of the leak benchmark."""
    rgb = image.convert("RGB")
    w, h = rgb.size
    hsv = np.array(
        ImageEnhance.Contrast(ImageEnhance.Brightness(rgb).enhance(1.2)).enhance(0.8).convert("HSV")
    )
    hsv[..., 0] = (hsv[..., 0].astype(int) + 10) % 256
    return {
        "resize_half": rgb.resize((w // 2, h // 2), Image.BICUBIC),
        "resize_double": rgb.resize((w * 2, h * 2), Image.BICUBIC),
        "jpeg_30": jpeg(rgb, 30),
        "jitter": Image.fromarray(hsv, "HSV").convert("RGB"),
        # 6% off the width, 7% off the height, unevenly.
        "crop": rgb.crop((round(0.06 * w), round(0.03 * h), w, h - round(0.04 * h))),
        "mirror": ImageOps.mirror(rgb),
        "pad": ImageOps.expand(rgb, border=w // 6, fill=(30, 60, 200)),
        "letterbox": ImageOps.expand(rgb, border=(0, h // 5), fill=(0, 0, 0)),
        "gray": rgb.convert("L"),
    }
