"""The report's consent section: what the opt-out signals said, per signal and per origin file."""

from __future__ import annotations

from pipeline.report.sections import note, section, table


def signal_counts(con) -> list[tuple]:
    """(subject, signal, rows checked, rows it said something for, rows it opted out, kept rows
    it said something for), one row per signal checked for the image or the page."""
    return con.execute(
        """SELECT subject, signal, count(DISTINCT uid),
                  count(DISTINCT uid) FILTER (state <> 'absent'),
                  count(DISTINCT uid) FILTER (opt_out),
                  count(DISTINCT uid) FILTER (state <> 'absent' AND status = 'kept')
           FROM consent GROUP BY 1, 2 ORDER BY 1, 2"""
    ).fetchall()


def origin_files(con) -> list[tuple]:
    """(file, origins asked, served, absent, unavailable) from the origins table."""
    return con.execute(
        """WITH latest AS (
               SELECT origin, file, arg_max(status, fetched_at) AS status,
                      arg_max(http_status, fetched_at) AS code
               FROM origins GROUP BY 1, 2)
           SELECT file, count(*),
                  count(*) FILTER (status = 'ok'),
                  count(*) FILTER (code BETWEEN 400 AND 499 AND code <> 429),
                  count(*) FILTER (status <> 'ok'
                                   AND NOT coalesce(code BETWEEN 400 AND 499 AND code <> 429, false))
           FROM latest GROUP BY 1 ORDER BY 1"""
    ).fetchall()


def opted_out_pages(con) -> int:
    return con.execute("SELECT count(*) FROM pages WHERE status = 'opted_out'").fetchone()[0]


def render(con) -> str:
    signals, files, pages = signal_counts(con), origin_files(con), opted_out_pages(con)
    if not signals and not files:
        return section("consent", "Consent", note("No opt-out signal was checked (no fetch)."))
    blocks = []
    if files:
        blocks.append("<h3>Per-origin files</h3>")
        blocks.append(
            table(
                ["file", "origins asked", "served", "absent (4xx)", "unavailable: disallow all"],
                [list(r) for r in files],
            )
        )
    if signals:
        blocks.append("<h3>Signals per row</h3>")
        blocks.append(
            table(
                ["of the", "signal", "rows checked", "said something", "opted out", "kept, said"],
                [list(r) for r in signals],
            )
        )
    text = (
        "Every signal checked for a row's image and page is in the `consent` view "
        '(pipeline query DIR "SELECT * FROM consent"); the most restrictive wins.'
    )
    if pages:
        text += f" {pages:,} pages were opted out as a whole (their pairs never became rows)."
    blocks.append(note(text))
    return section("consent", "Consent", "".join(blocks))
