"""Unit tests of single stages: hand-made input parts in a dataset folder, one stage run through
the Stage interface (its plan, its parts on the local executor, its totals), outputs read back."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from manifests import schema
from manifests.layout import DatasetLayout, write_json_atomic, write_parquet_atomic
from pipeline.buildconfig import BuildConfig
from pipeline.executor import LocalExecutor
from pipeline.stages import registry
from pipeline.stages.base import StageRun


def sample_rows(rows: list[dict]) -> pa.Table:
    """samples rows with defaults: status pending, a uid from url and caption."""
    full = []
    for row in rows:
        row = {"status": schema.PENDING, "caption": "", **row}
        row.setdefault("uid", schema.sample_uid(row["url"], row["caption"]))
        full.append(row)
    return pa.Table.from_pylist(full, schema=schema.SAMPLES)


class StageBench:
    """One dataset folder, its parts, and a way to run one stage on it."""

    def __init__(self, root, parts: list[str], **options):
        self.layout = DatasetLayout(root).create()
        self.parts = parts
        write_json_atomic(parts, self.layout.work / "parts.json")
        self.config = BuildConfig.of(out=str(root), **{"url_list": "unused.csv", **options})

    def put(self, stage: str, part: str, table: pa.Table, kind: str | None = None) -> None:
        """An input part as `stage` would have left it (rows, or its `kind` side file)."""
        target = registry.get(stage)
        path = (
            target.file_path(self.layout, part, kind)
            if kind
            else target.rows_path(self.layout, part)
        )
        write_parquet_atomic(table, path)

    def run(self, name: str, resolver=None, executor=None) -> dict:
        """Run stage `name` to the end (in-process unless given an executor); its stats record."""
        stage = registry.get(name)
        run = StageRun(
            self.layout, stage, registry.resolve_inputs(stage, self.config), self.config, resolver
        )
        stage.check_config(run)
        return stage.execute(run, executor or LocalExecutor())

    def path(self, stage: str, part: str, kind: str | None = None):
        """The committed file of a finished part: its rows, or its `kind` side file."""
        target = registry.get(stage)
        return (
            target.file_path(self.layout, part, kind)
            if kind
            else target.rows_path(self.layout, part)
        )

    def rows(self, name: str, part: str) -> list[dict]:
        return pq.read_table(registry.get(name).rows_path(self.layout, part)).to_pylist()

    def marker(self, name: str, part: str) -> dict:
        return json.loads((self.layout.stage_dir(name) / f"{part}.done").read_text())


class Wide(LocalExecutor):
    """In-process, but planned as if `n` tasks ran at once (plans cut that many buckets)."""

    def __init__(self, n: int):
        self.n = n

    def parallelism(self) -> int:
        return self.n


@pytest.fixture
def bench(tmp_path):
    def make(parts=("p0",), **options) -> StageBench:
        return StageBench(tmp_path / "ds", list(parts), **options)

    return make
