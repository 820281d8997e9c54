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

Captions (--caption-sampling): with `first` and `random` a row is one sample per epoch whose
caption the reader picks when it reads the row (trainer.data.reader: `random` draws from
(seed, the row's uid, epoch), never from the stream's history, so a replay picks the same); with
`all` a row is one sample per selected caption: the unit's (row, caption) pairs take the rows'
place in the slices above, and "row" there means such a sample.
"""

import logging
import random
from collections import Counter
from collections.abc import Iterator

import numpy as np
import torch

from trainer.data.image import CROP_SCALE, new_batch, train_image
from trainer.data.reader import DRAW, SAMPLING, Ref, ShardReader
from trainer.data.reader import string_rng as _rng
from trainer.data.select import RowIndex

log = logging.getLogger(__name__)


def unit_sizes(index: RowIndex, per_caption: bool = False) -> np.ndarray:
    """Samples per unit and epoch, in unit order (rows, or selected captions)."""
    units = index.units
    return np.fromiter((u.num_samples(per_caption) for u in units), np.int64, len(units))


def worker_pieces(
    index: RowIndex,
    seed: int,
    worker: int,
    num_workers: int,
    epoch: int,
    per_caption: bool = False,
    sizes: np.ndarray | None = None,
):
    """This global worker's share of `epoch`: (unit index, rows, caption indexes) pieces in read
    order; the caption indexes are None unless `per_caption` (then a row comes once per
    selected caption, `rows` repeating it). `sizes`: unit_sizes(index, per_caption), if known."""
    order = np.random.default_rng([seed, epoch]).permutation(len(index.units))
    sizes = (unit_sizes(index, per_caption) if sizes is None else sizes)[order]
    ends = np.cumsum(sizes)
    total = int(ends[-1])
    lo, hi = worker * total // num_workers, (worker + 1) * total // num_workers
    for unit_pos, size, end in zip(order, sizes, ends, strict=True):
        start = int(end - size)
        begin, stop = max(lo, start), min(hi, int(end))
        if begin < stop:
            unit, cut = index.units[unit_pos], slice(begin - start, stop - start)
            if per_caption:
                rows, captions = unit.pairs()
                yield int(unit_pos), rows[cut], captions[cut]
            else:
                yield int(unit_pos), unit.rows[cut], None
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


class Held:
    """What was read for the references in the shuffle buffer, until they come out. One reference
    can be in it several times (--caption-weights occurrences with --caption-sampling all: one
    caption, a sample per occurrence): its row is kept until the last copy is out."""

    def __init__(self):
        self.values: dict[Ref, tuple[bytes, str] | None] = {}
        self.copies: Counter = Counter()

    def add(self, refs: list[Ref], rows: dict) -> None:
        self.values.update(rows)
        self.copies.update(refs)

    def take(self, ref: Ref):
        self.copies[ref] -= 1
        if self.copies[ref]:
            return self.values[ref]
        del self.copies[ref]
        return self.values.pop(ref)


class ImageBatch:
    """One batch of decoded crops, each written straight into its slot of the batch tensor."""

    def __init__(self, count: int, size: int, shared: bool, scale: tuple[float, float]):
        self.images, self.size, self.filled = new_batch(count, size, shared), size, 0
        self.scale = scale  # the crop's share of the image's area: (low, high)

    def add(self, data: bytes, rng: random.Random) -> None:
        """Decode and crop into the next slot; raises (leaving the slot free) if corrupt."""
        train_image(data, self.size, rng, out=self.images[self.filled], scale=self.scale)
        self.filled += 1

    def result(self) -> torch.Tensor:
        return self.images


class ShardStream(torch.utils.data.IterableDataset):
    """Yields (images uint8 [B,3,S,S] in channels_last memory, tokens [B,L], meta) forever; meta
    has the global `worker`, its `position` after this batch, and the rows skipped while filling
    it: `corrupt` (undecodable images) and `withdrawn` (samples no longer served, see
    trainer.data.frozen, or left with no usable caption, see trainer.data.reader). With decode="gpu" the images are a gpu_decode.JpegBatch instead (JPEG
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
        caption_sampling: str = "random",
        crop_scale: float = CROP_SCALE[0],
    ):
        super().__init__()
        if caption_sampling not in SAMPLING:
            raise ValueError(f"caption_sampling {caption_sampling!r} is not one of {SAMPLING}")
        self.index, self.batch_size, self.image_size = index, batch_size, image_size
        self.tokenizer = tokenizer  # open_clip's: list of captions -> LongTensor [B, L]
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.num_workers = max(1, num_workers)  # 0 workers: the main process is worker 0
        self.shuffle_buffer = shuffle_buffer
        self.positions = dict(positions or {})
        self.worker_offset = worker_offset
        self.read_ahead = read_ahead  # row-group pieces read ahead per loader worker
        self.decode = decode  # cpu: decode in this process; gpu: leave JPEGs to the device
        self.caption_sampling = caption_sampling  # first | random: one visit per image; all
        self.per_caption = caption_sampling == "all"  # one visit per selected caption
        self.crop_area = (crop_scale, 1.0)  # RandomResizedCrop's scale range

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

            return JpegBatchBuilder(self.batch_size, self.image_size, self.crop_area)
        # In a loader worker the batch is made in shared memory: sending it is then a handle,
        # not a copy of every pixel into shared memory (what torch does with ordinary tensors).
        in_worker = torch.utils.data.get_worker_info() is not None
        return ImageBatch(self.batch_size, self.image_size, in_worker, self.crop_area)

    def _refs(self, worker: int) -> Iterator[list[Ref]]:
        total_workers = self.num_workers * self.world_size
        sizes = unit_sizes(self.index, self.per_caption)  # once, not every epoch
        epoch = 0
        while True:
            for unit, rows, captions in worker_pieces(
                self.index, self.seed, worker, total_workers, epoch, self.per_caption, sizes
            ):
                if captions is None:
                    yield [(epoch, unit, r, DRAW) for r in rows.tolist()]
                else:
                    pairs = zip(rows.tolist(), captions.tolist(), strict=True)
                    yield [(epoch, unit, r, c) for r, c in pairs]
            epoch += 1

    def _samples(self, worker: int, start: int) -> Iterator[tuple[int, tuple[bytes, str] | None]]:
        """(position, (bytes, caption) or None if withdrawn) for positions start+1, ... forever."""
        rows_per_epoch = self._rows_per_epoch(worker)
        if rows_per_epoch == 0:
            raise ValueError(f"loader worker {worker} has no rows: use fewer workers or ranks")
        reader = ShardReader(self.index, seed=self.seed, sampling=self.caption_sampling)
        buffer = ShuffleBuffer(min(self.shuffle_buffer, rows_per_epoch), _rng(self.seed, worker))
        held = Held()
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
            refs = buffer.items + rest
            held.add(refs, reader.read(refs))
            for out in push(rest):
                yield emitted, held.take(out)
        for piece, rows in read_ahead(reader, pieces, self.read_ahead):
            held.add(piece, rows)
            for out in push(piece):
                yield emitted, held.take(out)

    def _rows_per_epoch(self, worker: int) -> int:
        total = self.index.num_samples(self.per_caption)
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
