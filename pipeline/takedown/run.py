"""`pipeline remove DIR --urls|--domains|--uids FILE`: a takedown request, carried out.

1. Plan (work/remove/plan.json, written last): the rows of the committed version the request
   matches (pipeline.takedown.request), the shard rows and image URLs that leave with them (an
   image leaves when no row of it is left; a caption row of an image with other captions takes
   only itself), and the pages a urls/domains request names.
2. The audit: DIR/manifests/removals/<request id>.<token>.parquet, one row per (request entry,
   row removed) and one per entry that matched nothing: who asked, when, why, what.
3. Their content out of every file the dataset holds (pipeline.takedown.scrub): the manifests of
   every kept version and every Parquet file under work/, each rewritten under a new name (a
   file with a fixed name: in place) whose references (stage markers, committed.json, dataset.json,
   DIR/versions, stats) are then renamed; the shards, their tars and index, the embeddings and
   their FAISS index (pipeline.takedown.stored); then the files they replace are deleted.
4. A new version (manifests.commit) whose record keeps the request; DIR/report.html is written
   again when there is one (its cards read the new version: no thumbnail of a removed image).
Every step leaves a marker, so a removal that was killed is finished by running the same command
again; a different request is refused until then.
"""

from __future__ import annotations

import hashlib
import json
import logging

from manifests import storage
from manifests.commit import (
    commit_dataset,
    is_part_file,
    read_dataset_json,
    relative,
    rewrites,
)
from manifests.config import ConfigError
from manifests.layout import DatasetLayout, read_json, write_json_atomic, write_parquet_atomic
from pipeline.takedown import plan as planning
from pipeline.takedown.request import RemovalRequest
from pipeline.takedown.scrub import scrub_file

log = logging.getLogger(__name__)


def remove(dataset_dir, request: RemovalRequest) -> dict:
    """Carry out `request` on the dataset (see the module doc); the summary it commits."""
    layout = DatasetLayout(storage.location(dataset_dir))
    record = read_dataset_json(layout)
    if record is None or not layout.run_json.exists():
        raise ConfigError(f"{layout.root} has no finished build (no dataset.json)")
    work = layout.work / "remove"
    plan = read_json(work / "plan.json", None)
    if plan is not None:
        asked = RemovalRequest.from_dict(plan["request"])
        if (record.get("removal") or {}).get("request_id") == asked.request_id:
            return _finish(layout, work, plan)  # killed after its commit: the clean-up is left
        if not planning.same_request(asked, request):
            raise ConfigError(
                f"removal {asked.request_id} ({asked.kind}, by {asked.requested_by}) was not "
                "finished; run that request again to finish it first"
            )
        request = asked  # finishing it: its id and time
        if plan["base_version"] != record["version"]:  # a build committed since: plan again
            _clear(layout, work, plan)
            plan = planning.make_plan(layout, record, request, work)
    else:
        plan = planning.make_plan(layout, record, request, work)
    targets = planning.targets(work, plan, request)
    renames = _scrub_files(layout, work, targets)
    shard_index = planning.clean_stored(layout, work, plan, record)
    if shard_index is not None and shard_index != record["shard_index"]:
        renames[record["shard_index"]] = shard_index
    _rename_references(layout, renames)
    summary = {**plan["counts"], "files_rewritten": len(renames)}
    now = read_dataset_json(layout) or {}
    if now.get("version") != plan["base_version"]:
        raise ConfigError(
            f"{layout.root} changed during the removal (version {now.get('version')} now, "
            f"{plan['base_version']} when it started); run the same `pipeline remove` again"
        )
    _commit(layout, now, plan, request, summary)
    return _finish(layout, work, plan)


def _scrub_files(layout, work, targets) -> dict[str, str]:
    """Rewrite every manifest and work/ Parquet file holding a removed row; {old rel: new rel}
    (a fixed-name file rewritten in place maps to itself)."""
    from tqdm import tqdm

    renames: dict[str, str] = {}
    done_dir = work / "files"
    for path in tqdm(_dataset_files(layout), desc="remove", unit="file", leave=False):
        rel = relative(layout, path)
        marker = done_dir / (hashlib.sha1(rel.encode()).hexdigest()[:16] + ".json")
        found = read_json(marker, None)
        if found is None:
            cleaned = scrub_file(path, targets)
            if cleaned is None:
                continue
            target = _renamed(path, targets.error) if is_part_file(path.name) else path
            write_parquet_atomic(cleaned, target, compression=_codecs(cleaned.schema))
            found = {"old": rel, "new": relative(layout, target)}
            write_json_atomic(found, marker)
        renames[found["old"]] = found["new"]
    return renames


