"""The dedup decisions over the pending rows of a run: eval leaks, exact duplicates, then
near-duplicate clusters.

Leaks go first and over every row, exact duplicates included: a leak must leave the dataset
whatever else it is, and overlap.parquet should count every copy. Near-duplicate clusters are
formed among the rows that are neither leaks nor exact duplicates, so no kept row points at a
leak, and an exact duplicate whose kept row became a near-duplicate points at the cluster's
representative (never at a row that is itself dropped)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from manifests.config import ConfigError, check_fields, option
from manifests.storage import location

log = logging.getLogger(__name__)

DUPLICATE = "duplicate"
EVAL_LEAK = "eval_leak"


# pipeline.dedup.neardup's METHODS and MAX_RADIUS, written out so the build's flags (generated
# from this config) do not import numpy; a test checks they agree.
NEAR_DUP_METHODS = ("auto", "flat", "multihash", "sortjoin")
NEAR_DUP_MAX_RADIUS = 16


@dataclass
class DedupConfig:
    eval_set: list[str] = option(
        default_factory=list,
        metavar="DIR",
        help="ImageFolder eval sets (DIR/<class>/<image>) whose copies become eval_leak",
    )
    near_dup_radius: int | None = option(
        None,
        metavar="BITS",
        help="cluster images whose 64-bit phashes differ in at most BITS bits and keep the "
        "largest of each cluster (default: exact duplicates only)",
    )
    near_dup_method: str = option("auto", choices=NEAR_DUP_METHODS, help="near-dup search")
    leak_radius: int | None = option(None, metavar="BITS", help="leak radius in bits of 256")
    leak_index: str = option("auto", choices=("auto", "flat", "ivf"), help="leak search index")
    near_dup_status: str = option(
        DUPLICATE, choices=(DUPLICATE, "near_duplicate"), help="status of near-duplicates"
    )

    def __post_init__(self):
        check_fields(self)
        for folder in self.eval_set:
            if not location(folder).is_dir():
                raise ConfigError(
                    f"--eval-set {folder} is not a folder (ImageFolder: DIR/<class>/<image>)"
                )
        r = self.near_dup_radius
        if r is not None and not 0 <= r <= NEAR_DUP_MAX_RADIUS:
            raise ConfigError(
                f"near-dup radius (--near-dup-radius) must be 0..{NEAR_DUP_MAX_RADIUS} bits, not {r}"
            )


def decide(rows, eval_table=None, config: DedupConfig | None = None, exact_dup_of=None):
    """Decisions for pending rows: (dict uid → row update, list of leaks.Leak).

    `rows`: a pyarrow table (or dict of lists) with uid, width, height, phash, phash256,
    phash256_trim. `exact_dup_of`: uid → uid kept, for rows with the same bytes as an earlier
    row (stages/dedup.py's exact_duplicates). An update holds `status` ('eval_leak', or
    'duplicate' / config.near_dup_status), `leak_of` or `dup_of`, and `error` (a readable reason).
    Rows without an update stay as they are."""
    from pipeline.dedup.leaks import LEAK_RADIUS, LeakConfig, find_leaks

    config = config or DedupConfig()
    exact_dup_of = dict(exact_dup_of or {})
    col = rows.column if hasattr(rows, "column") else rows.__getitem__
    uids = _pylist(col("uid"))
    updates: dict[str, dict] = {}
    leaks = []
    if eval_table is not None and eval_table.num_rows:
        radius = LEAK_RADIUS if config.leak_radius is None else config.leak_radius
        leak_config = LeakConfig(radius=radius, index=config.leak_index)
        leaks = find_leaks(
            eval_table, uids, _pylist(col("phash256")), _pylist(col("phash256_trim")), leak_config
        )
        for leak in leaks:
            updates[leak.uid] = {
                "status": EVAL_LEAK,
                "leak_of": leak.eval_id,
                "error": f"copy of eval image {leak.eval_id} ({leak.distance}/256 bits apart)",
            }
    for uid, kept in exact_dup_of.items():
        if uid not in updates:
            updates[uid] = {"status": DUPLICATE, "dup_of": kept, "error": "same bytes as dup_of"}
    near: dict[str, dict] = {}
    if config.near_dup_radius is not None:
        near = _near_duplicates(col, uids, set(updates), config)
        updates.update(near)
        # Exact duplicates of a row that became a near-duplicate follow it to its representative.
        for update in updates.values():
            if update.get("dup_of") in near:
                update["dup_of"] = near[update["dup_of"]]["dup_of"]
    log.info(
        "dedup: %d eval leaks, %d exact and %d near duplicates",
        len(leaks),
        len(updates) - len(leaks) - len(near),
        len(near),
    )
    return updates, leaks


def _near_duplicates(col, uids, excluded: set, config: DedupConfig) -> dict[str, dict]:
    import numpy as np

    from pipeline.dedup.hashes import hex_to_codes
    from pipeline.dedup.neardup import cluster_near_duplicates

    codes, valid = hex_to_codes(_pylist(col("phash")), 64)
    widths = np.asarray([w or 0 for w in _pylist(col("width"))], dtype=np.float64)
    heights = np.asarray([h or 0 for h in _pylist(col("height"))], dtype=np.float64)
    keep = valid & np.asarray([u not in excluded for u in uids], dtype=bool)
    idx = np.flatnonzero(keep)
    dup_of = cluster_near_duplicates(
        [uids[i] for i in idx],
        codes[idx],
        (widths * heights)[idx],
        config.near_dup_radius,
        config.near_dup_method,
    )
    reason = f"near-duplicate of dup_of (phash within {config.near_dup_radius} bits)"
    return {
        uids[i]: {"status": config.near_dup_status, "dup_of": rep, "error": reason}
        for i, rep in zip(idx.tolist(), dup_of, strict=True)
        if rep is not None
    }


def _pylist(values) -> list:
    return values.to_pylist() if hasattr(values, "to_pylist") else list(values)
