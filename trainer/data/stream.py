"""Stream selected shard rows as training batches, split across ranks and loader workers.

Every *global worker* (rank x DataLoader worker) owns one contiguous, equal (+-1 row) slice of each
epoch's order (row groups permuted by (seed, epoch)), so the workers together read every selected
row exactly once per epoch and never the same one. Each worker chains its slices of epoch 0, 1, 2...
into an endless stream, passes it through a shuffle buffer, and cuts it into batches, so no rows are
dropped at epoch ends and every rank makes the same number of steps.

Resume: a worker's *position* is the number of rows its shuffle buffer has emitted (corrupt and
withdrawn ones included). Replaying the buffer on row references alone (no reads, no decoding)
reaches any position cheaply and deterministically; the rows then in the buffer are read once, and
the stream continues exactly as it would have. Augmentation draws from an RNG seeded by (seed,
worker, position), so it does not depend on history either. Withdrawn rows (no longer served by
the dataset, trainer.data.frozen) go through the buffer like any other and are skipped, unread,
when they come out: every other row keeps its place.
"""

import logging
import random
from collections.abc import Iterator

import numpy as np
import torch

from manifests import storage
from trainer.data.image import new_batch, train_image
from trainer.data.select import RowIndex

log = logging.getLogger(__name__)

REMOVED = "removed"  # a shard row's status once `pipeline remove` emptied it

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
    """Reads selected rows of a row group: {ref: (image bytes, caption)}, or {ref: None} for a
    withdrawn row: one the index withdrew (not read at all) or one whose shard `status` says
    `removed` (taken down while the run went: `pipeline remove` rewrites the shard in place).
    Keeps a few files open."""

    def __init__(self, index: RowIndex, max_open: int = 8):
        self.index, self.max_open, self.files = index, max_open, {}
        self.removed = 0  # rows met with status `removed` in their shard

    def _file(self, shard: int):
        if shard not in self.files:
            if len(self.files) >= self.max_open:
                self.files.pop(next(iter(self.files))).close()
            self.files[shard] = storage.parquet_file(self.index.root / self.index.shards[shard])
        return self.files[shard]

    def read(self, refs: list[Ref]) -> dict:
        out: dict = {}
        by_group: dict[tuple[int, int], list[Ref]] = {}
        for ref in refs:
            if ref[1:] in self.index.withdrawn:
                out[ref] = None
            else:
                by_group.setdefault((ref[1], ref[2]), []).append(ref)
        for (shard, group), group_refs in by_group.items():
            out.update(self._read_group(shard, group, group_refs))
        return out

    def _read_group(self, shard: int, group: int, refs: list[Ref]) -> dict:
        file, column = self._file(shard), self.index.image_columns[shard]
        columns = [column, "caption"] + (["status"] if "status" in file.schema_arrow.names else [])
        rows = file.read_row_group(group, columns=columns).take([r[3] for r in refs])
        images, captions = rows.column(column).to_pylist(), rows.column("caption").to_pylist()
        statuses = rows.column("status").to_pylist() if "status" in columns else [None] * len(refs)
        out = {}
        for ref, image, caption, status in zip(refs, images, captions, statuses, strict=True):
            if status == REMOVED:
                out[ref] = None
                self._note_removed(shard, group)
            else:
                out[ref] = (image, caption)
        return out

    def _note_removed(self, shard: int, group: int) -> None:
        self.removed += 1
        if self.removed == 1:  # the batch meta counts them all
            log.warning(
                "shard %s row group %d holds a row removed since the run started (status "
                "'removed'): such rows are skipped as withdrawn",
                self.index.shards[shard],
                group,
            )


class ImageBatch:
    """One batch of decoded crops, each written straight into its slot of the batch tensor."""

    def __init__(self, count: int, size: int, shared: bool):
        self.images, self.size, self.filled = new_batch(count, size, shared), size, 0

    def add(self, data: bytes, rng: random.Random) -> None:
        """Decode and crop into the next slot; raises (leaving the slot free) if corrupt."""
        train_image(data, self.size, rng, out=self.images[self.filled])
        self.filled += 1

    def result(self) -> torch.Tensor:
        return self.images


