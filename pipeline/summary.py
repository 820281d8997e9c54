"""The summary a build prints: its stages and its samples by status."""

# The first signal an opted-out page or row names in its error ("opted out by <signal> (...)")
OPTED_OUT_BY_SIGNAL = """
    WITH said AS (
        SELECT 'page' AS kind, error FROM pages WHERE status = 'opted_out'
        UNION ALL SELECT 'row', error FROM samples WHERE status = 'opted_out')
    SELECT coalesce(nullif(trim(regexp_extract(error, 'opted out by ([^(;]+)', 1)), ''), error)
               AS signal,
           count(*) FILTER (kind = 'page'), count(*) FILTER (kind = 'row')
    FROM said GROUP BY 1 ORDER BY 1"""


def print_summary(layout) -> None:
    from rich.console import Console
    from rich.table import Table

    import manifests

    con = manifests.open(layout.root)
    console = Console()
    stages = Table(title="stages", title_justify="left")
    for col in ("stage", "rows in", "rows out", "drops", "seconds"):
        stages.add_column(col, justify="left" if col in ("stage", "drops") else "right")
    for stage, rows_in, rows_out, drops, seconds in con.execute(
        "SELECT stage, rows_in, rows_out, drops, seconds FROM stats"
    ).fetchall():
        stages.add_row(stage, f"{rows_in:,}", f"{rows_out:,}", drops, f"{seconds:.2f}")
    statuses = Table(title="samples by status", title_justify="left")
    statuses.add_column("status")
    statuses.add_column("rows", justify="right")
    for status, count in con.execute(
        "SELECT status, count(*) FROM samples GROUP BY 1 ORDER BY 2 DESC, 1"
    ).fetchall():
        statuses.add_row(status, f"{count:,}")
    consent = Table(title="opted out, by signal", title_justify="left")
    for col in ("signal", "pages", "rows"):
        consent.add_column(col, justify="left" if col == "signal" else "right")
    for signal, pages, rows in con.execute(OPTED_OUT_BY_SIGNAL).fetchall():
        consent.add_row(signal, f"{pages:,}", f"{rows:,}")
    console.print(stages)
    console.print(statuses)
    if consent.row_count:
        console.print(consent)
    console.print(f'dataset: {layout.root}  (try: pipeline query {layout.root} "SELECT ...")')
