"""What the `clip_bootstrap` DAG's tasks do: the bootstrap loop of model-based curation.

    build_unfiltered -> train_first -> embed -> build_filtered -> train_second -> evaluate_both

Build a dataset from a source with no model, train a CLIP model on it, embed the dataset with it
(a FAISS index to search it), rebuild from the same source with that model as the CLIP-score
filter (`--clip-model`), train the same architecture for the same number of samples on the
filtered pairs, and evaluate both checkpoints on the same eval sets. Every folder lives under the
run's `out` (see `paths`), so tasks pass only paths and each one resumes: builds from their stage
markers, training with --resume, embedding per shard, and evaluation simply runs again.

Like dags/_common.py, this module imports neither Airflow nor anything heavy at import time.
"""

import json
import logging
import os

from dags._common import (
    absolute_path,
    blank_to_none,
    build_config,
    config_error,
    run_evaluation,
    run_training,
)

log = logging.getLogger(__name__)

# The CLIP-filter params; the filtered build gets them (and clip_model) as BuildConfig fields.
FILTER_PARAMS = ("min_clip_score", "clip_top_fraction", "semdedup_eps")
# BuildConfig fields the DAG sets itself: build_options may not hold them.
SET_BY_DAG = ("clip_model", "device", *FILTER_PARAMS)


def paths(params: dict) -> dict[str, str]:
    """The folders and files of one bootstrap run, all under the absolute `out`."""
    out = absolute_path("out", params.get("out"))
    return {
        "round1": os.path.join(out, "round1"),  # the unfiltered dataset (+ embeddings/)
        "run1": os.path.join(out, "run1"),  # the model trained on it, the scorer of round 2
        "round2": os.path.join(out, "round2"),  # the CLIP-filtered dataset
        "run2": os.path.join(out, "run2"),  # the model trained on that
        "results": os.path.join(out, "bootstrap.json"),  # both models' results side by side
    }


def filter_options(params: dict) -> dict:
    """The filtered build's CLIP-filter fields: one of min_clip_score / clip_top_fraction (or
    SemDeDup alone), numbers in range. Checked by the first task, so a bad value fails the run
    before anything is built, not after the first training."""
    options = {k: blank_to_none(params.get(k)) for k in FILTER_PARAMS}
    options = {k: v for k, v in options.items() if v is not None}
    for key, value in options.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise config_error(f"param {key!r} must be a number, not {value!r}")
    if "min_clip_score" in options and "clip_top_fraction" in options:
        raise config_error(
            "give min_clip_score or clip_top_fraction, not both "
            "(set clip_top_fraction to null to filter by min_clip_score)"
        )
    if not options:
        raise config_error(
            "the filtered build needs a filter: min_clip_score, clip_top_fraction or semdedup_eps"
        )
    if not 0 < options.get("clip_top_fraction", 1) <= 1:
        raise config_error(
            f"clip_top_fraction must be in (0, 1], not {options['clip_top_fraction']}"
        )
    return options


def _build_options(params: dict) -> dict:
    """`build_options` of both builds, which may not set what the DAG sets itself."""
    options = params.get("build_options") or {}
    if not isinstance(options, dict):
        raise config_error(f"param 'build_options' must be a JSON object, not {options!r}")
    twice = sorted(set(options) & set(SET_BY_DAG))
    if twice:
        raise config_error(
            f"build_options sets {', '.join(twice)}; the bootstrap DAG sets these itself "
            "(use its params min_clip_score, clip_top_fraction, semdedup_eps, device)"
        )
    return options


def _build_params(params: dict, round_name: str, checkpoint: str | None) -> dict:
    options = _build_options(params)
    if checkpoint is not None:
        device = blank_to_none(params.get("device")) or "auto"
        options = {**options, **filter_options(params), "clip_model": checkpoint, "device": device}
    return {**params, "out": paths(params)[round_name], "build_options": options}


def build_round(params: dict, round_name: str, checkpoint: str | None = None):
    """The BuildConfig of round 1 (no model) or round 2 (`checkpoint` scores every pair)."""
    return build_config(_build_params(params, round_name, checkpoint))


def check_params(params: dict) -> None:
    """Everything that can be checked before the first build: paths, both builds' configs, the
    filter, the eval sets."""
    paths(params)
    build_round(params, "round1")
    filter_options(params)
    sets = params.get("eval_sets")
    if not isinstance(sets, list) or not sets:
        raise config_error("param 'eval_sets' must list at least one ImageFolder eval set")
    for path in sets:
        absolute_path("eval_sets[]", path)


def _run_build(config) -> str:
    from pipeline.build import run_build

    log.info("building %s", config.out)
    return str(run_build(config).root)


