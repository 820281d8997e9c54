"""The leak check's verification stage: candidate pairs the hashes propose, looked at by geometry.

A pool image whose nearest eval variant lies within the leak radius is a copy on the hashes'
word (leaks.py). Between that radius and `verify_radius`, up to `verify_candidates` eval images
are candidates, and each pair (pool image, eval image) is verified (verify.py: ORB or SIFT
keypoints, one similarity fitted by RANSAC); a pair verify.match calls a copy (enough inliers, or
fewer and the aligned edge check) is a copy of that eval image. Only candidate pairs are
verified, so the cost is the pairs' count (at the shipped 96 bits, nearly always 3 per pool image)
times about 3 ms, plus the features of each pool image that has a candidate.

The eval side's features are computed once per build by the driver and stored in the dataset
(`eval_features.parquet` beside `eval_hashes.parquet`), so a task on any node reads the rows it
needs instead of the eval images, which may sit on the driver's disk only. The single-process
oracle (decide.py) computes the same features from the eval images themselves: ORB and SIFT are
deterministic, so both give the same verdicts.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np

from manifests import storage
from pipeline.dedup.hashes import bits_to_hex, phash_bits, to_gray, trim_borders
from pipeline.dedup.verify import (
    Features,
    Verdict,
    VerifyConfig,
    eval_features,
    features,
    match,
    open_image,
)

log = logging.getLogger(__name__)

FEATURE_ROWS_PER_GROUP = 256  # eval images per row group: a task reads the groups it needs
# Candidate variants (candidate_variants): bench/leak_cross.py's "multi" lever, which raised the
# share of crops whose original is a candidate from 0.43 to 0.98, rotations from 0.37 to 0.99.
CANDIDATE_CROPS = (0.10, 0.18)  # of each side
CANDIDATE_ANGLES = (-10.0, -5.0, 5.0, 10.0)  # degrees
FEATURES_FILE, VARIANTS_FILE = "eval_features.parquet", "eval_variants.parquet"
VARIANT_INDEX_FILE = "eval_variants.faiss"  # the IVF index of the variants, beyond the flat cap
VARIANT_FLAT_MAX = 262_144  # variant codes (about 3,000 eval images) searched flat by each task


def encode_features(feats: Features) -> dict:
    """A Parquet record of Features; the prepared grayscale (the aligned check warps it) as a
    PNG, which flat art compresses several times."""
    import cv2

    d, gray = feats.descriptors, feats.gray
    return {
        "points": feats.points.astype(np.float32).tobytes(),
        "descriptors": None if d is None else d.tobytes(),
        "dtype": None if d is None else str(d.dtype),
        "width": 0 if d is None else int(d.shape[1]),
        "reason": feats.reason,
        "gray": None if gray is None else cv2.imencode(".png", gray)[1].tobytes(),
        "native": int(feats.native),
    }


def decode_features(record: dict) -> Features:
    import cv2

    points = np.frombuffer(record["points"], dtype=np.float32).reshape(-1, 2)
    data = record.get("gray")
    gray = (
        None if data is None else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    )
    native = int(record.get("native") or 0)
    if record["descriptors"] is None:
        return Features(points, None, record["reason"], gray, native)
    d = np.frombuffer(record["descriptors"], dtype=np.dtype(record["dtype"]))
    return Features(points, d.reshape(-1, record["width"]), record["reason"], gray, native)


def candidate_variants(image) -> list[str]:
    """phash256 hexes, whole and trimmed, of deeper crops (CANDIDATE_CROPS of each side, at the
    corners, edge centres and centre) and turns (CANDIDATE_ANGLES) of an eval image and of its
    mirror: where the leak check's own variants (evalsets.py: 6% crops) fall too far from a
    copy cropped 20% or turned 10 degrees to propose it as a candidate. Eval side only."""
    from PIL import Image, ImageOps

    gray = to_gray(image)
    w, h = gray.size
    out = []
    for g in (gray, ImageOps.mirror(gray)):
        variants = [
            g.rotate(a, Image.BICUBIC, expand=True, fillcolor=255) for a in CANDIDATE_ANGLES
        ]
        for f in CANDIDATE_CROPS:
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


def _eval_entry(path: str, config: VerifyConfig) -> tuple[tuple[Features, Features], list[str]]:
    """((image, mirror) features, candidate variants) of one eval image file; an unreadable
    one gets features with a reason and no variants."""
    try:
        data = storage.location(path).read_bytes()
    except OSError as exc:
        data, reason = None, f"eval image: cannot read: {exc}"
    image, reason = open_image(data, "eval") if data is not None else (None, reason)
    if image is None:
        empty = Features(np.zeros((0, 2), np.float32), None, reason)
        return (empty, empty), []
    return eval_features(image, config), candidate_variants(image)


FEATURE_SETTINGS = ("detector", "side", "max_features", "min_side")


def eval_fingerprint(eval_table, made_with: str) -> str:
    """sha256 of what a file derived from the eval images depends on: the eval images (ids,
    hashes, errors) and `made_with` (the settings or the model that derived it)."""
    digest = hashlib.sha256(made_with.encode())
    for column in ("eval_id", "phash256", "error"):
        digest.update(repr(eval_table.column(column).to_pylist()).encode())
    return digest.hexdigest()


def _fingerprint(eval_table, config: VerifyConfig) -> str:
    """What the stored features depend on: the eval images (ids and hashes) and the settings."""
    # Only the settings the features depend on: thresholds (and the search) decide later.
    settings = {k: getattr(config, k) for k in FEATURE_SETTINGS}
    return eval_fingerprint(eval_table, repr(sorted(settings.items())))


def write_eval_verification(eval_table, folder, config: VerifyConfig, nprobe: int = 32) -> None:
    """Store, in `folder`, the features of every readable eval image and of its mirror
    (FEATURES_FILE, read sparsely by the tasks) and its candidate variants (VARIANTS_FILE,
    read whole), unless both were made from the same eval images with the same settings."""
    import pyarrow as pa

    from manifests.layout import write_parquet_atomic

    folder, fingerprint = storage.location(folder), _fingerprint(eval_table, config)
    paths = [folder / FEATURES_FILE, folder / VARIANTS_FILE]
    if all(p.exists() for p in paths) and all(
        (storage.parquet_file(p).schema_arrow.metadata or {}).get(b"fingerprint", b"").decode()
        == fingerprint
        for p in paths
    ):
        return
    records, variants = [], {"row": [], "variants": []}
    sources, errors = (eval_table.column(c).to_pylist() for c in ("path", "error"))
    for row, (source, error) in enumerate(zip(sources, errors, strict=True)):
        if error is None:
            pair, hexes = _eval_entry(source, config)
            for mirror, feats in enumerate(pair):
                records.append({"row": row, "mirror": bool(mirror), **encode_features(feats)})
            variants["row"].append(row)
            variants["variants"].append(hexes)
    meta = {"fingerprint": fingerprint}
    table = pa.Table.from_pylist(records, schema=FEATURES_SCHEMA.with_metadata(meta))
    write_parquet_atomic(table, paths[0], row_group_size=2 * FEATURE_ROWS_PER_GROUP)
    table = pa.table(variants, schema=VARIANTS_SCHEMA.with_metadata(meta))
    write_parquet_atomic(table, paths[1])
    store = EvalFeatures(eval_table, config, folder)
    if sum(map(len, variants["variants"])) > VARIANT_FLAT_MAX:
        import faiss  # an IVF index over millions of codes takes minutes: built once, here

        index, _ = store.variant_index(nprobe)
        (folder / VARIANT_INDEX_FILE).write_bytes(faiss.serialize_index_binary(index).tobytes())
    log.info("eval verification data: %d images, stored in %s", len(records) // 2, folder)


def _schemas():
    import pyarrow as pa

    features_schema = pa.schema(
        [
            ("row", pa.int64()),
            ("mirror", pa.bool_()),
            ("points", pa.binary()),
            ("descriptors", pa.binary()),
            ("dtype", pa.string()),
            ("width", pa.int32()),
            ("reason", pa.string()),
            ("gray", pa.binary()),
            ("native", pa.int32()),
        ]
    )
    return features_schema, pa.schema([("row", pa.int64()), ("variants", pa.list_(pa.string()))])


class EvalFeatures:
    """What verification needs of the eval side: the (image, mirror) Features of eval rows and
    every row's candidate variants, from the stored files in `folder` (a task) or from the eval
    images themselves (folder None: the single-process oracle)."""

    def __init__(self, eval_table, config: VerifyConfig, folder=None):
        self.table, self.config = eval_table, config
        self.folder = None if folder is None else storage.location(folder)
        self.cache: dict[int, tuple[Features, Features]] = {}
        self._variants = None

    def variant_index(self, nprobe: int):
        """(FAISS index over the valid candidate variants, the eval row of each entry): flat up to
        VARIANT_FLAT_MAX codes, else IVF, which the driver built once and stored."""
        from pipeline.dedup.hashes import hex_to_codes
        from pipeline.dedup.leaks import _build_index

        hexes, owners = self.variants()
        codes, valid = hex_to_codes(hexes, 256)
        codes, owners = codes[valid], owners[valid]
        flat = codes.shape[0] <= VARIANT_FLAT_MAX
        stored = None if self.folder is None else self.folder / VARIANT_INDEX_FILE
        if not flat and stored is not None and stored.exists():
            import faiss

            index = faiss.deserialize_index_binary(np.frombuffer(stored.read_bytes(), np.uint8))
            index.nprobe = min(nprobe, index.nlist)
            return index, owners
        return _build_index(codes, flat, nprobe), owners

    def variants(self) -> tuple[list[str], np.ndarray]:
        """(candidate variant hexes, the eval row of each)."""
        if self._variants is None:
            if self.folder is None:
                rows, lists = self._compute_all()
            else:
                stored = storage.read_table(self.folder / VARIANTS_FILE)
                rows, lists = stored["row"].to_pylist(), stored["variants"].to_pylist()
            hexes = [h for hs in lists for h in hs]
            owners = np.array([r for r, hs in zip(rows, lists, strict=True) for _ in hs], np.int64)
            self._variants = (hexes, owners)
        return self._variants

    def _compute_all(self):
        rows, lists = [], []
        paths, errors = (self.table.column(c).to_pylist() for c in ("path", "error"))
        for row, (path, error) in enumerate(zip(paths, errors, strict=True)):
            if error is None:
                pair, hexes = _eval_entry(path, self.config)
                self.cache[row] = pair
                rows.append(row)
                lists.append(hexes)
        return rows, lists

    def get(self, rows) -> dict[int, tuple[Features, Features]]:
        missing = sorted({int(r) for r in rows} - set(self.cache))
        if missing and self.folder is None:
            paths = self.table.column("path").to_pylist()
            for row in missing:
                self.cache[row] = _eval_entry(paths[row], self.config)[0]
        elif missing:
            stored = storage.read_table(
                self.folder / FEATURES_FILE, filters=[("row", "in", missing)]
            ).to_pylist()
            pairs: dict[int, list] = {}
            for record in sorted(stored, key=lambda r: (r["row"], r["mirror"])):
                pairs.setdefault(record["row"], []).append(decode_features(record))
            for row in missing:
                self.cache[row] = tuple(pairs[row]) if row in pairs else _unreadable()
        return {int(r): self.cache[int(r)] for r in rows}


def _unreadable() -> tuple[Features, Features]:
    empty = Features(np.zeros((0, 2), np.float32), None, "eval image: not readable at build")
    return empty, empty


FEATURES_SCHEMA, VARIANTS_SCHEMA = _schemas()


def verify_pairs(pairs, images, store: EvalFeatures, config: VerifyConfig) -> dict:
    """verify.match's Verdict of each candidate pair: {(pool index, eval row): Verdict}.

    `pairs`: (pool index, eval row) in any order; `images(indexes)`: {pool index: encoded image
    bytes} of the pool images asked for (one that cannot be decoded verifies nothing)."""
    by_pool: dict[int, list[int]] = {}
    for i, row in pairs:
        by_pool.setdefault(int(i), []).append(int(row))
    out = {}
    data = images(sorted(by_pool))
    targets = store.get({row for rows in by_pool.values() for row in rows})
    for i, rows in by_pool.items():
        image, _ = open_image(data[i], "pool") if data.get(i) is not None else (None, "no bytes")
        feats = features(image, config) if image is not None else None
        for row in rows:
            out[(i, row)] = match(feats, targets[row], config) if feats else Verdict(0, False)
    return out
