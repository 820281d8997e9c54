"""Image<->text retrieval recall@K on a held-out part of a dataset.

Held-out rows are chosen by a hash of the sample uid, so the trainer can exclude exactly the same
rows with SQL and any tool can recompute the split:

    bucket(uid) = int(md5("clipengine/heldout/" + uid)[:8], 16) % 1000
    held out    = bucket(uid) < permille          (default 10: 1% of the rows)

`heldout_sql(permille)` is that predicate in DuckDB over the `samples` view; training on the rest is
`trainer run ... --where "NOT <heldout_sql(10, IMAGE_ID)>"`. The eval reads the held-out rows of the
subset (default `kept`), at most `limit` of them, from the shards (image bytes and first caption).
It splits by image (IMAGE_ID: `image_of`, the uid of the image's stored row, or the row's own uid
for an image with one caption), so an image's captions fall on one side together; with one
caption per image that is the uid split above.

Identical captions are one text: image->text counts a hit when the image's caption is among the
top K texts; text->image when any image with that caption is among the top K images.
"""

import hashlib
import logging
import re

from manifests import storage
from trainer.inference import encode_images, encode_texts

log = logging.getLogger(__name__)

HELDOUT_SALT = "clipengine/heldout/"
DEFAULT_PERMILLE = 10
RECALL_KS = (1, 5, 10)
IMAGE_ID = "coalesce(image_of, uid)"  # the samples view's id of a row's image


def heldout_bucket(uid: str) -> int:
    return int(hashlib.md5((HELDOUT_SALT + uid).encode()).hexdigest()[:8], 16) % 1000


def is_heldout(uid: str, permille: int = DEFAULT_PERMILLE) -> bool:
    return heldout_bucket(uid) < permille


def heldout_sql(permille: int = DEFAULT_PERMILLE, column: str = "uid") -> str:
    """DuckDB predicate, true for held-out rows (the same rows as `is_heldout`)."""
    if not 0 <= int(permille) <= 1000:
        raise ValueError(f"permille must be in 0..1000, not {permille}")
    return (
        f"((('0x' || substr(md5('{HELDOUT_SALT}' || {column}), 1, 8))::UBIGINT % 1000) "
        f"< {int(permille)})"
    )


def recall_at_k(sim, positives, ks=RECALL_KS) -> dict:
    """{"R@k": fraction of queries (rows of sim [Q, G]) with a positive among their k most
    similar gallery items}; `positives` is bool [Q, G]. Ties rank by gallery order."""
    import torch

    order = sim.argsort(dim=1, descending=True, stable=True)
    ranked = torch.gather(positives, 1, order)  # [Q, G], positives in rank order
    first = torch.where(ranked.any(dim=1), ranked.float().argmax(dim=1), sim.shape[1])
    return {f"R@{k}": (first < k).float().mean().item() for k in ks}


def retrieval_metrics(image_feats, text_feats, caption_of_image, ks=RECALL_KS) -> dict:
    """image_feats [N, D], text_feats [U, D] (unique captions), caption_of_image [N] ints in 0..U."""
    import torch

    caption_of_image = torch.as_tensor(caption_of_image, dtype=torch.long)
    sim = image_feats @ text_feats.T  # [N, U]
    positives = caption_of_image.view(-1, 1) == torch.arange(text_feats.shape[0]).view(1, -1)
    return {
        "image_to_text": recall_at_k(sim, positives, ks),
        "text_to_image": recall_at_k(sim.T, positives.T, ks),
        "n_images": int(image_feats.shape[0]),
        "n_texts": int(text_feats.shape[0]),
    }


def read_heldout(data_dir, subset: str, permille: int, limit: int) -> list[tuple[bytes, str]]:
    """(image bytes, first caption) of up to `limit` held-out images of `subset`, in shard
    order (one per shard row, whichever of its captions the subset selects)."""

    from trainer.data import resolve

    index = resolve(data_dir, subset, heldout_sql(permille, IMAGE_ID))
    rows = []
    for unit in index.units:
        column = index.image_columns[unit.shard]
        table = storage.parquet_file(index.root / index.shards[unit.shard]).read_row_group(
            unit.row_group, columns=[column, "caption"]
        )
        images, captions = table[column].to_pylist(), table["caption"].to_pylist()
        for r in unit.rows:
            if images[r] is not None and captions[r]:
                rows.append((images[r], captions[r]))
            if len(rows) >= limit:
                return rows
    return rows


def trainer_excluded(config: dict, permille: int) -> bool | None:
    """Whether the checkpoint's run left these held-out rows out of training: its config has
    `heldout_permille` >= permille, or its --where is `NOT heldout_sql(p)` with p >= permille.
    None when the checkpoint has no config."""
    if not config:
        return None
    if isinstance(config.get("heldout_permille"), int):
        return config["heldout_permille"] >= permille
    where = str(config.get("where") or "")
    found = re.search(r"% 1000\) < (\d+)\)", where)
    negated = "NOT" in where.upper()
    return bool(HELDOUT_SALT in where and negated and found and int(found.group(1)) >= permille)


def run_retrieval(
    loaded,
    data_dir,
    subset: str = "",
    permille: int = DEFAULT_PERMILLE,
    limit: int = 1000,
    batch_size: int = 64,
    workers: int = 0,
) -> dict:
    """The retrieval section: recall@1/5/10 both ways, or {"available": False, "reason": ...}."""
    from trainer.data import DataError

    name = subset or "kept"
    base = {"data": str(data_dir), "subset": name, "heldout_permille": permille}
    try:
        rows = read_heldout(data_dir, subset, permille, limit)
    except DataError as exc:
        return {**base, "available": False, "reason": str(exc)}
    if len(rows) < 2:
        return {**base, "available": False, "reason": f"{len(rows)} held-out row(s) with images"}
    feats, ok, bad = encode_images(loaded, [r[0] for r in rows], batch_size, workers)
    captions = [rows[i][1] for i in ok]
    unique = list(dict.fromkeys(captions))
    position = {c: i for i, c in enumerate(unique)}
    text_feats = encode_texts(loaded, unique)
    metrics = retrieval_metrics(feats, text_feats, [position[c] for c in captions])
    excluded = trainer_excluded(loaded.info.get("config", {}), permille)
    return {
        **base,
        "available": True,
        **metrics,
        "n_unreadable": len(bad),
        "trainer_excluded_heldout": excluded,
    }
