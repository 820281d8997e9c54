"""`pipeline recheck DIR`: consent re-verified for the kept rows of a finished dataset.

1. Plan (work/recheck/plan.json, written last): the kept rows whose image was last checked
   before the cutoff (`--older-than DAYS`; 0: every kept row), by samples file of the version it
   starts from, and the origins of their images (and pages, when the build did not read them).
2. Origins: every such origin's per-origin files asked again (none reused), stored as a new
   origins file of the dataset.
3. Images: every distinct URL asked again through the same fetch layer (address policy,
   per-host limits, the new per-origin files), a GET whose body is cut at HEADER_BYTES: the
   headers are what counts. In chunks, each committed by its marker, so a killed recheck resumes.
4. A new version (manifests.commit): each rechecked samples file rewritten with its rows' new
   findings. A row a signal now refuses becomes `opted_out`, its error says when and which signal
   ("opted out on recheck 2026-12-02: opted out by tdmrep.json (...)"), and it loses its shard and
   shard_row. So every reader, which reaches images only through the manifest's kept rows (the
   trainer, embed, search, the report), leaves it out: the manifest is the exclusion list. The
   image bytes stay in their shard until `pipeline remove`. The version before stays readable
   (`pipeline query DIR --version N`).
A row whose image cannot be fetched now (gone, a timeout) keeps its status and findings: absence
is not an opt-out. Findings are replaced by the new ones otherwise, so `--older-than` counts from
the last check.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time

from manifests import schema, storage
from manifests.commit import (
    commit_dataset,
    new_token,
    read_dataset_json,
    relative,
    rewrites,
    tokened,
)
from manifests.config import ConfigError
from manifests.layout import DatasetLayout, read_json, write_json_atomic, write_parquet_atomic
from pipeline.stages.base import sql_files

log = logging.getLogger(__name__)

HEADER_BYTES = 16 * 1024  # body bytes read per image on a recheck (only its headers count)
URLS_PER_CHUNK = 5000  # image URLs per committed chunk
CHECKS = {"url": "string", "status": "string", "error": "string", "consent": schema.CONSENT}
COUNTS = ("rechecked", "kept", "opted_out", "unreachable")  # rows, in the summary


def recheck(dataset_dir, older_than_days: float = 0.0, overrides=None, resolver=None) -> dict:
    """Recheck the dataset's kept rows (see the module doc); returns the summary it stores in
    DIR/stats/recheck.json."""
    from pipeline.buildconfig import BuildConfig

    layout = DatasetLayout(storage.location(dataset_dir))
    record, run = read_dataset_json(layout), read_json(layout.run_json, None)
    if record is None or run is None:
        raise ConfigError(f"{layout.root} has no finished build to recheck (no dataset.json)")
    if older_than_days < 0:
        raise ConfigError(f"--older-than must be >= 0 days, not {older_than_days:g}")
    config = BuildConfig.from_options({**run["config"], **(overrides or {})})
    work = layout.work / "recheck"
    plan = read_json(work / "plan.json", None)
    asked = {"older_than_days": older_than_days, "overrides": overrides or {}}
    if (
        plan is not None
        and (record.get("recheck") or {}).get("base_version") == plan["base_version"]
    ):
        return _finish(layout, work)  # killed after its commit: only the clean-up was left
    if plan is None or plan["base_version"] != record["version"] or plan["asked"] != asked:
        plan = _plan(layout, record, config, older_than_days, work)
        plan["asked"] = asked
        write_json_atomic(plan, work / "plan.json")
    if not plan["files"]:  # nothing due: no new version
        _clear(work, with_plan=True)
        v = record["version"]
        return {
            "version": v,
            "base_version": v,
            "origins": 0,
            "urls": 0,
            **dict.fromkeys(COUNTS, 0),
        }
    records = _origins(layout, plan, config, work, resolver)
    checks = _images(layout, plan, config, work, resolver, records)
    summary = _apply(layout, record, plan, config, records, checks, work)
    write_json_atomic(summary, layout.stats / "recheck.json")
    return _finish(layout, work)


def _finish(layout, work) -> dict:
    """After the commit: the working files go (the plan first, so a recheck killed now plans
    afresh); the summary is the one the commit left in DIR/stats/recheck.json."""
    _clear(work, with_plan=True)
    return read_json(layout.stats / "recheck.json", {})


def _plan(layout, record, config, older_than_days: float, work) -> dict:
    import manifests
    from pipeline.origins import HTTP_SQL, ORIGIN_SQL

    cutoff = time.time() - older_than_days * 86400
    con = manifests.open(layout.root)
    files = _samples_files(layout, record)
    last_checked = (
        "list_max(list_transform(list_filter(consent, lambda c: c.subject = 'image'),"
        " lambda c: epoch(c.at)))"
    )
    if files and not _has_consent(con, sql_files(files)):
        last_checked = "NULL"  # built before consent was recorded: every kept row is due
    where = f"status = 'kept' AND coalesce({last_checked}, 0) < {cutoff}"
    due = (
        con.execute(
            f"""SELECT DISTINCT filename FROM read_parquet({sql_files(files)}, filename = true,
                union_by_name = true) WHERE {where}"""
        ).fetchall()
        if files
        else []
    )
    chosen = sorted(relative(layout, storage.location(f)) for (f,) in due)
    urls, origins = [], []
    if chosen:
        source = f"read_parquet({sql_files(layout.root / f for f in chosen)}, union_by_name = true)"
        urls = [
            u
            for (u,) in con.execute(
                # hashed order: a chunk holds many hosts, not a few (per-host limits)
                f"SELECT DISTINCT url FROM {source} WHERE {where} ORDER BY hash(url), url"
            ).fetchall()
        ]
        pages = f" UNION ALL SELECT page_url FROM {source} WHERE {where}"
        origins = [
            o
            for (o,) in con.execute(
                f"""SELECT DISTINCT {ORIGIN_SQL} FROM (SELECT url FROM {source} WHERE {where}{pages})
                    WHERE url IS NOT NULL AND {HTTP_SQL} ORDER BY 1"""
            ).fetchall()
        ]
    chunks = [urls[i : i + URLS_PER_CHUNK] for i in range(0, len(urls), URLS_PER_CHUNK)]
    _clear(work)  # a plan of another version: start over
    for i, chunk in enumerate(chunks):
        write_json_atomic(chunk, work / f"urls-{i:05d}.json")
    plan = {
        "base_version": record["version"],
        "cutoff": cutoff,
        "files": chosen,
        "origins": origins,
        "chunks": len(chunks),
    }
    write_json_atomic(plan, work / "plan.json")  # last: the plan's commit
    log.info("recheck: %d files, %d URLs, %d origins", len(chosen), len(urls), len(origins))
    return plan


def _has_consent(con, files: str) -> bool:
    columns = con.execute(
        f"DESCRIBE SELECT * FROM read_parquet({files}, union_by_name = true)"
    ).fetchall()
    return any(name == "consent" for name, *_ in columns)


def _clear(work, with_plan: bool = False) -> None:
    """Remove a recheck's working files (its chunks, checks and markers; the plan first)."""
    if not work.is_dir():
        return
    if with_plan:
        (work / "plan.json").unlink(missing_ok=True)
    apply = list((work / "apply").glob("*")) if (work / "apply").is_dir() else []
    for path in [*work.glob("*.json"), *work.glob("*.parquet"), *work.glob("*.done"), *apply]:
        path.unlink(missing_ok=True)


