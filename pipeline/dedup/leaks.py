"""Eval-set leak detection: which pool images are copies of an eval image.

A pool image carries two 256-bit hashes (hashes.py): `phash256` of the whole image and
`phash256_trim` after trimming uniform borders. An eval image carries the same two, each for
several variants (evalsets.py): the whole image and its mirror; trimmed, the whole image, nine
6% crops and the mirrors of all ten. The decision rule: a pool image is a copy of the eval image
with the nearest variant, if that Hamming distance, taken as the minimum over both hash kinds,
is at most LEAK_RADIUS bits.

FAISS binary indexes hold the eval variants (the small side); the pool images are the queries,
one nearest neighbour each. Flat (exact) search while pool × variants stays below
FLAT_MAX_COMPARISONS or a GPU is there (faiss-gpu), an inverted-file index (IndexBinaryIVF,
approximate: a copy is missed when its nearest variant lies in a list the query does not visit)
beyond.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from pipeline.dedup.hashes import hex_to_codes
from pipeline.dedup.leakembed import EmbedConfig
from pipeline.dedup.verify import VerifyConfig, how_verified

log = logging.getLogger(__name__)

# Bits of 256. On bench/leaks.py (1911 Noto emoji as the eval set; the pool: a copy of each under
# 7 transformations, seed 1, and the same 1911 emoji drawn by Twitter's artists as hard
# negatives): 38 bits gave recall 0.983 on copies at 0.21% false positives (4 of 1911); 0.10% and
# 0.31% on the even and odd halves of the emoji. 40 bits: recall 0.985, fp 0.31% (0.52% on one
# half). Distances between these balanced hashes are even, so 38 and 39 decide alike.
LEAK_RADIUS = 38
# Pairs compared above which `auto` leaves the flat index for IVF (about a minute per core).
FLAT_MAX_COMPARISONS = 2e10
# Verification (leakverify.py): the farthest candidate verified, and the aligned edge check's
# threshold for a leak (stricter than verify.py's 0.72, which near-duplicate clustering keeps).
# bench/leaks.py --limit 600 --skip-structure (a fixed random sample of the emoji), cross-style,
# lever "radii and edge threshold re-chosen": tuned on twitter it chose (40, 100 bits, 0.94),
# recall 0.875 on google at 0.17% false positives (0.789 and 0.17% with the earlier 44 bits and
# 0.72); tuned on google it chose (36, 96, 0.92), 0.838 on twitter at 0.67% (the earlier: 0.706
# at 0.50%). Shipped: 96 bits and 0.94, one choice's radius and the other's (stricter)
# threshold, the hash radius staying 38: 0.873 / 0.816 at 0.17% / 0.17%, figures that are not
# strictly held out (the two above are). At 96 bits nearly every pool image has its 3
# candidates verified. bench/leak_oracle.py: at 0.94 the verifier passes none of the 600
# same-concept drawings even when they are proposed (at 0.72: 1.8% / 4.0%).
VERIFY_RADIUS = 96  # bits of 256
LEAK_MIN_SIMILARITY = 0.94
VERIFY_CANDIDATES = 3  # eval images verified per pool image, nearest first
QUERY_BATCH = 16_384
CANDIDATE_KNN = 16  # neighbours fetched per candidate wanted (an eval image has 2 to 40 variants)
KINDS = (("phash256", "phash256_variants"), ("phash256_trim", "phash256_trim_variants"))
INDEXES = ("auto", "flat", "ivf")


def leak_verify_config(detector: str) -> VerifyConfig:
    """verify.py's settings for the leak check: `detector`, the leak's edge threshold."""
    return VerifyConfig(detector=detector, min_similarity=LEAK_MIN_SIMILARITY)


@dataclass
class LeakConfig:
    radius: int = LEAK_RADIUS  # bits of 256: nearer is a copy on the hashes' word alone
    index: str = "auto"  # 'flat' (exact), 'ivf' (approximate, for large pools) or 'auto'
    nprobe: int = 32  # IVF lists visited per query
    flat_max_comparisons: float = FLAT_MAX_COMPARISONS
    # The verification stage (leakverify.py), None: off. Candidates beyond `radius` and within
    # `verify_radius` bits, at most `verify_candidates` eval images per pool image, are copies
    # when verify.match calls their pair a copy (keypoints, or the searched alignment).
    verify: VerifyConfig | None = None
    verify_radius: int = VERIFY_RADIUS
    verify_candidates: int = VERIFY_CANDIDATES
    # The second candidate source (leakembed.py), None: off; needs `verify`, which decides.
    embed: EmbedConfig | None = None

    def __post_init__(self):
        if not isinstance(self.radius, int) or not 0 <= self.radius <= 128:
            raise ValueError(f"leak radius must be an integer 0..128 bits, not {self.radius!r}")
        if self.index not in INDEXES:
            raise ValueError(f"leak index must be one of {INDEXES}, not {self.index!r}")
        if not isinstance(self.nprobe, int) or self.nprobe < 1:
            raise ValueError(f"nprobe must be a positive integer, not {self.nprobe!r}")
        r = self.verify_radius
        if not isinstance(r, int) or not self.radius <= r <= 128:
            raise ValueError(f"verify radius must be an integer {self.radius}..128 bits, not {r!r}")
        if not isinstance(self.verify_candidates, int) or self.verify_candidates < 1:
            raise ValueError("verify_candidates must be a positive integer")
        if self.embed is not None and self.verify is None:
            raise ValueError("embedding candidates need the verification stage (verify)")


@dataclass(frozen=True)
class Leak:
    uid: str  # the pool image
    eval_id: str  # "<eval set>/<class>/<file>"
    distance: int  # bits of 256, of the nearest eval variant (embedding-proposed: whole images)
    kind: str  # 'phash256' or 'phash256_trim': which hash matched; the detector when verified
    inliers: int | None = None  # of the verified pair; None: the hashes decided alone
    structure: float | None = None  # align.py's score when the searched alignment decided
    cosine: float | None = None  # of the embeddings, when only they proposed the pair


def leak_reason(leak: Leak) -> str:
    """The row's `error` text for a leak."""
    if leak.inliers is None:
        return f"copy of eval image {leak.eval_id} ({leak.distance}/256 bits apart)"
    how = how_verified(leak.inliers, leak.structure, leak.kind)
    if leak.cosine is not None:
        how += f"; proposed by the image embeddings (cosine {leak.cosine:.3f})"
    return f"copy of eval image {leak.eval_id} ({leak.distance}/256 bits apart; {how})"


