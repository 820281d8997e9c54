"""One fetched body in, one checked, resized and encoded image (or a drop reason) out.

Order matters for memory: the byte cap and the header sniff (declared size, bombs) run before any
decoder sees the body, so a worker holds at most the body plus one decode of an image within
`max_pixels`. Most images go straight to img2dataset's Resizer (OpenCV). Images that may carry
transparency, 16-bit PNGs, GIFs and 32-bit BMPs are first flattened with PIL onto white into an
uncompressed 8-bit PPM/PGM, because the Resizer path gets them wrong or too big: it ignores a
PNG tRNS chunk (transparent logos come out black), saturates 16-bit samples, treats the unused
byte of 32-bit BMPs as alpha, and mats alpha in float64 (about 60 bytes per pixel, over 2 GiB
for a 50 MP RGBA image).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
from dataclasses import dataclass, field

from pipeline.images.resize import ImageConfig, ImageResizer
from pipeline.images.sniff import DECODE_FAILED, TOO_LARGE, Drop, ImageHeader, sniff_image

KEPT = "kept"
TOO_SMALL = "too_small"
BAD_ASPECT_RATIO = "bad_aspect_ratio"

log = logging.getLogger(__name__)


@dataclass
class ProcessedImage:
    """The outcome for one body.

    status: 'kept' or a drop reason; error: the human detail of a drop (None when kept).
    image: the encoded output (`encode_format`), None unless kept.
    width/height: the output size; original_width/original_height: the decoded (or, for a drop
      before decoding, the declared) size of the fetched image.
    sha256: hex digest of the fetched bytes, for exact dedup (set for every non-empty body).
    source_format: 'jpeg', 'png', 'webp', 'gif' or 'bmp' when the header was read.
    exif: img2dataset's exif column (JSON object of EXIF tags) when kept and extract_exif is on.
    """

    status: str
    error: str | None = None
    image: bytes | None = None
    encode_format: str = "jpg"
    width: int | None = None
    height: int | None = None
    original_width: int | None = None
    original_height: int | None = None
    sha256: str | None = None
    source_format: str | None = None
    exif: str | None = None
    _pil: object = field(default=None, repr=False, compare=False)

    @property
    def kept(self) -> bool:
        return self.status == KEPT

    def pil_image(self):
        """The encoded output as a loaded PIL image (e.g. for perceptual hashes).

        Decodes only the small output (image_size^2 pixels), once; the fetched original is never
        decoded a second time.
        """
        if not self.kept:
            raise ValueError(f"no image: status is {self.status!r}")
        if self._pil is None:
            from PIL import Image

            img = Image.open(io.BytesIO(self.image))
            img.load()
            self._pil = img
        return self._pil


@functools.lru_cache(maxsize=8)
def resizer_for(config: ImageConfig) -> ImageResizer:
    """One ImageResizer per config per process (building one imports OpenCV and albumentations)."""
    return ImageResizer(config)


def process_image(
    body: bytes, content_type: str | None, config: ImageConfig | None = None
) -> ProcessedImage:
    """Check, decode, resize and encode one fetched body. Never raises on bad input."""
    config = config or ImageConfig()
    fmt = config.encode_format
    digest = hashlib.sha256(body).hexdigest() if body else None
    if len(body) > config.max_bytes:
        error = f"body of {len(body)} bytes over the {config.max_bytes}-byte cap"
        return ProcessedImage(TOO_LARGE, error, encode_format=fmt, sha256=digest)
    header = sniff_image(body, content_type, max_pixels=config.max_pixels)
    if isinstance(header, Drop):
        return ProcessedImage(header.reason, header.error, encode_format=fmt, sha256=digest)
    dropped = _check_declared_size(header, config)
    if dropped is not None:
        return ProcessedImage(
            dropped.reason,
            dropped.error,
            encode_format=fmt,
            original_width=header.width,
            original_height=header.height,
            sha256=digest,
            source_format=header.format,
        )
    data = body
    if _needs_flattening(header):
        flat = _flatten_with_pil(body, config.max_pixels)
        if isinstance(flat, Drop):
            return ProcessedImage(
                flat.reason,
                flat.error,
                encode_format=fmt,
                sha256=digest,
                source_format=header.format,
            )
        data = flat
    out = resizer_for(config)(data)
    del data
    result = ProcessedImage(
        out.reason or KEPT,
        out.error,
        image=out.image,
        encode_format=fmt,
        width=out.width,
        height=out.height,
        original_width=out.original_width or header.width,
        original_height=out.original_height or header.height,
        sha256=digest,
        source_format=header.format,
    )
    if result.kept and config.extract_exif:
        result.exif = extract_exif(body)
    return result


def _check_declared_size(header: ImageHeader, config: ImageConfig) -> Drop | None:
    """The Resizer's own size checks, done on the header so that no decode is spent on them."""
    short, long = sorted((header.width, header.height))
    if short < config.min_size:
        return Drop(
            TOO_SMALL,
            f"{header.width}x{header.height}: shorter side under the {config.min_size} px minimum",
        )
    ratio = config.max_aspect_ratio
    if ratio is not None and long / short > ratio:
        return Drop(
            BAD_ASPECT_RATIO,
            f"{header.width}x{header.height}: aspect ratio {long / short:.2f} over {ratio:g}",
        )
    return None


