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

import logging
from dataclasses import dataclass

import numpy as np

from manifests import storage

log = logging.getLogger(__name__)

EMBED_FILE = "eval_embeddings.parquet"
# Cosine of the image embeddings at or above which an eval neighbour is verified. Only a
# candidate threshold: a pair below it may still be proposed by the hashes, and one above it is a
# copy only when verify.match says so. bench/leak_embed.py --limit 600 (a fixed random sample;
# clip-tiny trained on the google emoji; chosen there as the best recall within 0.3% false
# positives, of 0.30..0.99, with the leak's verifier, leaks.leak_verify_config): 0.70, which on
# the twitter split raised recall from 0.816 to 0.839 at the same 0.17% FP (the reverse, a
# twitter-trained model: 0.80, google 0.873 -> 0.895). Under that verifier no cosine added a false
# positive, so the threshold mostly sets the cost: about 3 pairs per pool image at 0.70, 0.44 at
# 0.99. The figures are this model's: another checkpoint may want its own threshold.
MIN_COSINE = 0.7
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


_MODELS: dict[tuple, object] = {}  # per process: (path, sha256 or None, device) -> model


def cached_model(config: EmbedConfig, digest: str | None = None):
    """The checkpoint's model, loaded once per process (a task per part would otherwise load it
    per part). `digest`: the sha256 the build's eval embeddings were made with; a checkpoint
    rewritten since is an error, not a silent mix of two embedding spaces."""
    from manifests.config import ConfigError
    from pipeline.embed.encode import checkpoint_digest, load_model

    key = (config.checkpoint, digest, config.device)
    if key not in _MODELS:
        if digest is not None and checkpoint_digest(config.checkpoint) != digest:
            raise ConfigError(
                f"--leak-embed {config.checkpoint} changed since this build embedded its eval "
                "sets; restore it, or build into a new --out"
            )
        _MODELS.clear()  # one model at a time
        _MODELS[key] = load_model(config.checkpoint, config.device)
    return _MODELS[key]