def _gpu_count() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "GpuIndexBinaryFlat") else 0


def _gpu(index, flat: bool):
    """The same index on the GPU when faiss-gpu is installed and sees one (flat only: FAISS
    has no GPU IVF for binary codes; exact search on a GPU is fast enough anyway)."""
    import faiss

    if not flat or _gpu_count() < 1:
        return index
    # Copies the codes of the CPU index (GpuIndexBinaryFlat's copy constructor).
    resources = faiss.StandardGpuResources()
    gpu = faiss.GpuIndexBinaryFlat(resources, index)
    gpu.referenced_objects = [resources]  # keep the resources alive as long as the index
    return gpu


def _build_index(codes: np.ndarray, flat: bool, nprobe: int):
    import faiss

    dim = codes.shape[1] * 8
    if flat:
        index = faiss.IndexBinaryFlat(dim)
        index.add(codes)
        return _gpu(index, flat=True)
    # Centroids are a random sample of the codes themselves, not k-means: FAISS trains binary
    # IVF by float k-means on the unpacked bits, minutes for millions of 256-bit codes, and a
    # copy and its original fall to the same nearest sample as they would to a k-means centroid.
    nlist = int(min(65536, max(1, 4 * math.sqrt(codes.shape[0]))))
    rng = np.random.default_rng(0)
    quantizer = faiss.IndexBinaryFlat(dim)
    quantizer.add(codes[rng.choice(codes.shape[0], nlist, replace=False)])
    index = faiss.IndexBinaryIVF(quantizer, dim, nlist)
    index.own_fields = True
    quantizer.this.disown()
    index.is_trained = True
    index.add(codes)
    index.nprobe = min(nprobe, nlist)
    return index


