"""Committing without rename, the same way on object stores and local disks.

Object stores have no atomic rename, and a reader of an object that is being overwritten can get
ranges of two versions. So no file is ever overwritten in place and no file becomes visible by a
rename:
- a part's files are written under names no earlier attempt used (`<part>.<token>.parquet`);
  then its marker (`<part>.done`, written last) names them: the marker is the commit. Files no
  marker names are leftovers of a killed attempt, read by nobody and swept by the next run.
- a finished stage writes `work/<stage>/committed.json` (every part's files, from the markers),
  so the driver finds a stage's outputs with one read, not one per part;
- a build ends by writing `DIR/dataset.json`: the version, and every manifest and shard file of
  it. Readers (`pipeline query`, the trainer, report, embed) read only the files it names, so a
  build that is still running or was killed shows the last committed version, whole.
- every version is also kept as `DIR/versions/<N>.json`, and no file a kept version names is
  swept: an earlier version stays readable (`pipeline query DIR --version N`) after a recheck
  rewrote some of its manifests.
"""

from __future__ import annotations

import logging
import re
import secrets
import time

from manifests.config import ConfigError
from manifests.layout import DatasetLayout, read_json, write_json_atomic
from manifests.storage import Location

log = logging.getLogger(__name__)

LAYOUT_VERSION = 2  # run.json's "layout": 2 = readers take files from dataset.json only
DATASET_KINDS = ("samples", "pages", "origins", "removals", "shards")
TOKENED = re.compile(r"^[^.]+(\.[^.]+)?\.[0-9a-f]{8}\.parquet$")


def new_token() -> str:
    """A name part no other attempt will pick (8 hex digits, 2^32 choices)."""
    return secrets.token_hex(4)


def tokened(base: Location, token: str) -> Location:
    """`.../list-00001.parquet` as `.../list-00001.<token>.parquet`."""
    return base.with_name(f"{base.stem}.{token}{base.suffix}")


def relative(layout: DatasetLayout, path: Location) -> str:
    return path.relative_to(layout.root).as_posix()


def kind_of(rel: str) -> str | None:
    """Which dataset view a root-relative file belongs to (None: it is work, not the dataset)."""
    head = rel.split("/")
    if head[0] == "manifests" and len(head) == 3 and head[1] in DATASET_KINDS:
        return head[1]
    if head[0] == "shards":
        return "shards"
    return None


def read_dataset_json(layout: DatasetLayout, version: int | None = None) -> dict | None:
    """The committed version's record, or version `version`'s (ConfigError if there is none)."""
    if version is None:
        return read_json(layout.dataset_json, None)
    record = read_json(layout.version_json(version), None)
    if record is None:
        known = versions(layout)
        shown = f"{known[0]} to {known[-1]}" if known else "none"
        raise ConfigError(f"{layout.root} has no version {version}; versions: {shown}")
    return record


def versions(layout: DatasetLayout) -> list[int]:
    """The numbers of the versions kept in DIR/versions, ascending."""
    if not layout.versions.is_dir():
        return []
    found = (p.stem for p in layout.versions.glob("*.json"))
    return sorted(int(stem) for stem in found if stem.isdigit())


def _kept_files(layout: DatasetLayout) -> set[str]:
    """Every file a kept version names (its manifests and shard index)."""
    keep: set[str] = set()
    for number in versions(layout):
        record = read_json(layout.version_json(number), {})
        keep.update(rel for group in record.get("files", {}).values() for rel in group)
        if record.get("shard_index"):
            keep.add(record["shard_index"])
    return keep


def is_legacy(layout: DatasetLayout) -> bool:
    """A dataset written before dataset.json (readers list its folders, as they did then)."""
    run = read_json(layout.run_json, None)
    if run is None:
        return not layout.dataset_json.exists()
    return run.get("layout", 1) < LAYOUT_VERSION


_UNREAD = object()


def shard_index(layout: DatasetLayout, record=_UNREAD) -> Location | None:
    """The committed version's shard index (None: a dataset without one; read the footers).
    `record`: dataset.json as read_dataset_json gave it (read here if not given)."""
    record = read_dataset_json(layout) if record is _UNREAD else record
    rel = record.get("shard_index") if record else None
    return layout.root / rel if rel else None


