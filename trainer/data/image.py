"""Image decoding and augmentation, producing uint8 tensors [3, H, W].

Normalisation happens on the training device (uint8 travels 4x lighter than float32). The fast
path for JPEG, the shards' usual format: libjpeg-turbo through torchvision.io.decode_jpeg, crop by
slicing, and torch's uint8 antialiased bilinear resize (SIMD), about 2x PIL's decode + bicubic
resize. A JPEG at least twice the training size is decoded reduced instead (PIL's `draft`:
libjpeg's DCT scaling skips most of the work). Other formats go through PIL; transparent images
are composited on white (emoji, logos: the colour under a transparent pixel is arbitrary and
differs between artists). PIL reads every header first, so its decompression-bomb guard applies.
"""

import io
import math
import random

import numpy as np
import torch
from PIL import Image

# open_clip's training crop: at least 90% of the area, aspect ratio within 3/4..4/3.
CROP_SCALE = (0.9, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def _open(source) -> Image.Image:
    from manifests.storage import readable

    return Image.open(
        io.BytesIO(source) if isinstance(source, bytes | bytearray) else readable(source)
    )


def _rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        background.alpha_composite(img)
        return background.convert("RGB")
    return img.convert("RGB")


def load_rgb(source, draft_size: int | None = None) -> Image.Image:
    """An RGB PIL image from bytes or a path; transparency composited on white."""
    img = _open(source)
    if draft_size and img.format == "JPEG":
        img.draft("RGB", (draft_size, draft_size))
    return _rgb(img)


def decode(data: bytes, size: int) -> torch.Tensor:
    """uint8 [3, H, W]; for JPEGs at least twice `size`, decoded at reduced size (>= size)."""
    img = _open(data)  # header only: format, size, bomb check
    if img.format == "JPEG" and min(img.size) < 2 * size:
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(
                torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB
            )
        except RuntimeError:  # a JPEG variant libjpeg-turbo's torch binding refuses: use PIL
            pass
    elif img.format == "JPEG":
        img.draft("RGB", (size, size))
    return torch.from_numpy(np.array(_rgb(img), dtype=np.uint8)).permute(2, 0, 1)


def crop_box(width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (left, top, right, bottom), drawn from `rng`."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left = rng.randint(0, width - w)
            top = rng.randint(0, height - h)
            return left, top, left + w, top + h
    # torchvision's fallback: the central crop of the whole image, its aspect clamped to the range
    aspect = width / height
    w, h = width, height
    if aspect < CROP_RATIO[0]:
        h = round(width / CROP_RATIO[0])
    elif aspect > CROP_RATIO[1]:
        w = round(height * CROP_RATIO[1])
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [3, h, w] -> uint8 [3, size, size], antialiased bilinear."""
    out = torch.nn.functional.interpolate(
        image.unsqueeze(0), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return out[0]


def train_image(data: bytes, size: int, rng: random.Random) -> torch.Tensor:
    """Decode, random-resized-crop to size x size; uint8 [3, size, size]."""
    image = decode(data, size)
    left, top, right, bottom = crop_box(image.shape[2], image.shape[1], rng)
    return resize(image[:, top:bottom, left:right], size)


def eval_image(source, size: int) -> torch.Tensor:
    """Decode, resize the short side to `size`, centre crop (open_clip's eval transform, bicubic);
    uint8 [3, size, size]."""
    img = load_rgb(source, draft_size=size)
    scale = size / min(img.width, img.height)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (w - size) // 2, (h - size) // 2
    crop = np.array(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return torch.from_numpy(crop).permute(2, 0, 1)


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 [N, 3, H, W] on any device -> float32 normalised."""
    m = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s
