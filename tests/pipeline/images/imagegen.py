"""Small real test images, made with PIL or by hand (for headers PIL refuses to write)."""

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Random pixels: every format keeps them distinct, so a bad resize shows."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)


def half_transparent(width: int = 100, height: int = 50) -> Image.Image:
    """RGBA: left half fully transparent red, right half opaque red."""
    arr = np.zeros((height, width, 4), np.uint8)
    arr[..., 0] = 255
    arr[:, width // 2 :, 3] = 255
    return Image.fromarray(arr, "RGBA")


def png_chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def png_header_only(width: int, height: int, depth: int = 8, color: int = 2) -> bytes:
    """Signature and a valid IHDR (correct CRC), nothing else: what a bomb's first bytes say."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)


def png_bomb(width: int, height: int) -> bytes:
    """A complete, valid 1-bit greyscale PNG of all-black pixels, a few hundred KB in size.

    The deflate stream repeats one block of 1,000 zero rows compressed once with a full flush
    (each such block is self-contained), so building a 40,000 x 40,000 bomb takes milliseconds.
    """
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed pixels
    block_rows = 1000
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate
    block = comp.compress(row * block_rows) + comp.flush(zlib.Z_FULL_FLUSH)
    rest = height % block_rows
    tail = comp.compress(row * rest) + comp.flush()  # last rows and the final block
    adler = 1
    for _ in range(height // block_rows):
        adler = zlib.adler32(row * block_rows, adler)
    adler = zlib.adler32(row * rest, adler)
    stream = b"\x78\xda" + block * (height // block_rows) + tail + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", stream)
        + png_chunk(b"IEND", b"")
    )


def jpeg_with_big_app_segments(img: Image.Image, segments: int = 2) -> bytes:
    """A JPEG whose frame header sits after `segments` APP2 segments of 40,000 bytes each (a
    large ICC profile is split like this), so it lies beyond a 64 KiB prefix from 2 segments on."""
    data = encode(img, "JPEG")
    app = (b"\xff\xe2" + struct.pack(">H", 40_002) + b"\x00" * 40_000) * segments
    return data[:2] + app + data[2:]


HTML = b"<!DOCTYPE html><html><head><title>404</title></head><body>Not found</body></html>"
