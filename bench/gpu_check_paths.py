"""The GPU check's other CUDA paths, each run once: `pipeline embed` with the trained checkpoint,
the FAISS index on the GPU against the CPU, and the CLIP scoring of the `score` stage.

`faiss_compare` and `clip_score` run inside a child process (gpu_check_child.py `call`), so a CUDA
failure there ends that section only; each returns a dict for the table, with `skipped` when
what it needs is not there (faiss-gpu, a GPU).
"""

import json
import time
from pathlib import Path

QUERIES = 1000
K = 10
CPU_REFERENCE_PAIRS = 128  # ViT-B-32 on the CPU: about 0.1 s a pair on a few cores


def embed_figures(dataset: Path) -> dict:
    """What `pipeline embed` wrote in DIR/embeddings/meta.json, as table figures."""
    meta = json.loads((dataset / "embeddings" / "meta.json").read_text())
    index = meta.get("index", {})
    return {
        "rate": meta["rows"] / max(meta["embed_seconds"], 1e-9),
        "unit": "images/s",
        "note": (
            f"{meta['rows']} rows on {meta['device']}, index {index.get('kind')} "
            f"({index.get('factory')})"
        ),
    }


def _queries(vectors, count: int, seed: int = 0):
    """Rows of the indexed set with a little noise, as a user searches with a dataset image."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = rng.choice(len(vectors), min(count, len(vectors)), replace=False)
    q = vectors[rows] + rng.standard_normal((rows.size, vectors.shape[1])).astype(np.float32) * 0.01
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _timed_search(index, info, queries, repeats: int = 3) -> tuple[float, object]:
    """(queries/s, ids): the best of `repeats` searches of every query, after one warm-up."""
    from pipeline.embed import index as faiss_index

    faiss_index.search(index, info, queries[:K], K)
    best, ids = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        _, ids = faiss_index.search(index, info, queries, K)
        best = min(best, time.perf_counter() - started)
    return len(queries) / best, ids


def faiss_compare(dataset: str, work: str) -> dict:
    """An IVF-Flat index of the image embeddings (random unit vectors when there are none), tuned
    to recall@10 0.95 on the CPU; then the same index searched on the CPU and, loaded through
    pipeline.embed.index.load_index(gpu=True), on the GPU: recall@10 against exact search and
    queries/s of each. Returns {"cpu": {...}, "gpu": {...} or {"skipped": why}, "vectors": ...}."""
    import faiss
    import numpy as np

    from pipeline.embed import index as faiss_index
    from pipeline.embed import store

    try:
        _, vectors = store.read_vectors(Path(dataset) / "embeddings", "image")
        vectors = vectors[~np.isnan(vectors).any(axis=1)]
        source = "image embeddings"
    except Exception as exc:  # noqa: BLE001 - the embed section reports its own failure
        vectors = np.random.default_rng(0).standard_normal((20_000, 512)).astype(np.float32)
        source = f"random vectors (no embeddings: {type(exc).__name__})"
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index, info = faiss_index.build_index(vectors, kind="ivfflat", recall_queries=QUERIES)
    folder = Path(work) / "faiss"
    faiss_index.save_index(index, info, folder)
    queries = _queries(vectors, QUERIES)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    truth = exact.search(queries, K)[1]

    def figures(gpu: bool) -> dict:
        loaded, loaded_info = faiss_index.load_index(folder, gpu=gpu)
        qps, ids = _timed_search(loaded, loaded_info, queries)
        recall = faiss_index._overlap(ids, truth, K)  # noqa: SLF001 - the index's own measure
        return {"qps": qps, "recall": recall, "index": type(loaded).__name__}

    result = {"vectors": f"{len(vectors)} x {vectors.shape[1]} {source}", "factory": info.factory}
    result["params"] = info.search_params
    result["cpu"] = figures(gpu=False)
    if not hasattr(faiss, "StandardGpuResources"):
        result["gpu"] = {"skipped": "faiss-gpu is not installed (this faiss has no GPU support)"}
    elif faiss.get_num_gpus() < 1:
        result["gpu"] = {"skipped": "faiss sees no GPU"}
    else:
        result["gpu"] = figures(gpu=True)
    return result


def clip_score(checkpoint: str, shard: str, device: str, pairs: int) -> dict:
    """The score stage's own model loading and scoring (pipeline.stages.score: `_model`, then
    embed_pairs), called directly, on `device` and on the CPU for the same first `pairs` rows of
    a shard: pairs/s on `device` and the largest score difference between the two."""
    import numpy as np
    import pyarrow.parquet as pq

    from pipeline.embed.encode import checkpoint_digest, embed_pairs
    from pipeline.stages import score

    table = pq.read_table(shard, columns=["jpg", "caption"]).slice(0, pairs)
    images, captions = table["jpg"].to_pylist(), table["caption"].to_pylist()
    digest = checkpoint_digest(checkpoint)
    model, _ = score._model(checkpoint, digest, device)  # noqa: SLF001 - the stage's loader
    embed_pairs(model, images[:64], captions[:64], 256)  # warm-up: kernels, cuDNN autotune
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    started = time.perf_counter()
    on_device = embed_pairs(model, images, captions, 256).score
    seconds = time.perf_counter() - started
    result = {"rate": len(images) / seconds, "unit": "pairs/s", "pairs": len(images)}
    if device != "cpu":  # the CPU's scores of the first rows as the reference (fp32 both)
        cpu_model, _ = score._model(checkpoint, digest, "cpu")  # noqa: SLF001
        first = min(len(images), CPU_REFERENCE_PAIRS)
        reference = embed_pairs(cpu_model, images[:first], captions[:first], 256).score
        result["max_diff_vs_cpu"] = float(np.nanmax(np.abs(on_device[:first] - reference)))
        result["compared"] = first
    result["mean_score"] = float(np.nanmean(on_device))
    return result
