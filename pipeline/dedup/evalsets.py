"""The hashes of eval sets (torchvision ImageFolder layout, `DIR/<class name>/<image file>`).

Which files are an eval set's images, and the `eval_id` "<eval set>/<class folder>/<file>" of
each, is manifests.evalsets' reading of the layout, the one the evaluation's Clean/Overlap split
keys on too (an eval set may have a single class here: the leak check classifies nothing).

The eval side is small (thousands to a few hundred thousand images) and the pool is large, so
every robustness trick that costs a hash is paid here, once per eval image: besides the hashes a
pool image has, each eval image also gets the hash of its mirror image and of nine crops (6% off,
at the corners, edge centres and centre) and their mirrors. A pool image is then compared with
all of them and matches the closest variant (pipeline.dedup.leaks)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from manifests import storage
from manifests.evalsets import EvalSet, load_eval_sets
from pipeline.dedup.hashes import bits_to_hex, phash_bits, to_gray, trim_borders

log = logging.getLogger(__name__)

CROP_FRACTION = 0.06  # of each side, for the crop variants (copies are cropped up to 10%)
# Bumped when the hashing itself changes (2: trim_borders trims a screenshot's title bar), so
# eval hashes cached by an older build are made again.
HASH_VERSION = 2
MIN_VARIANT_STD = 8.0  # gray levels: a crop that leaves a flat blob is replaced by the whole image

# Columns of the eval table: one row per eval image.
#   eval_id "<eval set>/<class>/<file>", eval_set, class, file, path, error (null when hashed),
#   phash, phash256, phash256_trim (hex, as a pool row has them),
#   phash256_variants (list of hex: image, mirror),
#   phash256_trim_variants (list of hex: image, mirror, 9 crops and their mirrors);
#   images with transparency have both lists twice: composited onto white, then onto black.
N_PLAIN_VARIANTS = 2
N_TRIM_VARIANTS = 2 + 2 * 9


def eval_table_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("eval_id", pa.string()),
            ("eval_set", pa.string()),
            ("class", pa.string()),
            ("file", pa.string()),
            ("path", pa.string()),
            ("error", pa.string()),
            ("phash", pa.string()),
            ("phash256", pa.string()),
            ("phash256_trim", pa.string()),
            ("phash256_variants", pa.list_(pa.string())),
            ("phash256_trim_variants", pa.list_(pa.string())),
        ]
    )


def _crops(gray) -> list:
    """The nine CROP_FRACTION crops of `gray`: corners, edge centres, centre."""
    w, h = gray.size
    cw, ch = round(w * (1 - CROP_FRACTION)), round(h * (1 - CROP_FRACTION))
    boxes = [
        (x, y, x + cw, y + ch)
        for x in (0, (w - cw) // 2, w - cw)
        for y in (0, (h - ch) // 2, h - ch)
    ]
    return [gray.crop(box) for box in boxes]


def _has_alpha(image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )


def _variants(gray) -> tuple[list[str], list[str]]:
    """(phash256 of the image and its mirror, phash256 trimmed of the image, the crops and
    all their mirrors) of one grayscale image."""
    from PIL import ImageOps

    plain = [gray, ImageOps.mirror(gray)]
    trimmed = []
    for variant in [gray, *_crops(gray)]:
        cut = trim_borders(variant)
        if variant is not gray and float(np.asarray(cut, dtype=np.float32).std()) < MIN_VARIANT_STD:
            cut = trim_borders(gray)  # a crop of a flat drawing hashes like noise: use the whole
        trimmed += [cut, ImageOps.mirror(cut)]
    return (
        [bits_to_hex(phash_bits(g, 16)) for g in plain],
        [bits_to_hex(phash_bits(g, 16)) for g in trimmed],
    )


def eval_hashes(image) -> dict:
    """The eval-table hash columns of one PIL image (see the module docstring). An image with
    transparency gets its variants twice, composited onto white (as pool images are) and onto
    black (as many copies on the web were flattened)."""
    gray = to_gray(image)
    p256, p256_trim = _variants(gray)
    if _has_alpha(image):
        black_plain, black_trim = _variants(to_gray(image, background=(0, 0, 0)))
        p256, p256_trim = p256 + black_plain, p256_trim + black_trim
    return {
        "phash": bits_to_hex(phash_bits(gray, 8)),
        "phash256": p256[0],
        "phash256_trim": p256_trim[0],
        "phash256_variants": p256,
        "phash256_trim_variants": p256_trim,
    }


def hash_eval_image(eval_id: str, eval_set: str, class_name: str, file: str, path: Path) -> dict:
    """One eval-table row; an unreadable image gets `error` and null hashes (never raises)."""
    from PIL import Image

    row = {
        "eval_id": eval_id,
        "eval_set": eval_set,
        "class": class_name,
        "file": file,
        "path": str(path),
        "error": None,
    }
    try:
        with Image.open(storage.readable(path)) as image:
            image.load()
            row.update(eval_hashes(image))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # OSError covers UnidentifiedImageError and truncated files; SyntaxError and ValueError
        # are what some broken PNG/TIFF headers raise
        log.warning("eval image %s cannot be read: %s", path, exc)
        row["error"] = f"cannot decode image: {exc}"
    return row


def _load(dirs) -> list[EvalSet]:
    """The eval sets of `dirs` (one class is enough); a ConfigError for a missing folder, one
    without images, or two with the same name (`leak_of` names an image by it)."""
    return load_eval_sets(dirs, min_classes=1)


def _images(sets: list[EvalSet]) -> list[tuple[str, str, str, str, Path]]:
    """(eval_id, eval set, class folder, file, path) of every image: hash_eval_image's
    arguments; the eval_id is EvalSet.item_id, the evaluation's name of the image."""
    return [
        (s.item_id(i), s.name, s.classes[item.target], item.file, item.path)
        for s in sets
        for i, item in enumerate(s.items)
    ]


