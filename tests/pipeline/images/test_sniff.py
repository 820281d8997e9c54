import functools
import random

import pytest
from PIL import Image

from pipeline.images.sniff import Drop, ImageHeader, NeedMore, detect_format, sniff_image
from tests.pipeline.images.imagegen import (
    HTML,
    encode,
    half_transparent,
    jpeg_with_big_app_segments,
    noise,
    png_bomb,
    png_header_only,
)

IMG = noise(123, 45)


@functools.cache
def _valid_bodies() -> dict[str, tuple[bytes, str, tuple[int, int]]]:
    """name -> (body, expected format, expected declared (width, height))."""
    size = IMG.size
    anim = [noise(60, 40, seed=s) for s in range(3)]
    return {
        "jpeg": (encode(IMG, "JPEG"), "jpeg", size),
        "jpeg_progressive": (encode(IMG, "JPEG", progressive=True), "jpeg", size),
        "jpeg_cmyk": (encode(IMG.convert("CMYK"), "JPEG"), "jpeg", size),
        "jpeg_grey": (encode(IMG.convert("L"), "JPEG"), "jpeg", size),
        "jpeg_exif": (encode(IMG, "JPEG", exif=Image.Exif()), "jpeg", size),
        "png": (encode(IMG, "PNG"), "png", size),
        "png_palette": (encode(IMG.convert("P"), "PNG"), "png", size),
        "png_interlaced": (encode(IMG, "PNG", interlace=1), "png", size),
        "webp_lossy": (encode(IMG, "WEBP"), "webp", size),
        "webp_lossless": (encode(IMG, "WEBP", lossless=True), "webp", size),
        "webp_alpha": (encode(half_transparent(123, 45), "WEBP"), "webp", size),
        "webp_animated": (
            encode(anim[0], "WEBP", save_all=True, append_images=anim[1:]),
            "webp",
            (60, 40),
        ),
        "gif": (encode(IMG, "GIF"), "gif", size),
        "gif_animated": (
            encode(anim[0], "GIF", save_all=True, append_images=anim[1:]),
            "gif",
            (60, 40),
        ),
        "bmp": (encode(IMG, "BMP"), "bmp", size),
        "bmp_rgba": (encode(IMG.convert("RGBA"), "BMP"), "bmp", size),
    }


@pytest.mark.parametrize("name", list(_valid_bodies()))
def test_valid_images_declare_their_size(name):
    body, fmt, size = _valid_bodies()[name]
    header = sniff_image(body, "image/whatever")
    assert isinstance(header, ImageHeader), header
    assert header.format == fmt
    assert (header.width, header.height) == size == Image.open(__import__("io").BytesIO(body)).size
    assert header.pixels == size[0] * size[1]


def test_alpha_and_animation_flags():
    bodies = _valid_bodies()
    assert sniff_image(bodies["png"][0]).has_alpha is False
    assert sniff_image(encode(half_transparent(), "PNG")).has_alpha is True
    trns = encode(IMG.convert("P"), "PNG", transparency=0)
    assert sniff_image(trns).has_alpha is True  # palette + tRNS chunk
    assert sniff_image(bodies["webp_alpha"][0]).has_alpha is True
    assert sniff_image(bodies["webp_lossy"][0]).has_alpha is False
    assert sniff_image(bodies["webp_animated"][0]).animated is True
    assert sniff_image(bodies["bmp_rgba"][0]).bit_depth == 32
    assert sniff_image(bodies["jpeg_cmyk"][0]).has_alpha is False


def test_bmp_top_down_rows_give_a_positive_height():
    body = bytearray(encode(IMG, "BMP"))
    body[22:26] = (-45).to_bytes(4, "little", signed=True)
    header = sniff_image(bytes(body))
    assert (header.width, header.height) == (123, 45)


