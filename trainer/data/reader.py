"""Read selected shard rows, and choose the caption each visit of an image trains on.

A reference names one visit: `(epoch, unit, row, caption)`, with `unit` an index into
RowIndex.units, `row` a row inside that unit's row group, and `caption` the caption index of a
per-caption visit (--caption-sampling all) or DRAW for one visit per image, whose caption the
reader picks among the row's *usable* captions: selected (the unit's caption set), not withdrawn
(RowIndex.withdrawn_captions) and not null in the shard's `captions` (taken down by `pipeline
remove`). `first` takes the lowest index; `random` draws one from an RNG seeded by (seed, the
shard row's uid, epoch): the same draw in every process, on a resume, wherever the row falls in
the order, and a withdrawn caption changes the draw of its own row only. A visit left with no
usable caption is skipped as withdrawn.

Shards older than the `captions` column read as captions = [caption]. A unit without caption
sets (every row has {0}: every one-caption dataset) reads the `caption` column only, as before.
"""

import logging
import random

from manifests import storage
from trainer.data.select import RowIndex

log = logging.getLogger(__name__)

REMOVED = "removed"  # a shard row's status once `pipeline remove` emptied it
DRAW = -1  # a reference's caption: one visit per image, the reader picks the caption
SAMPLING = ("first", "random", "all")

Ref = tuple[int, int, int, int]  # (epoch, unit index, row in the row group, caption or DRAW)


def string_rng(*key) -> random.Random:
    # A string seed goes through SHA-512: the same stream in every process (hash() of a str is
    # salted per process).
    return random.Random("/".join(map(str, key)))


class ShardReader:
    """Reads referenced rows: {ref: (image bytes, caption)}, or {ref: None} for a withdrawn
    visit: one the index withdrew (not read at all), one whose shard `status` says `removed` or
    that has no usable caption left (taken down while the run went: `pipeline remove` rewrites
    the shard in place). Keeps a few files open."""

    def __init__(self, index: RowIndex, *, seed: int = 0, sampling: str = "random", max_open=8):
        if sampling not in SAMPLING:
            raise ValueError(f"caption sampling {sampling!r} is not one of {SAMPLING}")
        self.index, self.seed, self.sampling = index, seed, sampling
        self.max_open, self.files = max_open, {}
        self.removed = 0  # visits met with status `removed` or no caption left in their shard

    def _file(self, shard: int):
        if shard not in self.files:
            if len(self.files) >= self.max_open:
                self.files.pop(next(iter(self.files))).close()
            self.files[shard] = storage.parquet_file(self.index.root / self.index.shards[shard])
        return self.files[shard]

    def _key(self, ref: Ref) -> tuple[int, int, int]:
        unit = self.index.units[ref[1]]
        return unit.shard, unit.row_group, ref[2]

    def _withdrawn(self, ref: Ref) -> bool:
        key = self._key(ref)
        if key in self.index.withdrawn:
            return True
        return ref[3] != DRAW and ref[3] in self.index.withdrawn_captions.get(key, ())

    def read(self, refs: list[Ref]) -> dict:
        out: dict = {}
        by_unit: dict[int, list[Ref]] = {}
        for ref in refs:
            if self._withdrawn(ref):
                out[ref] = None
            else:
                by_unit.setdefault(ref[1], []).append(ref)
        for unit, unit_refs in by_unit.items():
            out.update(self._read_unit(unit, unit_refs))
        return out

    def _columns(self, unit, names: list[str]) -> list[str]:
        column = self.index.image_columns[unit.shard]
        lists = unit.offsets is not None and "captions" in names  # only rows with caption sets
        wanted = [column, "caption"]
        wanted += ["captions"] if lists else []
        wanted += ["uid"] if lists and self.sampling == "random" and "uid" in names else []
        return wanted + (["status"] if "status" in names else [])

    def _read_unit(self, unit_pos: int, refs: list[Ref]) -> dict:
        unit = self.index.units[unit_pos]
        file = self._file(unit.shard)
        columns = self._columns(unit, file.schema_arrow.names)
        table = file.read_row_group(unit.row_group, columns=columns).take([r[2] for r in refs])
        none = [None] * len(refs)
        values = {c: table.column(c).to_pylist() for c in columns}
        images, firsts = values[columns[0]], values["caption"]
        lists, uids = values.get("captions", none), values.get("uid", none)
        statuses = values.get("status", none)
        out = {}
        for i, ref in enumerate(refs):
            caption = None
            if statuses[i] != REMOVED:
                texts = lists[i] if lists[i] is not None else [firsts[i]]
                caption = self._caption(unit, ref, texts, uids[i])
            if caption is None:
                out[ref] = None
                self._note_removed(unit.shard, unit.row_group)
            else:
                out[ref] = (images[i], caption)
        return out

    def _caption(self, unit, ref: Ref, texts: list, uid) -> str | None:
        def usable(c: int) -> bool:
            return c < len(texts) and texts[c] is not None

        if ref[3] != DRAW:  # a per-caption visit
            return texts[ref[3]] if usable(ref[3]) else None
        if unit.offsets is None:  # the caption set {0}: no draw
            return texts[0] if usable(0) else None
        key = self._key(ref)
        gone = self.index.withdrawn_captions.get(key, ())
        choices = [c for c in unit.caption_set(ref[2]).tolist() if c not in gone and usable(c)]
        if not choices:
            return None
        if self.sampling != "random" or len(choices) == 1:
            return texts[choices[0]]
        who = uid or f"{self.index.shards[unit.shard]}:{unit.start + ref[2]}"
        return texts[choices[string_rng(self.seed, who, ref[0]).randrange(len(choices))]]

    def _note_removed(self, shard: int, group: int) -> None:
        self.removed += 1
        if self.removed == 1:  # the batch meta counts them all
            log.warning(
                "shard %s row group %d holds a row or caption removed since the run started "
                "(status 'removed', or a null caption): such visits are skipped as withdrawn",
                self.index.shards[shard],
                group,
            )
