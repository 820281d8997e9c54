"""Verified near-duplicate clusters in the pool (`--near-dup-verify orb|sift`).

Without verification a near-duplicate is a row whose 64-bit phash lies within `--near-dup-radius`
bits of another's (neardup.py). With it, mirrored and trimmed hashes propose more pairs, and the
leak check's verifier (verify.py) decides those:

- Candidates: besides its own phash, each row probes with the phash of its mirror image and of
  its border-trimmed image (`probe_hashes`), so a mirrored or padded copy comes within the
  radius of its original. A pair of probes within the radius links their rows' own hashes
  (`owner_pairs`); connected components of those links are the candidate clusters (cluster id:
  the smallest phash of the component), and rows with the same phash share one as before.
- Decision, per candidate cluster: first the hash clusters inside it, as without verification
  (phashes within the radius, transitively: `hash_subclusters`); those stay. Then their
  representatives (largest image first, ties: the smallest uid) join: each joins the first
  earlier representative it verifies against (verify.match against it or its mirror: enough
  inliers, or fewer and the aligned edge check; at most MAX_REPRESENTATIVES tried;
  `join_subclusters`), and its hash cluster with it.
  So verification adds the mirrored, padded and cropped copies the phash misses and takes
  nothing away (ORB misses many re-encoded 64 px copies that the phash finds). An image too
  plain to verify (too small, too few keypoints) joins nothing.

The single-process path (decide.py) and the build's phases (stages/dedupnear.py) call the same
functions, so they decide alike (a test keeps decide.py as the oracle).
"""

from __future__ import annotations

import numpy as np

from pipeline.dedup.verify import Features, VerifyConfig, how_verified, match, searchable

MAX_REPRESENTATIVES = 8  # per candidate cluster: bounds the pairs verified to 8 per hash cluster


def probe_hashes(data: bytes | None) -> tuple[str | None, str | None]:
    """64-bit phash hex of the mirror image and of the border-trimmed image (None: no trim, or
    bytes that are no image) of encoded image bytes, prepared as hashes.py prepares images."""
    from PIL import ImageOps

    from pipeline.dedup.hashes import bits_to_hex, gray_from_bytes, phash_bits, trim_borders

    if data is None:
        return None, None
    try:
        gray = gray_from_bytes(data)
    except ValueError:
        return None, None
    trimmed = trim_borders(gray)
    mirror = bits_to_hex(phash_bits(ImageOps.mirror(gray), 8))
    return mirror, (None if trimmed is gray else bits_to_hex(phash_bits(trimmed, 8)))


def probes(values: np.ndarray, mirrors, trims) -> tuple[np.ndarray, np.ndarray]:
    """(probe, owner) uint64 arrays: each row's own phash value, its mirror's and its trimmed
    image's (where valid), each owned by the row's own value; repeats removed."""
    from pipeline.dedup.hashes import hex_to_codes
    from pipeline.dedup.neardup import codes_to_u64

    probe, owner = [values], [values]
    for hexes in (mirrors, trims):
        codes, valid = hex_to_codes(list(hexes), 64)
        if valid.any():
            probe.append(codes_to_u64(codes[valid]))
            owner.append(values[valid])
    pairs = np.unique(np.stack([np.concatenate(probe), np.concatenate(owner)], axis=1), axis=0)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


def owner_pairs(probe, owner, distinct, i, j) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (a, b), a < b, of owner values linked by a probe pair: `distinct` the sorted
    distinct probe values, (i, j) index pairs into it within the radius; owners that share a
    probe value are linked too."""
    import pyarrow as pa

    entries = pa.table(
        {"p": pa.array(np.searchsorted(distinct, probe), pa.int64()), "o": pa.array(owner)}
    )
    pairs = pa.table({"i": pa.array(i, pa.int64()), "j": pa.array(j, pa.int64())})
    linked = pairs.join(entries, "i", "p").rename_columns(["i", "j", "a"])
    linked = linked.join(entries, "j", "p").rename_columns(["i", "j", "a", "b"])
    shared = entries.join(entries.rename_columns(["p", "o2"]), "p", "p")
    a = np.concatenate([linked["a"].to_numpy(), shared["o"].to_numpy()]).astype(np.uint64)
    b = np.concatenate([linked["b"].to_numpy(), shared["o2"].to_numpy()]).astype(np.uint64)
    keep = a != b
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    packed = np.unique(np.stack([lo, hi], axis=1), axis=0) if lo.size else np.zeros((0, 2))
    return packed[:, 0].astype(np.uint64), packed[:, 1].astype(np.uint64)


def pool_features(data: bytes | None, config: VerifyConfig) -> tuple[Features, Features]:
    """(image, mirror) features of a pool image's bytes (empty with a reason when unreadable)."""
    from pipeline.dedup.verify import eval_features, open_image

    image, reason = open_image(data, "pool") if data is not None else (None, "no image bytes")
    if image is None:
        empty = Features(np.zeros((0, 2), np.float32), None, reason)
        return empty, empty
    return eval_features(image, config)


