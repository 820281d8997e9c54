import io
import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from manifests.config import ConfigError
from pipeline.testing.toydata import write_dataset
from trainer.config import TrainConfig
from trainer.data import DataError, build_loader, resolve
from trainer.data.image import crop_box, load_rgb, train_image
from trainer.data.stream import ShardStream, worker_pieces
from trainer.models import tokenizer


def numbered(n: int, size: int = 24):
    """n images whose caption names their row: `item 0` ... (the loader's output is traceable)."""
    rng = np.random.default_rng(0)
    return [
        (Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)), f"item {i}")
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def items_dataset(tmp_path_factory):
    # 100 kept rows in 3 shards of 40 rows, row groups of 8: ragged on purpose.
    return write_dataset(
        tmp_path_factory.mktemp("items"), numbered(100), shard_rows=40, group_rows=8, dropped=7
    )


def stream(index, **kw):
    args = dict(
        batch_size=4,
        image_size=16,
        tokenizer=tokenizer("clip-nano"),
        seed=0,
        rank=0,
        world_size=1,
        num_workers=1,
        shuffle_buffer=16,
    )
    args.update(kw)
    return ShardStream(index, **args)


def emitted_captions(s: ShardStream, worker: int, count: int, start: int = 0) -> list[str]:
    out = []
    for _, (_, caption) in s._samples(worker, start):
        out.append(caption)
        if len(out) == count:
            return out


def test_resolve_selects_kept_rows_and_filters(items_dataset):
    index = resolve(items_dataset)
    assert index.num_rows == 100
    assert index.image_columns == ["jpg"] * 3
    # 40-row shards in 8-row groups: 5 + 5 + 3 groups (the last shard has 20 rows)
    assert len(index.units) == 13
    assert resolve(items_dataset, where="caption LIKE 'item 1%'").num_rows == 11
    assert resolve(items_dataset, subset="english", where="shard = '00001.parquet'").num_rows == 40


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"where": "caption = 'nothing'"}, "selects no samples"),
        ({"subset": "nope"}, "unknown subset 'nope'; known subsets: english, kept"),
        ({"where": "no_such_column = 1"}, "failed in DuckDB"),
    ],
)
def test_resolve_errors(items_dataset, kwargs, message):
    with pytest.raises(ConfigError, match=message):  # DataError and the manifests' errors
        resolve(items_dataset, **kwargs)


def test_resolve_refuses_a_folder_that_is_not_a_dataset(tmp_path):
    with pytest.raises(ConfigError, match="is not a dataset folder"):
        resolve(tmp_path)


def test_workers_partition_each_epoch_without_overlap_or_loss(items_dataset):
    index = resolve(items_dataset)
    for workers in (1, 3, 7):
        for epoch in (0, 1):
            seen = []
            for w in range(workers):
                share = [
                    (u, int(r))
                    for u, rows, _ in worker_pieces(index, 5, w, workers, epoch)
                    for r in rows
                ]
                assert abs(len(share) - 100 / workers) < 1
                seen += share
            assert len(seen) == len(set(seen)) == 100
    first = list(worker_pieces(index, 5, 0, 1, 0))
    assert [p[:2] for p in first] != [p[:2] for p in worker_pieces(index, 5, 0, 1, 1)]


def test_ranks_and_workers_read_disjoint_rows(items_dataset):
    # A one-slot buffer keeps the order: the first share of each global worker is its epoch-0 slice.
    index = resolve(items_dataset)
    seen = []
    for rank in range(2):
        s = stream(index, rank=rank, world_size=2, num_workers=2, shuffle_buffer=1)
        for local in range(2):
            worker = rank * 2 + local
            seen += emitted_captions(s, worker, s._rows_per_epoch(worker))
    assert sorted(seen) == sorted(f"item {i}" for i in range(100))


def test_shuffle_buffer_mixes_but_keeps_every_row(items_dataset):
    s = stream(resolve(items_dataset), shuffle_buffer=30)
    captions = emitted_captions(s, 0, 500)
    counts = Counter(captions)
    assert set(counts) == {f"item {i}" for i in range(100)}
    assert max(counts.values()) - min(counts.values()) <= 2  # 5 epochs, each row ~5 times
    assert captions[:100] != sorted(captions[:100], key=lambda c: int(c.split()[1]))


