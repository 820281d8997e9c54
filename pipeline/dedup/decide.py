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
LEAK_VERIFIERS = ("off", "orb", "sift")  # "off" or pipeline.dedup.verify's DETECTORS


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
    leak_verify: str = option(
        "off",
        choices=LEAK_VERIFIERS,
        help="verify the leak check's near misses by local features (orb, sift): finds crops, "
        "pads and rotations the hashes miss, at about 2 ms per candidate pair",
    )
    near_dup_verify: str = option(
        "off",
        choices=LEAK_VERIFIERS,
        help="near-duplicate candidates (phash, its mirror and its trimmed image within "
        "--near-dup-radius) are duplicates only when local features (orb, sift) verify them",
    )
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
        if self.leak_verify != "off" and not self.eval_set:
            raise ConfigError("--leak-verify needs --eval-set (the images whose copies it finds)")
        if self.near_dup_verify != "off" and self.near_dup_radius is None:
            raise ConfigError("--near-dup-verify needs --near-dup-radius (the candidates' radius)")
        r = self.near_dup_radius
        if r is not None and not 0 <= r <= NEAR_DUP_MAX_RADIUS:
            raise ConfigError(
                f"near-dup radius (--near-dup-radius) must be 0..{NEAR_DUP_MAX_RADIUS} bits, not {r}"
            )


def leak_config(config: DedupConfig):
    """The leak check's settings (pipeline.dedup.leaks) of a build's dedup options."""
    from pipeline.dedup.leaks import LEAK_RADIUS, LeakConfig
    from pipeline.dedup.verify import VerifyConfig

    radius = LEAK_RADIUS if config.leak_radius is None else config.leak_radius
    verify = None if config.leak_verify == "off" else VerifyConfig(detector=config.leak_verify)
    return LeakConfig(radius=radius, index=config.leak_index, verify=verify)


def decide(rows, eval_table=None, config: DedupConfig | None = None, exact_dup_of=None):
    """Decisions for pending rows: (dict uid → row update, list of leaks.Leak).

    `rows`: a pyarrow table (or dict of lists) with uid, width, height, phash, phash256,
    phash256_trim, and `image` (encoded bytes) when --leak-verify is on. `exact_dup_of`: uid →
    uid kept, for rows with the same bytes as an earlier row (stages/dedup.py's
    exact_duplicates). An update holds `status` ('eval_leak', or 'duplicate' /
    config.near_dup_status), `leak_of` or `dup_of`, and `error` (a readable reason).
    Rows without an update stay as they are."""
    from pipeline.dedup.leaks import find_leaks, leak_reason

    config = config or DedupConfig()
    exact_dup_of = dict(exact_dup_of or {})
    col = rows.column if hasattr(rows, "column") else rows.__getitem__
    uids = _pylist(col("uid"))
    updates: dict[str, dict] = {}
    leaks = []
    if eval_table is not None and eval_table.num_rows:
        settings = leak_config(config)
        images = None
        if settings.verify is not None:
            data = _pylist(col("image"))
            images = lambda indexes: {i: data[i] for i in indexes}  # noqa: E731
        leaks = find_leaks(
            eval_table,
            uids,
            _pylist(col("phash256")),
            _pylist(col("phash256_trim")),
            settings,
            images=images,
        )
        for leak in leaks:
            updates[leak.uid] = {
                "status": EVAL_LEAK,
                "leak_of": leak.eval_id,
                "error": leak_reason(leak),
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
    from pipeline.dedup.neardup import cluster_near_duplicates, codes_to_u64

    codes, valid = hex_to_codes(_pylist(col("phash")), 64)
    widths = np.asarray([w or 0 for w in _pylist(col("width"))], dtype=np.float64)
    heights = np.asarray([h or 0 for h in _pylist(col("height"))], dtype=np.float64)
    keep = valid & np.asarray([u not in excluded for u in uids], dtype=bool)
    idx = np.flatnonzero(keep)
    radius = config.near_dup_radius
    if config.near_dup_verify != "off":
        from pipeline.dedup.nearverify import verified_near_duplicates
        from pipeline.dedup.verify import VerifyConfig

        images = _pylist(col("image"))
        found = verified_near_duplicates(
            [uids[i] for i in idx],
            codes_to_u64(codes[idx]) if idx.size else np.zeros(0, np.uint64),
            (widths * heights)[idx],
            [images[i] for i in idx],
            radius,
            VerifyConfig(detector=config.near_dup_verify),
            config.near_dup_method,
        )
        return {
            uid: {
                "status": config.near_dup_status,
                "dup_of": rep,
                "error": f"near-duplicate of dup_of ({why})",
            }
            for uid, (rep, why) in found.items()
        }
    dup_of = cluster_near_duplicates(
        [uids[i] for i in idx],
        codes[idx],
        (widths * heights)[idx],
        radius,
        config.near_dup_method,
    )
    reason = f"near-duplicate of dup_of (phash within {radius} bits)"
    return {
        uids[i]: {"status": config.near_dup_status, "dup_of": rep, "error": reason}
        for i, rep in zip(idx.tolist(), dup_of, strict=True)
        if rep is not None
    }


def _pylist(values) -> list:
    return values.to_pylist() if hasattr(values, "to_pylist") else list(values)
