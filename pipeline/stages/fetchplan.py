"""The fetch stage's plan: distinct pending URLs -> lanes of hosts -> parts, in DuckDB.

Everything runs as SQL over the text stage's parts, memory-capped and spilling to disk (the
driver's memory does not grow with the rows); what comes back to Python is one number per lane.
Deterministic: hosts are ordered by a hash of their name, URLs by their text, so the same input
gives the same lanes and parts on any machine and on a rerun."""

from __future__ import annotations

from manifests import storage
from manifests.layout import atomic_path
from pipeline.origins import HOST_SQL
from pipeline.stages.base import StageRun, sql_files


def plan_lanes(con, run: StageRun) -> dict[str, int]:
    """Write work/fetch/plan.parquet (lane, sub, url, k, slot; sorted by lane and sub) and
    work/fetch/where/part=<build part>/ (url -> lane, sub); return {lane: parts in it}."""
    n = run.config.execution.urls_per_fetch_part
    # Splitting a host pays only if its lanes run at once: never more lanes than tasks can run
    # side by side, nor than it has requests in flight to share.
    c = max(1, min(run.config.net.per_host_concurrency, run.parallelism))
    rows = sql_files(run.input_rows_paths("text"))
    con.execute(
        f"""CREATE TABLE pending AS SELECT split_part(parse_filename(filename), '.', 1) AS part, url
            FROM read_parquet({rows}, filename = true) WHERE status = 'pending'"""
    )
    con.execute(f"CREATE TABLE urls AS SELECT DISTINCT url, {HOST_SQL} AS host FROM pending")
    con.execute(
        f"""CREATE TABLE hosts AS SELECT host, count(*) AS n, md5(host) AS h,
                CASE WHEN count(*) > {n} THEN least({c}, ceil(count(*) / {n}))::BIGINT
                     ELSE 1 END AS k
            FROM urls GROUP BY host"""
    )
    # Small hosts (k = 1) are packed in hash order, a lane closing once it holds n URLs; split
    # hosts get k lanes of their own, numbered after those.
    con.execute(
        f"""CREATE TABLE lanes AS
            WITH small AS (
                SELECT host, k, floor(coalesce(sum(n) OVER w, 0) / {n})::BIGINT AS lane0
                FROM hosts WHERE k = 1
                WINDOW w AS (ORDER BY h, host ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)),
            first_big AS (SELECT coalesce(max(lane0) + 1, 0) AS m FROM small),
            big AS (
                SELECT host, k, (SELECT m FROM first_big) + coalesce(sum(k) OVER w, 0) AS lane0
                FROM hosts WHERE k > 1
                WINDOW w AS (ORDER BY h, host ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING))
            SELECT host, k, lane0::BIGINT AS lane0 FROM small
            UNION ALL SELECT host, k, lane0::BIGINT FROM big"""
    )
    # A split host deals its URLs round robin over its lanes (slot = which lane of its k).
    con.execute(
        f"""CREATE TABLE plan AS
            SELECT (lane0 + r % k)::BIGINT AS lane, ((r // k) // {n})::BIGINT AS sub, url,
                   k::INTEGER AS k, (r % k)::INTEGER AS slot
            FROM (SELECT u.url, l.k, l.lane0,
                         row_number() OVER (PARTITION BY u.host ORDER BY u.url) - 1 AS r
                  FROM urls u JOIN lanes l USING (host))"""
    )
    with atomic_path(run.dir / "plan.parquet") as tmp:
        con.execute(
            f"COPY (SELECT * FROM plan ORDER BY lane, sub, url) TO '{tmp}' (FORMAT parquet)"
        )
    # A folder, not a file: the plan's marker, written after it, is its commit.
    where = run.dir / "where"
    local = where if where.is_local else storage.local_scratch("fetch-where") / run.name
    con.execute(
        f"""COPY (SELECT p.part, p.url, plan.lane, plan.sub FROM pending p JOIN plan USING (url)
                  ORDER BY p.part, p.url)
            TO '{local}' (FORMAT parquet, PARTITION_BY (part), OVERWRITE_OR_IGNORE)"""
    )
    if not where.is_local:  # DuckDB writes local files; the store gets them whole
        storage.upload_tree(local, where)
    counts = con.execute("SELECT lane, max(sub) + 1 FROM plan GROUP BY lane ORDER BY lane")
    return {str(lane): int(subs) for lane, subs in counts.fetchall()}
