"""The dataset folder layout and the writers every file goes through.

```
DIR/run.json                     resolved config and versions
DIR/dataset.json                 the committed version: every manifest and shard file it holds
DIR/versions/<N>.json            every version committed (`pipeline query DIR --version N`)
DIR/manifests/samples/*.parquet  one row per candidate (schema.SAMPLES)
DIR/manifests/pages/*.parquet    one row per page seen (schema.PAGES)
DIR/manifests/origins/*.parquet  per-origin files (robots.txt, tdmrep.json, ai.txt) asked (ORIGINS)
DIR/manifests/removals/*.parquet takedown requests carried out, row by row (REMOVALS)
DIR/shards/*.parquet             training shards (schema.shard_schema), with *_stats.json
DIR/stats/<stage>.json           rows in/out, drops per reason, seconds
DIR/subsets/*.sql                named subsets local to this dataset (beside manifests/subsets/)
DIR/work/<stage>/                intermediate parts and completion markers
DIR/overlap.parquet              eval images and whether the pool copies them (--eval-set)
DIR/eval_thumbs.parquet          thumbnails of the eval images copied (for `pipeline serve`)
DIR/report.html
```
DIR is a Location (manifests.storage): a local folder or a prefix in an object store. Every file
is one whole-object put (object stores publish an upload only when it completes; on a local disk
the put is a hidden temporary file renamed into place), so no reader ever sees half a file. A set
of files is committed by the small object written after them (a part's marker, dataset.json),
never by a rename: see manifests.commit.
"""

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

from manifests.storage import Location, location


@dataclass(frozen=True)
class DatasetLayout:
    root: Location

    def __post_init__(self):
        object.__setattr__(self, "root", location(self.root))

    @property
    def manifests(self) -> Location:
        return self.root / "manifests"

    @property
    def samples(self) -> Location:
        return self.manifests / "samples"

    @property
    def pages(self) -> Location:
        return self.manifests / "pages"

    @property
    def origins(self) -> Location:
        return self.manifests / "origins"

    @property
    def shards(self) -> Location:
        return self.root / "shards"

    @property
    def stats(self) -> Location:
        return self.root / "stats"

    @property
    def subsets(self) -> Location:
        return self.root / "subsets"

    @property
    def work(self) -> Location:
        return self.root / "work"

    @property
    def dataset_json(self) -> Location:
        return self.root / "dataset.json"

    @property
    def versions(self) -> Location:
        return self.root / "versions"

    def version_json(self, version: int) -> Location:
        return self.versions / f"{version:06d}.json"

    @property
    def run_json(self) -> Location:
        return self.root / "run.json"

    @property
    def report(self) -> Location:
        return self.root / "report.html"

    def stage_dir(self, stage: str) -> Location:
        return self.work / stage

    def is_dataset(self) -> bool:
        return self.run_json.exists() or self.manifests.is_dir()

    def create(self) -> "DatasetLayout":
        for path in (self.samples, self.pages, self.shards, self.stats, self.work):
            path.mkdir(parents=True, exist_ok=True)
        return self


@contextlib.contextmanager
def atomic_path(path) -> Iterator:
    """A local file to write `path`'s content into, put whole at `path` on a clean exit and
    discarded on an error (for writers that need a real file: Parquet, tar, matplotlib)."""
    with location(path).staged() as tmp:
        yield tmp


def write_parquet_atomic(
    table, path, row_group_size: int | None = None, compression="zstd"
) -> Location:
    """A pyarrow Table as one Parquet file (zstd, or per column: {name: codec}), put whole."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression=compression)
    return location(path)


def write_bytes_atomic(data: bytes, path) -> Location:
    target = location(path)
    target.write_bytes(data)
    return target


def write_json_atomic(obj, path) -> Location:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    return write_bytes_atomic(text.encode("utf-8"), path)


_MISSING = object()


def read_json(path, default=_MISSING):
    """A JSON file's value; `default` if the file does not exist (one request on a store,
    where checking first would be two)."""
    try:
        return json.loads(location(path).read_text())
    except FileNotFoundError:
        if default is _MISSING:
            raise
        return default
