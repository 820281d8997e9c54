"""`--decode gpu`: loader workers ship JPEG bytes and crop boxes; the training process decodes,
crops and resizes the whole batch on its CUDA device.

A worker reads each JPEG's header and draws its RandomResizedCrop box with the same `crop_box`
and RNG as the CPU path (`image.train_image`), in full-size pixels (a JPEG the CPU path would
decode reduced gets that reduced image's box, scaled up), so both paths crop the same region of
every sample and `--resume` replays either exactly. Images the GPU path does not take (not JPEG,
CMYK, unreadable header) are decoded in the worker as before, corrupt ones skipped and counted.

On the device: one batched `torchvision.io.decode_jpeg(list, device=...)`, then per group of
equal-sized images two batched matmuls with the antialiased bilinear weights torch's own
`interpolate(mode="bilinear", antialias=True)` uses (crop and resize in one product), rounded to
uint8 and written into a channels_last batch like the CPU path's. The same code runs on the CPU
(device="cpu"), which is how it is tested. A JPEG whose header passed but whose data nvjpeg and
PIL both refuse is only found here, after its batch was cut: it is counted as corrupt and its
slot is filled with mid-grey, so the batch keeps its size (equal batch sizes across DDP ranks).
"""

import dataclasses
import random

import numpy as np
import torch
from PIL import Image

from trainer.data.image import (
    CROP_SCALE,
    crop_box,
    decode_size,
    draft_scale,
    jpeg_header,
    load_rgb,
    train_image,
)

GPU_COMPONENTS = (1, 3)  # greyscale and YCbCr JPEGs; CMYK/YCCK ones are decoded in the worker
FILL = 128  # the value of an image no decoder could read


def check(decode: str, device: str) -> None:
    """A ConfigError saying why `--decode gpu` cannot run on `device`."""
    from manifests.config import ConfigError

    if decode == "gpu" and not device.startswith("cuda"):
        why = "" if torch.cuda.is_available() else " and this machine has no CUDA device"
        raise ConfigError(
            f"--decode gpu decodes JPEGs with nvjpeg on a CUDA device; this run is on {device}"
            f"{why}. Use --decode cpu"
        )


