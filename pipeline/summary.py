"""The summary a build prints: its stages and its samples by status."""


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
    console.print(stages)
    console.print(statuses)
    console.print(f'dataset: {layout.root}  (try: pipeline query {layout.root} "SELECT ...")')
