"""The loader's JPEG fast path: header parsing, crop + resize into a channels_last batch slot."""

import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.data.image import crop_box, decode, jpeg_header, new_batch, train_image


def jpeg(width: int, height: int, mode: str = "RGB", **save) -> bytes:
    rng = np.random.default_rng(width * height)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, format="JPEG", **save)
    return buf.getvalue()


@pytest.mark.parametrize(
    "data, expected",
    [
        (jpeg(37, 21), (37, 21, 3)),
        (jpeg(300, 500, progressive=True), (300, 500, 3)),  # SOF2
        (jpeg(16, 9, "L"), (16, 9, 1)),
        (jpeg(20, 30, "CMYK"), (20, 30, 4)),
        (
            jpeg(40, 40, exif=b"Exif\x00\x00" + b"\x00" * 300, icc_profile=b"\x01" * 5000),
            (40, 40, 3),
        ),
        (jpeg(40, 40)[:60], None),  # cut off before the frame header
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, None),
        (b"", None),
    ],
)
def test_jpeg_header_reads_what_pil_reads(data, expected):
    assert jpeg_header(data) == expected
    if expected:
        img = Image.open(io.BytesIO(data))
        assert img.size == expected[:2] and len(img.getbands()) == expected[2]


def test_a_jpeg_header_too_big_for_pil_is_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(Image.DecompressionBombError):  # the loader counts it as corrupt
        decode(jpeg(20, 20), 16)


def test_train_image_writes_torchs_antialiased_resize_into_a_channels_last_slot():
    batch = new_batch(3, 32)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    for i, (w, h) in enumerate([(40, 30), (31, 50), (20, 24)]):  # shrink, mixed, enlarge
        data = jpeg(w, h)
        out = train_image(data, 32, random.Random(i), out=batch[i])
        assert out.data_ptr() == batch[i].data_ptr()
        image = decode(data, 32)  # what the crop is cut from, with the same draw
        rng = random.Random(i)

        left, top, right, bottom = crop_box(image.shape[2], image.shape[1], rng)
        expected = torch.nn.functional.interpolate(
            image[:, top:bottom, left:right].unsqueeze(0).contiguous(),
            size=(32, 32),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )[0]
        assert torch.equal(batch[i], expected)
        assert torch.equal(train_image(data, 32, random.Random(i)), expected)  # own tensor


def test_a_shared_batch_is_in_shared_memory():
    batch = new_batch(2, 8, shared=True)
    assert batch.is_shared() and batch.shape == (2, 3, 8, 8)
    assert batch.is_contiguous(memory_format=torch.channels_last)
