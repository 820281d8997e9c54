"""Identify an image body and read its declared size from the header bytes alone.

Nothing here decodes pixels: the point is to refuse HTML error pages, corrupt headers and
decompression bombs (a 40,000 x 40,000 PNG is a few hundred bytes of header and 4.8 GB of pixels)
before any decoder allocates anything. Works on a whole body or on a streamed prefix
(`complete=False`), in which case a header that runs past the prefix gives `NeedMore`.

Supported: JPEG (SOFn walk), PNG (IHDR, chunk walk to IDAT for tRNS), WebP (VP8, VP8L, VP8X),
GIF (logical screen and first frame), BMP. Recognised but refused: TIFF, AVIF/HEIC, JPEG 2000,
JPEG XL, ICO, PSD, SVG/HTML/XML text.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

NOT_AN_IMAGE = "not_an_image"
DECODE_FAILED = "decode_failed"
TOO_LARGE = "too_large"

DEFAULT_MAX_PIXELS = 50_000_000
SUPPORTED_FORMATS = ("jpeg", "png", "webp", "gif", "bmp")
# Declared media types that mean "this is a page, not an image", whatever the bytes look like.
_PAGE_TYPES = ("text/html", "application/xhtml+xml")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ImageHeader:
    """What the header declares. width/height in pixels.

    bit_depth: bits per channel where the header says (PNG, JPEG precision, BMP bits per pixel).
    has_alpha: the image may carry transparency; None when a prefix ended before it was known.
    animated: more than one frame is possible (GIF, animated WebP).
    """

    format: str
    width: int
    height: int
    bit_depth: int | None = None
    has_alpha: bool | None = False
    animated: bool = False

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class Drop:
    """A refused body: `reason` is a stable manifest status, `error` the human detail."""

    reason: str
    error: str


@dataclass(frozen=True)
class NeedMore:
    """The prefix ended inside the header: read at least `at_least` bytes and sniff again."""

    at_least: int


class _Short(Exception):
    """The data ended at byte offset `need` (exclusive) while the header needed more."""

    def __init__(self, need: int):
        super().__init__(need)
        self.need = need


class _Corrupt(Exception):
    pass


def media_type(content_type: str | None) -> str:
    """'image/png; charset=x' -> 'image/png' ('' when absent)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def detect_format(data: bytes) -> str | None:
    """Format name from the magic bytes, or None. Refused formats get their own names."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM" and len(data) >= 18:
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"avif", b"avis"):
            return "avif"
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "heic"
    if data.startswith(b"\x00\x00\x00\x0cjP  ") or data.startswith(b"\xff\x4f\xff\x51"):
        return "jpeg2000"
    if data.startswith(b"\xff\x0a") or data.startswith(b"\x00\x00\x00\x0cJXL "):
        return "jpegxl"
    if data.startswith(b"\x00\x00\x01\x00"):
        return "ico"
    if data.startswith(b"8BPS"):
        return "psd"
    return None


def _looks_like_text(data: bytes) -> str | None:
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "HTML"
    if head.startswith((b"<svg", b"<?xml")):
        return "SVG/XML"
    if head.startswith((b"{", b"[")):
        return "JSON"
    return None


def sniff_image(
    data: bytes,
    content_type: str | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    complete: bool = True,
) -> ImageHeader | Drop | NeedMore:
    """Classify `data` (a whole body, or its first bytes when `complete` is False).

    Returns the declared header, a Drop ('not_an_image', 'decode_failed', 'too_large') or, only
    when `complete` is False, NeedMore. Never raises on bad input and never decodes pixels.
    """
    declared = media_type(content_type)
    if declared in _PAGE_TYPES:
        return Drop(NOT_AN_IMAGE, f"server declared {declared!r}, not an image")
    if not data:
        return Drop(NOT_AN_IMAGE, "empty body")
    fmt = detect_format(data)
    if fmt is None:
        if not complete and len(data) < 16:
            return NeedMore(16)
        kind = _looks_like_text(data)
        if kind:
            return Drop(NOT_AN_IMAGE, f"body is {kind} (declared {declared or 'no type'!r})")
        return Drop(NOT_AN_IMAGE, f"unknown image signature {data[:8].hex(' ')}")
    if fmt not in SUPPORTED_FORMATS:
        return Drop(
            NOT_AN_IMAGE,
            f"unsupported image format {fmt!r} (supported: {', '.join(SUPPORTED_FORMATS)})",
        )
    try:
        header = _READERS[fmt](data)
    except _Short as short:
        if not complete:
            return NeedMore(max(short.need, len(data) + 1))
        return Drop(DECODE_FAILED, f"truncated {fmt} header ({len(data)} bytes)")
    except _Corrupt as exc:
        return Drop(DECODE_FAILED, f"corrupt {fmt} header: {exc}")
    if header.width <= 0 or header.height <= 0:
        return Drop(DECODE_FAILED, f"{fmt} header declares {header.width}x{header.height}")
    if header.pixels > max_pixels:
        return Drop(
            TOO_LARGE,
            f"{fmt} header declares {header.width}x{header.height} = "
            f"{header.pixels / 1e6:.1f} MP, over the {max_pixels / 1e6:.1f} MP cap",
        )
    return header


def _need(data: bytes, end: int) -> None:
    if len(data) < end:
        raise _Short(end)


def _png(data: bytes) -> ImageHeader:
    _need(data, 33)
    length, ctype = struct.unpack(">I4s", data[8:16])
    if ctype != b"IHDR" or length != 13:
        raise _Corrupt("first chunk is not a 13-byte IHDR")
    (crc,) = struct.unpack(">I", data[29:33])
    if zlib.crc32(data[12:29]) != crc:
        raise _Corrupt("IHDR CRC mismatch")
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    if width > 2**31 - 1 or height > 2**31 - 1:
        raise _Corrupt(f"dimension over 2^31-1 ({width}x{height})")
    if color not in (0, 2, 3, 4, 6) or depth not in (1, 2, 4, 8, 16):
        raise _Corrupt(f"bad colour type {color} / bit depth {depth}")
    # PNG transparency is colour type 4/6 or a tRNS chunk, which must come before IDAT.
    alpha: bool | None = color in (4, 6)
    if not alpha:
        alpha = _png_has_trns(data)
    return ImageHeader("png", width, height, bit_depth=depth, has_alpha=alpha)


def _png_has_trns(data: bytes) -> bool | None:
    pos = 33
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        if ctype == b"tRNS":
            return True
        if ctype in (b"IDAT", b"IEND"):
            return False
        pos += 12 + length  # length, type, data, CRC
    return None


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}


def _jpeg(data: bytes) -> ImageHeader:
    pos = 2
    while True:
        _need(data, pos + 2)
        if data[pos] != 0xFF:
            raise _Corrupt(f"expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):
            raise _Corrupt("no frame header (SOFn) before the image data")
        _need(data, pos + 4)
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            raise _Corrupt(f"segment length {length} at byte {pos}")
        if marker in _SOF_MARKERS:
            _need(data, pos + 10)
            precision, height, width, components = struct.unpack(">BHHB", data[pos + 4 : pos + 10])
            if precision != 8:
                raise _Corrupt(f"{precision}-bit samples are not supported")
            if height == 0:
                raise _Corrupt("height defined later by a DNL marker is not supported")
            if components not in (1, 3, 4):
                raise _Corrupt(f"{components} colour components")
            return ImageHeader("jpeg", width, height, bit_depth=precision, has_alpha=False)
        pos += 2 + length


def _webp(data: bytes) -> ImageHeader:
    _need(data, 30)
    chunk = data[12:16]
    if chunk == b"VP8 ":
        # Frame tag (3 bytes, bit 0 = 0 for a key frame), start code, 14-bit width and height.
        if data[20] & 1 or data[23:26] != b"\x9d\x01\x2a":
            raise _Corrupt("VP8 stream does not start with a key frame")
        width, height = struct.unpack("<HH", data[26:30])
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF, bit_depth=8)
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            raise _Corrupt("bad VP8L signature")
        (bits,) = struct.unpack("<I", data[21:25])
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if bits >> 29:
            raise _Corrupt("unknown VP8L version")
        return ImageHeader("webp", width, height, bit_depth=8, has_alpha=bool(bits >> 28 & 1))
    if chunk == b"VP8X":
        flags = data[20]
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return ImageHeader(
            "webp",
            width,
            height,
            bit_depth=8,
            has_alpha=bool(flags & 0x10),
            animated=bool(flags & 0x02),
        )
    raise _Corrupt(f"unknown first chunk {chunk!r}")


def _gif(data: bytes) -> ImageHeader:
    _need(data, 13)
    width, height, packed = struct.unpack("<HHB", data[6:11])
    pos = 13 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
    # Walk extensions to the first image descriptor: a frame may extend past the logical screen,
    # and decoders allocate the union.
    while True:
        _need(data, pos + 1)
        block = data[pos]
        if block == 0x2C:
            _need(data, pos + 10)
            left, top, fw, fh = struct.unpack("<HHHH", data[pos + 1 : pos + 9])
            return ImageHeader(
                "gif",
                max(width, left + fw),
                max(height, top + fh),
                bit_depth=8,
                has_alpha=True,
                animated=True,
            )
        if block == 0x21:
            pos += 2
            while True:  # data sub-blocks, each at most 255 bytes, ended by a zero size
                _need(data, pos + 1)
                size = data[pos]
                pos += 1 + size
                if size == 0:
                    break
            continue
        raise _Corrupt(f"no image in the file (block 0x{block:02x} at byte {pos})")


def _bmp(data: bytes) -> ImageHeader:
    _need(data, 18)
    (dib,) = struct.unpack("<I", data[14:18])
    if dib == 12:  # BITMAPCOREHEADER
        _need(data, 26)
        width, height, _, bpp = struct.unpack("<HHHH", data[18:26])
    elif dib >= 40:
        _need(data, 30)
        width, height, _, bpp = struct.unpack("<iiHH", data[18:30])
        height = abs(height)  # negative: rows stored top-down
    else:
        raise _Corrupt(f"unknown DIB header size {dib}")
    if bpp not in (1, 2, 4, 8, 16, 24, 32):
        raise _Corrupt(f"{bpp} bits per pixel")
    return ImageHeader("bmp", width, height, bit_depth=bpp, has_alpha=bpp == 32)


_READERS = {"png": _png, "jpeg": _jpeg, "webp": _webp, "gif": _gif, "bmp": _bmp}