def build_unfiltered(params: dict) -> str:
    """Round 1: the source built with no model; returns the dataset folder."""
    check_params(params)
    return _run_build(build_round(params, "round1"))


def train_params(params: dict, data: str, run_name: str) -> dict:
    """clip_train-style params of one training run: the same model, samples and options for
    both rounds; only the data and the run folder differ."""
    # Not ray_address: that one is the builds'; a Ray Train job is train_options' ray_address.
    keys = ("subset", "model", "samples", "batch_size", "train_options")
    chosen = {k: params[k] for k in keys if k in params}
    return {**chosen, "data": data, "run_dir": paths(params)[run_name]}


def train(params: dict, data: str, run_name: str) -> str:
    """Train (or resume) on `data`; returns RUN_DIR/latest.pt."""
    return run_training(train_params(params, data, run_name))


def embed(params: dict, data: str, checkpoint: str) -> str:
    """`pipeline embed DATA --checkpoint CKPT`: embeddings and a FAISS index of round 1, so it can
    be searched (`pipeline search`) before or while round 2 is built; returns the folder."""
    from pipeline.embed.run import run_embed
    from pipeline.embed.store import embeddings_dir

    device = blank_to_none(params.get("device")) or "auto"
    meta = run_embed(
        absolute_path("data", data), absolute_path("checkpoint", checkpoint), device=device
    )
    log.info("embedded %s rows of %s", meta.get("rows"), data)
    return str(embeddings_dir(data))


def build_filtered(params: dict, checkpoint: str) -> str:
    """Round 2: the same source rebuilt with `checkpoint` as the CLIP-score filter."""
    if not _location(absolute_path("checkpoint", checkpoint)).is_file():
        raise config_error(f"no checkpoint at {checkpoint} to filter with")
    return _run_build(build_round(params, "round2", checkpoint))


def _eval_params(params: dict, data: str, run_name: str) -> dict:
    run_dir = paths(params)[run_name]
    return {
        "data": data,
        "run_dir": run_dir,
        "eval_out": os.path.join(run_dir, "eval.json"),
        "eval_sets": params.get("eval_sets") or [],
        "eval_options": params.get("eval_options") or {},
    }


def dataset_summary(data: str) -> dict:
    """Kept pairs, rows per status, and the clip stage's figures (threshold, scored) if any."""
    import manifests
    from manifests.layout import DatasetLayout

    con = manifests.open(data)
    status = dict(con.execute("SELECT status, count(*) FROM samples GROUP BY 1").fetchall())
    summary = {"data": data, "kept": status.get("kept", 0), "status": status}
    clip = DatasetLayout(data).stats / "clip.json"
    if clip.exists():
        summary["clip_stage"] = json.loads(clip.read_text())
    return summary


def compare(first: dict, second: dict) -> dict:
    """Per eval set, both models' zero-shot figures and the change (second minus first)."""
    table = {}
    for name in sorted(set(first) & set(second)):
        a, b = first[name].get("zero_shot") or {}, second[name].get("zero_shot") or {}
        keys = [k for k in ("top1", "top5", "mean_per_class_recall") if k in a and k in b]
        table[name] = {
            "first": {k: a[k] for k in keys},
            "second": {k: b[k] for k in keys},
            "change": {k: b[k] - a[k] for k in keys},
        }
    return table


def evaluate_both(params: dict, first_checkpoint: str, second_checkpoint: str) -> str:
    """`trainer eval` of both checkpoints on the eval sets (each against its own dataset for
    clean vs overlap); writes OUT/bootstrap.json comparing them and returns its path."""
    from manifests.layout import write_json_atomic

    where = paths(params)
    rounds = {}
    for name, checkpoint, data, run in (
        ("first", first_checkpoint, where["round1"], "run1"),
        ("second", second_checkpoint, where["round2"], "run2"),
    ):
        out = run_evaluation(_eval_params(params, data, run), checkpoint)
        rounds[name] = {
            "checkpoint": checkpoint,
            "eval": json.loads(_location(out).read_text()),
            "eval_out": out,
            **dataset_summary(data),
        }
    result = {
        "filter": {"clip_model": first_checkpoint, **filter_options(params)},
        "zero_shot": compare(rounds["first"]["eval"], rounds["second"]["eval"]),
        **rounds,
    }
    write_json_atomic(result, _location(where["results"]))
    for name, row in result["zero_shot"].items():
        log.info(
            "%s zero-shot top-1: first %.2f%%, second %.2f%% (%d vs %d training pairs)",
            name,
            100 * row["first"].get("top1", float("nan")),
            100 * row["second"].get("top1", float("nan")),
            rounds["first"]["kept"],
            rounds["second"]["kept"],
        )
    return where["results"]


def _location(path):
    from manifests.storage import location  # not at import: DAG files import nothing heavy

    return location(path)
