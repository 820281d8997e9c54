"""The leak check's second candidate source, off by default: embedding neighbours (--leak-embed).

The hashes propose the pairs that still look alike pixel for pixel. A trained image tower also
puts a copy near its original after edits that move every pixel (a deep crop with a turn, a
re-rendering, a large overlay), and puts a different drawing of the same concept there too: it
proposes, and verify.match decides every pair alike, whichever source proposed it. With
`--leak-embed CHECKPOINT` each pool image the hashes did not already call a copy is embedded by
the checkpoint's image tower; its `neighbours` nearest eval images by cosine (an exact FAISS
inner-product index over the eval embeddings), those at `min_cosine` or above, join its hash
candidates. The cost is one image-tower pass per such pool image (pipeline.embed.encode), so it
is opt-in; on a GPU (`load(..., device="auto")`) it is a small part of a build.

The eval side's embeddings are computed once per build by the driver and stored in the dataset
(EMBED_FILE beside eval_hashes.parquet) with a fingerprint of the checkpoint's sha256 and the
eval images, so a task on any node reads them instead of the eval images. The single-process
oracle (decide.py) embeds the eval images itself.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np

from manifests import storage

log = logging.getLogger(__name__)

EMBED_FILE = "eval_embeddings.parquet"
# Cosine of the image embeddings at or above which an eval neighbour is verified. Only a
# candidate threshold: a pair below it may still be proposed by the hashes, and one above it is a
# copy only when verify.match says so.
MIN_COSINE = 0.8
NEIGHBOURS = 3  # eval images proposed per pool image, nearest first (leaks.VERIFY_CANDIDATES)
CHUNK = 2048  # pool images read and embedded at a time: bounded memory


@dataclass
class EmbedConfig:
    checkpoint: str  # a trainer checkpoint (local or object-storage path)
    min_cosine: float = MIN_COSINE
    neighbours: int = NEIGHBOURS
    device: str = "auto"  # cuda where there is one
    batch_size: int = 256

    def __post_init__(self):
        if not isinstance(self.checkpoint, str) or not self.checkpoint:
            raise ValueError("the embedding candidates need a checkpoint path")
        c = self.min_cosine
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not -1.0 <= c <= 1.0:
            raise ValueError(f"min_cosine must be a number in [-1, 1], not {c!r}")
        for name in ("neighbours", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")


def _fingerprint(eval_table, checkpoint: str) -> str:
    """What the stored embeddings depend on: the model's bytes and the eval images."""
    from pipeline.embed.encode import checkpoint_digest

    digest = hashlib.sha256(checkpoint_digest(checkpoint).encode())
    for column in ("eval_id", "phash256", "error"):
        digest.update(repr(eval_table.column(column).to_pylist()).encode())
    return digest.hexdigest()


