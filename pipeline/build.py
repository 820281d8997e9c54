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


def run_build(config: BuildConfig, resolver=None) -> DatasetLayout:
    """Build (or resume) the dataset `config.out`. `resolver` fakes DNS in tests."""
    from pipeline.executor import ExecutorConfig, make_executor
    from pipeline.stages.balance import run_balance
    from pipeline.stages.base import publish_samples
    from pipeline.stages.dedup import run_dedup
    from pipeline.stages.images import run_images
    from pipeline.stages.match import run_match
    from pipeline.stages.shards import run_shards
    from pipeline.stages.sources import fetch_config, run_sources
    from pipeline.stages.text import run_text

    layout = DatasetLayout(config.out)
    check_run_json(layout, config)
    layout.create()
    if config.query_list and not os.path.isfile(config.query_list):
        raise ConfigError(f"query list {config.query_list} does not exist")
    text_config, image_config = config.text_filter_config(), config.image_config()  # validate early
    executor = make_executor(ExecutorConfig(config.executor, config.ray_address))
    try:
        parts = run_sources(config, layout, executor, resolver)
        run_match(config.query_list, layout, parts, executor)
        cap = config.per_query_cap if config.query_list else None
        run_balance(layout, parts, cap, config.seed, executor)
        run_text(layout, parts, "balance", text_config, executor)
        if config.no_fetch:
            publish_samples(layout, "text", parts)
            return layout
        fetch = fetch_config(config, max_bytes=config.max_image_bytes)
        run_images(layout, parts, "text", fetch, image_config, executor, resolver)
        run_dedup(layout, parts, "images")
        run_shards(layout, parts, "dedup", config.shard_size, config.encode_format,
                   config.webdataset, executor)  # fmt: skip
        publish_samples(layout, "shards", parts)
    finally:
        executor.shutdown()
    return layout


def status_counts(layout: DatasetLayout) -> list[tuple[str, int]]:
    import manifests

    con = manifests.open(layout.root)
    return con.execute("SELECT status, count(*) FROM samples GROUP BY 1 ORDER BY 2 DESC").fetchall()