def _samples_files(layout, record):
    from manifests.commit import committed_files

    return committed_files(layout, "samples", record=record)


def _origins(layout, plan, config, work, resolver) -> list:
    """Fresh per-origin files of the plan's origins (from the marker on a resumed recheck)."""
    from pipeline.origins import records_table

    marker = read_json(work / "origins.done", None)
    if marker is None:
        records = asyncio.run(_fetch_origins(plan["origins"], config, resolver))
        target = tokened(
            layout.origins / f"recheck-v{plan['base_version']:06d}.parquet", new_token()
        )
        write_parquet_atomic(records_table(records), target)
        marker = {"file": relative(layout, target)}
        write_json_atomic(marker, work / "origins.done")
    table = storage.read_table(layout.root / marker["file"])
    return _records(table)


def _records(table) -> list:
    from pipeline.net.originfiles import OriginFileRecord

    return [
        OriginFileRecord(
            r["origin"],
            r["url"],
            r["fetched_at"].timestamp(),
            r["status"],
            r["http_status"],
            r["error"],
            r["body"],
            r["file"],
        )
        for r in table.to_pylist()
    ]


async def _fetch_origins(origins: list[str], config, resolver) -> list:
    from yarl import URL

    from pipeline.net.fetch import Fetcher

    gate = asyncio.Semaphore(64)
    async with Fetcher(config.net, resolver=resolver) as fetcher:

        async def one(origin: str) -> None:
            async with gate:
                url = URL(origin + "/")
                await asyncio.gather(*(cache.get(url) for cache in fetcher.origin_files))

        await asyncio.gather(*(one(o) for o in origins))
        return fetcher.origin_records()


def _images(layout, plan, config, work, resolver, records) -> dict[str, dict]:
    """url -> its check (status, error, consent rows), chunk by chunk, each with its marker."""
    checks: dict[str, dict] = {}
    for i in range(plan["chunks"]):
        marker = read_json(work / f"checks-{i:05d}.done", None)
        if marker is None:
            urls = read_json(work / f"urls-{i:05d}.json")
            rows = asyncio.run(_check_urls(urls, config, resolver, records))
            target = tokened(work / f"checks-{i:05d}.parquet", new_token())
            write_parquet_atomic(_checks_table(rows), target)
            marker = {"file": target.name}
            write_json_atomic(marker, work / f"checks-{i:05d}.done")
        for row in storage.read_table(work / marker["file"]).to_pylist():
            checks[row["url"]] = row
    return checks


