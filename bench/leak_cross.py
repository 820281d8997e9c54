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
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from leak_edits import EDITS, composite

from pipeline.dedup.evalsets import hash_eval_sets
from pipeline.dedup.hashes import (
    bits_to_hex,
    hex_to_codes,
    image_hashes,
    phash_bits,
    to_gray,
    trim_borders,
)
from pipeline.dedup.leaks import EvalIndex, LeakConfig
from pipeline.dedup.verify import VerifyConfig, eval_features, features, match

STYLES = ("google", "twitter")
CANDIDATE_RADIUS = 112  # bits of 256: the widest hash radius whose pairs are verified
N_CANDIDATES = 3  # eval images verified per pool image, nearest first
KNN = 160  # nearest eval variants fetched per hash kind (an emoji has 4 + 40 variants)
MULTI_KNN = 600  # the same for the multi variants (up to 176 per emoji)
MULTI_CROPS = (0.10, 0.18)  # of each side; the build's variants crop 6%
MULTI_ANGLES = (-10.0, -5.0, 5.0, 10.0)  # degrees
SOURCES = ("build", "multi")
FP_BUDGET = 0.003  # false positives on the hard negatives, the bound
NEGATIVE = "hard_negative"


@dataclass
class Split:
    """Per pool image of one direction: what it is and what each stage says about it. Two
    candidate sources, each with its nearest distance and N_CANDIDATES candidate pairs:
    'build' (the eval variants the build hashes today) and 'multi' (those plus MULTI_CROPS
    crops and MULTI_ANGLES rotations of every eval image, bench/leak_cross.py's lever)."""

    style: str  # the eval set's style
    edit: list = field(default_factory=list)  # edit name or NEGATIVE
    worst: list = field(default_factory=list)  # edit at its worst setting
    nearest: dict = field(default_factory=lambda: {s: [] for s in SOURCES})  # bits
    cand_dist: dict = field(default_factory=lambda: {s: [] for s in SOURCES})  # 257 = none
    cand_inliers: dict = field(default_factory=lambda: {s: [] for s in SOURCES})  # -1 = none
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
            "cand_source": grid(self.cand_source),
        }

    def tick(self, stage: str, started: float, n: int) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.process_time() - started
        self.counts[stage] = self.counts.get(stage, 0) + n


def load_rows(emoji_dir: Path, limit: int | None) -> list[dict]:
    rows = [json.loads(line) for line in (emoji_dir / "emoji.jsonl").open(encoding="utf-8")]
    rows = [r for r in rows if all((emoji_dir / s / r["image"]).exists() for s in STYLES)]
    return rows[:limit] if limit else rows


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


