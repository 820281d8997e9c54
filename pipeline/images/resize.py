"""Resize and re-encode with img2dataset's `Resizer`, behind a typed config.

`Resizer` returns `(img_bytes, width, height, original_width, original_height, error)` and checks
`min_image_size` (shorter side), `max_image_area` (pixels) and `max_aspect_ratio` itself after
decoding; its error strings are mapped here to stable drop reasons. We pass our own caps to it too,
as a second line behind the header checks in `process.py`, which refuse most bad images before
any decode.
"""

from __future__ import annotations

import io
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from manifests.config import ConfigError, check_fields, from_dict, option

RESIZE_MODES = ("border", "keep_ratio", "keep_ratio_largest", "center_crop", "no")
ENCODE_FORMATS = ("jpg", "webp", "png")
INTERPOLATIONS = (
    "nearest",
    "linear",
    "bilinear",
    "cubic",
    "bicubic",
    "area",
    "lanczos",
    "lanczos4",
)
# Highest accepted `max_pixels`: a worker decoding an RGBA image of this size stays under ~2 GiB.
MAX_PIXELS_CEILING = 100_000_000
DEFAULT_QUALITY = {"jpg": 95, "webp": 95, "png": 6}  # png: zlib compression level 0-9

# Resizer's error strings -> manifest drop reasons; any other error is a decode failure.
_RESIZER_ERRORS = {
    "image too small": "too_small",
    "image area too large": "too_large",
    "aspect ratio too large": "bad_aspect_ratio",
}


@dataclass(frozen=True)
class ImageConfig:
    """How fetched images are checked, resized and encoded.

    image_size: output side in pixels (what the resize mode fits the image to).
    encode_quality: 0-100 for jpg/webp, zlib level 0-9 for png; None = 95 (jpg/webp), 6 (png).
    min_size: shorter original side below this is dropped as 'too_small' (0 = no minimum).
    max_aspect_ratio: longer/shorter original side above this is 'bad_aspect_ratio' (None = any).
    max_pixels: declared or decoded width*height above this is 'too_large' (decompression bombs).
    max_bytes: fetched bodies longer than this are 'too_large'.
    extract_exif: fill the shard's `exif` column as img2dataset does (JSON of EXIF tags).
    """

    image_size: int = option(256, help="output side in pixels")
    resize_mode: str = option("border", choices=RESIZE_MODES, help="img2dataset's resize mode")
    resize_only_if_bigger: bool = option(False, help="never upscale")
    encode_format: str = option("jpg", choices=ENCODE_FORMATS, help="image format in the shards")
    encode_quality: int | None = option(None, help="0-100 for jpg/webp, 0-9 for png; default 95/6")
    min_size: int = option(0, help="drop images whose shorter side is less (too_small)")
    max_aspect_ratio: float | None = option(
        None, help="drop images more elongated than this (bad_aspect_ratio)"
    )
    max_pixels: int = option(
        50_000_000,
        flag="max-image-pixels",
        help="declared pixels above this are refused (decompression bombs)",
    )
    max_bytes: int = option(20 * 1024 * 1024, flag="max-image-bytes", help="image body cap (bytes)")
    upscale_interpolation: str = option("lanczos", choices=INTERPOLATIONS, help="when upscaling")
    downscale_interpolation: str = option("area", choices=INTERPOLATIONS, help="when downscaling")
    extract_exif: bool = option(True, help="fill the shards' exif column as img2dataset does")

    def __post_init__(self):
        check_fields(self)
        _check_int("image_size", self.image_size, 1, 16384)
        _check_int("min_size", self.min_size, 0, 1 << 20)
        _check_int("max_pixels", self.max_pixels, 1, MAX_PIXELS_CEILING)
        _check_int("max_bytes", self.max_bytes, 1, 1 << 40)
        if self.encode_quality is None:
            object.__setattr__(self, "encode_quality", DEFAULT_QUALITY[self.encode_format])
        high = 9 if self.encode_format == "png" else 100
        _check_int(f"encode_quality (for {self.encode_format})", self.encode_quality, 0, high)
        ratio = self.max_aspect_ratio
        if ratio is not None:
            if math.isnan(ratio):
                raise ConfigError(f"max_aspect_ratio must be a number >= 1 or None, not {ratio!r}")
            if ratio < 1:
                raise ConfigError(
                    f"max_aspect_ratio must be >= 1 (long side / short side), not {ratio}"
                )
            if math.isinf(ratio):
                object.__setattr__(self, "max_aspect_ratio", None)

    @classmethod
    def from_dict(cls, values: dict) -> ImageConfig:
        """From CLI/JSON options; unknown or ill-typed options are ConfigErrors."""
        return from_dict(cls, values)


