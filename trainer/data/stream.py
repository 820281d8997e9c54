"""Stream selected shard rows as training batches, split across ranks and loader workers.

Every *global worker* (rank x DataLoader worker) owns one contiguous, equal (+-1 row) slice of each
epoch's order (row groups permuted by (seed, epoch)), so the workers together read every selected
row exactly once per epoch and never the same one. Each worker chains its slices of epoch 0, 1, 2...
into an endless stream, passes it through a shuffle buffer, and cuts it into batches, so no rows are
dropped at epoch ends and every rank makes the same number of steps.

Resume: a worker's *position* is the number of rows its shuffle buffer has emitted (corrupt ones
included). Replaying the buffer on row references alone (no reads, no decoding) reaches any
position cheaply and deterministically; the rows then in the buffer are read once, and the stream
continues exactly as it would have. Augmentation draws from an RNG seeded by (seed, worker,
position), so it does not depend on history either.
"""

import logging
import random
from collections.abc import Iterator

import numpy as np
import torch

from trainer.data.image import train_image
from trainer.data.select import RowIndex

log = logging.getLogger(__name__)

Ref = tuple[int, int, int, int]  # (epoch, shard index, row group, row in the row group)


def worker_pieces(index: RowIndex, seed: int, worker: int, num_workers: int, epoch: int):
    """This global worker's share of `epoch`: (shard, row group, rows) pieces in read order."""
    order = np.random.default_rng([seed, epoch]).permutation(len(index.units))
    sizes = np.array([len(index.units[i].rows) for i in order], dtype=np.int64)
    ends = np.cumsum(sizes)
    total = int(ends[-1])
    lo, hi = worker * total // num_workers, (worker + 1) * total // num_workers
    begin = 0
    for unit_pos, end in zip(order, ends, strict=True):
        unit, start = index.units[unit_pos], int(end) - len(index.units[unit_pos].rows)
        begin = max(lo, start)
        stop = min(hi, int(end))
        if begin < stop:
            yield unit.shard, unit.row_group, unit.rows[begin - start : stop - start]
        if end >= hi:
            return


class ShuffleBuffer:
    """Fixed-size reservoir: once full, each pushed item replaces a uniformly drawn one, which is
    emitted. Its draws depend only on the count of pushes, never on the items."""

    def __init__(self, size: int, rng: random.Random):
        self.size, self.rng, self.items = max(1, size), rng, []

    def push(self, item):
        if len(self.items) < self.size:
            self.items.append(item)
            return None
        slot = self.rng.randrange(self.size)
        out, self.items[slot] = self.items[slot], item
        return out


class ShardReader:
    """Reads selected rows of a row group: {ref: (image bytes, caption)}; keeps a few files open."""

    def __init__(self, index: RowIndex, max_open: int = 8):
        self.index, self.max_open, self.files = index, max_open, {}

    def _file(self, shard: int):
        import pyarrow.parquet as pq

        if shard not in self.files:
            if len(self.files) >= self.max_open:
                self.files.pop(next(iter(self.files))).close()
            self.files[shard] = pq.ParquetFile(self.index.root / self.index.shards[shard])
        return self.files[shard]

    def read(self, refs: list[Ref]) -> dict:
        by_group: dict[tuple[int, int], list[Ref]] = {}
        for ref in refs:
            by_group.setdefault((ref[1], ref[2]), []).append(ref)
        out = {}
        for (shard, group), group_refs in by_group.items():
            column = self.index.image_columns[shard]
            table = self._file(shard).read_row_group(group, columns=[column, "caption"])
            rows = table.take([r[3] for r in group_refs])
            images, captions = rows.column(column).to_pylist(), rows.column("caption").to_pylist()
            out.update(zip(group_refs, zip(images, captions, strict=True), strict=True))
        return out


