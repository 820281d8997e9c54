"""The captions of one image: which rows of a group that shares an image are kept beside it.

Rows with the same image bytes (or the images of one near-duplicate cluster) are one *image
group*: the image is stored once and every distinct caption of the group is kept with it (each
a `pending` row whose `image_of` names the group's image row). A row whose caption the group
already has is a duplicate of the first row with that caption: `duplicate` when its bytes are
the image's, the near-duplicate status when its bytes are another image of the cluster.

Captions are compared after Unicode NFKC, case folding and whitespace collapsing, by a 64-bit
hash (the shuffles carry 8 bytes per row, not the text): "A red  Circle" and "a red circle" are
one caption. The same function decides in the single-process oracle (decide.py) and in the
distributed phases (stages/dedupexact.py), so both give the same answer."""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass

SAME_BYTES = "same bytes and caption as dup_of"


def caption_key(caption: str | None) -> int:
    """A 64-bit key (as a signed int64, Parquet's integer) of a caption's normalised text."""
    text = " ".join(unicodedata.normalize("NFKC", caption or "").casefold().split())
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


@dataclass(frozen=True)
class Member:
    """A row of an image group. `own`: its bytes are the image's (False: another image of a
    near-duplicate cluster, whose reason is `why`)."""

    uid: str
    key: int  # caption_key of its caption
    own: bool = True
    why: str = ""


def group_decisions(
    members: list[Member],
    near_status: str = "duplicate",
    same_caption: str = ", with the same caption",
) -> dict[str, dict]:
    """uid → update for the rows of one image group. `members` in group order: the image's own
    rows first (the image row, the first of them, is always kept), then the others, each in
    source order. A kept row gets `image_of` (the image row) when the group keeps two or more
    captions; a repeated caption becomes a duplicate of its first row (`same_caption` ends
    a near-duplicate's error)."""
    image = members[0].uid
    first: dict[int, str] = {}
    updates: dict[str, dict] = {}
    for member in members:
        if member.key not in first:
            first[member.key] = member.uid
            continue
        if member.own:
            updates[member.uid] = {"status": "duplicate", "dup_of": first[member.key]}
            updates[member.uid]["error"] = SAME_BYTES
        else:
            updates[member.uid] = {
                "status": near_status,
                "dup_of": first[member.key],
                "error": f"near-duplicate of dup_of ({member.why}){same_caption}",
            }
    if len(first) > 1:
        for uid in first.values():
            updates[uid] = {"status": "pending", "image_of": image}
    return updates
