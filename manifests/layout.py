"""The dataset folder layout and atomic writers.

```
DIR/run.json                     resolved config and versions
DIR/manifests/samples/*.parquet  one row per candidate (schema.SAMPLES)
DIR/manifests/pages/*.parquet    one row per page seen (schema.PAGES)
DIR/manifests/origins/*.parquet  robots.txt of every origin asked, once per build (schema.ORIGINS)
DIR/shards/*.parquet             training shards (schema.shard_schema), with *_stats.json
DIR/stats/<stage>.json           rows in/out, drops per reason, seconds
DIR/subsets/*.sql                named subsets local to this dataset (beside manifests/subsets/)
DIR/work/<stage>/                intermediate parts and completion markers
DIR/report.html
```
Every file is written through `atomic_path` (under a temporary name, then renamed), so a crash
never leaves half a file where a reader or a rerun would take it for a finished one.
"""

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatasetLayout:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def samples(self) -> Path:
        return self.manifests / "samples"

    @property
    def pages(self) -> Path:
        return self.manifests / "pages"

    @property
    def origins(self) -> Path:
        return self.manifests / "origins"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def stats(self) -> Path:
        return self.root / "stats"

    @property
    def subsets(self) -> Path:
        return self.root / "subsets"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    def stage_dir(self, stage: str) -> Path:
        return self.work / stage

    def is_dataset(self) -> bool:
        return self.run_json.exists() or self.manifests.is_dir()

    def create(self) -> "DatasetLayout":
        for path in (self.samples, self.pages, self.shards, self.stats, self.work):
            path.mkdir(parents=True, exist_ok=True)
        return self


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """The one commit point of every file the project writes: yields a temporary path beside
    `path` (its parent created); on a clean exit the file becomes `path` in one rename, on an
    error it is removed. So no reader ever sees half a file, and a crash leaves only hidden
    `.NAME.tmp-PID` leftovers, which no reader lists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet_atomic(table, path: Path, row_group_size: int | None = None) -> Path:
    """A pyarrow Table as one zstd Parquet file, committed whole."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")
    return Path(path)


def write_bytes_atomic(data: bytes, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json_atomic(obj, path: Path) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    return write_bytes_atomic(text.encode("utf-8"), path)