async def _check_urls(urls: list[str], config, resolver, records) -> list[dict]:
    from pipeline.net.batch import iter_fetch
    from pipeline.net.consent import rows
    from pipeline.net.fetch import Fetcher

    out: list[dict | None] = [None] * len(urls)
    fetcher = Fetcher(config.image_fetch(), resolver=resolver, robots=records, skip_opted_out=True)
    async with fetcher:
        async for index, result in iter_fetch(fetcher, urls, max_bytes=HEADER_BYTES, truncate=True):
            out[index] = {
                "url": urls[index],
                "status": result.status,
                "error": result.error,
                "consent": rows(result.consent),
            }
    return out


def _checks_table(rows: list[dict]):
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=pa.schema(list(CHECKS.items())))


def _last_checked(row: dict) -> float:
    """When the row's image was last checked (time.time()); 0 when never."""
    times = [
        c["at"].timestamp() for c in row["consent"] or [] if c["subject"] == "image" and c["at"]
    ]
    return max(times, default=0.0)


# Fetch statuses after which the image's findings are news; any other (gone, unreachable, a
# refused address) leaves the row as it was: absence is not an opt-out. So does a per-origin
# file that is unavailable now (a 503, a timeout): a build would disallow all on it, but a row
# once kept is not dropped for an outage; the next recheck asks again.
ANSWERED = {"ok", "opted_out", "robots_disallowed"}


def _recheck_row(row: dict, check: dict | None, pages, date: str) -> str:
    """Give the row its new findings; 'opted_out', 'kept' or 'unreachable' (unchanged)."""
    from pipeline.net.consent import opt_out_error, rows

    if check is None or check["status"] not in ANSWERED:
        return "unreachable"
    if pages is not None and row["page_url"]:
        page = rows(pages.page_findings(row["page_url"]), "page")
    else:
        page = [c for c in row["consent"] or [] if c["subject"] == "page"]
    found = list(check["consent"]) + page
    if any(c["state"] == "unavailable" for c in found):
        return "unreachable"  # a file that did not answer now: news only once it answers
    row["consent"] = found
    refused = opt_out_error(row["consent"])
    if refused is None:
        return schema.KEPT
    # and no shard row: no reader reaches its image any more
    row.update(status="opted_out", error=f"opted out on recheck {date}: {refused}", shard=None)
    row["shard_row"] = None
    return "opted_out"


def _apply(layout, record, plan, config, records, checks, work) -> dict:
    """Rewrite the due samples files with their rows' new findings and commit a new version."""
    import pyarrow as pa

    from pipeline.net.consent import StoredFiles
    from pipeline.stages.registry import STAGE_NAMES

    pages = StoredFiles(records, config.net) if config.net.respect_robots else None
    date = datetime.datetime.now(datetime.UTC).date().isoformat()
    counts = dict.fromkeys(COUNTS, 0)
    replaced: dict[str, str] = {}
    for rel in plan["files"]:
        part = rel.rsplit("/", 1)[-1].split(".", 1)[0]
        marker = read_json(work / "apply" / f"{part}.done", None)
        if marker is None:
            table = schema.conform(storage.read_table(layout.root / rel), schema.SAMPLES)
            rows = table.to_pylist()
            found = dict.fromkeys(COUNTS, 0)
            for row in rows:
                if row["status"] == schema.KEPT and _last_checked(row) < plan["cutoff"]:
                    found["rechecked"] += 1
                    found[_recheck_row(row, checks.get(row["url"]), pages, date)] += 1
            target = tokened(layout.samples / f"{part}.parquet", new_token())
            write_parquet_atomic(pa.Table.from_pylist(rows, schema=schema.SAMPLES), target)
            marker = {"file": relative(layout, target), "counts": found}
            write_json_atomic(marker, work / "apply" / f"{part}.done")
        replaced[rel] = marker["file"]
        for key, value in marker["counts"].items():
            counts[key] += value
    files = [replaced.get(rel, rel) for group in record["files"].values() for rel in group]
    origins = read_json(work / "origins.done")["file"]
    files.append(origins)
    before, added = rewrites(record)  # composed, so a rerun of the build keeps them all
    carry = {
        "replaced": {
            **{k: replaced.get(v, v) for k, v in before.items()},
            **{rel: new for rel, new in replaced.items() if rel not in before.values()},
        },
        "added": [*added, origins],
        "recheck": {"base_version": plan["base_version"], "cutoff": plan["cutoff"]},
    }
    now = read_dataset_json(layout) or {}
    if now.get("version") != record["version"]:  # a build committed meanwhile: its files win
        raise ConfigError(
            f"{layout.root} changed during the recheck (version {now.get('version')} now, "
            f"{record['version']} when it started); run `pipeline recheck` again"
        )
    new = commit_dataset(layout, files, record.get("shard_index"), STAGE_NAMES, carry)
    log.info("recheck: version %d, %s", new["version"], counts)
    return {
        "version": new["version"],
        "base_version": plan["base_version"],
        "date": date,
        "origins": len(plan["origins"]),
        "urls": len(checks),
        **counts,
    }
