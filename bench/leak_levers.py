"""Decision rules of the cross-style leak bench, their threshold choice and their tables.

A lever is a family of decision rules with parameters; its parameters are chosen on one split
(the tuning half) as the best recall on copies with false positives on the hard negatives at
most FP_BUDGET, and the rule is then reported on the other split. Never the reverse.
"""

import itertools

from leak_cross import CANDIDATE_RADIUS, FP_BUDGET, SOURCES, STYLES

from pipeline.dedup.leaks import LEAK_MIN_SIMILARITY, LEAK_RADIUS, VERIFY_RADIUS
from pipeline.dedup.verify import VerifyConfig
from pipeline.testing.edits import EDITS


def hash_rule(a, radius: int):
    """The build's rule: the nearest eval variant within `radius` bits."""
    return a["nearest"] <= radius


def verify_rule(a, r0: int, r1: int, t: int):
    """Hash alone within r0 bits, or a candidate within r1 bits with at least t inliers."""
    verified = ((a["cand_dist"] <= r1) & (a["cand_inliers"] >= t)).any(axis=1)
    return (a["nearest"] <= r0) | verified


def aligned_rule(a, r0: int, r1: int, t: float):
    """verify.match's rule with its edge threshold re-chosen: a candidate within r1 bits with
    min_inliers inliers, or min_inliers_aligned and an aligned edge correlation of at least t;
    the hash alone within r0."""
    k, k_aligned = VerifyConfig.min_inliers, VerifyConfig.min_inliers_aligned
    inl, sim = a["cand_inliers"], a["cand_similarity"]
    verified = (a["cand_dist"] <= r1) & ((inl >= k) | ((inl >= k_aligned) & (sim >= t)))
    return (a["nearest"] <= r0) | verified.any(axis=1)


def structure_rule(a, r0: int, r1: int, t: float):
    """The shipped keypoint verdict, or else align.py's structure score at least t, for a
    candidate within r1 bits; the hash alone within r0."""
    verified = (a["cand_dist"] <= r1) & (a["cand_keys"] | (a["cand_structure"] >= t))
    return (a["nearest"] <= r0) | verified.any(axis=1)


def inliers_or_structure_rule(a, r0: int, r1: int, t: float, k: int = 80):
    """verify.py's default rule (aligned=False): at least k inliers, or align.py's structure
    score at least t, for a candidate within r1 bits; the hash alone within r0."""
    verified = (a["cand_dist"] <= r1) & ((a["cand_inliers"] >= k) | (a["cand_structure"] >= t))
    return (a["nearest"] <= r0) | verified.any(axis=1)


def structure_only_rule(a, r0: int, r1: int, t: float):
    """align.py's structure score alone for a candidate within r1 bits; the hash within r0."""
    verified = (a["cand_dist"] <= r1) & (a["cand_structure"] >= t)
    return (a["nearest"] <= r0) | verified.any(axis=1)


STRUCTURE_GRID = [
    (r0, r1, t / 1000)
    for r0, r1, t in itertools.product(
        range(0, 50, 2), range(24, CANDIDATE_RADIUS + 1, 4), range(900, 1000, 5)
    )
    if r1 > r0
]
VERIFY_GRID = [
    (r0, r1, t)
    for r0, r1, t in itertools.product(
        range(0, 50, 2),
        range(24, CANDIDATE_RADIUS + 1, 4),
        (6, 8, 10, 12, 14, 16, 18, 20, 24, 28, 32, 40, 50, 60, 80, 100, 130),
    )
    if r1 > r0
]
ALIGNED_GRID = [
    (r0, r1, t / 100)
    for r0, r1, t in itertools.product(
        range(0, 50, 2), range(24, CANDIDATE_RADIUS + 1, 4), range(72, 98, 2)
    )
    if r1 > r0
]
# name: (candidate source, rule, parameter grid)
LEVERS = {
    f"build as shipped (radius {LEAK_RADIUS}, not re-tuned)": (
        "build",
        hash_rule,
        [(LEAK_RADIUS,)],
    ),
    f"build --leak-verify orb as shipped ({LEAK_RADIUS}, {VERIFY_RADIUS} bits, edge threshold "
    f"{LEAK_MIN_SIMILARITY}; not re-tuned)": (
        "build+multi",
        aligned_rule,
        [(LEAK_RADIUS, VERIFY_RADIUS, LEAK_MIN_SIMILARITY)],
    ),
    "build --leak-verify orb as shipped before (38, 44 bits, verify.py's 0.72)": (
        "build+multi",
        aligned_rule,
        [(38, 44, VerifyConfig.min_similarity)],
    ),
    "hash radius re-chosen": (
        "build",
        hash_rule,
        [(r,) for r in range(0, CANDIDATE_RADIUS + 1, 2)],
    ),
    "hash + ORB verification": ("build", verify_rule, VERIFY_GRID),
    "build hash radius + --leak-verify's rule, radii and edge threshold re-chosen": (
        "build+multi",
        aligned_rule,
        ALIGNED_GRID,
    ),
    "hash + keypoints or searched structure (align.py)": (
        "build+multi",
        structure_rule,
        STRUCTURE_GRID,
    ),
    "hash + 80 inliers or searched structure (no edge check)": (
        "build+multi",
        inliers_or_structure_rule,
        STRUCTURE_GRID,
    ),
    "hash + searched structure alone": ("build+multi", structure_only_rule, STRUCTURE_GRID),
    "multi-crop/rotation eval variants, hash only": (
        "multi",
        hash_rule,
        [(r,) for r in range(0, CANDIDATE_RADIUS + 1, 2)],
    ),
    "multi-crop/rotation eval variants + ORB verification": ("multi", verify_rule, VERIFY_GRID),
    "build hash radius + ORB verification of multi-variant candidates": (
        "build+multi",
        verify_rule,
        VERIFY_GRID,
    ),
}