class ShardStream(torch.utils.data.IterableDataset):
    """Yields (images uint8 [B,3,S,S], tokens [B,L], meta) forever; meta has the global `worker`,
    its `position` after this batch, and `corrupt`, the images skipped while filling it."""

    def __init__(
        self,
        index: RowIndex,
        *,
        batch_size: int,
        image_size: int,
        tokenizer,
        seed: int,
        rank: int,
        world_size: int,
        num_workers: int,
        shuffle_buffer: int,
        positions: dict[int, int] | None = None,
        worker_offset: int = 0,
    ):
        super().__init__()
        self.index, self.batch_size, self.image_size = index, batch_size, image_size
        self.tokenizer = tokenizer  # open_clip's: list of captions -> LongTensor [B, L]
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.num_workers = max(1, num_workers)  # 0 workers: the main process is worker 0
        self.shuffle_buffer = shuffle_buffer
        self.positions = dict(positions or {})
        self.worker_offset = worker_offset

    def global_worker(self) -> int:
        info = torch.utils.data.get_worker_info()
        local = 0 if info is None else info.id
        # After a resume the first batch must come from the worker whose turn it was.
        return self.rank * self.num_workers + (local + self.worker_offset) % self.num_workers

    def __iter__(self):
        worker = self.global_worker()
        start = self.positions.get(worker, 0)
        images, captions, corrupt, skipped = [], [], 0, 0
        for position, (data, caption) in self._samples(worker, start):
            rng = _rng(self.seed, worker, position)
            try:
                images.append(train_image(data, self.image_size, rng))
            except Exception as exc:  # corrupt bytes of any kind: skip, count, go on
                corrupt += 1
                skipped += 1
                if skipped <= 10 or skipped % 1000 == 0:  # metrics.csv has the full count
                    log.warning(
                        "worker %d: skipped undecodable image #%d (%s)", worker, skipped, exc
                    )
                continue
            captions.append(caption or "")
            if len(images) == self.batch_size:
                meta = {"worker": worker, "position": position, "corrupt": corrupt}
                yield torch.stack(images), self.tokenizer(captions), meta
                images, captions, corrupt = [], [], 0

    def _refs(self, worker: int) -> Iterator[list[Ref]]:
        total_workers = self.num_workers * self.world_size
        epoch = 0
        while True:
            for shard, group, rows in worker_pieces(
                self.index, self.seed, worker, total_workers, epoch
            ):
                yield [(epoch, shard, group, int(r)) for r in rows]
            epoch += 1

    def _samples(self, worker: int, start: int) -> Iterator[tuple[int, tuple[bytes, str]]]:
        """(position, (bytes, caption)) for positions start+1, start+2, ... forever."""
        rows_per_epoch = self._rows_per_epoch(worker)
        if rows_per_epoch == 0:
            raise ValueError(f"loader worker {worker} has no rows: use fewer workers or ranks")
        reader = ShardReader(self.index)
        buffer = ShuffleBuffer(min(self.shuffle_buffer, rows_per_epoch), _rng(self.seed, worker))
        loaded: dict[Ref, tuple[bytes, str]] = {}
        emitted, replaying = 0, start > 0  # replaying: reach `start` on references alone
        for piece in self._refs(worker):
            if not replaying:
                loaded.update(reader.read(piece))
            for i, ref in enumerate(piece):
                out = buffer.push(ref)
                if out is None:
                    continue
                emitted += 1
                if replaying:
                    if emitted == start:  # read what the buffer holds and the rest of this piece
                        loaded.update(reader.read(buffer.items + piece[i + 1 :]))
                        replaying = False
                    continue
                yield emitted, loaded.pop(out)

    def _rows_per_epoch(self, worker: int) -> int:
        total = self.index.num_rows
        workers = self.num_workers * self.world_size
        return (worker + 1) * total // workers - worker * total // workers


def _rng(*key) -> random.Random:
    # A string seed goes through SHA-512: the same stream in every process (hash() of a str is
    # salted per process).
    return random.Random("/".join(map(str, key)))
