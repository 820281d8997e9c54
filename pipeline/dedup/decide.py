"""One dedup decision over the pending rows of a run: eval leaks first, then near-duplicates.

Leaks go first because a leak must leave the dataset whatever else it is; near-duplicate
clusters are then formed among the remaining rows, so no kept row points at a leak."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

DUPLICATE = "duplicate"
EVAL_LEAK = "eval_leak"


@dataclass
class DedupConfig:
    near_dup_radius: int | None = None  # bits of the 64-bit phash; None: no near-dup clusters
    near_dup_method: str = "auto"  # neardup.METHODS
    leak_radius: int | None = None  # bits of 256; None: leaks.LEAK_RADIUS
    leak_index: str = "auto"  # leaks.INDEXES
    status: str = DUPLICATE  # status given to near-duplicates: 'duplicate' or 'near_duplicate'

    def __post_init__(self):
        from pipeline.dedup.neardup import MAX_RADIUS, METHODS

        r = self.near_dup_radius
        if r is not None and (
            not isinstance(r, int) or isinstance(r, bool) or not 0 <= r <= MAX_RADIUS
        ):
            raise ValueError(f"near-dup radius must be an integer 0..{MAX_RADIUS}, not {r!r}")
        if self.near_dup_method not in METHODS:
            raise ValueError(
                f"near-dup method must be one of {METHODS}, not {self.near_dup_method!r}"
            )
        if self.status not in (DUPLICATE, "near_duplicate"):
            raise ValueError(
                f"near-duplicate status must be 'duplicate' or 'near_duplicate', not {self.status!r}"
            )


def decide(rows, eval_table=None, config: DedupConfig | None = None):
    """Decisions for pending rows: (dict uid → row update, list of leaks.Leak).

    `rows`: a pyarrow table (or dict of lists) with uid, width, height, phash, phash256,
    phash256_trim. An update holds `status` ('eval_leak' or config.status), `leak_of` or
    `dup_of`, and `error` (a human-readable reason). Rows without an update stay as they are."""
    import numpy as np

    from pipeline.dedup.hashes import hex_to_codes
    from pipeline.dedup.leaks import LEAK_RADIUS, LeakConfig, find_leaks
    from pipeline.dedup.neardup import cluster_near_duplicates

    config = config or DedupConfig()
    col = rows.column if hasattr(rows, "column") else rows.__getitem__
    uids = list(_pylist(col("uid")))
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
    if config.near_dup_radius is not None:
        codes, valid = hex_to_codes(_pylist(col("phash")), 64)
        widths = np.asarray([w or 0 for w in _pylist(col("width"))], dtype=np.float64)
        heights = np.asarray([h or 0 for h in _pylist(col("height"))], dtype=np.float64)
        keep = valid & np.asarray([u not in updates for u in uids], dtype=bool)
        idx = np.flatnonzero(keep)
        dup_of = cluster_near_duplicates(
            [uids[i] for i in idx], codes[idx], (widths * heights)[idx],
            config.near_dup_radius, config.near_dup_method,
        )  # fmt: skip
        for i, rep in zip(idx.tolist(), dup_of, strict=True):
            if rep is not None:
                updates[uids[i]] = {
                    "status": config.status,
                    "dup_of": rep,
                    "error": f"near-duplicate of dup_of (phash within {config.near_dup_radius} bits)",
                }
    log.info("dedup: %d eval leaks, %d near-duplicates", len(leaks), len(updates) - len(leaks))
    return updates, leaks


def _pylist(values) -> list:
    return values.to_pylist() if hasattr(values, "to_pylist") else list(values)
