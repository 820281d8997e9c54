"""Cross-style leak benchmark: thresholds tuned on one art style, reported on the other.

A split is one direction: the eval set is one style's emoji (google/ or twitter/); the pool holds a
copy of every eval image under each edit of bench/leak_edits.py, once at a random setting and once
at its worst, and the other style's drawing of the same emoji (a hard negative: same concept, not
a copy). For every pool image the hash stage of the build (pipeline.dedup.leaks.EvalIndex: the
nearest eval variant over phash256 and phash256_trim) gives the nearest distance, and up to
N_CANDIDATES eval images within CANDIDATE_RADIUS bits are kept as candidate pairs; the
verification stage (pipeline.dedup.verify) counts the inliers of each candidate pair.

Each lever's thresholds are chosen on one split (the tuning half: recall on its copies at most
FP_BUDGET false positives on its hard negatives) and reported on the other one, both ways round.
"""

import json
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.dedup.evalsets import hash_eval_sets
from pipeline.dedup.hashes import image_hashes, to_gray
from pipeline.dedup.leaks import KINDS, EvalIndex, LeakConfig
from pipeline.dedup.leakverify import candidate_variants
from pipeline.dedup.verify import VerifyConfig, eval_features, features, match
from pipeline.testing.edits import EDITS, composite

STYLES = ("google", "twitter")
CANDIDATE_RADIUS = 112  # bits of 256: the widest hash radius whose pairs are verified
N_CANDIDATES = 3  # eval images verified per pool image, nearest first
SOURCES = ("build", "multi")
FP_BUDGET = 0.003  # false positives on the hard negatives, the bound
NEGATIVE = "hard_negative"
SAMPLE_SEED = 16  # the emoji sample of --limit: one for every bench and seed


@dataclass
class Split:
    """Per pool image of one direction: what it is and what each stage says about it. Two
    candidate sources, each with its nearest distance and N_CANDIDATES candidate pairs:
    'build' (the eval variants the build hashes today) and 'multi' (those plus the candidate
    variants `--leak-verify` adds: deeper crops and turns, pipeline.dedup.leakverify)."""

    style: str  # the eval set's style
    edit: list = field(default_factory=list)  # edit name or NEGATIVE
    worst: list = field(default_factory=list)  # edit at its worst setting
    nearest: dict = field(default_factory=lambda: {s: [] for s in SOURCES})  # bits
    cand_dist: dict = field(default_factory=lambda: {s: [] for s in SOURCES})  # 257 = none
    cand_inliers: dict = field(default_factory=lambda: {s: [] for s in SOURCES})  # -1 = none
    cand_copy: dict = field(default_factory=lambda: {s: [] for s in SOURCES})  # the verdict
    cand_keys: dict = field(default_factory=lambda: {s: [] for s in SOURCES})  # keypoints' verdict
    # align.py's structure score where the keypoints did not decide; -1: none (or not needed)
    cand_structure: dict = field(default_factory=lambda: {s: [] for s in SOURCES})
    # verify.py's aligned edge correlation (computed from min_inliers_aligned inliers); -1: none
    cand_similarity: dict = field(default_factory=lambda: {s: [] for s in SOURCES})
    structure: bool = True  # align.py's scores computed (False: --skip-structure, all -1)
    cand_source: dict = field(default_factory=lambda: {s: [] for s in SOURCES})  # the original?
    seconds: dict = field(default_factory=dict)  # process seconds per stage
    counts: dict = field(default_factory=dict)  # images/pairs per stage

    def arrays(self, source: str) -> dict:
        """Per-image arrays of one source; 'build+multi': the build's nearest distance (the
        hash-only part of a rule) with the multi source's candidate pairs (the verified part)."""
        hash_source, source = ("build", "multi") if source == "build+multi" else (source, source)

        def grid(values):
            return np.array(values[source]).reshape(-1, N_CANDIDATES)

        edit = np.array(self.edit)
        return {
            "edit": edit,
            "worst": np.array(self.worst),
            "copy": edit != NEGATIVE,
            "nearest": np.array(self.nearest[hash_source]),
            "cand_dist": grid(self.cand_dist),
            "cand_inliers": grid(self.cand_inliers),
            "cand_copy": grid(self.cand_copy).astype(bool),
            "cand_keys": grid(self.cand_keys).astype(bool),
            "cand_structure": grid(self.cand_structure),
            # -1 throughout for a pickle saved before the similarity was recorded
            "cand_similarity": grid(getattr(self, "cand_similarity", None) or self._none()),
            "cand_source": grid(self.cand_source),
        }

    def _none(self) -> dict:
        return {s: [-1.0] * len(v) for s, v in self.cand_dist.items()}

    def tick(self, stage: str, started: float, n: int) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.process_time() - started
        self.counts[stage] = self.counts.get(stage, 0) + n


