"""The one list of stages. `pipeline build` runs them in this order, `--stage` takes their names,
the Airflow DAG makes tasks of them, and the `stats` view and the report order by them.

The list names the classes by module path, so reading it (for `--help`, or when the scheduler
parses a DAG) imports no stage code; `get(name)` imports a stage when it is used."""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.stages.base import Stage

_REGISTRY = (
    ("sources", "pipeline.stages.sources:SourcesStage"),
    ("match", "pipeline.stages.match:MatchStage"),
    ("balance", "pipeline.stages.balance:BalanceStage"),
    ("text", "pipeline.stages.text:TextStage"),
    ("robots", "pipeline.stages.robots:RobotsStage"),  # every origin's robots.txt, once
    ("fetch", "pipeline.stages.fetch:FetchStage"),  # every distinct URL, once, by host lanes
    ("images", "pipeline.stages.images:ImagesStage"),
    ("dedup", "pipeline.stages.dedup:DedupStage"),
    ("score", "pipeline.stages.score:ScoreStage"),  # only with --clip-model: CLIP scores
    ("clip", "pipeline.stages.clip:ClipStage"),  # only with --clip-model: threshold, SemDeDup
    ("shards", "pipeline.stages.shards:ShardsStage"),
    ("publish", "pipeline.stages.publish:PublishStage"),  # the manifests: no `stats` row
)
STAGE_NAMES = tuple(name for name, _ in _REGISTRY)


@functools.cache
def get(name: str) -> Stage:
    if name not in STAGE_NAMES:
        raise KeyError(f"no stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
    module, _, cls = dict(_REGISTRY)[name].partition(":")
    stage = getattr(importlib.import_module(module), cls)()
    if stage.name != name:
        raise TypeError(f"{cls} is named {stage.name!r}, registered as {name!r}")
    return stage


def order(name: str) -> int:
    """Where a stage runs: it orders the `stats` view and the report's funnel."""
    return 10 * (STAGE_NAMES.index(name) + 1)


def all_stages() -> list[Stage]:
    return [get(name) for name in STAGE_NAMES]


def resolve_inputs(stage: Stage, config) -> tuple[str, ...]:
    """The stages that provide `stage`'s declared inputs in this build: a disabled stage (clip
    without --clip-model, the image stages with --no-fetch) hands over its own first input."""
    resolved = []
    for name in stage.inputs:
        while not get(name).enabled(config):
            inputs = get(name).inputs
            if not inputs:
                raise ValueError(f"stage {stage.name}: input {name} is disabled and has no input")
            name = inputs[0]
        resolved.append(name)
    return tuple(resolved)