def multi_variants(image) -> list[str]:
    """phash256, whole and trimmed, of MULTI_CROPS crops (corners, edge centres, centre) and
    MULTI_ANGLES rotations of an eval image and of its mirror: deeper crops and turns than the
    build's variants reach. Eval side only: the pool pays nothing."""
    from PIL import Image, ImageOps

    gray = to_gray(composite(image))
    w, h = gray.size
    out = []
    for g in (gray, ImageOps.mirror(gray)):
        variants = [g.rotate(a, Image.BICUBIC, expand=True, fillcolor=255) for a in MULTI_ANGLES]
        for f in MULTI_CROPS:
            cw, ch = round(w * (1 - f)), round(h * (1 - f))
            variants += [
                g.crop((x, y, x + cw, y + ch))
                for x in (0, (w - cw) // 2, w - cw)
                for y in (0, (h - ch) // 2, h - ch)
            ]
        for v in variants:
            out.append(bits_to_hex(phash_bits(v, 16)))
            trimmed = trim_borders(v)
            if trimmed is not v:
                out.append(bits_to_hex(phash_bits(trimmed, 16)))
    return out


class Candidates:
    """Nearest eval images of pool hashes: the build's EvalIndex variants, and those plus the
    multi_variants of every eval image."""

    def __init__(self, eval_table, multi: dict[int, list[str]]):
        import faiss

        self.index = EvalIndex(eval_table, LeakConfig(index="flat"))
        hexes = [h for row in sorted(multi) for h in multi[row]]
        self.multi_owners = np.array([row for row in sorted(multi) for _ in multi[row]])
        self.multi = faiss.IndexBinaryFlat(256)
        self.multi.add(hex_to_codes(hexes, 256)[0])

    def _knn(self, index, owners, codes, k):
        d, ids = index.search(codes, min(k, index.ntotal))
        return np.where(ids >= 0, owners[np.maximum(ids, 0)], -1), np.where(ids >= 0, d, 257)

    def search(self, hashes: list[dict]) -> dict:
        """{source: (nearest distance, n×N_CANDIDATES eval rows, their distances)}."""
        found = []  # (rows, dists) blocks, build first
        for kind, _, owners in self.index.kinds:
            index = self.index.indexes[[k for k, _, _ in self.index.kinds].index(kind)]
            codes, _ = hex_to_codes([h[kind] for h in hashes], 256)
            found.append(self._knn(index, owners, codes, KNN))
        n_build = len(found)
        for kind, _, _ in self.index.kinds:
            codes, _ = hex_to_codes([h[kind] for h in hashes], 256)
            found.append(self._knn(self.multi, self.multi_owners, codes, MULTI_KNN))
        out = {}
        for source, blocks in (("build", found[:n_build]), ("multi", found)):
            rows = np.concatenate([b[0] for b in blocks], axis=1)
            dists = np.concatenate([b[1] for b in blocks], axis=1)
            out[source] = (dists.min(axis=1), *_top_owners(rows, dists))
        return out


def _top_owners(rows, dists):
    """The N_CANDIDATES nearest distinct eval rows within CANDIDATE_RADIUS, per pool image."""
    n = rows.shape[0]
    out_rows = np.full((n, N_CANDIDATES), -1, dtype=np.int64)
    out_dist = np.full((n, N_CANDIDATES), 257, dtype=np.int64)
    for i in range(n):
        seen: list[int] = []
        for j in np.argsort(dists[i], kind="stable"):
            if dists[i, j] > CANDIDATE_RADIUS or len(seen) == N_CANDIDATES:
                break
            if rows[i, j] >= 0 and rows[i, j] not in seen:
                out_rows[i, len(seen)], out_dist[i, len(seen)] = rows[i, j], dists[i, j]
                seen.append(int(rows[i, j]))
    return out_rows, out_dist


def run_split(emoji_dir: Path, rows, style: str, seed: int, vconfig: VerifyConfig) -> Split:
    """Make, hash, search and verify the pool of one direction (eval set = `style`)."""
    from PIL import Image

    split = Split(style)
    t0 = time.process_time()
    table, eval_row = eval_table_for(emoji_dir, rows, style)
    split.tick("eval hashes", t0, len(rows))
    t0 = time.process_time()
    multi = {}
    for r, row in zip(rows, eval_row, strict=True):
        with Image.open(emoji_dir / style / r["image"]) as im:
            multi[int(row)] = multi_variants(im)
    split.tick("eval multi-variant hashes", t0, len(rows))
    search = Candidates(table, multi)
    t0 = time.process_time()
    originals, targets = [], {}
    for r, row in zip(rows, eval_row, strict=True):
        with Image.open(emoji_dir / style / r["image"]) as im:
            originals.append(composite(im))
            targets[int(row)] = eval_features(im, vconfig)
    split.tick("eval features", t0, len(rows))
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
        images = [make(i, rng) for i in range(len(rows))]
        _verify_block(split, search, targets, images, eval_row, name, worst, vconfig)
    return split


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
        for source, (nearest, cand_rows, cand_dist) in found.items():
            for row in cand_rows[i]:
                if row < 0 or int(row) in inliers:
                    continue
                if feats is None:
                    t0 = time.process_time()
                    feats = features(gray, vconfig)
                    split.tick("pool features", t0, 1)
                t0 = time.process_time()
                inliers[int(row)] = match(feats, targets[int(row)], vconfig).inliers
                split.tick("pair verification", t0, 1)
            split.nearest[source].append(int(nearest[i]))
            split.cand_dist[source].extend(int(d) for d in cand_dist[i])
            split.cand_inliers[source].extend(inliers.get(int(r), -1) for r in cand_rows[i])
            split.cand_source[source].extend(bool(r == sources[i]) for r in cand_rows[i])


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
