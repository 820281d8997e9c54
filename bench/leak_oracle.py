"""The leak verifier's own ceiling: every pool image verified against the eval image it should
match, whatever the candidates would have proposed.

Issue 16's pool (bench/leak_cross.py's pool_blocks: each eval emoji under every edit at a random
and its worst setting, and the other style's drawing as the hard negative). Each copy is verified
(pipeline.dedup.leakverify.verify_pairs, the build's code) against its own original, and each
hard negative against the eval drawing of its own concept. So the copy column is the recall a
perfect candidate source would give this verifier, and the negative line its false positives when
a same-concept drawing is proposed: what any wider candidate source (a larger radius, embedding
neighbours) risks.

    .venv/bin/python bench/leak_oracle.py --emoji-dir ../shared/data/emoji [--limit 600] \\
        [--min-similarity 0.94]
"""

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leak_cross import NEGATIVE, STYLES, load_rows, pool_blocks  # noqa: E402
from leak_embed import _png, eval_originals  # noqa: E402

from pipeline.dedup.leaks import LEAK_MIN_SIMILARITY  # noqa: E402


def oracle_split(emoji_dir: Path, rows, style: str, seed: int, config) -> dict:
    """(edit, worst) -> the verdicts of that block's pool images against their own eval image."""
    import cv2

    from pipeline.dedup.leakverify import EvalFeatures, verify_pairs

    cv2.setNumThreads(1)
    table, eval_row, originals = eval_originals(emoji_dir, rows, style)
    features = EvalFeatures(table, config)
    verdicts = {}
    for name, worst, images in pool_blocks(emoji_dir, rows, style, seed, originals):
        data = [_png(im) for im in images]
        pairs = [(i, int(eval_row[i])) for i in range(len(data))]
        found = verify_pairs(pairs, lambda ix, d=data: {i: d[i] for i in ix}, features, config)
        verdicts[(name, worst)] = [found[p] for p in pairs]
    return verdicts


def report(style: str, verdicts: dict, seconds: float) -> None:
    print(f"\n== eval {style}: each pool image against its own eval image ({seconds:.0f} s) ==")
    print(f"{'edit':14s} | {'random':>7s} {'worst':>7s}")
    for name, worst in verdicts:
        if name == NEGATIVE or worst:
            continue
        cells = [np.mean([v.copy for v in verdicts[(name, w)]]) for w in (False, True)]
        print(f"{name:14s} | {cells[0]:7.3f} {cells[1]:7.3f}")
    copies = [v.copy for (name, _), vs in verdicts.items() if name != NEGATIVE for v in vs]
    negatives = verdicts[(NEGATIVE, False)]
    flagged = sum(v.copy for v in negatives)
    print(
        f"copies confirmed {np.mean(copies):.4f} of {len(copies)}; same-concept drawings passed "
        f"{100 * flagged / len(negatives):.2f}% ({flagged}/{len(negatives)})"
    )


def main() -> None:
    from pipeline.dedup.leaks import leak_verify_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emoji-dir", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=600)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-similarity", type=float, default=LEAK_MIN_SIMILARITY)
    args = parser.parse_args()
    rows = load_rows(args.emoji_dir, args.limit)
    config = replace(leak_verify_config("orb"), min_similarity=args.min_similarity)
    print(f"{len(rows)} emoji, verifier orb, aligned edge threshold {config.min_similarity}")
    for style in STYLES:
        t0 = time.process_time()
        verdicts = oracle_split(args.emoji_dir, rows, style, args.seed, config)
        report(style, verdicts, time.process_time() - t0)


if __name__ == "__main__":
    main()
