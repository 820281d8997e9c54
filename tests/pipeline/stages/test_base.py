"""The Stage interface itself: what the base class does for every stage."""

import pyarrow as pa
import pytest

from manifests import schema
from pipeline.executor import LocalExecutor
from pipeline.stages import registry
from pipeline.stages.base import PartOutput, PartStats, Stage, StageRun
from tests.pipeline.stages.conftest import sample_rows

pytestmark = pytest.mark.timeout(60)


class Upper(Stage):
    """A stage for these tests: drops rows whose caption is 'bad' with a status it is given."""

    name, inputs = "text", ("balance",)  # reads balance's rows, writes where text would
    status = "boilerplate_caption"

    def __init__(self):
        self.calls = {"plan": 0, "process": 0}

    def plan(self, run):
        self.calls["plan"] += 1

    def process(self, task, rows) -> PartOutput:
        self.calls["process"] += 1
        out = rows.to_pylist()
        for row in out:
            if row["caption"] == "bad":
                row["status"] = self.status
        return PartOutput(pa.Table.from_pylist(out, schema=schema.SAMPLES))


class InProcess:
    """An executor that runs the given stage object (not the registry's) on each task."""

    def __init__(self, stage):
        self.stage = stage

    def parallelism(self) -> int:
        return 1

    def map(self, fn, tasks, name=None, resources=None, pool=False):
        return (self.stage.run_part(t) for t in tasks)


def _run(b, stage):
    run = StageRun(b.layout, stage, ("balance",), b.config)
    return stage.execute(run, InProcess(stage))


def test_the_base_counts_times_marks_and_skips_finished_parts(bench):
    b = bench(parts=["p0", "p1"])
    b.put(
        "balance",
        "p0",
        sample_rows(
            [
                {"url": "http://a/1", "caption": "good"},
                {"url": "http://a/2", "caption": "bad"},
                {"url": "http://a/3", "caption": "x", "status": "language"},
            ]
        ),
    )
    b.put("balance", "p1", sample_rows([{"url": "http://a/4", "caption": "bad"}]))
    stage = Upper()
    record = _run(b, stage)
    assert (record["rows_in"], record["rows_out"]) == (3, 1)
    assert record["drops"] == {"boilerplate_caption": 2}
    assert record["order"] == registry.order("text") and record["seconds"] > 0
    assert b.marker("text", "p0")["drops"] == {"boilerplate_caption": 1}
    assert stage.calls == {"plan": 1, "process": 2}
    again = _run(b, stage)  # every part has its marker, and the plan too
    assert stage.calls == {"plan": 1, "process": 2}
    assert again["drops"] == record["drops"]


def test_a_status_outside_the_enum_is_refused_before_the_part_is_written(bench):
    b = bench()
    b.put("balance", "p0", sample_rows([{"url": "http://a/1", "caption": "bad"}]))
    stage = Upper()
    stage.status = "bad_caption"  # a typo of a reason: not in schema.DropReason
    with pytest.raises(ValueError, match="outside schema.DropReason"):
        _run(b, stage)
    assert not (b.layout.stage_dir("text") / "p0.done").exists()
    assert not (b.layout.stage_dir("text") / "p0.parquet").exists()


def test_a_drop_counter_outside_the_enum_is_refused(bench):
    run = StageRun(bench().layout, Upper(), ("balance",))
    with pytest.raises(ValueError, match="outside schema.DropReason"):
        run.mark_done("p0", PartStats(drops={"mystery": 1}))
    run.mark_done("p0", PartStats(drops={"repeated_pair": 1, "page_not_html": 2}))


def test_a_stage_reads_only_the_inputs_it_declares(bench):
    b = bench()
    task = StageRun(b.layout, Upper(), ("balance",), b.config).task("p0")
    with pytest.raises(ValueError, match="does not declare"):
        Upper().read(task, "images")


def test_disabled_stages_hand_over_their_input(bench):
    full, text_only = bench().config, bench(fetch=False).config
    get = registry.get
    assert registry.resolve_inputs(get("shards"), full) == ("dedup", "images")  # no --clip-model
    assert registry.resolve_inputs(get("publish"), full) == ("dedup", "shards")
    assert registry.resolve_inputs(get("publish"), text_only) == ("text", "text")
    assert [s.name for s in registry.all_stages()] == list(registry.STAGE_NAMES)


def test_every_registered_stage_has_its_own_unit_test():
    from pathlib import Path

    here = Path(__file__).parent
    assert {f"test_{name}.py" for name in registry.STAGE_NAMES} <= {p.name for p in here.iterdir()}


def test_run_stage_part_is_what_executors_map(bench):
    from pipeline.stages.base import run_stage_part

    b = bench()
    b.put("balance", "p0", sample_rows([{"url": "http://a/1", "caption": "a photo of a cat"}]))
    run = StageRun(b.layout, registry.get("text"), ("balance",), b.config)
    [stats] = list(LocalExecutor().map(run_stage_part, [run.task("p0")]))
    assert (stats.rows_in, stats.rows_out) == (1, 1)
