"""A tiny CLIP trained on coloured shapes, and a loopback site of fresh shape images: the model
the curation and search tests score and search with (tests/pipeline/conftest.py trains it once a
session, ~1 min on CPU), and the site the bootstrap DAG's test builds from."""

import random
from pathlib import Path

from pipeline.loopback import LoopbackServer
from pipeline.testing.toydata import COLOURS, SHAPES, draw, encode, shapes, write_dataset

CLASSES = [(c, s) for c in COLOURS for s in SHAPES]


def train_shapes_model(root) -> "Path":
    """latest.pt of clip-nano trained on matched (shape, "a <colour> <shape>") pairs."""
    from trainer.cli import main

    data = write_dataset(root / "data", shapes(per_class=12, seed=7), shard_rows=96, dropped=0)
    options = (
        "--model clip-nano --samples 6400 --batch-size 32 --workers 0 --lr 2e-3 --warmup 20 "
        "--save-every 1000 --shuffle-buffer 128 --threads 2 --log-every 50"
    )
    argv = ["run", "--data", str(data), "--out", str(root / "run"), *options.split()]
    assert main(argv) == 0
    return root / "run" / "latest.pt"


def mismatched_caption(colour: str, shape: str, rng: random.Random) -> str:
    """A caption naming another colour and another shape: wrong on both counts."""
    other_colour = rng.choice([c for c in COLOURS if c != colour])
    other_shape = rng.choice([s for s in SHAPES if s != shape])
    return f"a {other_colour} {other_shape}"


def shapes_site(per_class: int, mismatch: float, seed: int):
    """(server, rows): fresh shape PNGs on loopback; rows are dicts url, caption, matched,
    colour, shape; a `mismatch` fraction of captions (exactly, seeded) name the wrong class."""
    rng = random.Random(seed)
    items = [(c, s, draw(c, s, rng)) for _ in range(per_class) for c, s in CLASSES]
    wrong = set(rng.sample(range(len(items)), round(mismatch * len(items))))
    routes, rows = {}, []
    for i, (colour, shape, img) in enumerate(items):
        path = f"/img/{i:05d}.png"
        routes[path] = (200, {"Content-Type": "image/png"}, encode(img, "png"))
        caption = mismatched_caption(colour, shape, rng) if i in wrong else f"a {colour} {shape}"
        rows.append(
            {
                "path": path,
                "caption": caption,
                "matched": i not in wrong,
                "colour": colour,
                "shape": shape,
            }
        )
    server = LoopbackServer("127.0.0.1", routes=routes).start()
    for row in rows:
        row["url"] = server.base + row.pop("path")[1:]
    return server, rows
