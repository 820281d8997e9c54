"""Stage `score` (only with --clip-model): every pending pair's CLIP score, in tasks.

One part at a time on a pool of Ray actors (one per GPU where the cluster has GPUs, one per CPU
otherwise; pipeline.executor's pooled map): the cosine of each pair's image and caption
embeddings with a trainer checkpoint, batched. work/score/<part>.parquet holds uid, clip_score
(NaN where the image does not decode) and the image embedding (float16, for SemDeDup). Each
actor loads the model once and keeps it for every part it scores (stats' extra `model_loads`
counts the loads, `worker_processes` the actors). The plan records the checkpoint's sha256: the scores of one
build come from one model, and a checkpoint rewritten in place is an error, not a silent mix."""

from __future__ import annotations

import json
import logging
import os
import socket

from manifests import schema
from manifests.config import ConfigError
from manifests.layout import write_json_atomic
from pipeline.stages.base import PartOutput, PartStats, Stage, StageRun

log = logging.getLogger(__name__)
_MODELS: dict[tuple, object] = {}  # per worker process: (path, sha256, device) -> loaded model


def _changed(checkpoint: str) -> ConfigError:
    return ConfigError(
        f"{checkpoint} changed since this build began scoring with it; "
        "restore it, or build into a new --out"
    )


def _model(checkpoint: str, digest: str, device: str) -> tuple[object, bool]:
    """The loaded model, and whether this call loaded it (False: this process had it)."""
    from pipeline.embed.encode import checkpoint_digest, load_model

    key = (checkpoint, digest, device)
    if key in _MODELS:
        return _MODELS[key], False
    if checkpoint_digest(checkpoint) != digest:
        raise _changed(checkpoint)
    _MODELS.clear()  # one model at a time: a worker's memory is not for a zoo
    _MODELS[key] = load_model(checkpoint, device)
    return _MODELS[key], True


class ScoreStage(Stage):
    name, inputs, samples = "score", ("dedup", "images"), False
    unit, pooled = "pairs", True

    def enabled(self, config) -> bool:
        return config.clip.clip_model is not None and config.fetch

    def check_config(self, run: StageRun) -> None:
        from pipeline.embed.encode import load_model

        if not (run.layout.stats / f"{self.name}.json").exists():  # not finished: it will score
            load_model(run.config.clip.clip_model, run.config.clip.device)  # fails now if bad

    def task_resources(self, config) -> dict:
        return {} if config.clip.device == "cpu" else {"num_gpus": 1}

    def plan(self, run: StageRun) -> None:
        from pipeline.embed.encode import checkpoint_digest

        checkpoint = run.config.clip.clip_model
        digest, path = checkpoint_digest(checkpoint), run.dir / "model.json"
        if path.exists() and json.loads(path.read_text())["checkpoint_sha256"] != digest:
            raise _changed(checkpoint)
        write_json_atomic({"checkpoint": checkpoint, "checkpoint_sha256": digest}, path)

    def process(self, task, rows) -> PartOutput:
        import pyarrow as pa
        import pyarrow.compute as pc

        from pipeline.embed.encode import embed_pairs
        from pipeline.embed.store import vector_array

        config = task.config.clip
        digest = json.loads((task.work_dir / "model.json").read_text())["checkpoint_sha256"]
        model, loaded = _model(config.clip_model, digest, config.device)
        pending = rows.filter(pc.equal(rows["status"], schema.PENDING))
        uids = pending["uid"].to_pylist()
        stored = self.read(task, "images", "images", columns=["uid", "image"])
        image_of = dict(zip(stored["uid"].to_pylist(), stored["image"].to_pylist(), strict=True))
        captions = [c or "" for c in pending["caption"].to_pylist()]
        emb = embed_pairs(model, [image_of[u] for u in uids], captions, config.batch_size)
        table = pa.table(
            {
                "uid": pa.array(uids, pa.string()),
                "clip_score": pa.array(emb.score, pa.float32()),
                "image": vector_array(emb.image),
            }
        )
        readable = int((emb.score == emb.score).sum())  # NaN: the image did not decode
        extra = {"model_loads": int(loaded), "worker": f"{socket.gethostname()}:{os.getpid()}"}
        return PartOutput(table, stats=PartStats(len(uids), readable, extra=extra))

    def summarise(self, run: StageRun, parts: dict[str, PartStats]) -> dict:
        return {
            "model_loads": sum(s.extra.get("model_loads", 0) for s in parts.values()),
            "worker_processes": len({s.extra.get("worker") for s in parts.values()}),
        }
