"""A removal's plan (what it takes out, decided once from the committed version) and the stored
images it empties (shards, tars, shard index, embeddings, FAISS index), each step with its
marker under work/remove/."""

from __future__ import annotations

import datetime
import logging

from manifests import schema, storage
from manifests.commit import new_token, relative
from manifests.layout import read_json, write_json_atomic, write_parquet_atomic
from pipeline.stages.base import sql_files
from pipeline.takedown.request import RemovalRequest, match_sql, page_match_sql
from pipeline.takedown.scrub import Targets

log = logging.getLogger(__name__)


def same_request(a: RemovalRequest, b: RemovalRequest) -> bool:
    fields = ("kind", "values", "requested_by", "reason")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


def make_plan(layout, record, request: RemovalRequest, work) -> dict:
    """Match the request against the committed version, write the audit and the targets;
    plan.json last (its commit)."""
    import pyarrow as pa

    import manifests

    con = manifests.open(layout.root)
    con.register("_asked_arrow", pa.table({"value": pa.array(request.values, pa.string())}))
    con.execute("CREATE TEMP TABLE _asked AS SELECT DISTINCT value FROM _asked_arrow")
    con.execute(f"CREATE TEMP TABLE _hit AS {match_sql(request)}")
    con.execute("CREATE TEMP TABLE _uids AS SELECT DISTINCT uid FROM _hit")
    # the shard rows the matched rows have, or had in an earlier version (a recheck's opted_out
    # rows lost theirs, not their bytes), less those a kept row that stays still points at
    history = sql_files(_all_samples_files(layout))
    con.execute(
        f"""CREATE TEMP TABLE _refs AS SELECT DISTINCT uid, shard, shard_row, caption_index
        FROM read_parquet({history}, union_by_name = true)
        WHERE uid IN (SELECT uid FROM _uids) AND shard IS NOT NULL AND shard_row IS NOT NULL"""
    )
    con.execute(
        """CREATE TEMP TABLE _leaving AS SELECT shard, shard_row FROM _refs
        EXCEPT SELECT shard, shard_row FROM samples
        WHERE uid NOT IN (SELECT uid FROM _uids) AND status = 'kept' AND shard IS NOT NULL"""
    )
    audit = con.sql(
        """SELECT h.value, s.uid, s.url, s.page_url, s.status AS status_before,
                  s.uid IN (SELECT uid FROM _refs JOIN _leaving USING (shard, shard_row))
                  AS image_removed
        FROM _hit h JOIN samples s USING (uid)
        UNION ALL
        SELECT value, NULL, NULL, NULL, NULL, false FROM _asked
        WHERE value NOT IN (SELECT value FROM _hit)
        ORDER BY 1, 2"""
    ).to_arrow_table()
    urls = con.sql(
        """SELECT DISTINCT url FROM samples WHERE uid IN (SELECT uid FROM _uids)
        AND url IS NOT NULL
        EXCEPT SELECT url FROM samples WHERE uid NOT IN (SELECT uid FROM _uids)"""
    ).to_arrow_table()
    pages_sql = page_match_sql(request)
    pages = con.sql(pages_sql).to_arrow_table() if pages_sql else pa.table({"page": []})
    shard_rows = con.sql("SELECT shard, shard_row FROM _leaving ORDER BY 1, 2").to_arrow_table()
    # a caption of an image that stays: it leaves the image's `captions` in the shard
    captions = con.sql(
        """SELECT DISTINCT shard, shard_row, caption_index FROM _refs
        WHERE caption_index IS NOT NULL
          AND (shard, shard_row) NOT IN (SELECT (shard, shard_row) FROM _leaving)
        ORDER BY 1, 2, 3"""
    ).to_arrow_table()
    work.mkdir(parents=True, exist_ok=True)
    for name, table in (
        ("uids", con.sql("SELECT uid FROM _uids").to_arrow_table()),
        ("urls", urls),
        ("pages", pages),
        ("shard_rows", shard_rows),
        ("captions", captions),
    ):
        write_parquet_atomic(table, work / f"{name}.parquet")
    target = layout.manifests / "removals" / f"{request.request_id}.{new_token()}.parquet"
    write_parquet_atomic(_audit_table(audit, request), target)
    statuses = dict(
        con.execute(
            "SELECT status, count(*) FROM samples WHERE uid IN (SELECT uid FROM _uids) GROUP BY 1"
        ).fetchall()
    )
    plan = {
        "request": request.to_dict(),
        "base_version": record["version"],
        "audit": relative(layout, target),
        "counts": {
            "rows": int(sum(statuses.values())),
            "kept_rows": int(statuses.get(schema.KEPT, 0)),
            "images": shard_rows.num_rows,
            "pages": pages.num_rows,
            "unmatched_entries": int(sum(1 for u in audit["uid"].to_pylist() if u is None)),
        },
    }
    write_json_atomic(plan, work / "plan.json")
    log.info("removal %s: %s", request.request_id, plan["counts"])
    return plan


def _all_samples_files(layout) -> list:
    """Every samples file a kept version (or the committed one) names."""
    from manifests.commit import versions

    records = [read_json(layout.version_json(n), {}) for n in versions(layout)]
    records.append(read_json(layout.dataset_json, {}))
    rels = {rel for r in records for rel in r.get("files", {}).get("samples", [])}
    return sorted(layout.root / rel for rel in rels)