def hash_eval_sets(dirs, executor_map=map):
    """Eval table (eval_table_schema) of every image in the ImageFolder directories `dirs`.

    `executor_map` maps `hash_eval_image` over the images (e.g. a process pool's `map` with
    chunksize); plain `map` by default. Two eval sets with the same base name are an error,
    since `leak_of` names an image by that name."""
    return _hash_sets(_load(dirs), executor_map)


def _hash_sets(sets: list[EvalSet], executor_map=map):
    import pyarrow as pa

    rows = list(executor_map(_hash_one, _images(sets)))
    table = pa.Table.from_pylist(rows, schema=eval_table_schema())
    failed = sum(r["error"] is not None for r in rows)
    log.info(
        "hashed %d eval images from %d eval sets (%d unreadable)", len(rows), len(sets), failed
    )
    return table


def _hash_one(item) -> dict:
    return hash_eval_image(*item)


def _fingerprint(sets: list[EvalSet]) -> str:
    """Digest of every eval image's id, path, size and mtime, and of the hashing settings."""
    import hashlib
    import json

    from pipeline.dedup import hashes

    items = []
    for eval_id, *_, path in _images(sets):
        stat = path.stat()
        items.append([eval_id, str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    settings = [hashes.WORK_SIDE, hashes.TRIM_REL_TOL, hashes.TRIM_ROW_FRACTION, CROP_FRACTION]
    settings.append(HASH_VERSION)
    text = json.dumps([items, settings])
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def hash_eval_sets_cached(dirs, cache_path, executor_map=map):
    """hash_eval_sets, stored at `cache_path` (Parquet) and reused while the eval images (path,
    size, mtime) and the hash settings are the same: a rerun does not hash them again."""

    from manifests.layout import write_parquet_atomic

    cache_path = storage.location(cache_path)
    sets = _load(dirs)
    fingerprint = _fingerprint(sets)
    if cache_path.exists():
        cached = storage.read_table(cache_path)
        meta = cached.schema.metadata or {}
        if meta.get(b"fingerprint", b"").decode() == fingerprint:
            return cached.replace_schema_metadata(None)
    table = _hash_sets(sets, executor_map)
    write_parquet_atomic(table.replace_schema_metadata({"fingerprint": fingerprint}), cache_path)
    return table