def test_resume_position_replays_exactly(items_dataset):
    s = stream(resolve(items_dataset), shuffle_buffer=30)
    full = emitted_captions(s, 0, 260)
    for start in (1, 37, 100, 201):
        assert emitted_captions(s, 0, 260 - start, start=start) == full[start:]


def test_batches_are_deterministic_and_resume_mid_epoch_with_workers(items_dataset):
    index = resolve(items_dataset)
    cfg = TrainConfig(
        data=str(items_dataset),
        model="clip-nano",
        batch_size=6,
        workers=2,
        shuffle_buffer=20,
        seed=3,
    )
    kw = dict(rank=0, world_size=1, image_size=16, context_length=16, index=index)

    def take(loader, n):
        out = []
        for images, tokens, meta in loader:
            out.append((images, tokens, meta))
            if len(out) == n:
                return out

    loader, workers = build_loader(cfg, **kw)
    assert workers == 2
    full = take(loader, 9)
    assert {m["worker"] for _, _, m in full} == {0, 1}
    again = take(build_loader(cfg, **kw)[0], 9)
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(full, again, strict=True)
    )
    # resume after 5 batches (an odd count: the second worker's turn comes first)
    positions = {}
    for _, _, meta in full[:5]:
        positions[meta["worker"]] = meta["position"]
    state = {"batches": 5, "positions": positions, "num_workers": 2, "world_size": 1}
    resumed = take(build_loader(cfg, state=state, **kw)[0], 4)
    for a, b in zip(full[5:], resumed, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert a[2] == b[2]
    with pytest.raises(DataError, match="resume with the same ranks and --workers"):
        build_loader(cfg, state={**state, "num_workers": 3}, **kw)


def test_batch_larger_than_subset_is_an_error(items_dataset):
    cfg = TrainConfig(data=str(items_dataset), model="clip-nano", batch_size=60, accum_steps=2)
    with pytest.raises(DataError, match=r"larger than the subset \(100 samples\)"):
        build_loader(
            cfg,
            rank=0,
            world_size=1,
            image_size=16,
            context_length=16,
            index=resolve(items_dataset),
        )


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    root = write_dataset(tmp_path, numbered(20), corrupt=3, shard_rows=23, group_rows=5)
    s = stream(resolve(root), batch_size=5, shuffle_buffer=1)
    corrupt, images = 0, 0
    for batch, tokens, meta in s:
        assert batch.shape == (5, 3, 16, 16) and batch.dtype == torch.uint8
        assert tokens.shape == (5, 16)
        corrupt += meta["corrupt"]
        images += len(batch)
        if meta["position"] >= 23 * 2:  # two epochs
            break
    assert corrupt == 6 and images + corrupt == meta["position"]


def test_png_transparency_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (20, 20), (0, 0, 0, 0))  # transparent black
    img.paste((255, 0, 0, 255), (5, 5, 15, 15))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    rgb = np.asarray(load_rgb(buf.getvalue()))
    assert tuple(rgb[0, 0]) == (255, 255, 255) and tuple(rgb[10, 10]) == (255, 0, 0)
    root = write_dataset(tmp_path, [(img, "a red square")] * 8, image_format="png")
    index = resolve(root)
    assert index.image_columns == ["png"]
    batch = next(iter(stream(index, batch_size=8, shuffle_buffer=1)))[0]
    assert batch[:, :, 0, 0].min() > 240  # corners white, not black


def test_random_crop_and_draft_decode():
    rng = random.Random(0)
    for width, height in [(240, 200), (200, 200), (400, 100)]:
        for _ in range(100):
            left, top, right, bottom = crop_box(width, height, rng)
            assert 0 <= left < right <= width and 0 <= top < bottom <= height
            if width / height <= 4 / 3:  # otherwise the aspect is clamped
                assert (right - left) * (bottom - top) >= 0.85 * width * height
    buf = io.BytesIO()
    Image.new("RGB", (400, 300), (10, 200, 30)).save(buf, format="JPEG")
    out = train_image(buf.getvalue(), 64, random.Random(1))  # reduced (draft) decode
    assert out.shape == (3, 64, 64) and abs(int(out[1, 32, 32]) - 200) < 8
    small = io.BytesIO()
    Image.new("RGB", (80, 70), (200, 10, 30)).save(small, format="JPEG")
    out = train_image(small.getvalue(), 64, random.Random(1))  # full decode, torchvision
    assert out.shape == (3, 64, 64) and abs(int(out[0, 32, 32]) - 200) < 8
