"""Image checks and processing: header sniffing, resizing with img2dataset's Resizer, and the
per-body `process_image` that the image stage calls. Importing this package is cheap; OpenCV,
albumentations and PIL load on first use."""

from pipeline.images.process import ProcessedImage, process_image
from pipeline.images.resize import ImageConfig
from pipeline.images.sniff import Drop, ImageHeader, NeedMore, sniff_image

__all__ = [
    "Drop",
    "ImageConfig",
    "ImageHeader",
    "NeedMore",
    "ProcessedImage",
    "process_image",
    "sniff_image",
]
