"""Train the copy descriptor (pipeline/dedup/descriptor.py) on procedural drawings, and measure it
as a candidate source on the emoji corpus.

Training never sees the eval art: every image is drawn here (flat cartoon-like stickers: a body
shape with outline and flat or gradient fill, faces, text glyphs, small shapes, now and then a
patch of one of matplotlib's sample images) on a transparent canvas. A batch holds pairs
(original, edited copy), the copy made by an edit of pipeline/testing/edits.py (mirror left out:
the eval side embeds mirrors instead); the pairs come in twos whose originals share one layout,
the second drawn from the first's spec with every shape perturbed (another artist's drawing of the
same concept: the false positive the leak check must avoid), so each is the other's hard negative.

    .venv/bin/python bench/train_descriptor.py --out /tmp/desc.pt --minutes 11 --seed 1 --focus 3
    .venv/bin/python bench/train_descriptor.py --measure /tmp/desc.pt --emoji-dir DIR [--hash-pickle P]

--measure (the emoji corpus is read for this only): per eval style, the eval images and their
mirrors are embedded; the pool is bench/leak_cross.py's (the same seeded edits at random and worst
settings, here every `--every`-th emoji) plus every other-style drawing (hard negatives). It
reports per edit how often the true original is the nearest / among the 3 nearest eval images by
cosine (the candidate ceiling), next to the hash stage's ceiling on the same pool images when
bench/leak_cross.py's --save pickle is given (--hash-pickle), and the union of both.
"""

import argparse
import functools
import json
import math
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.dedup import descriptor as desc  # noqa: E402
from pipeline.testing.edits import EDITS, composite  # noqa: E402

STYLES = ("google", "twitter")
TRAIN_EDITS = [name for name in EDITS if "mirror" not in name] + ["pad"]  # mirror+pad -> pad
# The edits the hash stage's candidates miss most (bench/leak_cross.py's ceilings): --focus N
# draws them N times as often.
FOCUS_EDITS = ["pad", "screenshot", "rotate+crop", "crop", "rotate"]
MPL_SAMPLES = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")
GLYPHS = "ABCDEFGHJKMNPRSTWXYZabdeghkmnqrst0123456789#*@&%?!$+=<>★♥♦♣♠☀☂☎✈✉✓✗♪☺←→↑↓⚑"
DRAW = 128  # px: drawn at 2x, reduced to 64 (antialiased edges, like emoji art)


def _colour(rng, lo=0, hi=256):
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


def _resources():
    import matplotlib
    from PIL import Image

    root = Path(matplotlib.get_data_path())
    fonts = sorted(str(p) for p in (root / "fonts" / "ttf").glob("DejaVu*.ttf"))
    photos = []
    for name in MPL_SAMPLES:
        with Image.open(root / "sample_data" / name) as im:
            photos.append(composite(im))
    return fonts, photos


def spec(rng, n_photos: int) -> list[dict]:
    """A drawing as a list of primitives in unit coordinates (x0, y0, x1, y1 in [0, 1])."""
    kinds = ("ellipse", "roundrect", "polygon", "star", "heart")
    prims = []
    n_bodies = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
    for _ in range(n_bodies):
        if n_bodies == 1:
            cx, cy = 0.5 + rng.normal(0, 0.03, 2)
            r = rng.uniform(0.3, 0.46)
        else:
            cx, cy, r = rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75), rng.uniform(0.15, 0.3)
        rx, ry = r * rng.uniform(0.75, 1.0), r * rng.uniform(0.75, 1.0)
        prims.append(
            dict(
                kind=str(rng.choice(kinds)),
                box=[cx - rx, cy - ry, cx + rx, cy + ry],
                fill=_colour(rng),
                fill2=_colour(rng) if rng.random() < 0.4 else None,
                outline=_colour(rng, 0, 120) if rng.random() < 0.6 else None,
                width=float(rng.uniform(0.01, 0.04)),
                sides=int(rng.integers(3, 9)),
                angle=float(rng.uniform(0, 360)),
            )
        )
    if rng.random() < 0.45:  # a face on the (first) body
        x0, y0, x1, y1 = prims[0]["box"]
        prims.append(
            dict(
                kind="face",
                box=[x0, y0, x1, y1],
                fill=_colour(rng, 0, 90),
                eye=float(rng.uniform(0.06, 0.14)),
                mouth=float(rng.uniform(-1, 1)),
                eye_y=float(rng.uniform(0.3, 0.45)),
                width=float(rng.uniform(0.02, 0.05)),
            )
        )
    for _ in range(int(rng.integers(0, 6))):
        kind = str(rng.choice(("ellipse", "rect", "polygon", "line", "glyph", "glyph", "photo")))
        if kind == "photo" and n_photos == 0:
            kind = "rect"
        x0, y0 = rng.uniform(0.05, 0.8, 2)
        s = rng.uniform(0.08, 0.4)
        prims.append(
            dict(
                kind=kind,
                box=[x0, y0, min(0.98, x0 + s * rng.uniform(0.5, 1.5)), min(0.98, y0 + s)],
                fill=_colour(rng),
                outline=_colour(rng, 0, 120) if rng.random() < 0.3 else None,
                width=float(rng.uniform(0.01, 0.04)),
                sides=int(rng.integers(3, 7)),
                angle=float(rng.uniform(0, 360)),
                glyph=str(rng.choice(list(GLYPHS))),
                font=int(rng.integers(0, 1 << 16)),
                photo=int(rng.integers(0, max(1, n_photos))),
                at=rng.uniform(0, 0.6, 2).tolist(),
            )
        )
    return prims