class EvalIndex:
    """FAISS indexes over the hash variants of every eval image of an eval table."""

    def __init__(self, eval_table, config: LeakConfig | None = None, n_queries: int = 0):
        self.config = config or LeakConfig()
        self.table = eval_table
        ok = [e is None for e in eval_table.column("error").to_pylist()]
        self.eval_ids = eval_table.column("eval_id").to_pylist()
        self.kinds = []
        for kind, column in KINDS:
            hexes, owners = [], []
            for row, variants in enumerate(eval_table.column(column).to_pylist()):
                if ok[row] and variants:
                    hexes += variants
                    owners += [row] * len(variants)
            codes, valid = hex_to_codes(hexes, 256)
            codes, owners = codes[valid], np.asarray(owners, dtype=np.int64)[valid]
            self.kinds.append((kind, codes, owners))
        total = sum(codes.shape[0] for _, codes, _ in self.kinds)
        flat = self.config.index == "flat" or (
            self.config.index == "auto"
            and (total * n_queries <= self.config.flat_max_comparisons or _gpu_count() > 0)
        )
        self.flat = flat
        self.indexes = [
            _build_index(codes, flat, self.config.nprobe) if codes.shape[0] else None
            for _, codes, _ in self.kinds
        ]
        log.info(
            "eval index: %d images, %d variant hashes, %s",
            len(self.eval_ids),
            total,
            "flat" if flat else "ivf",
        )

    def nearest(self, pool: dict[str, list]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(eval row, distance, kind number) of the nearest eval variant for every pool image.
        `pool` maps each hash kind to its hex strings (None where missing); -1 / 257 where a
        pool image has no valid hash of either kind."""
        n = len(pool[KINDS[0][0]])
        best_row = np.full(n, -1, dtype=np.int64)
        best_dist = np.full(n, 257, dtype=np.int64)
        best_kind = np.full(n, -1, dtype=np.int64)
        for k, ((kind, _, owners), index) in enumerate(zip(self.kinds, self.indexes, strict=True)):
            if index is None:
                continue
            codes, valid = hex_to_codes(pool[kind], 256)
            rows = np.flatnonzero(valid)
            for start in range(0, rows.size, QUERY_BATCH):
                batch = rows[start : start + QUERY_BATCH]
                dist, ids = index.search(codes[batch], 1)
                dist, ids = dist[:, 0].astype(np.int64), ids[:, 0]
                better = (ids >= 0) & (dist < best_dist[batch])
                best_dist[batch[better]] = dist[better]
                best_row[batch[better]] = owners[ids[better]]
                best_kind[batch[better]] = k
        return best_row, best_dist, best_kind

    def candidates(self, pool: dict[str, list], radius: int, n: int, extra=None) -> list:
        """Per pool image, up to `n` distinct eval images whose nearest variant lies within
        `radius` bits, nearest first: a list of (eval row, distance) pairs. `extra`: (FAISS
        index, owner row of each entry) of more variants (leakverify's candidate variants),
        searched with both hash kinds. The variants of one eval image crowd together, so CANDIDATE_KNN * n
        neighbours are fetched per search."""
        searches = [
            (pool[kind], index, owners)
            for (kind, _, owners), index in zip(self.kinds, self.indexes, strict=True)
            if index is not None
        ]
        if extra is not None and extra[0].ntotal:
            searches += [(pool[kind], extra[0], extra[1]) for kind, _ in KINDS]
        found: list[dict[int, int]] = [{} for _ in pool[KINDS[0][0]]]
        for hexes, index, owners in searches:
            codes, valid = hex_to_codes(hexes, 256)
            rows, k = np.flatnonzero(valid), min(CANDIDATE_KNN * n, index.ntotal)
            for start in range(0, rows.size, QUERY_BATCH):
                batch = rows[start : start + QUERY_BATCH]
                dist, ids = index.search(codes[batch], k)
                for i, d_row, id_row in zip(batch.tolist(), dist, ids, strict=True):
                    near = found[i]
                    for d, j in zip(d_row.tolist(), id_row.tolist(), strict=True):
                        if j < 0 or d > radius:
                            break  # FAISS returns neighbours nearest first
                        owner = int(owners[j])
                        if d < near.get(owner, 257):
                            near[owner] = d
        # Ties on distance go to the earlier eval row, so every executor proposes alike.
        return [sorted(near.items(), key=lambda item: (item[1], item[0]))[:n] for near in found]


def find_leaks(
    eval_table,
    uids,
    phash256,
    phash256_trim,
    config: LeakConfig | None = None,
    images=None,
    eval_features=None,
    eval_embeddings=None,
):
    """Leak per pool image that copies an eval image (list of Leak, in pool order).
    `uids`, `phash256`, `phash256_trim`: the pool's columns (hex strings, None where missing).
    With `config.verify`: `images(indexes)` gives {pool index: encoded bytes} of the pool images
    asked for, `eval_features` a leakverify.EvalFeatures (None: computed from the eval images);
    with `config.embed` too, `eval_embeddings` a leakembed.EvalEmbeddings (None: computed)."""
    config = config or LeakConfig()
    uids = list(uids)
    pool = {"phash256": list(phash256), "phash256_trim": list(phash256_trim)}
    if not (len(uids) == len(pool["phash256"]) == len(pool["phash256_trim"])):
        raise ValueError("uids, phash256 and phash256_trim must have the same length")
    if not uids or eval_table.num_rows == 0:
        return []
    index = EvalIndex(eval_table, config, n_queries=len(uids))
    rows, dists, kinds = index.nearest(pool)
    hashed = (rows >= 0) & (dists <= config.radius)
    leaks = {
        i: Leak(uids[i], index.eval_ids[rows[i]], int(dists[i]), KINDS[kinds[i]][0])
        for i in np.flatnonzero(hashed).tolist()
    }
    if config.verify is not None:
        if images is None:
            raise ValueError("leak verification needs the pool images")
        leaks.update(
            _verified(
                index,
                pool,
                ~hashed & (rows >= 0),
                config,
                images,
                (eval_features, eval_embeddings),
                uids,
            )
        )
    return [leaks[i] for i in sorted(leaks)]


def _verified(index, pool, wanted, config, images, stores, uids) -> dict[int, Leak]:
    """Leaks the verification stage finds among the pool images in `wanted` (bool mask);
    `stores`: (leakverify.EvalFeatures, leakembed.EvalEmbeddings), None where not given."""
    from pipeline.dedup.leakverify import EvalFeatures, verify_pairs

    todo = np.flatnonzero(wanted)
    sub = {kind: [hexes[i] for i in todo] for kind, hexes in pool.items()}
    store = stores[0] or EvalFeatures(index.table, config.verify)
    found = index.candidates(
        sub,
        config.verify_radius,
        config.verify_candidates,
        extra=store.variant_index(config.nprobe),
    )
    cosines: dict[tuple[int, int], float] = {}
    if config.embed is not None:
        from pipeline.dedup.leakembed import with_embedding_candidates

        found, cosines = with_embedding_candidates(index, pool, todo, found, images, config, stores)
    pairs = [(int(i), row) for i, near in zip(todo, found, strict=True) for row, _ in near]
    verdicts = verify_pairs(pairs, images, store, config.verify)
    out = {}
    for i, near in zip(todo.tolist(), found, strict=True):
        leak = _best_verified(i, near, verdicts, cosines, uids[i], index.eval_ids, config)
        if leak is not None:
            out[i] = leak
    log.info(
        "leak verification: %d pairs over %d pool images (%d proposed by embeddings only), "
        "%d copies",
        len(pairs),
        len(todo),
        len(cosines),
        len(out),
    )
    return out


def _best_verified(i, near, verdicts, cosines, uid, eval_ids, config) -> Leak | None:
    """Of pool image i's candidate pairs that verify.match called copies, the one with the most
    inliers, then the best structure, then the nearer hash: the eval image it copies."""
    scored = [
        (v.inliers, v.structure, -d, row, v) for row, d in near if (v := verdicts[(i, row)]).copy
    ]
    if not scored:
        return None
    count, _, d, row, v = max(scored, key=lambda t: t[:4])
    structure = None if v.structure < 0 else round(v.structure, 4)
    cosine = cosines.get((i, row))
    return Leak(
        uid,
        eval_ids[row],
        -d,
        config.verify.detector,
        count,
        structure,
        None if cosine is None else round(cosine, 4),
    )


def overlap_table(eval_table, leaks):
    """One row per eval image: eval_id, eval_set, class, file, has_copy (null for an eval image
    that could not be read), copies (pool images that copy it), example_uid (the closest copy;
    ties: smallest uid), min_distance (bits of 256), error."""
    import pyarrow as pa

    best: dict[str, tuple[int, str]] = {}
    counts: dict[str, int] = {}
    for leak in leaks:
        counts[leak.eval_id] = counts.get(leak.eval_id, 0) + 1
        key = (leak.distance, leak.uid)
        if leak.eval_id not in best or key < best[leak.eval_id]:
            best[leak.eval_id] = key
    ids = eval_table.column("eval_id").to_pylist()
    # An eval image that could not be read was not checked: has_copy null (trainer's overlap
    # split counts it in All only).
    checked = [e is None for e in eval_table.column("error").to_pylist()]
    return pa.table(
        {
            "eval_id": pa.array(ids, pa.string()),
            "eval_set": eval_table.column("eval_set"),
            "class": eval_table.column("class"),
            "file": eval_table.column("file"),
            "has_copy": pa.array(
                [(i in counts) if ok else None for i, ok in zip(ids, checked, strict=True)],
                pa.bool_(),
            ),
            "copies": pa.array([counts.get(i, 0) for i in ids], pa.int64()),
            "example_uid": pa.array([best[i][1] if i in best else None for i in ids], pa.string()),
            "min_distance": pa.array([best[i][0] if i in best else None for i in ids], pa.int32()),
            "error": eval_table.column("error"),
        }
    )


def write_overlap(path, eval_table, leaks):
    """Write overlap_table to `path` (DIR/overlap.parquet), atomically; returns the path."""
    from manifests.layout import write_parquet_atomic

    return write_parquet_atomic(overlap_table(eval_table, leaks), path)


def overlap_summary(overlap) -> list[dict]:
    """Per eval set: images checked, images with a copy in the pool, and that share in percent."""
    sets: dict[str, list[int]] = {}
    for name, has_copy in zip(
        overlap.column("eval_set").to_pylist(), overlap.column("has_copy").to_pylist(), strict=True
    ):
        counts = sets.setdefault(name, [0, 0])
        counts[0] += has_copy is not None
        counts[1] += bool(has_copy)
    return [
        {"eval_set": name, "images": n, "with_copy": k, "overlap_percent": 100.0 * k / max(n, 1)}
        for name, (n, k) in sorted(sets.items())
    ]


EVAL_THUMB_PX = 384  # the explorer's detail size (pipeline.serve.images.SIZES["l"])


def write_eval_thumbnails(path, eval_table, leaks) -> int:
    """DIR/eval_thumbs.parquet: a JPEG thumbnail (eval_id, jpg) of every eval image some pool
    image copies, so `pipeline serve` shows a leak beside its eval image while reading nothing
    outside DIR. Few rows: copies of eval images. Returns the number written."""
    import pyarrow as pa

    from manifests import storage
    from manifests.layout import write_parquet_atomic
    from pipeline.report.thumbs import thumbnail_jpeg

    copied = {leak.eval_id for leak in leaks}
    rows = []
    for record in eval_table.select(["eval_id", "path"]).to_pylist():
        if record["eval_id"] not in copied:
            continue
        try:
            data = storage.location(record["path"]).read_bytes()
        except OSError:  # moved since the build hashed it: the page shows its name only
            continue
        jpeg = thumbnail_jpeg(data, EVAL_THUMB_PX)
        if jpeg is not None:
            rows.append({"eval_id": record["eval_id"], "jpg": jpeg})
    table = pa.Table.from_pylist(
        rows, schema=pa.schema([("eval_id", pa.string()), ("jpg", pa.binary())])
    )
    write_parquet_atomic(table, path)
    return len(rows)
