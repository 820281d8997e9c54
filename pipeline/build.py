"""`pipeline build`: run the registry's stages in order over one dataset folder, resuming
finished work (every stage skips the parts its markers say are done)."""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import time

from manifests.commit import (
    LAYOUT_VERSION,
    commit_dataset,
    read_dataset_json,
    rewrites,
    stage_files,
)
from manifests.config import ConfigError, leaf_fields
from manifests.layout import DatasetLayout, read_json, write_json_atomic
from pipeline.buildconfig import BuildConfig

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


def _comparable(options: dict) -> dict:
    """Flat options as a rerun compares them: without runtime options, normalised by the config
    (defaults a config resolves, such as encode_quality, compare as resolved)."""
    runtime, known = BuildConfig.runtime_only(), set(leaf_fields(BuildConfig))
    options = {k: v for k, v in options.items() if k in known}
    with contextlib.suppress(ConfigError):  # e.g. a model file since removed: compare as written
        options = BuildConfig.from_options(options).options()
    return {k: v for k, v in options.items() if k not in runtime}


def check_run_json(layout: DatasetLayout, config: BuildConfig) -> None:
    """A rerun must ask for the same build; write run.json on the first run."""

    if layout.run_json.exists():
        previous = _comparable(json.loads(layout.run_json.read_text())["config"])
        now = _comparable(config.options())
        changed = sorted(k for k in now if k in previous and previous[k] != now[k])
        if changed:
            raise ConfigError(
                f"{layout.root} was built with other settings ({', '.join(changed)} differ); "
                "rerun with the same options to resume, or choose a new --out"
            )
        return
    layout.create()
    record = {
        "config": config.options(),
        "versions": _versions(),
        "created": time.time(),
        "layout": LAYOUT_VERSION,  # readers take the committed files from dataset.json
    }
    write_json_atomic(record, layout.run_json)


def wanted_stages(config: BuildConfig, names: list[str] | None = None) -> list:
    """The registry's stages this build runs, in order: the enabled ones, or those of them that
    `names` asks for."""
    from pipeline.stages.registry import STAGE_NAMES, all_stages

    unknown = sorted(set(names or ()) - set(STAGE_NAMES))
    if unknown:
        raise ConfigError(
            f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGE_NAMES)}"
        )
    enabled = [s for s in all_stages() if s.enabled(config)]
    if names is None:
        return enabled
    for name in sorted(set(names) - {s.name for s in enabled}):
        log.info("stage %s: not part of this build (see its options), nothing to do", name)
    return [s for s in enabled if s.name in names]


def run_build(config: BuildConfig, resolver=None, stages: list[str] | None = None) -> DatasetLayout:
    """Build (or resume) the dataset `config.out`: every stage, or only `stages`.
    `resolver` fakes DNS in tests."""
    from pipeline.executor import make_executor
    from pipeline.stages.base import StageRun
    from pipeline.stages.registry import resolve_inputs

    wanted = wanted_stages(config, stages)
    layout = DatasetLayout(config.out)
    check_run_json(layout, config)
    layout.create()
    runs = [StageRun(layout, s, resolve_inputs(s, config), config, resolver) for s in wanted]
    for run in runs:  # bad input fails now, not hours into the build
        run.stage.check_config(run)
    executor = make_executor(config.execution)
    try:
        for run in runs:
            run.stage.execute(run, executor)
    finally:
        executor.shutdown()
    if any(run.name == "publish" for run in runs):
        commit_build(layout, [s.name for s in wanted_stages(config)])
    return layout


def commit_build(layout: DatasetLayout, enabled: list[str]) -> None:
    """The commit: one small object naming every file of the new version (manifests.commit).
    It follows the last stage, publish (a DAG's publish task), once every stage of the build
    has finished; a dataset of the layout before dataset.json is left as it is (its readers
    list its folders)."""
    from manifests.commit import is_legacy
    from pipeline.stages.registry import STAGE_NAMES

    unfinished = [s for s in enabled if not (layout.stage_dir(s) / "committed.json").exists()]
    if unfinished:
        log.info("%s: not committed, stages %s have not finished", layout.root, unfinished)
        return
    if is_legacy(layout):
        log.info("%s: written before dataset.json; readers list its folders", layout.root)
        return
    index = read_json(layout.stats / "shards.json", {}).get("extra", {}).get("index")
    # through the rechecks' rewrites, so a rerun does not undo them (manifests.commit.rewrites)
    replaced, added = rewrites(read_dataset_json(layout))
    built = stage_files(layout, STAGE_NAMES)
    lost = sorted(set(replaced) - set(built))
    if lost:  # the rerun wrote those parts anew: what a recheck found there must be found again
        log.warning(
            "%s: %d samples file(s) a recheck rewrote were written anew by this run; "
            "run `pipeline recheck` again",
            layout.root,
            len(lost),
        )
        replaced = {k: v for k, v in replaced.items() if k not in lost}
    files = [replaced.get(f, f) for f in built] + added
    carry = {"replaced": replaced, "added": added} if replaced or added else None
    commit_dataset(layout, files, shard_index=index, stages=STAGE_NAMES, carry=carry)