def _audit_table(found, request: RemovalRequest):
    import pyarrow as pa

    n = found.num_rows
    at = datetime.datetime.fromisoformat(request.requested_at)
    match = {"urls": "url", "domains": "domain", "uids": "uid"}[request.kind]
    columns = {
        "request_id": [request.request_id] * n,
        "requested_by": [request.requested_by] * n,
        "reason": [request.reason] * n,
        "requested_at": [at] * n,
        "match": [match] * n,
        **{name: found[name] for name in ("value", "uid", "url", "page_url", "status_before")},
        "image_removed": found["image_removed"],
    }
    return pa.Table.from_pydict(columns, schema=schema.REMOVALS)


def targets(work, plan, request: RemovalRequest) -> Targets:
    def column(name: str, field: str) -> frozenset[str]:
        return frozenset(storage.read_table(work / f"{name}.parquet")[field].to_pylist())

    return Targets(
        uids=column("uids", "uid"),
        urls=column("urls", "url"),
        pages=column("pages", "page"),
        error=request.error(),
    )


def clean_stored(layout, work, plan, record) -> str | None:
    """Empty the leaving shard rows in the shards, tars and embeddings; a new shard index and
    FAISS index. Returns the new shard index (root-relative), or None if there was none."""
    request = RemovalRequest.from_dict(plan["request"])
    table = storage.read_table(work / "shard_rows.parquet")
    by_shard: dict[str, set[int]] = {}
    for shard, row in zip(table["shard"].to_pylist(), table["shard_row"].to_pylist(), strict=True):
        by_shard.setdefault(shard, set()).add(int(row))
    captions: dict[str, dict[int, set[int]]] = {}  # shard → shard row → caption indexes
    path = work / "captions.parquet"
    for r in storage.read_table(path).to_pylist() if path.exists() else []:
        captions.setdefault(r["shard"], {}).setdefault(r["shard_row"], set()).add(
            r["caption_index"]
        )
    sizes = {}
    for shard in sorted(set(by_shard) | set(captions)):
        marker = work / "shards" / f"{shard}.json"
        done = read_json(marker, None)
        if done is None:
            rows = by_shard.get(shard, set())
            done = _clean_shard(layout, shard, rows, request.error(), captions.get(shard, {}))
            write_json_atomic(done, marker)
        sizes[shard] = done["bytes"]
    if by_shard and any((layout.shards / s).with_suffix(".tar").exists() for s in by_shard):
        from pipeline.shards import write_webdataset_sizes

        write_webdataset_sizes(layout.shards)
    _clean_embeddings(layout, work, by_shard)
    return _new_shard_index(layout, work, record, sizes)


def _clean_shard(layout, shard: str, rows: set[int], error: str, captions: dict) -> dict:
    from pipeline.takedown import stored

    path = layout.shards / shard
    if not path.exists():
        log.warning("shard %s of the manifests is not in %s", shard, layout.shards)
        return {"bytes": None}
    done = stored.rewrite_shard(path, rows, error, captions)
    tar = path.with_suffix(".tar")
    if tar.exists():
        stored.rewrite_tar(tar, set(done["keys"]), done["texts"])
    stats = path.with_name(path.stem + "_stats.json")
    if stats.exists():
        stored.recount_stats(stats, len(rows))
    _restate_marker(layout, shard, done["bytes"])
    return {"bytes": done["bytes"], "removed": len(rows)}


def _restate_marker(layout, shard: str, size: int) -> None:
    """The shards stage's marker of `shard` with its new size: a rerun of the build makes the
    shards' index from the markers."""
    rel = relative(layout, layout.shards / shard)
    for marker in layout.stage_dir("shards").glob("shard-*.done"):
        stats = read_json(marker, {})
        if stats.get("files", {}).get("shard") == rel:
            stats.setdefault("extra", {})["bytes"] = size
            write_json_atomic(stats, marker)
            return


def _clean_embeddings(layout, work, by_shard: dict[str, set[int]]) -> None:
    from pipeline.embed import store
    from pipeline.takedown import stored

    folder = store.embeddings_dir(layout.root)
    if not by_shard or not folder.is_dir() or (work / "embeddings.done").exists():
        return
    changed = [
        s for s, rows in sorted(by_shard.items()) if stored.empty_embeddings(folder, s, rows)
    ]
    meta = store.read_meta(folder)
    if changed and meta is not None and "index" in meta:
        from pipeline.embed.run import _build_and_save_index

        meta.update(_build_and_save_index(folder, meta.get("recall_target", 0.95)))
        store.write_meta(folder, meta)
        log.info("embeddings: %d shards emptied of removed rows; index rebuilt", len(changed))
    write_json_atomic({"shards": changed}, work / "embeddings.done")


def _new_shard_index(layout, work, record, sizes: dict) -> str | None:
    """The shards view's index with the rewritten shards' bytes, under a new name."""
    import pyarrow as pa

    old = record.get("shard_index")
    if not old:
        return None
    marker = work / "shards" / "index.json"
    done = read_json(marker, None)
    if done is None:
        rows = storage.read_table(layout.root / old).to_pylist()
        for row in rows:
            if sizes.get(row["shard"]) is not None:
                row["bytes"] = sizes[row["shard"]]
        target = layout.stage_dir("shards") / f"index-{new_token()}.parquet"
        write_parquet_atomic(pa.Table.from_pylist(rows, schema=schema.SHARDS), target)
        done = {"old": old, "new": relative(layout, target)}
        write_json_atomic(done, marker)
    return done["new"]
