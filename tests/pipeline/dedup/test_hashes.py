import io

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline.dedup.hashes import (
    bits_to_hex,
    gray_hashes,
    hex_to_codes,
    image_hashes,
    image_hashes_from_bytes,
    phash_bits,
    to_gray,
    trim_borders,
)
from tests.pipeline.dedup.images import drawing, scene


def hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def test_hash_columns_and_imagehash_compatibility():
    image = scene(1)
    hashes = image_hashes(image)
    assert {k: len(v) for k, v in hashes.items()} == {
        "phash": 16,
        "phash256": 64,
        "phash256_trim": 64,
    }
    # The contract column is imagehash's phash, readable back with imagehash.hex_to_hash.
    assert hashes["phash"] == str(imagehash.phash(image.convert("L")))
    assert imagehash.hex_to_hash(hashes["phash"]) == imagehash.phash(image.convert("L"))
    assert hashes["phash256"] == str(imagehash.phash(image.convert("L"), hash_size=16))


def test_transparency_is_composited_onto_white():
    sticker = drawing(3)
    on_white = Image.alpha_composite(Image.new("RGBA", sticker.size, "white"), sticker)
    assert image_hashes(sticker) == image_hashes(on_white.convert("RGB"))
    # Dropping alpha (black behind transparent pixels) would give another hash.
    assert image_hashes(sticker)["phash256"] != image_hashes(sticker.convert("RGB"))["phash256"]


def test_trim_removes_padding_and_letterbox():
    gray = to_gray(scene(2))
    padded = ImageOps.expand(gray, border=20, fill=40)
    assert trim_borders(padded).size == gray.size
    letterbox = ImageOps.expand(gray, border=(0, 25), fill=0)
    assert trim_borders(letterbox).size == gray.size
    # A scene without uniform borders is left alone.
    assert trim_borders(gray).size == gray.size


def test_trim_keeps_stripes_and_flat_blobs():
    flag = Image.new("L", (90, 60), 255)
    flag.paste(200, (0, 0, 90, 20))
    flag.paste(30, (0, 40, 90, 60))
    # The white margin goes; the flag's own stripes stay, though its top one looks like a bar.
    assert trim_borders(ImageOps.expand(flag, border=6, fill=255)).size == (90, 60)
    assert trim_borders(flag).size == (90, 60)
    square = ImageOps.expand(Image.new("L", (40, 40), 90), border=12, fill=255)
    assert trim_borders(square).size == square.size  # a flat blob would hash like noise


