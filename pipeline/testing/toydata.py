"""Tiny datasets in the pipeline's layout, written with manifests' schemas and atomic writers.

`shapes()` draws coloured shapes ("a red circle", ...) with jittered position and size: a task a
tiny CLIP learns in a few hundred CPU steps. `write_dataset()` turns (PIL image, caption) pairs
(or (image, [captions])) into DIR/manifests/samples/*.parquet, DIR/shards/*.parquet
(img2dataset's columns and `captions`) and run.json.
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
    lang="en",
    captions_column: bool = True,
) -> Path:
    """Kept samples for `pairs` (plus `dropped` rows without images and `corrupt` kept rows whose
    bytes are not an image) in shards of `shard_rows` rows, row groups of `group_rows`.

    A pair's caption may be a list: the image's captions, stored once in its shard row
    (`captions`, `caption` = the first, `uid` = the first caption's) with one kept samples row
    per caption (`caption_index` 0..k-1, `image_of` = the shard row's uid). `lang` is every
    row's language, or a function of the caption. captions_column=False writes the layout from
    before captions were lists: shards without `captions`, samples without `caption_index`."""
    layout = DatasetLayout(Path(root)).create()
    items = [(encode(img, image_format), caption) for img, caption in pairs]
    items += [(b"not an image, just bytes" * 4, "a broken picture")] * corrupt
    samples, shard_tables = [], []
    shard_schema = schema.shard_schema(image_format)
    if not captions_column:
        shard_schema = shard_schema.remove(shard_schema.get_field_index("captions"))
    for start in range(0, len(items), shard_rows):
        name = f"{len(shard_tables):05d}.parquet"
        rows = []
        for row, (data, caption) in enumerate(items[start : start + shard_rows]):
            url = f"http://127.0.0.1/img/{start + row}.{image_format}"
            captions = [caption] if isinstance(caption, str) else list(caption)
            if len(captions) > 1 and not captions_column:
                raise ValueError("several captions of an image need the captions column")
            uids = [schema.sample_uid(url, c) for c in captions]
            rows.append(
                {
                    "key": f"{start + row:09d}",
                    image_format: data,
                    "caption": captions[0],
                    "captions": captions,
                    "url": url,
                    "uid": uids[0],
                    "status": "success",
                }
            )
            for index, (text, uid) in enumerate(zip(captions, uids, strict=True)):
                samples.append(
                    {
                        "uid": uid,
                        "url": url,
                        "caption": text,
                        "status": schema.KEPT,
                        "lang": lang(text) if callable(lang) else lang,
                        "image_of": uids[0] if len(captions) > 1 else None,
                        "shard": name,
                        "shard_row": row,
                        "caption_index": index if captions_column else None,
                    }
                )
        table = schema.conform(pa.Table.from_pylist(rows), shard_schema)
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
