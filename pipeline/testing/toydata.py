"""Tiny datasets in the pipeline's layout, written with manifests' schemas and atomic writers.

`shapes()` draws coloured shapes ("a red circle", ...) with jittered position and size: a task a
tiny CLIP learns in a few hundred CPU steps. `write_dataset()` turns (PIL image, caption) pairs
into DIR/manifests/samples/*.parquet, DIR/shards/*.parquet (img2dataset's columns) and run.json.
"""

import io
import random
from pathlib import Path

import pyarrow as pa
from PIL import Image, ImageDraw

from manifests import schema
from manifests.layout import DatasetLayout, write_json_atomic, write_parquet_atomic

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (235, 210, 20),
    "purple": (140, 40, 170),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "cross")


def draw(colour: str, shape: str, rng: random.Random, size: int = 48) -> Image.Image:
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    r = rng.uniform(0.25, 0.4) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        d.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        w = r / 3
        d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    return img


def shapes(per_class: int, seed: int = 0) -> list[tuple[Image.Image, str]]:
    rng = random.Random(seed)
    return [
        (draw(colour, shape, rng), f"a {colour} {shape}")
        for _ in range(per_class)
        for colour in COLOURS
        for shape in SHAPES
    ]


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format={"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt], quality=90)
    return buf.getvalue()


def write_dataset(
    root,
    pairs,
    *,
    image_format: str = "jpg",
    shard_rows: int = 64,
    group_rows: int = 16,
    dropped: int = 5,
    corrupt: int = 0,
    lang: str = "en",
) -> Path:
    """Kept samples for `pairs` (plus `dropped` rows without images and `corrupt` kept rows whose
    bytes are not an image) in shards of `shard_rows` rows, row groups of `group_rows`."""
    layout = DatasetLayout(Path(root)).create()
    items = [(encode(img, image_format), caption) for img, caption in pairs]
    items += [(b"not an image, just bytes" * 4, "a broken picture")] * corrupt
    samples, shard_tables = [], []
    for start in range(0, len(items), shard_rows):
        name = f"{len(shard_tables):05d}.parquet"
        rows = []
        for row, (data, caption) in enumerate(items[start : start + shard_rows]):
            url = f"http://127.0.0.1/img/{start + row}.{image_format}"
            uid = schema.sample_uid(url, caption)
            rows.append(
                {
                    "key": f"{start + row:09d}",
                    image_format: data,
                    "caption": caption,
                    "url": url,
                    "uid": uid,
                    "status": "success",
                }
            )
            samples.append(
                {
                    "uid": uid,
                    "url": url,
                    "caption": caption,
                    "status": schema.KEPT,
                    "lang": lang,
                    "shard": name,
                    "shard_row": row,
                }
            )
        table = schema.conform(pa.Table.from_pylist(rows), schema.shard_schema(image_format))
        shard_tables.append((name, table))
    for i in range(dropped):
        samples.append(
            {
                "uid": f"dropped{i}",
                "url": f"http://127.0.0.1/x/{i}",
                "caption": "gone",
                "status": "too_small",
            }
        )
    for name, table in shard_tables:
        write_parquet_atomic(table, layout.shards / name, row_group_size=group_rows)
    write_parquet_atomic(
        schema.conform(pa.Table.from_pylist(samples), schema.SAMPLES),
        layout.samples / "part-00000.parquet",
    )
    write_json_atomic(
        {"config": {"note": "written by pipeline/testing/toydata.py"}}, layout.run_json
    )
    return layout.root
