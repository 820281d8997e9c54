"""Image decoding and augmentation, producing uint8 tensors [3, H, W].

Normalisation happens on the training device (uint8 travels 4x lighter than float32). The fast
path for JPEG, the shards' usual format: libjpeg-turbo through torchvision.io.decode_jpeg, crop by
slicing, and torch's uint8 antialiased bilinear resize (SIMD), about 2x PIL's decode + bicubic
resize. `jpeg_header` reads its size from a few marker bytes (PIL's parser cost an eighth of the
decode). The resize writes straight into the caller's batch slot in channels_last (NHWC) memory:
the layout the decoder produces and the SIMD resize reads and writes fastest, so a crop goes from
decoder to batch without another copy (measured: 0.14 ms an image, against 0.22 ms for resize +
torch.stack into NCHW; converting the batch to NCHW afterwards would cost 0.11 ms an image more).
A JPEG at least twice the training size is decoded reduced instead (PIL's `draft`: libjpeg's DCT
scaling skips most of the work). Other formats go through PIL; transparent images are composited
on white (emoji, logos: the colour under a transparent pixel is arbitrary and differs between
artists). Every header's size passes PIL's decompression-bomb guard.
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


# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic): the
# frame header after one holds the height, width and component count.
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def jpeg_header(data) -> tuple[int, int, int] | None:
    """(width, height, components) of a JPEG from its frame header; None if `data` is not a JPEG
    or has no readable frame header before the image data (PIL then decides)."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
        elif marker in _SOF:
            if pos + 10 > end:
                return None
            height, width = (
                (data[pos + 5] << 8) | data[pos + 6],
                (data[pos + 7] << 8) | data[pos + 8],
            )
            return (width, height, data[pos + 9]) if width and height else None
        elif marker in (0xDA, 0xD9):  # scan data or the end before any frame header
            return None
        else:
            pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
    return None


def draft_scale(width: int, height: int, size: int) -> int:
    """The DCT scale (1, 2, 4 or 8) PIL's `draft("RGB", (size, size))` picks for a JPEG; the
    decoded image is then ceil(width / scale) x ceil(height / scale)."""
    scale = min(width // size, height // size)
    return next(s for s in (8, 4, 2, 1) if scale >= s)


def decode(data: bytes, size: int) -> torch.Tensor:
    """uint8 [3, H, W] (a view of HWC memory); for JPEGs at least twice `size`, decoded at reduced
    size (>= size)."""
    header = jpeg_header(data)
    if header is not None and min(header[:2]) < 2 * size:
        Image._decompression_bomb_check(header[:2])  # the guard PIL's open would apply
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(
                torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB
            )
        except RuntimeError:  # a JPEG variant libjpeg-turbo's torch binding refuses: use PIL
            pass
    img = _open(data)  # header only: format, size, bomb check
    if img.format == "JPEG" and min(img.size) >= 2 * size:
        img.draft("RGB", (size, size))
    return torch.from_numpy(np.array(_rgb(img), dtype=np.uint8)).permute(2, 0, 1)


def decode_size(size: int, scale: tuple[float, float] = CROP_SCALE) -> int:
    """The size a training JPEG is decoded to at least (reduced by PIL's draft where it is twice
    that): `size` for crops of 90% of the area or more, more for deeper crops (--crop-scale), so
    that their crops are not blown up from a reduced decode more than the default's are."""
    if scale[0] >= CROP_SCALE[0]:
        return size
    return math.ceil(size * math.sqrt(CROP_SCALE[0] / scale[0]))


def crop_box(
    width: int, height: int, rng: random.Random, scale: tuple[float, float] = CROP_SCALE
) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (left, top, right, bottom), drawn from `rng`; `scale`: the range
    of the share of the image's area it keeps."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
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


def new_batch(count: int, size: int, shared: bool = False) -> torch.Tensor:
    """uint8 [count, 3, size, size] in channels_last memory, for `train_image(out=...)`. `shared`:
    in shared memory, so a DataLoader worker hands it to the training process without a copy."""
    shape, strides = (count, 3, size, size), (3 * size * size, 1, 3 * size, 3)
    if not shared:
        return torch.empty(shape, dtype=torch.uint8, memory_format=torch.channels_last)
    storage = torch.UntypedStorage._new_shared(count * 3 * size * size)
    return torch.empty(0, dtype=torch.uint8).set_(storage, 0, shape, strides)


def resize(image: torch.Tensor, size: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [3, h, w] -> uint8 [3, size, size], antialiased bilinear; into `out` if given (a
    [3, size, size] slot of `new_batch`)."""
    if out is None:
        out = new_batch(1, size)[0]
    # The aten op, not F.interpolate: only it writes into a given tensor (no copy after).
    torch.ops.aten._upsample_bilinear2d_aa.out(
        image.unsqueeze(0), [size, size], False, None, None, out=out.unsqueeze(0)
    )
    return out


def train_image(
    data: bytes,
    size: int,
    rng: random.Random,
    out: torch.Tensor | None = None,
    scale: tuple[float, float] = CROP_SCALE,
) -> torch.Tensor:
    """Decode, random-resized-crop (keeping a share in `scale` of the area) to size x size;
    uint8 [3, size, size] (into `out` if given)."""
    image = decode(data, decode_size(size, scale))
    left, top, right, bottom = crop_box(image.shape[2], image.shape[1], rng, scale)
    return resize(image[:, top:bottom, left:right], size, out)


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
