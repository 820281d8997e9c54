import functools
import hashlib
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from pipeline.images import ImageConfig, process_image
from tests.pipeline.images.imagegen import (
    HTML,
    encode,
    half_transparent,
    noise,
    png_bomb,
    png_header_only,
)

CONFIG = ImageConfig(image_size=64)
IMG = noise(120, 90)


def _exif_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "TestCamera"  # Make
    return encode(IMG, "JPEG", exif=exif)


@functools.cache
def _inputs() -> dict[str, tuple[bytes, str]]:
    palette = Image.new("P", (120, 90), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    palette.paste(0, (0, 0, 60, 90))  # left half: index 0, transparent black
    grey16 = Image.fromarray(np.full((90, 120), 40_000, np.uint16))
    frames = [noise(120, 90, seed=s) for s in range(3)]
    return {
        "jpeg": (encode(IMG, "JPEG"), "image/jpeg"),
        "jpeg_exif": (_exif_jpeg(), "image/jpeg"),
        "jpeg_cmyk": (encode(IMG.convert("CMYK"), "JPEG"), "image/jpeg"),
        "jpeg_grey": (encode(IMG.convert("L"), "JPEG"), "image/jpeg"),
        "png": (encode(IMG, "PNG"), "image/png"),
        "png_rgba": (encode(IMG.convert("RGBA"), "PNG"), "image/png"),
        "png_palette": (encode(IMG.convert("P"), "PNG"), "image/png"),
        "png_palette_trns": (encode(palette, "PNG", transparency=0), "image/png"),
        "png_16bit": (encode(grey16, "PNG"), "image/png"),
        "png_la": (encode(IMG.convert("LA"), "PNG"), "image/png"),
        "webp": (encode(IMG, "WEBP"), "image/webp"),
        "webp_alpha": (encode(half_transparent(120, 90), "WEBP"), "image/webp"),
        "webp_animated": (
            encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
            "image/webp",
        ),
        "gif": (encode(IMG, "GIF"), "image/gif"),
        "gif_animated": (
            encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
            "image/gif",
        ),
        "bmp": (encode(IMG, "BMP"), "application/octet-stream"),
        "bmp_32bit": (encode(IMG.convert("RGBA"), "BMP"), None),
    }


@pytest.mark.parametrize("name", list(_inputs()))
@pytest.mark.parametrize("mode, size", [("border", (64, 64)), ("keep_ratio", (85, 64))])
def test_kept_images_decode_at_the_reported_size(name, mode, size):
    body, content_type = _inputs()[name]
    result = process_image(body, content_type, ImageConfig(image_size=64, resize_mode=mode))
    assert result.status == "kept", result.error
    assert result.error is None
    assert (result.width, result.height) == size
    assert (result.original_width, result.original_height) == (120, 90)
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    decoded = Image.open(io.BytesIO(result.image))
    assert decoded.format == "JPEG" and decoded.size == size
    assert result.pil_image().size == size
    assert result.pil_image() is result.pil_image()  # decoded once


def test_transparency_is_matted_onto_white_and_16_bit_keeps_its_level():
    config = ImageConfig(image_size=120, resize_mode="no", encode_format="png", encode_quality=1)
    inputs = _inputs()
    for name in ("webp_alpha", "png_palette_trns"):
        out = process_image(inputs[name][0], None, config).pil_image().convert("RGB")
        assert out.getpixel((10, 10)) == (255, 255, 255), name  # transparent part
        red = np.array(out.getpixel((100, 10)))  # opaque part (webp is lossy: allow a little)
        assert np.abs(red - [255, 0, 0]).max() <= 3, name
    red = process_image(encode(half_transparent(120, 90), "PNG"), None, config).pil_image()
    assert red.convert("RGB").getpixel((100, 10)) == (255, 0, 0)
    grey = process_image(inputs["png_16bit"][0], None, config).pil_image()
    assert grey.getpixel((5, 5)) in (156, (156, 156, 156))  # 40000 / 256, not clipped to 255


@pytest.mark.parametrize("fmt", ["webp", "png"])
def test_other_encode_formats(fmt):
    result = process_image(
        encode(IMG, "JPEG"), "image/jpeg", ImageConfig(image_size=48, encode_format=fmt)
    )
    assert result.encode_format == fmt
    assert Image.open(io.BytesIO(result.image)).format == fmt.upper()


def test_exif_column_like_img2dataset():
    tags = json.loads(process_image(_exif_jpeg(), "image/jpeg", CONFIG).exif)
    assert tags["Image Make"] == "TestCamera"
    assert process_image(encode(IMG, "PNG"), None, CONFIG).exif == "{}"
    assert (
        process_image(_exif_jpeg(), None, ImageConfig(image_size=64, extract_exif=False)).exif
        is None
    )


def _truncated(fmt: str) -> bytes:
    body = encode(IMG, fmt)
    return body[: len(body) * 2 // 3]


@pytest.mark.parametrize(
    "body, content_type, reason",
    [
        (HTML, "image/png", "not_an_image"),
        (b"", "image/jpeg", "not_an_image"),
        (b"\x00\x01binary junk" * 20, None, "not_an_image"),
        (encode(IMG, "PNG"), "text/html", "not_an_image"),
        (_truncated("JPEG"), "image/jpeg", "decode_failed"),
        (_truncated("PNG"), "image/png", "decode_failed"),
        (_truncated("WEBP"), "image/webp", "decode_failed"),
        (_truncated("GIF"), "image/gif", "decode_failed"),
        (_truncated("BMP"), "image/bmp", "decode_failed"),
        (png_header_only(40_000, 40_000), "image/png", "too_large"),
        (png_bomb(40_000, 40_000), "image/png", "too_large"),
    ],
)
def test_bad_inputs_get_their_drop_reason(body, content_type, reason):
    result = process_image(body, content_type, CONFIG)
    assert result.status == reason
    assert result.error
    assert result.image is None and not result.kept
    with pytest.raises(ValueError):
        result.pil_image()


def test_body_over_the_byte_cap_is_too_large():
    body = encode(IMG, "PNG")
    result = process_image(body, "image/png", ImageConfig(max_bytes=len(body) - 1))
    assert result.status == "too_large" and "byte cap" in result.error
    assert result.sha256 == hashlib.sha256(body).hexdigest()


def test_size_filters_use_the_original_size():
    tiny = encode(noise(20, 30), "PNG")
    result = process_image(tiny, "image/png", ImageConfig(min_size=32))
    assert result.status == "too_small"
    assert (result.original_width, result.original_height) == (20, 30)
    assert process_image(tiny, "image/png", ImageConfig(min_size=20)).kept
    strip = encode(noise(400, 20), "JPEG")
    result = process_image(strip, "image/jpeg", ImageConfig(max_aspect_ratio=10))
    assert result.status == "bad_aspect_ratio" and "20.00" in result.error
    assert process_image(strip, "image/jpeg", ImageConfig(max_aspect_ratio=20)).kept


@pytest.mark.timeout(60)
def test_threads_get_correct_results_and_keep_stdout():
    """Resizer redirects fds 1 and 2 during each call; concurrent calls must not leave them moved."""
    from concurrent.futures import ThreadPoolExecutor

    before = [os.fstat(fd) for fd in (1, 2)]
    bodies = [encode(noise(50 + i, 40, seed=i), "JPEG") for i in range(24)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda b: process_image(b, None, CONFIG), bodies))
    assert [r.original_width for r in results] == [50 + i for i in range(24)]
    after = [os.fstat(fd) for fd in (1, 2)]
    assert [(s.st_dev, s.st_ino) for s in after] == [(s.st_dev, s.st_ino) for s in before]