def screenshot(sticker, page, where: str, scale: float = 0.5):
    """`sticker` composited onto white, pasted on a page-coloured canvas 2.2 times its size
    under a dark title bar (a twelfth of the height), the shot then resized by `scale`."""
    art = Image.alpha_composite(Image.new("RGBA", sticker.size, "white"), sticker).convert("RGB")
    w, h = art.size
    cw, ch = round(2.2 * w), round(2.2 * h)
    canvas = Image.new("RGB", (cw, ch), page)
    bar = ch // 12
    canvas.paste((60, 60, 70), (0, 0, cw, bar))
    x, y = {"middle": (cw // 3, ch // 3), "under_bar": (cw // 4, bar), "left": (0, ch // 2)}[where]
    canvas.paste(art, (x, y))
    return canvas.resize((round(cw * scale), round(ch * scale)), Image.BILINEAR)


@pytest.mark.parametrize("where", ["middle", "under_bar", "left"])
@pytest.mark.parametrize("page", [(236, 238, 240), (200, 205, 215)])
def test_trim_removes_screenshot_title_bar_and_page(page, where):
    # The title bar has no partner side, but it stands in front of the page: bar, page and
    # the drawing's own margin all go, and the trimmed hash is the drawing's.
    sticker = drawing(3)
    original = trim_borders(to_gray(sticker))
    shot = to_gray(screenshot(sticker, page, where))
    trimmed = trim_borders(shot)
    assert trimmed is not shot
    scale = shot.size[0] / round(2.2 * sticker.size[0])  # resized, then reduced by to_gray
    size = np.array(original.size) * scale
    assert np.abs(np.array(trimmed.size) - size).max() <= 3, (trimmed.size, size)
    distance = int((phash_bits(trimmed, 16) != phash_bits(original, 16)).sum())
    assert distance <= 24, distance
    # A bar down one side (a sidebar) is a bar too.
    assert trim_borders(shot.transpose(Image.Transpose.TRANSPOSE)).size == trimmed.size[::-1]


def test_trim_keeps_flags_with_a_top_stripe():
    # A thin top stripe over other stripes: the sides are no page, so nothing goes but the
    # white margin around the flag.
    flag = Image.new("L", (90, 60), 255)
    flag.paste(40, (0, 0, 90, 6))
    flag.paste(150, (0, 30, 90, 60))
    assert trim_borders(flag).size == (90, 60)
    assert trim_borders(ImageOps.expand(flag, border=6, fill=255)).size == (90, 60)
    # A thick top stripe over a white field with an emblem: a stripe, not a title bar.
    emblem = Image.new("L", (90, 60), 255)
    emblem.paste(40, (0, 0, 90, 20))
    emblem.paste(120, (35, 30, 55, 50))
    assert trim_borders(emblem).size == (90, 60)


def test_trim_hash_is_the_hash_of_the_trimmed_image():
    gray = to_gray(scene(5))
    for image in (gray, ImageOps.expand(gray, border=20, fill=40)):  # untrimmed, then trimmed
        hashes = gray_hashes(image)
        assert hashes["phash256_trim"] == bits_to_hex(phash_bits(trim_borders(image), 16))
    assert gray_hashes(gray)["phash256_trim"] == gray_hashes(gray)["phash256"]
    padded = gray_hashes(ImageOps.expand(gray, border=20, fill=40))
    assert padded["phash256_trim"] != padded["phash256"]


def test_hashes_from_bytes_match_decoded_image():
    image = scene(4, size=600)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=92)
    from_bytes = image_hashes_from_bytes(buf.getvalue())
    decoded = image_hashes(Image.open(io.BytesIO(buf.getvalue())))
    for column in from_bytes:
        bits = len(from_bytes[column]) * 4
        assert hamming(from_bytes[column], decoded[column]) <= bits // 16


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 20])
def test_hashes_from_bad_bytes_raise_value_error(data):
    with pytest.raises(ValueError, match="cannot decode"):
        image_hashes_from_bytes(data)


def test_odd_modes_hash():
    gray = scene(5).convert("L")
    wide = np.asarray(gray, dtype=np.float32) * 200  # 16- and 32-bit grayscale, float
    images = {
        "1": gray.convert("1"),
        "P": scene(5).convert("P"),
        "CMYK": scene(5).convert("CMYK"),
        "LA": gray.convert("LA"),
        "I;16": Image.fromarray(wide.astype(np.uint16)),
        "I": Image.fromarray(wide.astype(np.int32)),
        "F": Image.fromarray(wide),
    }
    for mode, image in images.items():
        assert image.mode == mode
        hashes = image_hashes(image)
        assert len(hashes["phash"]) == 16, mode
        if mode in ("I;16", "I", "F", "LA"):  # the same picture in more bits: the same hash
            assert hamming(hashes["phash"], image_hashes(gray)["phash"]) <= 2, mode
    # Flat images of any size and colour hash alike: blank images are duplicates of each other.
    flat = Image.new("RGB", (50, 50), (10, 20, 30))
    assert image_hashes(flat)["phash"] == image_hashes(Image.new("L", (9, 300), 200))["phash"]


def test_hex_to_codes_flags_bad_entries():
    codes, valid = hex_to_codes(["00ff" * 4, None, "zz" * 8, "ab", "80" + "00" * 7], 64)
    assert valid.tolist() == [True, False, False, False, True]
    assert codes.shape == (5, 8) and codes.dtype == np.uint8
    assert codes[0].tolist() == [0, 255] * 4
    assert codes[4, 0] == 0x80 and not codes[1].any()
