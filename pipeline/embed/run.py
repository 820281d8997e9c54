"""`pipeline embed DIR --checkpoint CKPT`: image and caption embeddings of every shard row, and a
FAISS index of the image embeddings (pipeline.embed.index picks its kind by size and measures its
recall against flat search).

Resumable: a shard whose embeddings file exists with as many rows is not embedded again; the
files of shards that are gone are removed. Embedding with another checkpoint than the folder
already holds is refused unless `overwrite` (the index would mix two models' spaces otherwise).
Images that do not decode get no vector in the index (image.rows.npy maps index ids to rows)."""

import dataclasses
import io
import logging
import time
from pathlib import Path

from manifests import storage
from manifests.config import ConfigError
from manifests.layout import DatasetLayout
from manifests.storage import location
from pipeline.embed import store

log = logging.getLogger(__name__)


def _shard_files(layout: DatasetLayout) -> list[Path]:
    if not layout.is_dataset():
        raise ConfigError(f"{layout.root} is not a dataset folder (no run.json or manifests/)")
    from manifests.commit import committed_files

    present = set(layout.shards.glob("*.parquet"))  # one listing, not one request per shard
    files = [f for f in committed_files(layout, "shards") if f in present]
    missing = len(committed_files(layout, "shards")) - len(files)
    if missing:
        log.warning(
            "%s: %d committed shards are missing; their rows are not embedded", layout.root, missing
        )
    if not files:
        raise ConfigError(f"{layout.root} has no shards to embed (DIR/shards/*.parquet)")
    return files


def _check_meta(folder: Path, meta: dict, overwrite: bool) -> None:
    old = store.read_meta(folder)
    if old is None or old.get("checkpoint_sha256") == meta["checkpoint_sha256"]:
        return
    if not overwrite:
        raise ConfigError(
            f"{folder} holds embeddings of another checkpoint ({old.get('checkpoint')}); "
            "pass --overwrite to replace them"
        )
    log.info("replacing the embeddings of %s", old.get("checkpoint"))
    location(folder).rmtree()


def _embed_shard(loaded, path: Path, out: Path, batch_size: int) -> int:

    from manifests import schema
    from pipeline.embed.encode import embed_pairs

    names = storage.parquet_file(path).schema_arrow.names
    image_col = next((c for c in schema.IMAGE_COLUMNS if c in names), None)
    if image_col is None or "caption" not in names:
        raise ConfigError(f"{path} is not a training shard (no image or caption column)")
    table = storage.read_table(path, columns=["uid", image_col, "caption"])
    images = table[image_col].to_pylist()
    captions = [c or "" for c in table["caption"].to_pylist()]
    emb = embed_pairs(loaded, images, captions, batch_size, desc=path.name)
    store.write_part(out, table["uid"].to_pylist(), path.name, emb)
    return table.num_rows


def _stale_parts(folder: Path, shards: list[Path]) -> None:
    """Remove embeddings of shards that are gone, or whose row count changed (rebuilt)."""

    rows = {
        store.part_path(folder, p.name): storage.parquet_file(p).metadata.num_rows for p in shards
    }
    for part in store.part_files(folder):
        if part not in rows or storage.parquet_file(part).metadata.num_rows != rows[part]:
            log.info("embeddings %s are stale: embedding its shard again", part.name)
            part.unlink()


def _build_and_save_index(folder: Path, recall_target: float) -> dict:
    import numpy as np

    from pipeline.embed import index as faiss_index

    _, vectors = store.read_vectors(folder, "image")
    readable = ~np.isnan(vectors).any(axis=1)
    rows_file = store.index_rows_path(folder)
    rows_file.unlink(missing_ok=True)
    if not readable.any():
        raise ConfigError(f"{folder}: no image could be decoded for embedding")
    if not readable.all():
        log.warning("%d images did not decode: left out of the index", int((~readable).sum()))
        buffer = io.BytesIO()
        np.save(buffer, np.flatnonzero(readable))
        rows_file.write_bytes(buffer.getvalue())
    index, info = faiss_index.build_index(vectors[readable], recall_target=recall_target)
    faiss_index.save_index(index, info, folder)
    return {
        "rows": int(vectors.shape[0]),
        "dim": int(vectors.shape[1]),
        "index": dataclasses.asdict(info),
    }


def run_embed(
    dataset_dir,
    checkpoint: str,
    device: str = "auto",
    batch_size: int = 256,
    overwrite: bool = False,
    recall_target: float = 0.95,
) -> dict:
    """Embed every shard not yet embedded, then (re)build the index; returns meta.json's dict."""
    from tqdm import tqdm

    from pipeline.embed.encode import checkpoint_digest, load_model

    layout = DatasetLayout(dataset_dir)
    shards = _shard_files(layout)
    if batch_size < 1:
        raise ConfigError(f"batch size must be positive, not {batch_size}")
    if not 0.0 < recall_target <= 1.0:
        raise ConfigError(f"recall target must be in (0, 1], not {recall_target}")
    if not location(checkpoint).is_file():
        raise ConfigError(f"checkpoint {checkpoint} does not exist")
    loaded = load_model(checkpoint, device)
    folder = store.embeddings_dir(layout.root)
    meta = {
        "checkpoint": str(location(checkpoint).resolve()),
        "checkpoint_sha256": checkpoint_digest(checkpoint),
        "model": loaded.name,
        "step": loaded.info.get("step"),
        "device": loaded.device,
    }
    _check_meta(folder, meta, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    store.write_meta(folder, meta)  # no "index" until the index matches the parts again
    _stale_parts(folder, shards)
    todo = [p for p in shards if not store.part_path(folder, p.name).exists()]
    started = time.perf_counter()
    rows = 0
    for path in tqdm(todo, desc="embed", unit="shard", disable=len(todo) < 2):
        rows += _embed_shard(loaded, path, store.part_path(folder, path.name), batch_size)
    seconds = time.perf_counter() - started
    if todo:
        log.info("embedded %d rows of %d shards in %.1f s", rows, len(todo), seconds)
    meta.update(
        _build_and_save_index(folder, recall_target),
        shards=len(shards),
        embed_seconds=round(seconds, 2),
    )
    store.write_meta(folder, meta)
    return meta