def load_rows(emoji_dir: Path, limit: int | None) -> list[dict]:
    """The emoji drawn in both styles; with `limit`, a fixed random sample of them (SAMPLE_SEED,
    kept in corpus order). Not the first `limit`: the corpus is sorted by code point, and its
    first 600 are 45% flags (269), the hardest negatives (other artists draw the same design),
    against 14% in the whole corpus."""
    rows = [json.loads(line) for line in (emoji_dir / "emoji.jsonl").open(encoding="utf-8")]
    rows = [r for r in rows if all((emoji_dir / s / r["image"]).exists() for s in STYLES)]
    if not limit or limit >= len(rows):
        return rows
    return [rows[i] for i in sorted(random.Random(SAMPLE_SEED).sample(range(len(rows)), limit))]


def eval_table_for(emoji_dir: Path, rows, style: str):
    """The build's eval table (hash variants) of one style's images, in `rows` order."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / f"emoji_{style}"
        for r in rows:
            cls = (r.get("subcategory") or "other").replace("/", "_").replace(" ", "_")
            dst = root / cls / r["image"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(emoji_dir / style / r["image"], dst)
        table = hash_eval_sets([root])
    by_file = {f: i for i, f in enumerate(table.column("file").to_pylist())}
    return table, np.array([by_file[r["image"]] for r in rows])


class Candidates:
    """The build's candidate search (pipeline.dedup.leaks.EvalIndex.candidates) over the eval
    variants the build hashes ('build') and over those plus leakverify's candidate variants
    ('multi', what `--leak-verify` searches)."""

    def __init__(self, eval_table, variants):
        from pipeline.dedup.hashes import hex_to_codes
        from pipeline.dedup.leaks import _build_index

        self.index = EvalIndex(eval_table, LeakConfig(index="flat"))
        hexes, owners = variants
        codes, valid = hex_to_codes(hexes, 256)
        self.variants = (_build_index(codes[valid], True, 1), owners[valid])  # flat, as a task

    def search(self, hashes: list[dict]) -> dict:
        """{source: (nearest distance, n×N_CANDIDATES eval rows, their distances)}."""
        pool = {kind: [h[kind] for h in hashes] for kind, _ in KINDS}
        nearest = self.index.nearest(pool)[1]
        out = {}
        for source, extra in (("build", None), ("multi", self.variants)):
            found = self.index.candidates(pool, CANDIDATE_RADIUS, N_CANDIDATES, extra=extra)
            rows = np.full((len(hashes), N_CANDIDATES), -1, dtype=np.int64)
            dists = np.full((len(hashes), N_CANDIDATES), 257, dtype=np.int64)
            for i, near in enumerate(found):
                for j, (row, d) in enumerate(near):
                    rows[i, j], dists[i, j] = row, d
            out[source] = (np.minimum(nearest, dists[:, 0]), rows, dists)
        return out


def run_split(
    emoji_dir: Path, rows, style: str, seed: int, vconfig: VerifyConfig, structure: bool = True
) -> Split:
    """Make, hash, search and verify the pool of one direction (eval set = `style`); with
    `structure` False, align.py's search (about 19 of the 22 ms a pair costs) is left out."""
    import cv2
    from PIL import Image

    cv2.setNumThreads(1)  # one core per direction: the figures are per core

    split = Split(style, structure=structure)
    t0 = time.process_time()
    table, eval_row = eval_table_for(emoji_dir, rows, style)
    split.tick("eval hashes", t0, len(rows))
    t0 = time.process_time()
    hexes, owners = [], []
    for r, row in zip(rows, eval_row, strict=True):
        with Image.open(emoji_dir / style / r["image"]) as im:
            variants = candidate_variants(im)
        hexes += variants
        owners += [int(row)] * len(variants)
    split.tick("eval multi-variant hashes", t0, len(rows))
    search = Candidates(table, (hexes, np.array(owners, dtype=np.int64)))
    t0 = time.process_time()
    originals, targets = [], {}
    for r, row in zip(rows, eval_row, strict=True):
        with Image.open(emoji_dir / style / r["image"]) as im:
            originals.append(composite(im))
            targets[int(row)] = eval_features(im, vconfig)
    split.tick("eval features", t0, len(rows))
    for name, worst, images in pool_blocks(emoji_dir, rows, style, seed, originals):
        _verify_block(split, search, targets, images, eval_row, name, worst, vconfig)
    return split