def full_size_box(width: int, height: int, size: int, rng: random.Random, area=CROP_SCALE):
    """The crop box `train_image` draws for a width x height JPEG, in full-size pixels; `area`:
    the range of the share of the image it keeps."""
    size = decode_size(size, area)  # what train_image decodes to
    if min(width, height) < 2 * size:
        return crop_box(width, height, rng, area)
    scale = draft_scale(width, height, size)  # train_image crops PIL's reduced decode
    left, top, right, bottom = crop_box(-(-width // scale), -(-height // scale), rng, area)
    return left * scale, top * scale, min(right * scale, width), min(bottom * scale, height)


@dataclasses.dataclass
class JpegBatch:
    """One batch as the worker sends it: JPEGs end to end in `blob` (JPEG i is
    blob[offsets[i]:offsets[i + 1]], crop box boxes[i], batch position slots[i]) and the images
    the worker decoded itself (cpu_images at cpu_slots)."""

    size: int
    count: int
    blob: torch.Tensor  # uint8 [bytes]
    offsets: torch.Tensor  # int64 [k + 1]
    boxes: torch.Tensor  # int64 [k, 4]: left, top, right, bottom
    slots: torch.Tensor  # int64 [k]
    cpu_images: torch.Tensor  # uint8 [m, 3, size, size]
    cpu_slots: torch.Tensor  # int64 [m]

    def pin_memory(self, device=None) -> "JpegBatch":  # the DataLoader's pin_memory thread calls it
        return dataclasses.replace(
            self, blob=self.blob.pin_memory(), cpu_images=self.cpu_images.pin_memory()
        )

    def __len__(self) -> int:
        return self.count

    def decode_on(self, device) -> tuple[torch.Tensor, int]:
        """(uint8 [count, 3, size, size] on `device`, channels_last; images no decoder read)."""
        out = new_batch_on(self.count, self.size, device)
        if len(self.cpu_slots):
            out[self.cpu_slots.to(device)] = self.cpu_images.to(device, non_blocking=True)
        if not len(self.slots):
            return out, 0
        ends = self.offsets.tolist()
        jpegs = [self.blob[a:b] for a, b in zip(ends[:-1], ends[1:], strict=True)]
        images = decode_all(jpegs, device)
        failed = [i for i, image in enumerate(images) if image is None]
        for i in failed:
            images[i] = torch.full((3, 1, 1), FILL, dtype=torch.uint8, device=device)
        boxes = self.boxes.clone()
        boxes[failed] = torch.tensor([0, 0, 1, 1])
        out[self.slots.to(device)] = resized_crops(images, boxes, self.size)
        return out, len(failed)


def new_batch_on(count: int, size: int, device) -> torch.Tensor:
    return torch.empty(
        (count, 3, size, size), dtype=torch.uint8, device=device, memory_format=torch.channels_last
    )


class JpegBatchBuilder:
    """Collects one batch in a loader worker (the `--decode gpu` twin of the stream's CPU
    batch): `add` takes a sample or raises for a corrupt one, `result` is the JpegBatch."""

    def __init__(self, count: int, size: int, scale: tuple[float, float] = CROP_SCALE):
        self.count, self.size, self.filled, self.scale = count, size, 0, scale
        self.jpegs, self.boxes, self.slots, self.cpu, self.cpu_slots = [], [], [], [], []

    def add(self, data: bytes, rng: random.Random) -> None:
        header = jpeg_header(data)
        if header is None or header[2] not in GPU_COMPONENTS:
            self.cpu.append(train_image(data, self.size, rng, scale=self.scale))  # or raises
            self.cpu_slots.append(self.filled)
        else:
            Image._decompression_bomb_check(header[:2])  # as the CPU path would
            self.boxes.append(full_size_box(header[0], header[1], self.size, rng, self.scale))
            self.jpegs.append(data)
            self.slots.append(self.filled)
        self.filled += 1

    def result(self) -> JpegBatch:
        lengths = [len(d) for d in self.jpegs]
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        blob = torch.frombuffer(bytearray(b"".join(self.jpegs)), dtype=torch.uint8)  # may be empty
        cpu = torch.stack(self.cpu) if self.cpu else torch.empty((0, 3, self.size, self.size))
        return JpegBatch(
            size=self.size,
            count=self.filled,
            blob=blob,
            offsets=torch.from_numpy(offsets),
            boxes=torch.tensor(self.boxes, dtype=torch.int64).reshape(-1, 4),
            slots=torch.tensor(self.slots, dtype=torch.int64),
            cpu_images=cpu.to(torch.uint8),
            cpu_slots=torch.tensor(self.cpu_slots, dtype=torch.int64),
        )


def decode_all(jpegs: list[torch.Tensor], device) -> list[torch.Tensor | None]:
    """uint8 [3, h, w] per JPEG on `device` (one batched call); None for one no decoder reads.
    A batch with a bad JPEG fails as a whole, so then each is decoded alone, PIL the last try."""
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return list(decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        pass
    out = []
    for data in jpegs:
        try:
            out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            continue
        except RuntimeError:
            pass
        try:
            rgb = np.array(load_rgb(data.numpy().tobytes()), dtype=np.uint8)
            out.append(torch.from_numpy(rgb).permute(2, 0, 1).to(device))
        except Exception:  # noqa: BLE001 - any decoder error: the image is corrupt
            out.append(None)
    return out


def resized_crops(images: list[torch.Tensor], boxes: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [k, 3, size, size]: image i's box (left, top, right, bottom) resized antialiased
    bilinear, as torch's interpolate(mode="bilinear", antialias=True) on the crop would."""
    device = images[0].device
    out = new_batch_on(len(images), size, device)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape[1:]), []).append(i)
    boxes = boxes.to(device)
    for (height, width), members in groups.items():
        index = torch.tensor(members, device=device)
        pixels = torch.stack([images[i] for i in members]).float()  # [g, 3, h, w]
        box = boxes[index]
        rows = aa_weights(box[:, 1], box[:, 3], height, size)  # [g, size, h]
        cols = aa_weights(box[:, 0], box[:, 2], width, size)  # [g, size, w]
        resized = rows.unsqueeze(1) @ pixels @ cols.unsqueeze(1).transpose(-1, -2)
        out[index] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def aa_weights(lo: torch.Tensor, hi: torch.Tensor, length: int, size: int) -> torch.Tensor:
    """float32 [g, size, length]: per row g, the weights mapping input pixels lo..hi-1 of an axis
    of `length` pixels onto `size` outputs, zero outside; torch's antialiased bilinear filter
    (align_corners=False): a triangle widened by the scale when shrinking, weights normalised."""
    device = lo.device
    start = lo.double()[:, None]
    crop = (hi - lo).double()[:, None]  # [g, 1]
    scale = crop / size
    support = scale.clamp(min=1.0)  # half the triangle's width, in input pixels
    center = scale * (torch.arange(size, device=device, dtype=torch.float64) + 0.5)  # [g, size]
    first = (center - support + 0.5).floor().clamp(min=0)  # torch truncates; >= 0 either way
    last = torch.minimum((center + support + 0.5).floor(), crop)  # exclusive
    x = torch.arange(length, device=device, dtype=torch.float64) - start  # [g, length], in-crop
    x, first, last, center = x[:, None, :], first[..., None], last[..., None], center[..., None]
    weights = (1 - ((x - center + 0.5) / support[..., None]).abs()).clamp(min=0)
    weights = weights * ((x >= first) & (x < last))
    return (weights / weights.sum(-1, keepdim=True)).float()