def score(a, flagged) -> tuple[float, float]:
    copy = a["copy"]
    return flagged[copy].mean(), flagged[~copy].mean()


def choose(a, rule, grid):
    """Parameters of best recall on `a`'s copies at FP <= FP_BUDGET (ties: fewer false
    positives, then the earlier, cheaper grid point); None when none stays in budget."""
    best, best_key = None, None
    for params in grid:
        recall, fp = score(a, rule(a, *params))
        if fp > FP_BUDGET:
            continue
        key = (recall, -fp)
        if best_key is None or key > best_key:
            best, best_key = params, key
    return best


def report(splits: dict, levers=None) -> None:
    """One table per lever: per-edit recall on the report half, random and worst settings, both
    directions; the false positives and the thresholds (chosen on the other half)."""
    structure = all(getattr(split, "structure", True) for split in splits.values())
    for name, (source, rule, grid) in (levers or LEVERS).items():
        if not structure and rule in (
            structure_rule,
            inliers_or_structure_rule,
            structure_only_rule,
        ):
            print(f"\n== {name} ==\n(not measured: run without --skip-structure)")
            continue
        arrays = {s: split.arrays(source) for s, split in splits.items()}
        cols = []
        for tune, shown in ((STYLES[0], STYLES[1]), (STYLES[1], STYLES[0])):
            params = choose(arrays[tune], rule, grid)
            cols.append((tune, shown, params, rule(arrays[shown], *params) if params else None))
        print(f"\n== {name} ==")
        print(f"{'':14s}" + "".join(f" | eval {s:7s} tuned on {t:7s}" for t, s, _, _ in cols))
        print(f"{'edit':14s}" + " | {:>14s} {:>14s}".format("random", "worst") * len(cols))
        for edit in EDITS:
            cells = []
            for _, shown, _, flagged in cols:
                a = arrays[shown]
                for worst in (False, True):
                    sel = (a["edit"] == edit) & (a["worst"] == worst)
                    cells.append(f"{flagged[sel].mean():14.3f}" if flagged is not None else "-")
            print(f"{edit:14s} | " + " | ".join(" ".join(cells[i : i + 2]) for i in (0, 2)))
        for tune, shown, params, flagged in cols:
            if flagged is None:
                print(f"eval {shown}: no parameters within FP {100 * FP_BUDGET:.1f}% on {tune}")
                continue
            a = arrays[shown]
            recall, fp = score(a, flagged)
            t_recall, t_fp = score(arrays[tune], rule(arrays[tune], *params))
            n_fp, n_neg = int(flagged[~a["copy"]].sum()), int((~a["copy"]).sum())
            print(
                f"eval {shown}: recall {recall:.4f} on {int(a['copy'].sum())} copies, "
                f"FP {100 * fp:.2f}% ({n_fp}/{n_neg}) | params {params} chosen on {tune}: "
                f"recall {t_recall:.4f}, FP {100 * t_fp:.2f}% there"
            )
            if rule is not hash_rule:
                pairs = (a["cand_dist"] <= params[1]).sum(axis=1)
                print(f"  verified pairs per pool image at r1={params[1]}: {pairs.mean():.2f}")


def cost(splits: dict) -> None:
    print("\n== cost (process CPU seconds, one core) ==")
    for style, split in splits.items():
        parts = []
        for stage, seconds in split.seconds.items():
            n = split.counts[stage]
            parts.append(f"{stage}: {1000 * seconds / max(n, 1):.2f} ms x {n}")
        print(f"eval {style}: " + "; ".join(parts))
        for source in SOURCES:
            a = split.arrays(source)
            live = (a["cand_dist"] <= CANDIDATE_RADIUS).sum(axis=1)
            print(
                f"  {source} candidates per pool image within {CANDIDATE_RADIUS} bits (at most "
                f"3): {live.mean():.2f} all, {live[~a['copy']].mean():.2f} on hard negatives"
            )
            found = a["cand_source"].any(axis=1)
            per_edit = ", ".join(f"{e} {found[a['edit'] == e].mean():.2f}" for e in EDITS)
            print(f"  {source}: copies whose original is a candidate (ceiling): {per_edit}")
