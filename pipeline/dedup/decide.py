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
from pipeline.dedup.captions import SAME_BYTES

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
        "pads and rotations the hashes miss, at about 3 ms per candidate pair (3 per pool image)",
    )
    leak_embed: str | None = option(
        None,
        metavar="CHECKPOINT",
        help="a second candidate source for --leak-verify: each pool image's nearest eval "
        "images by this trainer checkpoint's image embeddings (cosine at least "
        "--leak-embed-min-cosine) are verified too; one image-tower pass per pool image",
    )
    leak_embed_min_cosine: float = option(
        0.7, metavar="COS", help="cosine from which an embedding neighbour is verified"
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
        if self.leak_embed is not None:
            if self.leak_verify == "off":
                raise ConfigError(
                    "--leak-embed needs --leak-verify (orb or sift): the embeddings only propose "
                    "pairs, the verification decides them"
                )
            if not location(self.leak_embed).is_file():
                raise ConfigError(f"--leak-embed {self.leak_embed}: no such checkpoint file")
        if not -1.0 <= self.leak_embed_min_cosine <= 1.0:
            raise ConfigError(
                f"--leak-embed-min-cosine must be in [-1, 1], not {self.leak_embed_min_cosine}"
            )
        if self.near_dup_verify != "off" and self.near_dup_radius is None:
            raise ConfigError("--near-dup-verify needs --near-dup-radius (the candidates' radius)")
        r = self.near_dup_radius
        if r is not None and not 0 <= r <= NEAR_DUP_MAX_RADIUS:
            raise ConfigError(
                f"near-dup radius (--near-dup-radius) must be 0..{NEAR_DUP_MAX_RADIUS} bits, not {r}"
            )


def leak_config(config: DedupConfig):
    """The leak check's settings (pipeline.dedup.leaks) of a build's dedup options."""
    from pipeline.dedup.leakembed import EmbedConfig
    from pipeline.dedup.leaks import LEAK_RADIUS, VERIFY_RADIUS, LeakConfig, leak_verify_config

    radius = LEAK_RADIUS if config.leak_radius is None else config.leak_radius
    verify = None if config.leak_verify == "off" else leak_verify_config(config.leak_verify)
    embed = None
    if config.leak_embed is not None:
        embed = EmbedConfig(config.leak_embed, min_cosine=config.leak_embed_min_cosine)
    # a hash radius past the verified one leaves nothing between them to verify
    verify_radius = max(VERIFY_RADIUS, radius)
    return LeakConfig(
        radius=radius,
        index=config.leak_index,
        verify=verify,
        verify_radius=verify_radius,
        embed=embed,
    )


def decide(rows, eval_table=None, config: DedupConfig | None = None, exact_dup_of=None):
    """Decisions for pending rows: (dict uid → row update, list of leaks.Leak).

    `rows`: a pyarrow table (or dict of lists) in source order with uid, width, height, phash,
    phash256, phash256_trim, `caption` (without it every row with the same bytes counts as the
    same caption), `sha256` (or `exact_dup_of`: uid → uid of the first row with the same bytes)
    and `image` (encoded bytes) when --leak-verify or --near-dup-verify is on. An update holds
    `status` ('eval_leak', 'duplicate' / config.near_dup_status, or 'pending' for a caption
    kept beside an image another row holds), `leak_of`, `dup_of` or `image_of`, and `error` (a
    readable reason). Rows without an update stay as they are (pipeline.dedup.captions)."""
    from pipeline.dedup.leaks import find_leaks, leak_reason

    config = config or DedupConfig()
    col = rows.column if hasattr(rows, "column") else rows.__getitem__
    names = rows.column_names if hasattr(rows, "column_names") else list(rows)
    uids = _pylist(col("uid"))
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
    updates = {
        leak.uid: {"status": EVAL_LEAK, "leak_of": leak.eval_id, "error": leak_reason(leak)}
        for leak in leaks
    }
    groups = _byte_groups(uids, col, names, exact_dup_of, set(updates))
    near: dict[str, tuple[str, str]] = {}
    if config.near_dup_radius is not None:
        followers = {uid for members in groups.values() for uid in members[1:]}
        near = _near_duplicates(col, uids, set(updates) | followers, config)
    updates.update(_caption_decisions(uids, col, names, groups, near, config))
    log.info(
        "dedup: %d eval leaks, %d exact and %d near duplicates",
        len(leaks),
        sum(u.get("error") == SAME_BYTES for u in updates.values()),
        sum(u.get("dup_of") is not None and u.get("error") != SAME_BYTES for u in updates.values()),
    )
    return updates, leaks


def _byte_groups(uids, col, names, exact_dup_of, leaks: set) -> dict[str, list[str]]:
    """image row uid → the uids of its image group's own rows (it first, then source order):
    rows with the same bytes, leaks left out."""
    if exact_dup_of is None:
        first: dict = {}
        exact_dup_of = {}
        if "sha256" in names:
            for uid, digest in zip(uids, _pylist(col("sha256")), strict=True):
                if uid in leaks or not digest:
                    continue
                if digest in first:
                    exact_dup_of[uid] = first[digest]
                first.setdefault(digest, uid)
    groups: dict[str, list[str]] = {}
    for uid in uids:
        if uid not in leaks:
            head = exact_dup_of.get(uid, uid)
            groups.setdefault(head if head not in leaks else uid, []).append(uid)
    return groups


def _caption_decisions(uids, col, names, groups, near, config) -> dict[str, dict]:
    """Each image group's captions (captions.group_decisions), a near-duplicate cluster's
    groups joined behind its representative's."""
    from pipeline.dedup.captions import Member, caption_key, group_decisions

    known = "caption" in names  # unknown: every caption of an image is the same one
    if known:
        keys = dict(zip(uids, map(caption_key, _pylist(col("caption"))), strict=True))
    else:
        keys = dict.fromkeys(uids, 0)
    position = {uid: i for i, uid in enumerate(uids)}
    joined: dict[str, list[tuple[str, str]]] = {}  # representative → (member image row, why)
    for member, (rep, why) in near.items():
        joined.setdefault(rep, []).append((member, why))
    updates: dict[str, dict] = {}
    for head, own in groups.items():
        if head in near:
            continue  # decided with its representative's group
        members = [Member(uid, keys[uid]) for uid in own]
        others = [(uid, why) for member, why in joined.get(head, []) for uid in groups[member]]
        for uid, why in sorted(others, key=lambda o: position[o[0]]):
            members.append(Member(uid, keys[uid], own=False, why=why))
        suffix = ", with the same caption" if known else ""
        updates.update(group_decisions(members, config.near_dup_status, suffix))
    return updates


def _near_duplicates(col, uids, excluded: set, config: DedupConfig) -> dict[str, tuple[str, str]]:
    """image row uid → (its cluster's representative, why), for the images that are not it."""
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
        return dict(found)
    dup_of = cluster_near_duplicates(
        [uids[i] for i in idx],
        codes[idx],
        (widths * heights)[idx],
        radius,
        config.near_dup_method,
    )
    why = f"phash within {radius} bits"
    return {
        uids[i]: (rep, why) for i, rep in zip(idx.tolist(), dup_of, strict=True) if rep is not None
    }


def _pylist(values) -> list:
    return values.to_pylist() if hasattr(values, "to_pylist") else list(values)