def perturb(prims: list[dict], rng, strength: float = 1.0) -> list[dict]:
    """The same concept redrawn: every shape moved, resized and recoloured a little, faces and
    glyphs restyled, a small shape dropped or added now and then."""
    out = []
    for p in prims:
        q = dict(p)
        x0, y0, x1, y1 = p["box"]
        cx, cy = (
            (x0 + x1) / 2 + rng.normal(0, 0.03 * strength),
            (y0 + y1) / 2 + rng.normal(0, 0.03 * strength),
        )
        sx, sy = (x1 - x0) / 2 * rng.uniform(0.88, 1.12), (y1 - y0) / 2 * rng.uniform(0.88, 1.12)
        q["box"] = [cx - sx, cy - sy, cx + sx, cy + sy]
        for key in ("fill", "fill2", "outline"):
            if q.get(key) is not None:
                q[key] = tuple(
                    int(np.clip(c + rng.normal(0, 22 * strength), 0, 255)) for c in q[key]
                )
        if "width" in q:
            q["width"] = float(q["width"] * rng.uniform(0.6, 1.6))
        if q["kind"] == "face":
            q["eye"] *= float(rng.uniform(0.7, 1.3))
            q["mouth"] = float(np.clip(q["mouth"] + rng.normal(0, 0.4), -1, 1))
        if "font" in q and rng.random() < 0.5:
            q["font"] = int(rng.integers(0, 1 << 16))
        if "angle" in q:
            q["angle"] += float(rng.normal(0, 8))
        out.append(q)
    if len(out) > 2 and rng.random() < 0.25:
        out.pop(int(rng.integers(1, len(out))))
    return out


def _poly(box, sides, angle, star=False):
    x0, y0, x1, y1 = box
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    n = sides * 2 if star else sides
    pts = []
    for k in range(n):
        a = math.radians(angle) + 2 * math.pi * k / n
        f = 0.45 if star and k % 2 else 1.0
        pts.append((cx + rx * f * math.cos(a), cy + ry * f * math.sin(a)))
    return pts


def _heart(box):
    x0, y0, x1, y1 = box
    pts = []
    for k in range(40):
        t = 2 * math.pi * k / 40
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x0 + (x + 17) / 34 * (x1 - x0), y0 + (13 - y) / 30 * (y1 - y0)))
    return pts


def _gradient_fill(image, mask, c1, c2):
    from PIL import Image

    ramp = np.linspace(0, 1, image.size[1])[:, None, None]
    grad = np.asarray(c1)[None, None] * (1 - ramp) + np.asarray(c2)[None, None] * ramp
    layer = Image.fromarray(
        np.broadcast_to(grad, (image.size[1], image.size[0], 3)).astype(np.uint8)
    )
    image.paste(layer.convert("RGBA"), (0, 0), mask)


