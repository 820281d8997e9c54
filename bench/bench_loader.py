"""Benchmark: can the trainer's data loader feed a GPU? Samples/s per CPU core and data wait.

Writes a dataset of 224 px JPEG shards (photo-like: smooth colour fields, shapes, sensor-like
noise; 1,000-row row groups) with the same writer the tests use, then measures
  1. one image, one core: PIL decode + bicubic crop-resize (torchvision's RandomResizedCrop path)
     against the trainer's decode path (trainer.data.image.train_image);
  2. the whole loader in one process (row-group reads, shuffle buffer, decode, crop, tokenize,
     batching): samples per CPU-second = samples/s per core, the median of --repeats windows;
     then the same with --decode gpu, where the loader only reads headers, draws crop boxes and
     tokenizes (the decode is left to the GPU, so that figure is the CPU side alone);
  3. DataLoader workers feeding a stand-in for the GPU that takes --step-ms per batch (default:
     open_clip's ViT-B-32 step on an H200, about 6,500 samples/s): the fraction of time the
     "GPU" waits for data, and the workers' CPU seconds over that window.
CPU seconds (not wall time) give the per-core figure, so other load on a shared machine distorts
it less; wall-clock figures are printed beside them.

    .venv/bin/python bench/bench_loader.py [--images 2000] [--batch-size 256] [--workers 2]
"""

import argparse
import dataclasses
import io
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from pipeline.testing.toydata import write_dataset

WORDS = ["a", "photo", "of", "the", "red", "blue", "small", "big", "dog", "cat", "car", "tree"]


def photo(rng: np.random.Generator, size: int = 224) -> Image.Image:
    field = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    img = Image.fromarray(field).resize((size, size), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x, r = rng.integers(0, size, 2), int(rng.integers(10, 60))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((x[0] - r, x[1] - r, x[0] + r, x[1] + r), fill=colour)
    noise = rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))


def build(root: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    pairs = [(photo(rng), " ".join(rng.choice(WORDS, 8))) for _ in range(count)]
    return write_dataset(root, pairs, shard_rows=1000, group_rows=1000, dropped=0)


def per_image(data: list[bytes], size: int) -> None:
    from trainer.data.image import crop_box, train_image

    def pil_bicubic(b: bytes, rng: random.Random):
        img = Image.open(io.BytesIO(b)).convert("RGB")
        box = crop_box(img.width, img.height, rng)
        out = np.asarray(img.resize((size, size), Image.Resampling.BICUBIC, box=box))
        return torch.from_numpy(out.copy()).permute(2, 0, 1)

    for name, fn in [("PIL decode + bicubic", pil_bicubic), ("trainer fast path", train_image)]:
        best = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            for i, b in enumerate(data):
                fn(b, size, random.Random(i)) if fn is train_image else fn(b, random.Random(i))
            best = min(best, (time.process_time() - t0) / len(data))
        print(f"  {name:24s} {best * 1e3:6.3f} ms/image  {1 / best:7.0f} images per CPU-second")


def loader_in_process(cfg, index, batches: int, repeats: int) -> float:
    """Samples per CPU-second of `repeats` consecutive windows of `batches` batches; the median."""
    from trainer.data import build_loader

    loader, _ = build_loader(
        cfg, rank=0, world_size=1, image_size=224, context_length=77, index=index
    )
    it = iter(loader)
    next(it)  # warm: first row group read, tokenizer caches
    rates, walls = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(batches):
            next(it)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rates.append(batches * cfg.batch_size / cpu)
        walls.append(batches * cfg.batch_size / wall)
    rate = sorted(rates)[len(rates) // 2]
    print(
        f"  0 workers, decode {cfg.decode}: {rate:7.0f} samples per CPU-second (per core; median "
        f"of {' '.join(f'{r:.0f}' for r in rates)}); {max(walls):7.0f} samples/s wall at best"
    )
    return rate


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (Linux /proc)."""
    import os

    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def loader_feeding_gpu(cfg, index, batches: int, step_s: float) -> None:
    from trainer.data import build_loader

    loader, workers = build_loader(
        cfg, rank=0, world_size=1, image_size=224, context_length=77, index=index
    )
    it = iter(loader)
    for _ in range(workers * 2):  # start-up: worker processes, first reads
        next(it)
    # The workers' CPU time over the timed window only: their prefetched batches (up to
    # prefetch_factor each) are in flight at its start and at its end alike, so what they made in
    # between is what was consumed (counting from process start would charge start-up and the
    # batches prefetched and thrown away at the end to the timed ones).
    pids = [w.pid for w in it._workers]
    cpu0, wait, t0 = _cpu_seconds(pids), 0.0, time.perf_counter()
    for _ in range(batches):
        t = time.perf_counter()
        next(it)
        wait += time.perf_counter() - t
        time.sleep(step_s)  # the GPU's step; the loader's processes keep decoding meanwhile
    wall, cpu = time.perf_counter() - t0, _cpu_seconds(pids) - cpu0
    del it, loader
    print(
        f"  {workers} workers: data wait {wait / wall:5.1%} of the time; "
        f"{batches * cfg.batch_size / wall:6.0f} samples/s delivered; "
        f"{batches * cfg.batch_size / max(cpu, 1e-9):6.0f} samples per worker CPU-second"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="in-process windows (median)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--step-ms", type=float, default=256 / 6500 * 1000)
    parser.add_argument("--out", help="dataset folder (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from trainer.config import TrainConfig
    from trainer.data import resolve

    root = Path(args.out or tempfile.mkdtemp(prefix="bench_loader_"))
    t0 = time.perf_counter()
    build(root, args.images)
    index = resolve(root)
    sizes = [p.stat().st_size for p in (root / "shards").glob("*.parquet")]
    print(
        f"dataset: {index.num_rows} JPEGs, 224 px, {sum(sizes) / index.num_rows / 1e3:.1f} kB "
        f"each, {len(sizes)} shards ({time.perf_counter() - t0:.0f} s to write) in {root}"
    )
    import pyarrow.parquet as pq

    data = pq.read_table(root / "shards" / "00000.parquet", columns=["jpg"])["jpg"].to_pylist()
    print("one image, one core:")
    per_image(data[:300], 224)
    cfg = TrainConfig(
        data=str(root), model="ViT-B-32", batch_size=args.batch_size, workers=0, shuffle_buffer=2000
    )
    print(f"loader (batch {args.batch_size}, ViT-B-32's tokenizer, 224 px crops):")
    rate = loader_in_process(cfg, index, args.batches, args.repeats)
    # --decode gpu: the worker's share only (header, crop box, tokens); the decode is the GPU's
    loader_in_process(dataclasses.replace(cfg, decode="gpu"), index, args.batches, 1)
    step_s = args.step_ms / 1000
    print(
        f"feeding a GPU that takes {args.step_ms:.0f} ms per batch "
        f"({args.batch_size / step_s:.0f} samples/s):"
    )
    for workers in sorted({1, args.workers}):
        cfg.workers = workers
        loader_feeding_gpu(cfg, index, args.batches, step_s)
    print(
        f"=> {args.batch_size / step_s / rate:.1f} loader cores keep that GPU busy "
        f"(goal: >= 1,500 samples/s per core; measured {rate:.0f})"
    )


if __name__ == "__main__":
    main()