def _needs_flattening(header: ImageHeader) -> bool:
    if header.format == "jpeg":
        return False
    if header.format == "gif" or header.animated:
        return True
    return header.has_alpha is not False or (header.format == "png" and header.bit_depth == 16)


def _flatten_with_pil(body: bytes, max_pixels: int) -> bytes | Drop:
    """First frame, transparency matted onto white, as an 8-bit binary PPM (RGB) or PGM (L)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(body)) as img:
            if img.width * img.height > max_pixels:  # e.g. a GIF frame bigger than its screen
                return Drop(TOO_LARGE, f"decoder reports {img.width}x{img.height} pixels")
            img.seek(0)
            img.load()
            flat = _to_8bit_opaque(img)
        magic = b"P6" if flat.mode == "RGB" else b"P5"
        return b"%s\n%d %d\n255\n" % (magic, flat.width, flat.height) + flat.tobytes()
    except Image.DecompressionBombError as exc:
        return Drop(TOO_LARGE, str(exc))
    except Exception as exc:  # any decoder failure on untrusted bytes is a drop, not a crash
        return Drop(DECODE_FAILED, f"{type(exc).__name__}: {exc}")


def _to_8bit_opaque(img):
    from PIL import Image

    if img.mode.startswith("I;16") or img.mode == "I":
        import numpy as np

        # Only 16-bit PNG grey gets here: keep the high byte (PIL's convert('L') clips at 255).
        arr = (np.asarray(img).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L")
    if img.mode in ("1", "L") and "transparency" not in img.info:
        return img.convert("L")
    if not img.has_transparency_data:
        return img.convert("RGB")
    grey = img.mode in ("L", "LA", "La")
    rgba = img.convert("LA" if grey else "RGBA")
    base = Image.new("L" if grey else "RGB", rgba.size, 255 if grey else (255, 255, 255))
    base.paste(rgba, (0, 0), rgba)  # rgba's alpha is the mask: matting onto white
    return base


@functools.cache
def _quiet_exifread() -> None:
    # exifread warns on every PNG/WebP. Once per process: setLevel walks every logger's cache.
    logging.getLogger("exifread").setLevel(logging.ERROR)


def extract_exif(body: bytes) -> str | None:
    """img2dataset's exif column: JSON of {tag: value} from exifread, '{}' when none, None on error."""
    import exifread

    _quiet_exifread()
    try:
        tags = exifread.process_file(io.BytesIO(body), details=False)
        return json.dumps({k: str(v).strip() for k, v in tags.items() if v is not None})
    except Exception:  # exifread raises on malformed EXIF; img2dataset stores null then too
        return None
