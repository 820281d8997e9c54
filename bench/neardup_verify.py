"""Pool near-duplicates with and without verification (`--near-dup-verify`), on real artwork.

The pool of one direction holds one art style's emoji, a copy of each under the pool-side
edits that matter for near-duplicates (mirror, pad, mirror+pad, JPEG, resize, crop, screenshot;
pipeline/testing/edits.py, random settings, seeded), and the other style's drawing of every
emoji (not a copy: a different artist's picture of the same thing). The dedup decisions are
pipeline.dedup.decide's (the build's oracle) over that pool. Per radius: the share of copies
that end in their original's cluster, and the share of other-style drawings wrongly merged with
their same-concept emoji (false merges). The radius is chosen on one style (most copies found
with false merges at most FP_BUDGET) and reported on the other, both ways.

    .venv/bin/python bench/neardup_verify.py --emoji-dir /work/shared/data/emoji [--limit 400]
"""

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np

from pipeline.dedup.decide import DedupConfig, decide
from pipeline.dedup.hashes import image_hashes
from pipeline.testing.edits import EDITS, composite

STYLES = ("google", "twitter")
POOL_EDITS = ("mirror", "pad", "mirror+pad", "jpeg", "resize", "crop", "screenshot")
RADII = (4, 6, 8, 10, 12)
FP_BUDGET = 0.003


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def make_pool(emoji_dir: Path, rows, style: str, seed: int) -> dict:
    """{'uid', 'image', 'width', 'height', hashes..., 'kind', 'emoji'} columns of one pool."""
    from PIL import Image

    other = STYLES[1 - STYLES.index(style)]
    pool = {k: [] for k in ("uid", "image", "width", "height", "kind", "emoji")}
    for i, r in enumerate(rows):
        rng = np.random.default_rng([seed, STYLES.index(style), i])
        with Image.open(emoji_dir / style / r["image"]) as im:
            original = composite(im)
        with Image.open(emoji_dir / other / r["image"]) as im:
            drawing = composite(im)
        items = [("original", original), ("other_artist", drawing)]
        items += [(edit, EDITS[edit](original, rng, False)) for edit in POOL_EDITS]
        for kind, image in items:
            pool["uid"].append(f"{i}/{kind}")
            pool["image"].append(_png(image))
            pool["width"].append(image.width)
            pool["height"].append(image.height)
            pool["kind"].append(kind)
            pool["emoji"].append(i)
            for name, value in image_hashes(image).items():
                pool.setdefault(name, []).append(value)
    return pool


def score(pool: dict, updates: dict) -> dict:
    """Per kind: share of rows in their emoji's original's cluster."""
    rep = {u: updates[u]["dup_of"] if u in updates else u for u in pool["uid"]}
    cluster = {u: rep[u] for u in pool["uid"]}
    out = {}
    for kind in ("other_artist", *POOL_EDITS):
        rows = [k for k, x in enumerate(pool["kind"]) if x == kind]
        together = [
            cluster[pool["uid"][k]] == cluster[f"{pool['emoji'][k]}/original"] for k in rows
        ]
        out[kind] = float(np.mean(together))
    return out


def run(pool: dict, verify: str) -> dict:
    results = {}
    for radius in RADII:
        t0 = time.process_time()
        config = DedupConfig(near_dup_radius=radius, near_dup_verify=verify)
        updates, _ = decide(pool, config=config)
        results[radius] = (score(pool, updates), time.process_time() - t0)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--emoji-dir", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=400, help="emoji per style (0: all 1911)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    lines = (args.emoji_dir / "emoji.jsonl").open(encoding="utf-8")
    rows = [json.loads(line) for line in lines]
    rows = [r for r in rows if all((args.emoji_dir / s / r["image"]).exists() for s in STYLES)]
    rows = rows[: args.limit] if args.limit else rows
    pools = {s: make_pool(args.emoji_dir, rows, s, args.seed) for s in STYLES}
    n = len(pools[STYLES[0]]["uid"])
    print(f"{len(rows)} emoji per style, {n} pool images per direction, seed {args.seed}")
    for verify in ("off", "orb"):
        found = {s: run(pools[s], verify) for s in STYLES}
        print(f"\n== --near-dup-verify {verify} ==")
        for tune, shown in (STYLES, STYLES[::-1]):
            ok = [r for r in RADII if found[tune][r][0]["other_artist"] <= FP_BUDGET]
            best = max(ok, key=lambda r: np.mean([found[tune][r][0][e] for e in POOL_EDITS]))
            table, seconds = found[shown][best]
            per_edit = " ".join(f"{e} {table[e]:.3f}" for e in POOL_EDITS)
            print(
                f"pool {shown}, radius {best} chosen on {tune}: copies clustered with their "
                f"original: {per_edit}; mean {np.mean([table[e] for e in POOL_EDITS]):.3f}; "
                f"false merges {100 * table['other_artist']:.2f}%; "
                f"{1000 * seconds / n:.2f} ms per image"
            )


if __name__ == "__main__":
    main()
