"""Peak memory of process_image on hostile inputs, measured as the growth of this process's peak
resident set (Linux VmHWM, reset through /proc/self/clear_refs before each input)."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.images import ImageConfig, process_image
from tests.pipeline.images.imagegen import encode, half_transparent, png_bomb, png_header_only

log = logging.getLogger(__name__)
MiB = 1 << 20
CLEAR_REFS = Path("/proc/self/clear_refs")


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_growth(fn) -> tuple[object, int]:
    """(fn(), bytes by which the peak RSS during fn rose above the RSS before it)."""
    CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS
    before = _vm("VmHWM")
    result = fn()
    return result, _vm("VmHWM") - before


@pytest.mark.skipif(not os.access(CLEAR_REFS, os.W_OK), reason="needs Linux /proc/self/clear_refs")
@pytest.mark.timeout(120)
def test_bombs_and_huge_bodies_allocate_nothing_and_a_real_decode_shows():
    config = ImageConfig(image_size=64)
    for warm in (
        encode(half_transparent(), "PNG"),
        encode(half_transparent().convert("RGB"), "JPEG"),
    ):
        assert process_image(warm, None, config).kept  # load OpenCV, PIL and exifread first
    gradient = np.add.outer(np.arange(3000) % 256, np.arange(4000) % 256).astype(np.uint8)
    big_jpeg = encode(Image.fromarray(gradient).convert("RGB"), "JPEG")
    rng = np.random.default_rng(0)
    hostile = {
        "png header declaring 40000x40000": (png_header_only(40_000, 40_000), "too_large"),
        "complete 40000x40000 png bomb": (png_bomb(40_000, 40_000), "too_large"),
        "64 MiB body (cap 20 MiB)": (b"\xff\xd8\xff" + rng.bytes(64 * MiB), "too_large"),
        "truncated 4000x3000 jpeg": (big_jpeg[: len(big_jpeg) // 2], "decode_failed"),
    }
    for name, (body, reason) in hostile.items():
        result, growth = _peak_growth(lambda b=body: process_image(b, "image/png", config))
        log.info("%s: %s, peak RSS growth %.1f MiB", name, result.status, growth / MiB)
        assert result.status == reason, name
        # The truncated JPEG is decoded up to the cut: at most one 36 MB frame buffer.
        limit = 64 * MiB if name.startswith("truncated") else 8 * MiB
        assert growth < limit, f"{name}: peak RSS grew {growth / MiB:.1f} MiB"
    # The same measurement sees a real decode: a valid 4000x3000 JPEG is a 36 MB frame.
    result, growth = _peak_growth(lambda: process_image(big_jpeg, "image/jpeg", config))
    log.info("valid 4000x3000 jpeg: %s, peak RSS growth %.1f MiB", result.status, growth / MiB)
    assert result.kept and (result.original_width, result.original_height) == (4000, 3000)
    assert 30 * MiB < growth < 2048 * MiB