class ShardStream(torch.utils.data.IterableDataset):
    """Yields (images uint8 [B,3,S,S] in channels_last memory, tokens [B,L], meta) forever; meta
    has the global `worker`, its `position` after this batch, and the rows skipped while filling
    it: `corrupt` (undecodable images) and `withdrawn` (rows no longer served, see
    trainer.data.frozen). With decode="gpu" the images are a gpu_decode.JpegBatch instead (JPEG
    bytes and crop boxes; its `decode_on(device)` makes the same tensor on the device)."""

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
        read_ahead: int = 2,
        decode: str = "cpu",
    ):
        super().__init__()
        self.index, self.batch_size, self.image_size = index, batch_size, image_size
        self.tokenizer = tokenizer  # open_clip's: list of captions -> LongTensor [B, L]
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.num_workers = max(1, num_workers)  # 0 workers: the main process is worker 0
        self.shuffle_buffer = shuffle_buffer
        self.positions = dict(positions or {})
        self.worker_offset = worker_offset
        self.read_ahead = read_ahead  # row-group pieces read ahead per loader worker
        self.decode = decode  # cpu: decode in this process; gpu: leave JPEGs to the device

    def global_worker(self) -> int:
        info = torch.utils.data.get_worker_info()
        local = 0 if info is None else info.id
        # After a resume the first batch must come from the worker whose turn it was.
        return self.rank * self.num_workers + (local + self.worker_offset) % self.num_workers

    def __iter__(self):
        worker = self.global_worker()
        start = self.positions.get(worker, 0)
        batch, captions, counts = self._new_batch(), [], {"corrupt": 0, "withdrawn": 0}
        skipped = 0
        for position, item in self._samples(worker, start):
            if item is None:  # withdrawn: its place in the order is kept, it is not trained on
                counts["withdrawn"] += 1
                continue
            data, caption = item
            try:
                batch.add(data, _rng(self.seed, worker, position))
            except Exception as exc:  # corrupt bytes of any kind: skip, count, go on
                counts["corrupt"] += 1
                skipped += 1
                if skipped <= 10 or skipped % 1000 == 0:  # metrics.csv has the full count
                    log.warning(
                        "worker %d: skipped undecodable image #%d (%s)", worker, skipped, exc
                    )
                continue
            captions.append(caption or "")
            if len(captions) == self.batch_size:
                meta = {"worker": worker, "position": position, **counts}
                yield batch.result(), self.tokenizer(captions), meta
                batch, captions, counts = self._new_batch(), [], {"corrupt": 0, "withdrawn": 0}

    def _new_batch(self):
        if self.decode == "gpu":
            from trainer.data.gpu_decode import JpegBatchBuilder

            return JpegBatchBuilder(self.batch_size, self.image_size)
        # In a loader worker the batch is made in shared memory: sending it is then a handle,
        # not a copy of every pixel into shared memory (what torch does with ordinary tensors).
        in_worker = torch.utils.data.get_worker_info() is not None
        return ImageBatch(self.batch_size, self.image_size, shared=in_worker)

    def _refs(self, worker: int) -> Iterator[list[Ref]]:
        total_workers = self.num_workers * self.world_size
        epoch = 0
        while True:
            for shard, group, rows in worker_pieces(
                self.index, self.seed, worker, total_workers, epoch
            ):
                yield [(epoch, shard, group, int(r)) for r in rows]
            epoch += 1

    def _samples(self, worker: int, start: int) -> Iterator[tuple[int, tuple[bytes, str] | None]]:
        """(position, (bytes, caption) or None if withdrawn) for positions start+1, ... forever."""
        rows_per_epoch = self._rows_per_epoch(worker)
        if rows_per_epoch == 0:
            raise ValueError(f"loader worker {worker} has no rows: use fewer workers or ranks")
        reader = ShardReader(self.index)
        buffer = ShuffleBuffer(min(self.shuffle_buffer, rows_per_epoch), _rng(self.seed, worker))
        loaded: dict[Ref, tuple[bytes, str] | None] = {}
        emitted = 0
        pieces = self._refs(worker)

        def push(refs):
            nonlocal emitted
            for ref in refs:
                out = buffer.push(ref)
                if out is not None:
                    emitted += 1
                    yield out

        if start > 0:  # replay: reach `start` on references alone, then read what is held
            rest = _replay(pieces, buffer, start)
            emitted = start
            loaded.update(reader.read(buffer.items + rest))
            for out in push(rest):
                yield emitted, loaded.pop(out)
        for piece, rows in read_ahead(reader, pieces, self.read_ahead):
            loaded.update(rows)
            for out in push(piece):
                yield emitted, loaded.pop(out)

    def _rows_per_epoch(self, worker: int) -> int:
        total = self.index.num_rows
        workers = self.num_workers * self.world_size
        return (worker + 1) * total // workers - worker * total // workers


def _replay(pieces: Iterator[list[Ref]], buffer: ShuffleBuffer, start: int) -> list[Ref]:
    """Push references until the buffer has emitted `start` of them; the rest of that piece."""
    emitted = 0
    for piece in pieces:
        for i, ref in enumerate(piece):
            if buffer.push(ref) is not None:
                emitted += 1
                if emitted == start:
                    return piece[i + 1 :]
    raise AssertionError("the reference stream is endless")


def read_ahead(reader: ShardReader, pieces: Iterator[list[Ref]], depth: int):
    """(piece, its rows) in order, with the reads of the next `depth` pieces already under way
    in one background thread (pyarrow reads without the GIL; from an object store the next row
    groups arrive while this one is decoded). Memory: at most depth + 1 row groups' rows."""
    if depth <= 0:
        for piece in pieces:
            yield piece, reader.read(piece)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1, thread_name_prefix="shard-read-ahead")  # one: files not shared
    queue: deque = deque()
    try:
        for piece in pieces:
            queue.append((piece, pool.submit(reader.read, piece)))
            if len(queue) > depth:
                done, future = queue.popleft()
                yield done, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _rng(*key) -> random.Random:
    # A string seed goes through SHA-512: the same stream in every process (hash() of a str is
    # salted per process).
    return random.Random("/".join(map(str, key)))
