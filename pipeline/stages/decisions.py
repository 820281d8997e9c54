"""Run-wide decisions (dedup, clip): a stage's plan decides over every part and writes one table,
work/<stage>/decisions.parquet, with each decision's part; each part then applies its own."""

from manifests import schema

# Columns a run-wide decision (dedup, clip) may set on a pending row.
DECISION_COLUMNS = ("status", "error", "dup_of", "leak_of", "image_of")


def decisions_table(updates: dict[str, dict], part_of: dict[str, str]):
    """uid -> update (status, error, dup_of, leak_of, image_of) as a table with each row's part, so a part
    reads only its own decisions."""
    import pyarrow as pa

    uids = sorted(updates)
    columns = {"part": [part_of[u] for u in uids], "uid": uids}
    for name in DECISION_COLUMNS:
        columns[name] = [updates[u].get(name) for u in uids]
    return pa.table(columns, schema=pa.schema([(n, pa.string()) for n in columns]))


def apply_decisions(rows, decisions, fill=None):
    """The samples rows of a part with every pending row's decision applied (and `fill(row)`,
    columns a stage adds to every pending row, first)."""
    import pyarrow as pa

    by_uid = {d["uid"]: d for d in decisions.to_pylist()}
    out = rows.to_pylist()
    for row in out:
        if row["status"] != schema.PENDING:
            continue
        if fill is not None:
            fill(row)
        decision = by_uid.get(row["uid"])
        if decision:
            row.update({k: decision[k] for k in DECISION_COLUMNS if decision[k] is not None})
    return pa.Table.from_pylist(out, schema=schema.SAMPLES)