def pool_blocks(emoji_dir: Path, rows, style: str, seed: int, originals):
    """The pool of one direction, block by block, as (edit name or NEGATIVE, worst, images):
    the other style's drawings, then every edit of `originals` (the eval images composited)
    at a random and at its worst setting; one random stream per block."""
    from PIL import Image

    other = STYLES[1 - STYLES.index(style)]
    negatives = []
    for r in rows:
        with Image.open(emoji_dir / other / r["image"]) as im:
            im.load()
            negatives.append(im.copy())
    blocks = [(NEGATIVE, False, lambda i, rng: negatives[i])]
    for name, edit in EDITS.items():
        for worst in (False, True):
            blocks.append(
                (name, worst, lambda i, rng, edit=edit, w=worst: edit(originals[i], rng, w))
            )
    for b, (name, worst, make) in enumerate(blocks):
        rng = np.random.default_rng([seed, STYLES.index(style), b])
        yield name, worst, [make(i, rng) for i in range(len(rows))]


def _verify_block(split: Split, search, targets, images, sources, name, worst, vconfig) -> None:
    t0 = time.process_time()
    grays = [to_gray(im) for im in images]  # the hashes' and the verifier's shared preparation
    hashes = [image_hashes(g) for g in grays]
    split.tick("pool hashes", t0, len(images))
    t0 = time.process_time()
    found = search.search(hashes)
    split.tick("candidate search", t0, len(images))
    for i, gray in enumerate(grays):
        split.edit.append(name)
        split.worst.append(worst)
        feats, inliers = None, {}  # one verification per pair, whichever source proposed it
        keyed = {}  # eval row: the keypoints (not the structure) called the pair a copy
        for source, (nearest, cand_rows, cand_dist) in found.items():
            for row in cand_rows[i]:
                if row < 0 or int(row) in inliers:
                    continue
                if feats is None:
                    t0 = time.process_time()
                    feats = features(gray, vconfig)
                    split.tick("pool features", t0, 1)
                t0 = time.process_time()
                verdict = match(feats, targets[int(row)], vconfig)
                split.tick("pair verification", t0, 1)
                keyed[int(row)] = verdict.copy and verdict.structure < 0
                if split.structure:
                    verdict = _with_structure(verdict, feats, targets[int(row)], vconfig)
                inliers[int(row)] = verdict
            split.nearest[source].append(int(nearest[i]))
            split.cand_dist[source].extend(int(d) for d in cand_dist[i])
            verdicts = [inliers.get(int(r)) for r in cand_rows[i]]
            split.cand_inliers[source].extend(v.inliers if v else -1 for v in verdicts)
            split.cand_copy[source].extend(bool(v and v.copy) for v in verdicts)
            split.cand_keys[source].extend(keyed.get(int(r), False) for r in cand_rows[i])
            split.cand_structure[source].extend(v.structure if v else -1.0 for v in verdicts)
            split.cand_similarity[source].extend(v.similarity if v else -1.0 for v in verdicts)
            split.cand_source[source].extend(bool(r == sources[i]) for r in cand_rows[i])


def _with_structure(verdict, feats, targets, vconfig: VerifyConfig):
    """The verdict with align.py's score even where the keypoints decided (match skips it
    there), so that rules which trust the structure alone can be tried on the same pairs."""
    from dataclasses import replace

    from pipeline.dedup.verify import searchable, searched_structure

    if verdict.structure >= 0 or not searchable(feats, targets):
        return verdict
    return replace(verdict, structure=searched_structure(feats, targets, vconfig)[0])


def multi_faiss_timing(n_pool: int, n_eval: int, n_variants: int = 88, sample: int = 65536):
    """The multi-variant lever's extra candidate search at scale: n_eval × n_variants random
    256-bit codes in the build's IVF index, `sample` queries timed, extrapolated to n_pool."""
    from pipeline.dedup.leaks import _build_index

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (n_eval * n_variants, 32), dtype=np.uint8)
    t0 = time.perf_counter()
    index = _build_index(codes, flat=False, nprobe=LeakConfig().nprobe)
    build = time.perf_counter() - t0
    queries = rng.integers(0, 256, (sample, 32), dtype=np.uint8)
    t0 = time.perf_counter()
    for start in range(0, sample, 16384):
        index.search(queries[start : start + 16384], 1)
    search = (time.perf_counter() - t0) * n_pool / sample
    print(
        f"multi variants, ivf, {n_eval:,} eval images x {n_variants} = {codes.shape[0]:,} codes: "
        f"build {build:.1f} s, {n_pool:,} queries x 2 hash kinds {2 * search:.0f} s "
        f"(extrapolated from {sample:,})"
    )
