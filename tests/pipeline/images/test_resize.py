import io

import pytest
from PIL import Image

from manifests.config import ConfigError
from pipeline.images.resize import ImageConfig, ImageResizer
from tests.pipeline.images.imagegen import encode, noise

JPEG_400x300 = encode(noise(400, 300), "JPEG")


def test_config_defaults_and_validation():
    config = ImageConfig()
    assert (config.image_size, config.resize_mode, config.encode_format) == (256, "border", "jpg")
    assert (config.encode_quality, config.max_pixels, config.max_bytes) == (
        95,
        50_000_000,
        20 << 20,
    )
    assert config.max_aspect_ratio is None
    assert ImageConfig(encode_format="png").encode_quality == 6
    assert ImageConfig(max_aspect_ratio=float("inf")).max_aspect_ratio is None
    assert ImageConfig.from_dict({"image_size": 64, "max_aspect_ratio": 3}).max_aspect_ratio == 3.0


@pytest.mark.parametrize(
    "options, words",
    [
        ({"image_sise": 64}, "unknown option"),
        ({"image_size": "64"}, "--image-size must be int"),
        ({"image_size": 0}, "image_size"),
        ({"resize_mode": "stretch"}, "--resize-mode must be one of"),
        ({"encode_format": "gif"}, "--encode-format must be one of"),
        ({"encode_format": "png", "encode_quality": 95}, "encode_quality"),
        ({"encode_quality": 101}, "encode_quality"),
        ({"max_aspect_ratio": 0.5}, "max_aspect_ratio"),
        ({"max_pixels": 10**12}, "max_pixels"),
        ({"min_size": -1}, "min_size"),
        ({"extract_exif": "yes"}, "--extract-exif must be bool"),
    ],
)
def test_bad_options_are_clear_errors(options, words):
    with pytest.raises(ConfigError, match=words):
        ImageConfig.from_dict(options)


@pytest.mark.parametrize(
    "mode, size",
    [
        ("border", (64, 64)),
        ("center_crop", (64, 64)),
        ("keep_ratio", (85, 64)),  # shorter side to 64
        ("keep_ratio_largest", (64, 48)),  # longer side to 64
        ("no", (400, 300)),
    ],
)
def test_resize_modes(mode, size):
    out = ImageResizer(ImageConfig(image_size=64, resize_mode=mode))(JPEG_400x300)
    assert out.reason is None, out.error
    assert (out.width, out.height) == size
    assert (out.original_width, out.original_height) == (400, 300)
    assert Image.open(io.BytesIO(out.image)).size == size


@pytest.mark.parametrize("fmt, pil_format", [("jpg", "JPEG"), ("webp", "WEBP"), ("png", "PNG")])
def test_encode_formats(fmt, pil_format):
    out = ImageResizer(ImageConfig(image_size=32, encode_format=fmt))(JPEG_400x300)
    decoded = Image.open(io.BytesIO(out.image))
    assert decoded.format == pil_format and decoded.size == (32, 32)


def test_quality_changes_the_jpeg():
    low = ImageResizer(ImageConfig(image_size=128, encode_quality=20))(JPEG_400x300).image
    high = ImageResizer(ImageConfig(image_size=128, encode_quality=95))(JPEG_400x300).image
    assert len(low) < len(high) / 2


def test_resizer_errors_become_drop_reasons():
    small = ImageResizer(ImageConfig(min_size=301))(JPEG_400x300)
    assert (small.reason, small.error) == ("too_small", "image too small")
    wide = ImageResizer(ImageConfig(max_aspect_ratio=1.2))(JPEG_400x300)
    assert wide.reason == "bad_aspect_ratio"
    big = ImageResizer(ImageConfig(max_pixels=100_000))(JPEG_400x300)
    assert big.reason == "too_large"
    broken = ImageResizer(ImageConfig())(JPEG_400x300[:1000])
    assert broken.reason == "decode_failed" and broken.image is None


def _pristine_img2dataset_resizer():
    """img2dataset/resizer.py loaded as it ships (albumentations transforms built per call)."""
    import importlib.util
    from pathlib import Path

    folder = importlib.util.find_spec("img2dataset").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location("_pristine_resizer", Path(folder) / "resizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mode", ["border", "center_crop", "keep_ratio", "keep_ratio_largest"])
def test_reused_transforms_give_img2dataset_bytes(mode):
    # Our copy of the Resizer reuses its albumentations transforms; the bytes must be the ones
    # img2dataset's own Resizer writes, for upscales and downscales, call after call.
    pristine = _pristine_img2dataset_resizer()
    theirs = pristine.Resizer(
        image_size=96, resize_mode=pristine.ResizeMode[mode], resize_only_if_bigger=False
    )
    ours = ImageResizer(ImageConfig(image_size=96, resize_mode=mode))
    sources = [encode(noise(w, h, seed=w), "JPEG") for w, h in [(400, 300), (50, 70), (90, 96)]]
    for data in sources * 2:
        expected = theirs(io.BytesIO(data))
        got = ours(data)
        assert (got.image, got.width, got.height) == expected[:3]


def test_reused_transforms_are_per_thread():
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.images.resize import CachedTransforms

    transforms = CachedTransforms(_pristine_img2dataset_resizer().A)
    build = lambda: transforms.PadIfNeeded(min_height=8, min_width=8, value=[255, 255, 255])  # noqa: E731
    assert build() is build()  # same thread, same arguments: built once
    assert transforms.PadIfNeeded(min_height=9, min_width=8) is not build()
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(build).result() is not build()  # a transform keeps per-call state