def _check_int(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in [{low}, {high}], not {value!r}")


@dataclass(frozen=True)
class Resized:
    """One Resizer call. `reason` is None on success, else a drop reason with `error` detail."""

    image: bytes | None
    width: int | None
    height: int | None
    original_width: int | None
    original_height: int | None
    reason: str | None = None
    error: str | None = None


# Resizer silences OpenCV by pointing file descriptors 1 and 2 at /dev/null for each call and
# back afterwards: two threads interleaving that would leave stdout/stderr on /dev/null for good.
# So calls are serialised; run images in parallel with processes (Ray tasks), not threads.
_FD_LOCK = threading.Lock()
_IMPORT_LOCK = threading.Lock()


def _img2dataset_resizer():
    """img2dataset/resizer.py without running img2dataset/__init__.py, which imports its
    downloader, webdataset, torch and wandb: 3.7 s and ~850 MB per worker process that only
    resizes (bench/bench_images.py), against 0.8 s and ~130 MB for the resizer alone."""
    import importlib.util
    import sys

    name = "_clipengine_img2dataset_resizer"
    with _IMPORT_LOCK:  # both resize threads may get here first: one loads, the other waits
        if name in sys.modules:
            return sys.modules[name]
        package = importlib.util.find_spec("img2dataset")  # finds the folder, imports nothing
        if package is None or not package.submodule_search_locations:
            raise ImportError("img2dataset is not installed (pip install img2dataset)")
        path = Path(package.submodule_search_locations[0]) / "resizer.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.A = CachedTransforms(module.A)
        sys.modules[name] = module  # only once it is complete
        return module


# albumentations transforms the Resizer builds per image. Each is deterministic at p=1 (a resize
# to a size, a pad, a centre crop: no random draw), so one built with the same arguments gives
# the same pixels; building one costs ~0.5 ms of argument validation (pydantic, inspect).
_REUSABLE_TRANSFORMS = frozenset({"LongestMaxSize", "SmallestMaxSize", "PadIfNeeded", "CenterCrop"})


def _freeze(value):
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


class CachedTransforms:
    """Stands in for the `albumentations` module (`A`) inside our copy of img2dataset's resizer:
    `A.LongestMaxSize(max_size=256, ...)` returns a transform built once per thread and argument
    set (a transform keeps its last call's params, so threads do not share one), and everything
    else is albumentations' own. The Resizer's code and output stay img2dataset's."""

    def __init__(self, albumentations):
        self._albumentations = albumentations
        self._local = threading.local()

    def __getattr__(self, name: str):
        factory = getattr(self._albumentations, name)
        if name not in _REUSABLE_TRANSFORMS:
            return factory

        def build(*args, **kwargs):
            cache = self._local.__dict__.setdefault("cache", {})
            key = (name, _freeze(args), _freeze(kwargs))
            transform = cache.get(key)
            if transform is None:
                transform = cache[key] = factory(*args, **kwargs)
            return transform

        return build


class ImageResizer:
    """img2dataset's Resizer configured from an ImageConfig; build one per config and reuse it."""

    def __init__(self, config: ImageConfig):
        # Set before cv2 loads: OpenCV reads its own pixel cap once, when the library is loaded.
        os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS_CEILING))
        # img2dataset imports albumentations, which otherwise asks the network for updates.
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
        resizer_module = _img2dataset_resizer()
        ResizeMode, Resizer = resizer_module.ResizeMode, resizer_module.Resizer  # noqa: N806
        from PIL import Image

        # PIL warns above MAX_IMAGE_PIXELS and refuses above twice that; keep it at our cap so a
        # PIL decode can never exceed what the header check allowed (process-wide setting).
        Image.MAX_IMAGE_PIXELS = config.max_pixels
        self.config = config
        self._resizer = Resizer(
            image_size=config.image_size,
            resize_mode=ResizeMode[config.resize_mode],
            resize_only_if_bigger=config.resize_only_if_bigger,
            upscale_interpolation=config.upscale_interpolation,
            downscale_interpolation=config.downscale_interpolation,
            encode_quality=config.encode_quality,
            encode_format=config.encode_format,
            min_image_size=config.min_size,
            max_image_area=config.max_pixels,
            max_aspect_ratio=config.max_aspect_ratio or float("inf"),
        )

    def __call__(self, data: bytes) -> Resized:
        """Decode `data` (any format OpenCV reads), resize and encode; never raises on bad data."""
        with _FD_LOCK:
            img, width, height, orig_w, orig_h, err = self._resizer(io.BytesIO(data))
        if err is not None or img is None:
            err = err or "no image returned"
            return Resized(
                None, None, None, None, None, _RESIZER_ERRORS.get(err, "decode_failed"), err
            )
        return Resized(img, width, height, orig_w, orig_h)