@functools.lru_cache(maxsize=512)
def _font(path: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(path, size)


def _shape(draw, p: dict, box, **kw) -> None:
    """A body shape's fill (into a mask) or its outline."""
    kind = p["kind"]
    if kind == "ellipse":
        draw.ellipse(box, **kw)
    elif kind in ("roundrect", "rect"):
        radius = round(0.25 * (box[2] - box[0])) if kind == "roundrect" else 0
        draw.rounded_rectangle(box, radius, **kw)
    else:
        pts = _heart(box) if kind == "heart" else _poly(box, p["sides"], p["angle"], kind == "star")
        draw.polygon(pts, **kw)


def render(prims: list[dict], fonts, photos, size: int = 64):
    """The RGBA sticker of a spec, drawn at DRAW px and reduced to `size`."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (DRAW, DRAW), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    for p in prims:
        box = [min(max(v, -0.2), 1.2) * DRAW for v in p["box"]]
        box = [min(box[0], box[2] - 2), min(box[1], box[3] - 2), box[2], box[3]]
        fill = (*p["fill"], 255)
        outline = (*p["outline"], 255) if p.get("outline") else None
        width = max(1, round(p.get("width", 0.02) * DRAW))
        kind = p["kind"]
        if kind in ("ellipse", "roundrect", "rect", "polygon", "star", "heart"):
            mask = Image.new("L", image.size, 0)
            md = ImageDraw.Draw(mask)
            _shape(md, p, box, fill=255)
            if p.get("fill2"):
                _gradient_fill(image, mask, p["fill"], p["fill2"])
            else:
                image.paste(Image.new("RGBA", image.size, fill), (0, 0), mask)
            if outline:
                _shape(draw, p, box, outline=outline, width=width)
        elif kind == "line":
            draw.line(box, fill=fill, width=width * 2)
        elif kind == "face":
            _face(draw, box, p, fill, width)
        elif kind == "glyph":
            font = _font(fonts[p["font"] % len(fonts)], max(8, round(box[3] - box[1])))
            draw.text((box[0], box[1]), p["glyph"], font=font, fill=fill, stroke_width=0)
        elif kind == "photo":
            src = photos[p["photo"] % len(photos)]
            w, h = src.size
            cx, cy = round(p["at"][0] * w), round(p["at"][1] * h)
            patch = src.crop((cx, cy, cx + w // 3, cy + h // 3))
            bw, bh = max(2, round(box[2] - box[0])), max(2, round(box[3] - box[1]))
            image.paste(patch.resize((bw, bh)).convert("RGBA"), (round(box[0]), round(box[1])))
    return image.resize((size, size), Image.LANCZOS)


def _face(draw, box, p, ink, width):
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    ey, er = y0 + p["eye_y"] * h, p["eye"] * w
    for ex in (x0 + 0.35 * w, x0 + 0.65 * w):
        draw.ellipse((ex - er / 1.6, ey - er, ex + er / 1.6, ey + er), fill=ink)
    my, mw = y0 + 0.68 * h, 0.22 * w
    bend = p["mouth"] * 0.12 * h  # > 0: a smile, < 0: a frown
    arc = (x0 + 0.5 * w - mw, my - abs(bend), x0 + 0.5 * w + mw, my + abs(bend) + 1)
    if abs(bend) < 2:
        draw.line((arc[0], my, arc[2], my), fill=ink, width=width)
    else:
        draw.arc(arc, 0 if bend > 0 else 180, 180 if bend > 0 else 360, fill=ink, width=width)


def edit_copy(image, rng, names=TRAIN_EDITS):
    """An edited copy for training: one edit of TRAIN_EDITS (at its worst 1 time in 4), then now
    and then a second photometric one."""
    rgb = composite(image)
    name = names[int(rng.integers(0, len(names)))]
    out = EDITS[name](rgb, rng, bool(rng.random() < 0.25))
    if rng.random() < 0.3:
        extra = ("jpeg", "resize", "gray", "jitter")[int(rng.integers(0, 4))]
        out = EDITS[extra](out, rng, False)
    return out


def batches(seed: int, batch: int, focus: int = 1):
    """Endless training batches: batch // 2 concepts, each drawn twice (spec, perturbed spec),
    each drawing paired with an edited copy of itself."""
    fonts, photos = _resources()
    names = TRAIN_EDITS + FOCUS_EDITS * (focus - 1)
    rng = np.random.default_rng(seed)
    while True:
        pairs = []
        for _ in range(batch // 2):
            s = spec(rng, len(photos))
            for prims in (s, perturb(s, rng)):
                size = 64 if rng.random() < 0.7 else int(rng.integers(48, 113))
                original = render(prims, fonts, photos, size)
                pairs.append((original, edit_copy(original, rng, names)))
        yield pairs


def train_main(args) -> None:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    d = desc.create(desc.DescriptorConfig(size=args.size, dim=args.dim))
    n_params = sum(p.numel() for p in d.model.parameters())
    print(
        f"params {n_params:,}; batch {args.batch} pairs; {args.minutes} min; seed {args.seed}; "
        f"focus {args.focus}",
        flush=True,
    )
    cfg = desc.TrainConfig(
        batch=args.batch, lr=args.lr, temperature=args.temperature, koleo=args.koleo
    )
    t0, c0 = time.perf_counter(), time.process_time()
    desc.train(
        d,
        batches(args.seed, args.batch, args.focus),
        cfg,
        seconds=args.minutes * 60,
        log=lambda m: print(m, flush=True),
    )
    steps = len(cfg.history)
    print(
        f"trained {steps} steps ({steps * args.batch * 2} images) in {time.perf_counter() - t0:.0f} s "
        f"wall, {time.process_time() - c0:.0f} s CPU",
        flush=True,
    )
    d.save(args.out)
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    Path(str(args.out) + ".history.json").write_text(json.dumps(cfg.history))


def load_rows(emoji_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (emoji_dir / "emoji.jsonl").open(encoding="utf-8")]
    return [r for r in rows if all((emoji_dir / s / r["image"]).exists() for s in STYLES)]


def _load(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return im.copy()


def _scores(d, images, eval_emb, n: int, seconds: list) -> np.ndarray:
    """len(images) x n cosine similarity to each eval image, the better of it and its mirror."""
    t0 = time.process_time()
    emb = d.embed(images)
    seconds.append((time.process_time() - t0, len(images)))
    sim = emb @ eval_emb.T
    return np.maximum(sim[:, :n], sim[:, n:])


def measure_split(d, emoji_dir: Path, rows, style: str, seed: int, every: int, hashes) -> dict:
    """One direction: eval set = `style`; pool as bench/leak_cross.py's run_split makes it (the
    same rng per block, every image edited so the streams match), every `every`-th emoji kept."""
    n, other = len(rows), STYLES[1 - STYLES.index(style)]
    evals = [_load(emoji_dir / style / r["image"]) for r in rows]
    seconds = []
    t0 = time.process_time()
    eval_emb = d.embed(evals, mirror=True)
    seconds.append((time.process_time() - t0, 2 * n))
    neg = _scores(d, [_load(emoji_dir / other / r["image"]) for r in rows], eval_emb, n, seconds)
    out = {
        "neg_same": np.diag(neg).copy(),
        "neg_top1": neg.max(1),
        "neg_rank": _rank(neg, np.arange(n)),
    }
    originals = [composite(im) for im in evals]
    keep = np.arange(0, n, every)
    b = 0
    for name, edit in EDITS.items():
        for worst in (False, True):
            b += 1
            rng = np.random.default_rng([seed, STYLES.index(style), b])
            images = [edit(originals[i], rng, worst) for i in range(n)]
            sc = _scores(d, [images[i] for i in keep], eval_emb, n, seconds)
            rec = {
                "rank": _rank(sc, keep),
                "true": sc[np.arange(len(keep)), keep],
                "top1": sc.max(1),
            }
            if hashes is not None:
                idx = b * n + keep
                assert all(hashes.edit[i] == name and hashes.worst[i] == worst for i in idx)
                for source in ("build", "multi"):
                    found = np.array(hashes.cand_source[source]).reshape(-1, 3).any(axis=1)
                    rec[source] = found[idx]
            out[(name, worst)] = rec
    out["ms_per_image"] = 1000 * sum(s for s, _ in seconds) / sum(k for _, k in seconds)
    return out


def _rank(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """0-based rank of the true eval image among all eval images (ties count against it)."""
    true = scores[np.arange(len(truth)), truth]
    return (scores > true[:, None]).sum(axis=1) + (scores == true[:, None]).sum(axis=1) - 1


def _pct(values, qs=(0, 5, 25, 50, 75, 95, 100)) -> str:
    return " ".join(f"p{q}={np.percentile(values, q):.3f}" for q in qs)


def report(results: dict, has_hash: bool) -> None:
    for style, res in results.items():
        print(
            f"\n== eval {style}: candidate ceiling (true original among the k nearest eval images) =="
        )
        head = f"{'edit':12} | {'top1':>5} {'top3':>5} {'top10':>5} | worst top3"
        if has_hash:
            head += " | hash build  multi | multi+desc3 build+desc3"
        print(head)
        for name in EDITS:
            recs = [res[(name, w)] for w in (False, True)]
            rank = np.concatenate([r["rank"] for r in recs])
            line = f"{name:12} | {np.mean(rank < 1):5.3f} {np.mean(rank < 3):5.3f} {np.mean(rank < 10):5.3f}"
            line += f" | {np.mean(recs[1]['rank'] < 3):10.3f}"
            if has_hash:
                hb = np.concatenate([r["build"] for r in recs])
                hm = np.concatenate([r["multi"] for r in recs])
                line += f" | {hb.mean():10.3f} {hm.mean():6.3f} | {np.mean(hm | (rank < 3)):11.3f}"
                line += f" {np.mean(hb | (rank < 3)):11.3f}"
            print(line)
        allr = np.concatenate([res[(n_, w)]["rank"] for n_ in EDITS for w in (False, True)])
        print(
            f"{'all':12} | {np.mean(allr < 1):5.3f} {np.mean(allr < 3):5.3f} {np.mean(allr < 10):5.3f}"
        )
        true = np.concatenate([res[(n_, w)]["true"] for n_ in EDITS for w in (False, True)])
        print(f"copies, similarity to their original: {_pct(true)}")
        print(f"hard negatives, similarity to the same-concept eval image: {_pct(res['neg_same'])}")
        print(
            f"hard negatives whose same-concept eval image is top-1: {np.mean(res['neg_rank'] < 1):.3f}, "
            f"top-3: {np.mean(res['neg_rank'] < 3):.3f}; their top-1 similarity: {_pct(res['neg_top1'])}"
        )
        print(
            f"embed: {res['ms_per_image']:.2f} ms/image (process CPU, 1 thread, prepare included)"
        )
    _detector(results)


def _detector(results: dict) -> None:
    """The descriptor alone as a detector: flag a pool image when its top-1 similarity reaches t;
    t chosen on one direction (at most 0.3% of hard negatives flagged), reported on the other."""
    print("\n== descriptor alone as a detector (t tuned on one style, reported on the other) ==")
    for tune, test in (("google", "twitter"), ("twitter", "google")):
        neg = np.sort(results[tune]["neg_top1"])
        t = neg[int(np.ceil(len(neg) * (1 - 0.003)))] + 1e-6
        res = results[test]
        hits = np.concatenate(
            [
                (res[(n_, w)]["rank"] < 1) & (res[(n_, w)]["true"] >= t)
                for n_ in EDITS
                for w in (False, True)
            ]
        )
        fp = np.mean(res["neg_top1"] >= t)
        print(f"eval {test}, t={t:.3f} from {tune}: recall {hits.mean():.3f}, FP {fp:.2%}")


def measure_main(args) -> None:
    import torch

    torch.set_num_threads(1)
    d = desc.load(args.measure)
    rows = load_rows(args.emoji_dir)
    splits = None
    if args.hash_pickle:
        sys.path.insert(0, str(Path(__file__).resolve().parent))  # leak_cross.Split unpickles
        splits = pickle.loads(args.hash_pickle.read_bytes())
    print(
        f"{args.measure}: {len(rows)} emoji, pool every {args.every}th, seed {args.seed}",
        flush=True,
    )
    results = {}
    for style in STYLES:
        t0 = time.perf_counter()
        results[style] = measure_split(
            d, args.emoji_dir, rows, style, args.seed, args.every, splits[style] if splits else None
        )
        print(f"eval {style}: measured in {time.perf_counter() - t0:.0f} s", flush=True)
    report(results, splits is not None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="train and save the weights here")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=48, help="pairs per step")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--temperature", type=float, default=0.07)
    parser.add_argument("--focus", type=int, default=1, help="FOCUS_EDITS drawn N x as often")
    parser.add_argument("--koleo", type=float, default=0.0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--measure", type=Path, help="measure these weights on --emoji-dir")
    parser.add_argument("--emoji-dir", type=Path)
    parser.add_argument("--every", type=int, default=4, help="pool: every N-th emoji's copies")
    parser.add_argument("--hash-pickle", type=Path, help="bench/leak_cross.py --save output")
    args = parser.parse_args()
    if bool(args.out) == bool(args.measure):
        sys.exit("give exactly one of --out (train) or --measure (evaluate)")
    if args.out:
        train_main(args)
    else:
        if not args.emoji_dir or not all((args.emoji_dir / s).is_dir() for s in STYLES):
            sys.exit("--measure needs --emoji-dir holding google/ and twitter/")
        measure_main(args)


if __name__ == "__main__":
    main()