def committed_files(
    layout: DatasetLayout, kind: str, suffix: str = ".parquet", record=_UNREAD
) -> list[Location]:
    """The `suffix` files of view `kind` in the dataset's committed version, sorted by name.
    `record`: dataset.json as read_dataset_json gave it (read here if not given)."""
    record = read_dataset_json(layout) if record is _UNREAD else record
    if record is None:
        if not is_legacy(layout):
            return []  # nothing committed yet: a first build still running, or killed
        folder = layout.shards if kind == "shards" else layout.manifests / kind
        return [p for p in folder.glob("*" + suffix) if not p.name.startswith(".")]
    rels = record["files"].get(kind, [])
    return sorted(layout.root / rel for rel in rels if rel.endswith(suffix))


def stage_files(layout: DatasetLayout, stages) -> list[str]:
    """Every root-relative dataset file the finished stages' committed.json name."""
    found = []
    for name in stages:
        for files in read_json(layout.stage_dir(name) / "committed.json", {}).values():
            found.extend(rel for rel in files.values() if kind_of(rel) is not None)
    return found


def named_by_a_marker(layout: DatasetLayout, rel: str, stages) -> bool:
    """Whether a part marker of one of `stages` names the root-relative file `rel` (asked
    only of files the commit does not name: the few leftovers of killed attempts)."""
    part = rel.rsplit("/", 1)[-1].split(".", 1)[0]
    for stage in stages:
        marker = read_json(layout.stage_dir(stage) / f"{part}.done", {})
        if rel in marker.get("files", {}).values():
            return True
    return False


def commit_dataset(
    layout: DatasetLayout,
    files: list[str],
    shard_index: str | None = None,
    stages=(),
    carry: dict | None = None,
) -> dict:
    """Write dataset.json naming `files` (root-relative) as the new version (and the shards'
    index, the `shards` view), kept as DIR/versions/<N>.json too, then sweep the manifest folders
    of part files that neither it, a kept version, the previous one nor any marker of `stages`
    names. (Shards keep img2dataset's fixed
    names, are written once per shard part and are not swept.) `carry`: more keys of the record
    (a recheck's `replaced` and `added`, see rewrites())."""
    previous = read_dataset_json(layout) or {}
    grouped = {kind: [] for kind in DATASET_KINDS}
    for rel in sorted(set(files)):
        kind = kind_of(rel)
        if kind is not None:
            grouped[kind].append(rel)
    record = {
        "version": int(previous.get("version", 0)) + 1,
        "committed": time.time(),
        "files": grouped,
        "shard_index": shard_index,
        "previous": previous.get("files", {}),  # still readable by a query started before
        **(carry or {}),
    }
    if previous and not layout.version_json(record["version"] - 1).exists():
        # the version before, when a build older than DIR/versions (or a commit killed before
        # its history was written) made it: kept, so `--version` reaches it too
        before = {k: v for k, v in previous.items() if k != "previous"}
        write_json_atomic(before, layout.version_json(record["version"] - 1))
    write_json_atomic(record, layout.dataset_json)  # the commit
    history = {k: v for k, v in record.items() if k != "previous"}
    write_json_atomic(history, layout.version_json(record["version"]))
    keep = {rel for group in (*grouped.values(), *record["previous"].values()) for rel in group}
    keep |= {rel for rel in (shard_index, previous.get("shard_index")) if rel}
    keep |= _kept_files(layout)
    swept = 0
    for path in layout.stage_dir("shards").glob("index-*.parquet"):
        if relative(layout, path) not in keep:
            path.unlink(missing_ok=True)
    for folder in (layout.samples, layout.pages, layout.origins):
        for path in folder.iterdir():
            rel = relative(layout, path)
            if rel in keep or not is_part_file(path.name):
                continue
            if not named_by_a_marker(layout, rel, stages):
                path.unlink(missing_ok=True)
                swept += 1
    if swept:
        log.info(
            "dataset %s: version %d; %d stale files removed", layout.root, record["version"], swept
        )
    return record


def rewrites(record: dict | None) -> tuple[dict[str, str], list[str]]:
    """What rechecks changed since the build's own files: (build file -> the file that replaces
    it, files they added). A rerun of the build commits its stage files through these, so it
    does not undo a recheck."""
    record = record or {}
    return dict(record.get("replaced", {})), list(record.get("added", []))


def is_part_file(name: str) -> bool:
    """A file a part's commit wrote (`<part>[.<kind>].<token>.parquet`), not a plan's file."""
    return TOKENED.match(name) is not None


def sweep_stage(folder: Location, referenced: set[Location]) -> int:
    """Remove the part files in a stage's folder that no marker names (killed attempts)."""
    swept = 0
    for path in folder.iterdir():
        if is_part_file(path.name) and path not in referenced:
            path.unlink(missing_ok=True)
            swept += 1
    return swept
