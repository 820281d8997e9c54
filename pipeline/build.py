"""`pipeline build`: run the stages in order over one dataset folder, resuming finished work."""

import dataclasses
import json
import logging
import os
import platform
import time

from manifests.layout import DatasetLayout, write_json_atomic
from pipeline.buildconfig import BuildConfig
from pipeline.config import ConfigError

log = logging.getLogger(__name__)


def _versions() -> dict:
    from importlib import metadata

    names = ["clipengine", "pyarrow", "duckdb", "ray", "aiohttp", "selectolax", "pyahocorasick"]
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["python"] = platform.python_version()
    return found


def _output_settings(config: BuildConfig) -> dict:
    values = dataclasses.asdict(config)
    for name in BuildConfig.RUNTIME_ONLY:
        values.pop(name)
    return values


def check_run_json(layout: DatasetLayout, config: BuildConfig) -> None:
    """A rerun must ask for the same build; write run.json on the first run."""
    if layout.run_json.exists():
        previous = json.loads(layout.run_json.read_text())["config"]
        previous = {k: v for k, v in previous.items() if k not in BuildConfig.RUNTIME_ONLY}
        changed = sorted(k for k, v in _output_settings(config).items() if previous.get(k) != v)
        if changed:
            raise ConfigError(
                f"{layout.root} was built with other settings ({', '.join(changed)} differ); "
                "rerun with the same options to resume, or choose a new --out"
            )
        return
    layout.create()
    write_json_atomic(
        {"config": dataclasses.asdict(config), "versions": _versions(), "created": time.time()},
        layout.run_json,
    )


# Stages in order. `pipeline build --stage NAME` (and the Airflow DAG) runs them one at a time;
# each resumes from its markers, so running a finished stage again does nothing.
# `clip` only works with --clip-model; without one it is skipped and shards read dedup's rows.
STAGES = ("sources", "match", "balance", "text", "images", "dedup", "clip", "shards")


def _before_shards(config: BuildConfig) -> str:
    return "clip" if config.clip_model else "dedup"


def _parts(layout: DatasetLayout) -> list[str]:
    path = layout.work / "parts.json"
    if not path.exists():
        raise ConfigError(f"{layout.root}: the sources stage has not finished; run it first")
    return json.loads(path.read_text())


def _run_stage(stage: str, config: BuildConfig, layout: DatasetLayout, executor, resolver) -> None:
    from pipeline.stages import balance, clip, dedup, images, match, shards, sources, text

    if stage == "sources":
        parts = sources.run_sources(config, layout, executor, resolver)
        write_json_atomic(parts, layout.work / "parts.json")
        return
    parts = _parts(layout)
    if stage == "match":
        match.run_match(config.query_list, layout, parts, executor)
    elif stage == "balance":
        cap = config.per_query_cap if config.query_list else None
        balance.run_balance(layout, parts, cap, config.seed, executor)
    elif stage == "text":
        text.run_text(layout, parts, "balance", config.text_filter_config(), executor)
    elif stage == "images":
        fetch = sources.fetch_config(config, max_bytes=config.max_image_bytes)
        images.run_images(layout, parts, "text", fetch, config.image_config(), executor, resolver)
    elif stage == "dedup":
        dedup.run_dedup(layout, parts, "images", config.eval_set, config.near_dup_radius)
    elif stage == "clip":
        if config.clip_model:
            clip.run_clip(config, layout, parts, "dedup")
        else:
            log.info("stage clip: no --clip-model, nothing to do")
    elif stage == "shards":
        shards.run_shards(layout, parts, _before_shards(config), config.shard_size,
                          config.encode_format, config.webdataset, executor)  # fmt: skip


def run_build(config: BuildConfig, resolver=None, stages: list[str] | None = None) -> DatasetLayout:
    """Build (or resume) the dataset `config.out`: every stage, or only `stages`.
    `resolver` fakes DNS in tests."""
    from pipeline.executor import ExecutorConfig, make_executor
    from pipeline.stages.base import publish_samples

    unknown = sorted(set(stages or ()) - set(STAGES))
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    last = "text" if config.no_fetch else "shards"
    wanted = [s for s in STAGES[: STAGES.index(last) + 1] if stages is None or s in stages]
    layout = DatasetLayout(config.out)
    check_run_json(layout, config)
    layout.create()
    if config.query_list and not os.path.isfile(config.query_list):
        raise ConfigError(f"query list {config.query_list} does not exist")
    config.text_filter_config(), config.image_config()  # validate before any work
    clip_pending = not (layout.stats / "clip.json").exists()  # the stage has not finished
    if config.clip_model and clip_pending and not config.no_fetch and "clip" in (stages or STAGES):
        from pipeline.embed.encode import load_model

        load_model(config.clip_model, config.device)  # a bad checkpoint fails now, not hours later
    executor = make_executor(ExecutorConfig(config.executor, config.ray_address))
    try:
        for stage in wanted:
            _run_stage(stage, config, layout, executor, resolver)
        if last in wanted:
            publish_samples(layout, last, _parts(layout))
    finally:
        executor.shutdown()
    return layout


def status_counts(layout: DatasetLayout) -> list[tuple[str, int]]:
    import manifests

    con = manifests.open(layout.root)
    return con.execute("SELECT status, count(*) FROM samples GROUP BY 1 ORDER BY 2 DESC").fetchall()