@pytest.mark.parametrize(
    "body, content_type, words",
    [
        (HTML, "image/png", "HTML"),
        (b"", "image/jpeg", "empty"),
        (b"", None, "empty"),
        (b"GARBAGE-" * 10, "image/png", "signature"),
        (encode(IMG, "PNG"), "text/html; charset=utf-8", "text/html"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml", "SVG"),
        (encode(IMG, "TIFF"), "image/tiff", "tiff"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1", "image/avif", "avif"),
    ],
)
def test_not_an_image(body, content_type, words):
    result = sniff_image(body, content_type)
    assert isinstance(result, Drop)
    assert result.reason == "not_an_image"
    assert words in result.error


def test_decode_failed_on_cut_or_corrupt_headers():
    png = encode(IMG, "PNG")
    assert sniff_image(png[:20]).reason == "decode_failed"
    bad_crc = bytearray(png)
    bad_crc[30] ^= 0xFF
    assert "CRC" in sniff_image(bytes(bad_crc)).error
    jpeg = encode(IMG, "JPEG")
    cut = jpeg[: jpeg.index(b"\xff\xc0")]  # ends just before the frame header
    assert sniff_image(cut).reason == "decode_failed"
    no_frame = jpeg[:2] + b"\xff\xda\x00\x02" + b"\x00" * 10  # scan data without a frame
    assert "SOF" in sniff_image(no_frame).error
    assert sniff_image(png_header_only(0, 10)).reason == "decode_failed"
    assert sniff_image(b"GIF89a" + b"\x10\x00\x10\x00\x00\x00\x00" + b";").reason == "decode_failed"


def test_bomb_header_is_too_large_without_decoding():
    result = sniff_image(png_header_only(40_000, 40_000), "image/png")
    assert result.reason == "too_large"
    assert "40000x40000" in result.error and "1600.0 MP" in result.error
    assert sniff_image(png_bomb(10_000, 6_000)).reason == "too_large"
    # The cap is a parameter: the same 60 MP passes a higher one.
    assert isinstance(sniff_image(png_bomb(10_000, 6_000), max_pixels=60_000_000), ImageHeader)


def test_prefix_sniffing_asks_for_more_then_agrees_with_the_full_body():
    jpeg = jpeg_with_big_app_segments(IMG, 2)  # frame header after 80 KB
    first = sniff_image(jpeg[:65536], "image/jpeg", complete=False)
    assert isinstance(first, NeedMore) and first.at_least > 65536
    result, rounds = first, 0
    while isinstance(result, NeedMore) and rounds < 10:  # how a streaming caller uses it
        rounds += 1
        result = sniff_image(jpeg[: result.at_least], "image/jpeg", complete=False)
    assert result == sniff_image(jpeg, "image/jpeg") == ImageHeader("jpeg", 123, 45, 8, False)
    # The same short prefix of a complete body is a decode failure, not a request for more.
    assert sniff_image(jpeg[:65536], "image/jpeg").reason == "decode_failed"
    assert isinstance(sniff_image(b"\x89PN", None, complete=False), NeedMore)
    for body, _, size in _valid_bodies().values():
        header = sniff_image(body[:65536], None, complete=False)
        assert (header.width, header.height) == size


def test_every_prefix_and_random_bytes_give_a_result_never_an_exception():
    for body, _, _ in _valid_bodies().values():
        for cut in range(0, min(len(body), 400)):
            for complete in (True, False):
                result = sniff_image(body[:cut], "image/png", complete=complete)
                assert isinstance(result, ImageHeader | Drop | NeedMore)
    rng = random.Random(3)
    magics = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBP", b"GIF89a", b"BM"]
    for _ in range(2000):
        body = rng.choice(magics) + rng.randbytes(rng.randrange(0, 64))
        result = sniff_image(body)
        assert isinstance(result, ImageHeader | Drop)


def test_detect_format_names():
    assert detect_format(encode(IMG, "PNG")) == "png"
    assert detect_format(encode(IMG, "JPEG")) == "jpeg"
    assert detect_format(HTML) is None
