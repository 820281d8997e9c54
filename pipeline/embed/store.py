"""Embeddings next to the shards, as Parquet, float16.

```
DIR/embeddings/meta.json              checkpoint (path, sha256, model, step), dim, rows per shard
DIR/embeddings/<shard>.parquet        one row per shard row: uid, shard, shard_row, clip_score,
                                      image and text (fixed-size lists of float16, L2-normalised)
DIR/embeddings/image.faiss            FAISS index of the image embeddings (pipeline.embed.index);
DIR/embeddings/image.index.json       row i of the index = row i of the parts in file-name order,
DIR/embeddings/image.rows.npy         or row rows[i] when some images did not decode (no vector)
```
float16 halves the size and keeps cosines to ~1e-3, plenty for ranking and filtering.
"""

import json
from pathlib import Path

from manifests import storage
from manifests.config import ConfigError
from manifests.layout import DatasetLayout, write_json_atomic, write_parquet_atomic

META_COLUMNS = ("uid", "shard", "shard_row", "clip_score")


def embeddings_dir(dataset_dir) -> Path:
    return DatasetLayout(dataset_dir).root / "embeddings"


def part_path(folder: Path, shard: str) -> Path:
    return folder / f"{Path(shard).stem}.parquet"


def part_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def vector_array(vectors):
    import numpy as np
    import pyarrow as pa

    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float16).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])


def to_matrix(column):
    """A fixed-size-list column (float16 vectors) → np.float32 [rows, dim]."""
    import numpy as np

    values = column.combine_chunks()
    flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return flat.reshape(len(values), values.type.list_size)


def write_part(path: Path, uids: list[str], shard: str, emb) -> None:
    """One shard's embeddings (`emb`: pipeline.embed.encode.PairEmbeddings), written atomically.
    The score of an image that did not decode is null (its vectors stay NaN)."""
    import numpy as np
    import pyarrow as pa

    table = pa.table(
        {
            "uid": pa.array(uids, pa.string()),
            "shard": pa.array([shard] * len(uids), pa.string()),
            "shard_row": pa.array(range(len(uids)), pa.int64()),
            "clip_score": pa.array(emb.score, pa.float32(), mask=np.isnan(emb.score)),
            "image": vector_array(emb.image),
            "text": vector_array(emb.text),
        }
    )
    write_parquet_atomic(table, path, row_group_size=10_000)


def read_vectors(folder: Path, column: str = "image"):
    """(meta table: uid, shard, shard_row, clip_score; np.float32 [N, D]) over every part."""
    import numpy as np
    import pyarrow as pa

    files = part_files(folder)
    if not files:
        raise ConfigError(f"{folder} holds no embeddings; run `pipeline embed` first")
    metas, vectors = [], []
    for path in files:
        table = storage.read_table(path, columns=[*META_COLUMNS, column])
        metas.append(table.select(list(META_COLUMNS)))
        vectors.append(to_matrix(table.column(column)))
    return pa.concat_tables(metas), np.concatenate(vectors)


def read_ids(folder: Path):
    """The meta columns of every part in index order (row i = index id i), without vectors."""
    import pyarrow as pa

    files = part_files(folder)
    if not files:
        raise ConfigError(f"{folder} holds no embeddings; run `pipeline embed` first")
    return pa.concat_tables([storage.read_table(p, columns=list(META_COLUMNS)) for p in files])


def read_meta(folder: Path) -> dict | None:
    path = folder / "meta.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); delete it to embed again") from None


def write_meta(folder: Path, meta: dict) -> None:
    write_json_atomic(meta, folder / "meta.json")


def index_rows_path(folder: Path) -> Path:
    return folder / "image.rows.npy"
