"""Comparing two builds of the same input: equal but for when each checked the web.

A row's consent findings carry the time of the response or file fetch they come from, so two
builds (a whole one and a killed-and-resumed one, a local one and a Ray one) differ there and
nowhere else."""

# DuckDB: `samples` with its consent findings' times left out
SAMPLES_UNDATED_SQL = (
    "SELECT * REPLACE (list_transform(consent, lambda c: struct_pack(subject := c.subject, "
    "signal := c.signal, state := c.state, value := c.value, opt_out := c.opt_out)) "
    "AS consent) FROM samples"
)


def undated(table):
    """A manifest table with its consent findings' times (`at`) set to null."""
    import pyarrow as pa

    if "consent" not in table.column_names:
        return table
    column = table.column("consent")
    rows = [None if r is None else [{**c, "at": None} for c in r] for r in column.to_pylist()]
    index = table.column_names.index("consent")
    return table.set_column(index, "consent", pa.array(rows, type=column.type))