def embed_eval_images(eval_table, loaded, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(eval rows, float32 [rows, D] L2-normalised embeddings) of the readable eval images, CHUNK
    images read at a time. Eval images that all fail to embed are a ConfigError: the option
    would otherwise silently propose nothing."""
    from manifests.config import ConfigError
    from pipeline.embed.encode import embed_images

    paths, errors = (eval_table.column(c).to_pylist() for c in ("path", "error"))
    readable = [r for r, error in enumerate(errors) if error is None]
    rows, parts = [], []
    for start in range(0, len(readable), CHUNK):
        chunk, data = readable[start : start + CHUNK], []
        for r in chunk:
            try:
                data.append(storage.location(paths[r]).read_bytes())
            except OSError:  # moved since it was hashed: it proposes nothing
                data.append(b"")
        vectors = embed_images(loaded, data, batch_size)
        ok = ~np.isnan(vectors).any(axis=1)
        rows += [r for r, good in zip(chunk, ok.tolist(), strict=True) if good]
        parts.append(vectors[ok])
    if readable and not rows:
        raise ConfigError(
            f"--leak-embed: none of the {len(readable)} eval images could be embedded"
        )
    if len(rows) < len(readable):
        log.warning(
            "eval embeddings: %d of %d images not embedded",
            len(readable) - len(rows),
            len(readable),
        )
    vectors = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
    return np.asarray(rows, np.int64), np.ascontiguousarray(vectors, np.float32)


def write_eval_embeddings(eval_table, folder, config: EmbedConfig) -> None:
    """Store the eval embeddings in `folder` (EMBED_FILE, with the checkpoint's sha256), unless
    they were made with the same checkpoint from the same eval images."""
    import pyarrow as pa

    from manifests.layout import write_parquet_atomic
    from pipeline.dedup.leakverify import eval_fingerprint
    from pipeline.embed.encode import checkpoint_digest

    path = storage.location(folder) / EMBED_FILE
    digest = checkpoint_digest(config.checkpoint)
    fingerprint = eval_fingerprint(eval_table, digest)  # the model's bytes and the eval images
    if path.exists():
        meta = storage.parquet_file(path).schema_arrow.metadata or {}
        if meta.get(b"fingerprint", b"").decode() == fingerprint:
            return
    rows, vectors = embed_eval_images(eval_table, cached_model(config), config.batch_size)
    dim = vectors.shape[1]
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
    table = pa.table({"row": pa.array(rows, pa.int64()), "embedding": embedding})
    meta = {"fingerprint": fingerprint, "checkpoint_sha256": digest}
    write_parquet_atomic(table.replace_schema_metadata(meta), path)
    log.info("eval embeddings: %d images, stored in %s", rows.size, path)


def read_eval_embeddings(folder) -> tuple[np.ndarray, np.ndarray, str]:
    """(eval rows, float32 [rows, D], the checkpoint's sha256) as write_eval_embeddings stored."""
    path = storage.location(folder) / EMBED_FILE
    table = storage.read_table(path)
    meta = storage.parquet_file(path).schema_arrow.metadata or {}
    column = table["embedding"].combine_chunks()
    dim = column.type.list_size
    vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    rows = table["row"].to_numpy(zero_copy_only=False).astype(np.int64)
    return rows, np.ascontiguousarray(vectors, np.float32), meta[b"checkpoint_sha256"].decode()


class EvalEmbeddings:
    """The eval embeddings and the model, for one task (or the oracle): from the stored file in
    `folder`, or computed from the eval images (folder None)."""

    def __init__(self, eval_table, config: EmbedConfig, folder=None):
        self.table, self.config = eval_table, config
        self.folder = None if folder is None else storage.location(folder)
        self._index = self._digest = None

    def model(self):
        self.index()  # the stored file names the checkpoint's sha256
        return cached_model(self.config, self._digest)

    def index(self):
        """(FAISS exact inner-product index over the eval embeddings, eval row of each entry)."""
        import faiss

        if self._index is None:
            if self.folder is None:
                loaded = cached_model(self.config)
                rows, vectors = embed_eval_images(self.table, loaded, self.config.batch_size)
            else:
                rows, vectors, self._digest = read_eval_embeddings(self.folder)
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
    """`found` (per pool image of `todo`, its hash candidates) with the embedding neighbours the
    hashes did not propose appended, at the Hamming distance between the pair's whole-image
    hashes (_distances); and {(pool index, eval row): cosine} of those appended."""
    store = stores[1] or EvalEmbeddings(index.table, config.embed)
    proposed = embedding_candidates(store, images, todo)
    extra = {}
    for i, near in zip(todo.tolist(), found, strict=True):
        have = {row for row, _ in near}
        extra[i] = [(row, c) for row, c in proposed.get(i, []) if row not in have]
    pairs = [(i, row) for i, rows in extra.items() for row, _ in rows]
    distance = dict(zip(pairs, _distances(pool, index.table, pairs), strict=True))
    merged = [
        near + [(row, distance[(i, row)]) for row, _ in extra[i]]
        for i, near in zip(todo.tolist(), found, strict=True)
    ]
    cosines = {(i, row): c for i, rows in extra.items() for row, c in rows}
    return merged, cosines


def _distances(pool, eval_table, pairs) -> list[int]:
    """Bits of 256 between each (pool index, eval row) pair's whole-image hashes, the nearer of
    the two kinds (phash256, phash256_trim); 256 where no kind is valid on both sides."""
    from pipeline.dedup.hashes import hex_to_codes
    from pipeline.dedup.leaks import KINDS

    best = np.full(len(pairs), 256, np.int64)
    if not pairs:
        return best.tolist()
    for kind, _ in KINDS:
        eval_hexes = eval_table.column(kind).to_pylist()
        a, ok_a = hex_to_codes([pool[kind][i] for i, _ in pairs], 256)
        b, ok_b = hex_to_codes([eval_hexes[row] for _, row in pairs], 256)
        bits = np.unpackbits(np.bitwise_xor(a, b), axis=1).sum(axis=1)
        ok = ok_a & ok_b
        best[ok] = np.minimum(best[ok], bits[ok])
    return best.tolist()