def hash_subclusters(members, values, radius: int) -> list[str]:
    """Per member of a candidate cluster (uids in keep order, their phash `values`), the first
    member of its hash cluster: what --near-dup-radius clusters without verification (phashes
    within the radius, transitively). Those stay as they are; verification only joins them."""
    from pipeline.dedup.neardup import cluster_labels

    values = np.asarray(values, dtype=np.uint64)
    codes = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    labels = cluster_labels(codes, radius, "flat" if len(members) <= 4096 else "auto")
    first: dict[int, str] = {}
    return [first.setdefault(int(label), uid) for uid, label in zip(members, labels, strict=True)]


def join_subclusters(subreps, feats_of, config: VerifyConfig) -> dict:
    """{sub-cluster representative: (the one it joins, how)} for representatives in keep order:
    each joins the first earlier one (at most MAX_REPRESENTATIVES are tried) it verifies
    against, itself or mirrored; `feats_of(uid)` gives (image, mirror) Features."""
    reps: list[str] = []
    out = {}
    detector = config.detector
    for uid in subreps:
        own = feats_of(uid)[0]
        for rep in reps:
            targets = feats_of(rep)
            if not _verifiable(own, targets, config):
                continue
            verdict = match(own, targets, config)
            if verdict.copy:
                how = how_verified(verdict.inliers, verdict.structure, detector, verdict.mirrored)
                out[uid] = (rep, how)
                break
        else:
            if len(reps) < MAX_REPRESENTATIVES:
                reps.append(uid)
    return out


def _verifiable(own: Features, targets, config: VerifyConfig) -> bool:
    """Too plain for keypoints (too small, too few keypoints, on either image itself) joins
    nothing, unless the search (config.search) can compare the two grays."""
    if own.reason is None and targets[0].reason is None:
        return True
    return config.search and searchable(own, targets[:1])


def cluster_decisions(members, subrep_of: list[str], joined: dict, radius: int) -> dict:
    """{uid: (dup_of, reason)} of a candidate cluster from its hash sub-clusters and the joins."""
    out = {}
    for uid, sub in zip(members, subrep_of, strict=True):
        root, how = joined.get(sub, (sub, None))
        if root == uid:
            continue
        if how is None:
            out[uid] = (root, f"phash within {radius} bits")
        elif sub == uid:
            out[uid] = (root, how)
        else:
            out[uid] = (root, f"phash within {radius} bits of a copy verified by {how}")
    return out


def verified_near_duplicates(uids, values, areas, images, radius, config, method="auto") -> dict:
    """The single-process path: {uid: (representative uid, reason)} of the rows `uids` with
    phash `values` (uint64), `areas` and encoded `images` (bytes)."""
    from pipeline.dedup.neardup import components, near_duplicate_pairs

    values = np.asarray(values, dtype=np.uint64)
    found = [probe_hashes(data) for data in images]
    probe, owner = probes(values, [m for m, _ in found], [t for _, t in found])
    distinct = np.unique(probe)
    i, j = near_duplicate_pairs(
        distinct.astype(">u8").view(np.uint8).reshape(-1, 8), radius, method
    )
    a, b = owner_pairs(probe, owner, distinct, i, j)
    known = np.unique(values)
    labels = components(known.size, np.searchsorted(known, a), np.searchsorted(known, b))
    smallest = np.full(labels.max() + 1 if labels.size else 0, np.iinfo(np.uint64).max, np.uint64)
    np.minimum.at(smallest, labels, known)
    cluster = smallest[labels[np.searchsorted(known, values)]]
    by_uid = dict(zip(uids, range(len(uids)), strict=True))
    groups: dict[int, list[str]] = {}
    order = sorted(range(len(uids)), key=lambda k: (int(cluster[k]), -float(areas[k]), uids[k]))
    for k in order:
        groups.setdefault(int(cluster[k]), []).append(uids[k])
    cache: dict[str, tuple[Features, Features]] = {}

    def feats_of(uid):
        if uid not in cache:
            cache[uid] = pool_features(images[by_uid[uid]], config)
        return cache[uid]

    out = {}
    for members in groups.values():
        if len(members) > 1:
            subrep_of = hash_subclusters(members, [values[by_uid[u]] for u in members], radius)
            joined = join_subclusters(list(dict.fromkeys(subrep_of)), feats_of, config)
            out.update(cluster_decisions(members, subrep_of, joined, radius))
    return out