def embed_eval_images(eval_table, loaded, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(eval rows, float32 [rows, D] L2-normalised embeddings) of the readable eval images."""
    from pipeline.embed.encode import embed_images

    paths, errors = (eval_table.column(c).to_pylist() for c in ("path", "error"))
    rows = [r for r, error in enumerate(errors) if error is None]
    data = []
    for r in rows:
        try:
            data.append(storage.location(paths[r]).read_bytes())
        except OSError:  # moved since it was hashed: it proposes nothing
            data.append(b"")
    vectors = embed_images(loaded, data, batch_size) if rows else np.zeros((0, 1), np.float32)
    ok = ~np.isnan(vectors).any(axis=1)
    return np.asarray(rows, np.int64)[ok], np.ascontiguousarray(vectors[ok], np.float32)


def write_eval_embeddings(eval_table, folder, config: EmbedConfig) -> None:
    """Store the eval embeddings in `folder` (EMBED_FILE), unless they were made with the same
    checkpoint from the same eval images."""
    import pyarrow as pa

    from manifests.layout import write_parquet_atomic
    from pipeline.embed.encode import load_model

    path = storage.location(folder) / EMBED_FILE
    fingerprint = _fingerprint(eval_table, config.checkpoint)
    if path.exists():
        meta = storage.parquet_file(path).schema_arrow.metadata or {}
        if meta.get(b"fingerprint", b"").decode() == fingerprint:
            return
    loaded = load_model(config.checkpoint, config.device)
    rows, vectors = embed_eval_images(eval_table, loaded, config.batch_size)
    table = pa.table(
        {
            "row": pa.array(rows, pa.int64()),
            "embedding": pa.array(list(vectors), pa.list_(pa.float32())),
        }
    )
    write_parquet_atomic(table.replace_schema_metadata({"fingerprint": fingerprint}), path)
    log.info("eval embeddings: %d images, stored in %s", rows.size, path)


class EvalEmbeddings:
    """The eval embeddings and the model, for one task (or the oracle): from the stored file in
    `folder`, or computed from the eval images (folder None)."""

    def __init__(self, eval_table, config: EmbedConfig, folder=None):
        self.table, self.config = eval_table, config
        self.folder = None if folder is None else storage.location(folder)
        self._loaded = self._index = None

    def model(self):
        from pipeline.embed.encode import load_model

        if self._loaded is None:
            self._loaded = load_model(self.config.checkpoint, self.config.device)
        return self._loaded

    def index(self):
        """(FAISS exact inner-product index over the eval embeddings, eval row of each entry)."""
        import faiss

        if self._index is None:
            if self.folder is None:
                rows, vectors = embed_eval_images(self.table, self.model(), self.config.batch_size)
            else:
                stored = storage.read_table(self.folder / EMBED_FILE)
                rows = np.asarray(stored["row"].to_pylist(), np.int64)
                vectors = np.asarray(stored["embedding"].to_pylist(), np.float32)
            index = faiss.IndexFlatIP(vectors.shape[1] if vectors.size else 1)
            if vectors.size:
                index.add(np.ascontiguousarray(vectors))
            self._index = (index, rows)
        return self._index


def embedding_candidates(store: EvalEmbeddings, images, indexes) -> dict[int, list]:
    """{pool index: [(eval row, cosine), ...]} for the pool images `indexes` (in `images`(...)
    form: {index: encoded bytes}): their `neighbours` nearest eval images at `min_cosine` or
    above, nearest first. A pool image that does not decode proposes nothing."""
    from pipeline.embed.encode import embed_images

    config, out = store.config, {}
    index, rows = store.index()
    if not index.ntotal:
        return out
    k = min(config.neighbours, index.ntotal)
    indexes = [int(i) for i in indexes]
    for start in range(0, len(indexes), CHUNK):
        chunk = indexes[start : start + CHUNK]
        data = images(chunk)
        have = [i for i in chunk if data.get(i)]
        vectors = embed_images(store.model(), [data[i] for i in have], config.batch_size)
        ok = ~np.isnan(vectors).any(axis=1)
        if not ok.any():
            continue
        cosines, ids = index.search(np.ascontiguousarray(vectors[ok]), k)
        for i, cos_row, id_row in zip(np.asarray(have)[ok].tolist(), cosines, ids, strict=True):
            near = [
                (int(rows[j]), float(c))
                for c, j in zip(cos_row.tolist(), id_row.tolist(), strict=True)
                if j >= 0 and c >= config.min_cosine
            ]
            if near:
                out[i] = near
    return out


def with_embedding_candidates(index, pool, todo, found, images, config, stores):
    """`found` (per pool image of `todo`, its hash candidates) with the embedding neighbours
    (leakembed.py) the hashes did not propose appended, at their hash distance to the eval
    image itself; and {(pool index, eval row): cosine} of those appended."""
    from pipeline.dedup.leaks import KINDS

    store = stores[1] or EvalEmbeddings(index.table, config.embed)
    proposed = embedding_candidates(store, images, todo)
    eval_hashes = {kind: index.table.column(kind).to_pylist() for kind, _ in KINDS}
    merged, cosines = [], {}
    for i, near in zip(todo.tolist(), found, strict=True):
        have = {row for row, _ in near}
        extra = [(row, c) for row, c in proposed.get(i, []) if row not in have]
        for row, c in extra:
            cosines[(i, row)] = c
        distances = [_distance(pool, eval_hashes, i, row) for row, _ in extra]
        merged.append(near + [(row, d) for (row, _), d in zip(extra, distances, strict=True)])
    return merged, cosines


def _distance(pool, eval_hashes, i: int, row: int) -> int:
    """Bits of 256 between pool image i and eval row `row`, either hash kind (257: none)."""
    from pipeline.dedup.leaks import KINDS

    best = 257
    for kind, _ in KINDS:
        a, b = pool[kind][i], eval_hashes[kind][row]
        if a and b:
            best = min(best, (int(a, 16) ^ int(b, 16)).bit_count())
    return best