def _codecs(arrow_schema) -> dict[str, str]:
    """zstd, but none for binary columns: image bytes are compressed already, and zstd over
    them costs a rewrite most of its time for ~1% of their size."""
    import pyarrow as pa

    return {
        f.name: "none" if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type) else "zstd"
        for f in arrow_schema
    }


def _dataset_files(layout) -> list:
    """Every Parquet file of the manifests (all versions: the folders, not a version's list)
    and of work/ (but the removal's own)."""
    found = []
    for folder in (layout.samples, layout.pages):
        if folder.is_dir():
            found += [p for p in folder.glob("*.parquet") if not p.name.startswith(".")]
    if layout.work.is_dir():
        own = relative(layout, layout.work / "remove") + "/"
        found += [
            p
            for p in layout.work.rglob("*.parquet")
            if not relative(layout, p).startswith(own) and not p.name.startswith(".")
        ]
    return sorted(found)


def _renamed(path, salt: str):
    """`<part>[.<kind>].<token>.parquet` under a new token, the same for the same request: a
    removal killed after writing it and run again writes the same file, leaving no orphan."""
    base = path.name.rsplit(".", 2)[0]
    token = hashlib.sha256(f"{salt}\0{path.name}".encode()).hexdigest()[:8]
    return path.with_name(f"{base}.{token}.parquet")


def _json_files(layout) -> list:
    found = [layout.dataset_json]
    for folder in (layout.versions, layout.stats):
        if folder.is_dir():
            found += folder.glob("*.json")
    if layout.work.is_dir():
        own = relative(layout, layout.work / "remove") + "/"
        for pattern in ("*.json", "*.done"):
            found += [
                p for p in layout.work.rglob(pattern) if not relative(layout, p).startswith(own)
            ]
    return found


def _rename_references(layout, renames: dict[str, str]) -> None:
    """Every string in the dataset's JSON files (markers, committed.json, dataset.json, the
    versions, stats) that names a rewritten file names its replacement."""
    moved = {old: new for old, new in renames.items() if old != new}
    if not moved:
        return

    def renamed(value):
        if isinstance(value, str):
            return moved.get(value, value)
        if isinstance(value, list):
            return [renamed(v) for v in value]
        if isinstance(value, dict):
            return {moved.get(k, k): renamed(v) for k, v in value.items()}
        return value

    for path in _json_files(layout):
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            continue
        new = renamed(data)
        if new != data:
            write_json_atomic(new, path)


def _commit(layout, record, plan, request: RemovalRequest, summary: dict) -> None:
    from pipeline.stages.registry import STAGE_NAMES

    audit = plan["audit"]
    files = [rel for group in record["files"].values() for rel in group] + [audit]
    replaced, added = rewrites(record)
    carry = {
        "replaced": replaced,
        "added": [*added, audit],  # a rerun of the build commits the audit too
        "removal": {"request_id": request.request_id, **summary},
    }
    if record.get("recheck"):
        carry["recheck"] = record["recheck"]
    new = commit_dataset(layout, files, record.get("shard_index"), STAGE_NAMES, carry)
    log.info("removal %s: version %d, %s", request.request_id, new["version"], summary)


def _clear(layout, work, plan) -> None:
    """Forget an unfinished removal's plan (its uncommitted audit too); its rewritten files
    stay named by the references already renamed, and are rewritten again if need be."""
    (work / "plan.json").unlink(missing_ok=True)
    (layout.root / plan["audit"]).unlink(missing_ok=True)
    for path in [*work.glob("*.parquet"), *(work / "shards").glob("*.json")]:
        path.unlink(missing_ok=True)


def _finish(layout, work, plan) -> dict:
    """After the commit: the files the rewrites replaced are deleted, the report is written
    again, the working files go (the plan last)."""
    record = read_dataset_json(layout) or {}
    done_dir = work / "files"
    for marker in done_dir.glob("*.json") if done_dir.is_dir() else []:
        found = read_json(marker, {})
        if found and found["old"] != found["new"]:
            (layout.root / found["old"]).unlink(missing_ok=True)
    old_index = work / "shards" / "index.json"
    if old_index.exists():
        (layout.root / read_json(old_index)["old"]).unlink(missing_ok=True)
    if layout.report.exists():
        from pipeline.report import write_report

        write_report(layout.root)
    for path in sorted(work.rglob("*"), key=lambda p: -len(str(p))):
        if path.name != "plan.json" and not path.is_dir():
            path.unlink(missing_ok=True)
    (work / "plan.json").unlink(missing_ok=True)
    if work.is_dir():
        work.rmtree()  # the folders left
    summary = dict(record.get("removal") or {})
    summary["version"] = record.get("version")
    summary["request"] = plan["request"]
    return summary
