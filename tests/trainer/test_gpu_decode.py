"""--decode gpu: the batch decode runs on the CPU here (device="cpu"), on CUDA where there is one."""

import io
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from manifests.config import ConfigError
from pipeline.testing.toydata import write_dataset
from trainer.config import TrainConfig
from trainer.data import resolve
from trainer.data.gpu_decode import JpegBatchBuilder, aa_weights, check, full_size_box
from trainer.data.image import crop_box, decode_size, jpeg_header, train_image
from trainer.data.stream import ShardStream
from trainer.models import tokenizer

SIZE = 16


def smooth(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    """Gradients and a disc: content that any two good resizers render nearly alike."""
    rng = np.random.default_rng(seed)
    field = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)
    img = Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC)
    r = min(width, height) // 4
    ImageDraw.Draw(img).ellipse((width // 2 - r, height // 2 - r, width // 2 + r, height // 2 + r))
    return img.convert(mode)


def encoded(img: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=95)
    return buf.getvalue()


def without_tables(jpeg: bytes) -> bytes:
    """The JPEG minus its quantisation tables: the header still reads, no decoder can decode."""
    out, pos = bytearray(jpeg[:2]), 2
    while jpeg[pos + 1] != 0xDA:
        length = int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        if jpeg[pos + 1] != 0xDB:
            out += jpeg[pos : pos + 2 + length]
        pos += 2 + length
    return bytes(out + jpeg[pos:])


def test_aa_weights_are_torchs_antialiased_bilinear_resize():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 40, 50, generator=g) * 255
    # shrinking by 3x and 1.2x, keeping, enlarging by 2x; crops at the edges and inside
    boxes = torch.tensor([(0, 0, 50, 40), (5, 3, 25, 23), (30, 10, 38, 18), (1, 0, 17, 16)])
    cols = aa_weights(boxes[:, 0], boxes[:, 2], 50, SIZE)  # all boxes at once, as on the device
    rows = aa_weights(boxes[:, 1], boxes[:, 3], 40, SIZE)
    for i, (left, top, right, bottom) in enumerate(boxes.tolist()):
        ours = rows[i] @ image @ cols[i].T
        crop = image[:, top:bottom, left:right].unsqueeze(0)
        torch_aa = torch.nn.functional.interpolate(
            crop, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False
        )[0]
        assert torch.allclose(ours, torch_aa, atol=1e-3), (left, top, right, bottom)


@pytest.mark.parametrize("area", [(0.9, 1.0), (0.3, 1.0)])  # the default, --crop-scale 0.3
def test_full_size_box_is_the_cpu_paths_box(area):
    decoded = decode_size(SIZE, area)  # what the CPU path decodes to (reduced, if at least 2x)
    for width, height in [(20, 18), (31, 40), (33, 32), (70, 50), (130, 200), (300, 260)]:
        img = Image.open(io.BytesIO(encoded(smooth(width, height, 0))))
        if min(width, height) >= 2 * decoded:
            img.draft("RGB", (decoded, decoded))
        scales = [width / img.width, height / img.height] * 2  # per axis: left, top, ...
        for seed in range(20):
            box = full_size_box(width, height, SIZE, random.Random(seed), area)
            expected = crop_box(img.width, img.height, random.Random(seed), area)
            assert all(abs(a - b * f) < f for a, b, f in zip(box, expected, scales, strict=True))
            assert 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height


def test_a_batch_decoded_on_the_device_matches_the_cpu_path():
    items = [
        encoded(smooth(20, 18, 0)),  # full-size decode on both paths
        encoded(smooth(24, 30, 1, "L")),  # greyscale JPEG
        encoded(smooth(80, 64, 2)),  # the CPU path decodes it reduced (draft), the GPU path not
        encoded(smooth(22, 22, 3), "PNG"),  # not a JPEG: decoded in the worker
        encoded(smooth(26, 20, 4, "CMYK")),  # CMYK JPEG: decoded in the worker
        b"not an image" * 5,  # corrupt: the worker skips it, as the CPU path does
        without_tables(encoded(smooth(20, 20, 5))),  # header fine, data not: found on the device
    ]
    assert jpeg_header(items[0]) == (20, 18, 3) and jpeg_header(items[4])[2] == 4
    assert jpeg_header(items[6]) == (20, 20, 3) and jpeg_header(items[3]) is None
    builder = JpegBatchBuilder(len(items) - 1, SIZE)
    for i, data in enumerate(items):
        try:
            builder.add(data, random.Random(i))
        except Exception:  # noqa: BLE001 - whatever the decoder raises
            assert i == 5
    batch = builder.result()
    assert batch.slots.tolist() == [0, 1, 2, 5] and batch.cpu_slots.tolist() == [3, 4]
    images, unreadable = batch.decode_on("cpu")
    assert unreadable == 1 and images.shape == (6, 3, SIZE, SIZE) and images.dtype == torch.uint8
    assert (images[5] == 128).all()  # the unreadable one: mid-grey, the batch keeps its size
    for slot, i in enumerate([0, 1, 2, 3, 4]):
        expected = train_image(items[i], SIZE, random.Random(i)).int()
        diff = (images[slot].int() - expected).abs()
        if i == 2:  # reduced DCT decode against full decode + antialiased resize
            assert diff.float().mean() < 3, i
        else:  # the same pixels, float against the uint8 kernel's fixed-point weights
            assert diff.max() <= 2, i


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    pairs = [(smooth(18 + i % 7, 20 + i % 5, i), f"photo {i}") for i in range(40)]
    return write_dataset(tmp_path_factory.mktemp("photos"), pairs, shard_rows=20, group_rows=8)


def stream(index, **kw) -> ShardStream:
    args = dict(
        batch_size=6,
        image_size=SIZE,
        tokenizer=tokenizer("clip-nano"),
        seed=1,
        rank=0,
        world_size=1,
        num_workers=1,
        shuffle_buffer=10,
    )
    return ShardStream(index, **{**args, **kw})


def batches(s: ShardStream, n: int) -> list:
    out = []
    for batch in s:
        out.append(batch)
        if len(out) == n:
            return out


def test_the_gpu_decode_stream_is_the_cpu_stream_and_resumes_exactly(photos):
    index = resolve(photos)
    cpu = batches(stream(index), 8)
    gpu = batches(stream(index, decode="gpu"), 8)
    for (images, tokens, meta), (jpegs, gpu_tokens, gpu_meta) in zip(cpu, gpu, strict=True):
        assert meta == gpu_meta and torch.equal(tokens, gpu_tokens)
        decoded, unreadable = jpegs.decode_on("cpu")
        assert unreadable == 0 and (decoded.int() - images.int()).abs().max() <= 2
    position = gpu[4][2]["position"]
    resumed = batches(stream(index, decode="gpu", positions={0: position}), 3)
    for (a, _, meta_a), (b, _, meta_b) in zip(gpu[5:], resumed, strict=True):
        assert meta_a == meta_b
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.blob, b.blob)


def test_decode_gpu_needs_a_cuda_device():
    with pytest.raises(ConfigError, match="the run is on the CPU"):
        TrainConfig(data="x", decode="gpu", device="cpu")
    with pytest.raises(ConfigError, match="nothing to decode"):
        TrainConfig(synthetic=True, decode="gpu")
    with pytest.raises(ConfigError, match="--decode gpu decodes JPEGs with nvjpeg"):
        check("gpu", "cpu")
    check("cpu", "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvjpeg decode needs a CUDA device")
def test_the_cuda_decode_matches_the_cpu_decode(photos):
    check("gpu", "cuda")
    jpegs = batches(stream(resolve(photos), decode="gpu"), 2)[1][0].pin_memory()
    assert jpegs.blob.is_pinned()
    on_gpu, unreadable = jpegs.decode_on("cuda")
    on_cpu, _ = jpegs.decode_on("cpu")
    assert unreadable == 0 and on_gpu.is_cuda
    # nvjpeg's IDCT and colour conversion differ from libjpeg-turbo's by a level or two
    assert (on_gpu.cpu().int() - on_cpu.int()).abs().float().mean() < 2
