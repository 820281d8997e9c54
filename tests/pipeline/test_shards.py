import io
import json
import tarfile
import time

import pyarrow.parquet as pq
import pytest
from PIL import Image

from manifests.schema import sample_uid, shard_schema
from pipeline.images import ImageConfig, process_image
from pipeline.shards import ShardWriter, compute_key, shard_basename, write_webdataset_sizes
from tests.pipeline.images.imagegen import encode, noise

CONFIG = ImageConfig(image_size=32)


def _samples(n: int, config: ImageConfig = CONFIG):
    """n (uid, url, caption, processed image) tuples of distinct real images."""
    out = []
    for i in range(n):
        img = noise(40 + i, 30, seed=i)
        url, caption = f"http://127.0.0.1/img/{i}.png", f"caption number {i} é"
        out.append(
            (
                sample_uid(url, caption),
                url,
                caption,
                process_image(encode(img, "PNG"), None, config),
            )
        )
    return out


def test_key_and_names_match_img2dataset():
    from img2dataset.downloader import compute_key as img2dataset_key

    for shard, row, per_shard, oom in [
        (0, 123, 10_000, 5),
        (7, 9_999, 10_000, 5),
        (3, 5, 100, 3),
        (12, 0, 1000, 6),
    ]:
        oom_sample_per_shard = len(str(per_shard - 1))
        expected = img2dataset_key(row, shard, oom_sample_per_shard, oom)
        assert compute_key(shard, row, per_shard, oom) == expected
    assert compute_key(0, 123) == "000000123"
    assert shard_basename(42) == "00042"


def test_parquet_shard_reads_back(tmp_path):
    samples = _samples(5)
    opened = time.time()
    with ShardWriter(tmp_path, 3, "jpg", row_group_size=2) as writer:
        rows = [writer.write(*sample) for sample in samples]
        writer.count_failure("decode_failed", stage="resize")
        writer.count_failure("fetch_failed")
        writer.count_failure("fetch_failed")
        # Nothing under a final name until the shard is closed.
        assert not (tmp_path / "00003.parquet").exists()
        time.sleep(0.05)
    closed = time.time()
    assert rows == [("00003.parquet", i) for i in range(5)]
    table_file = pq.ParquetFile(tmp_path / "00003.parquet")
    assert table_file.schema_arrow == shard_schema("jpg")
    assert [
        table_file.metadata.row_group(i).num_rows for i in range(table_file.num_row_groups)
    ] == [2, 2, 1]
    table = table_file.read().to_pylist()
    for row, (uid, url, caption, image) in zip(table, samples, strict=True):
        decoded = Image.open(io.BytesIO(row["jpg"]))
        assert decoded.size == (row["width"], row["height"]) == (32, 32)
        assert (row["original_width"], row["original_height"]) == (image.original_width, 30)
        assert (row["uid"], row["url"], row["caption"]) == (uid, url, caption)
        assert (row["status"], row["error_message"], row["sha256"]) == (
            "success",
            None,
            image.sha256,
        )
        assert json.loads(row["exif"]) == {}
    assert [row["key"] for row in table] == [f"00003{i:04d}" for i in range(5)]
    stats = json.loads((tmp_path / "00003_stats.json").read_text())
    assert set(stats) == {
        "count",
        "successes",
        "failed_to_download",
        "failed_to_resize",
        "duration",
        "start_time",
        "end_time",
        "status_dict",
    }
    assert (stats["count"], stats["successes"]) == (8, 5)
    assert (stats["failed_to_download"], stats["failed_to_resize"]) == (2, 1)
    assert stats["status_dict"] == {"success": 5, "decode_failed": 1, "fetch_failed": 2}
    # the shard's own clock: from opening the writer to closing it, as img2dataset reports it
    assert opened <= stats["start_time"] < stats["end_time"] <= closed
    assert stats["duration"] == pytest.approx(stats["end_time"] - stats["start_time"])
    assert stats["duration"] >= 0.05
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00003.parquet", "00003_stats.json"]


def test_default_row_groups_stream_in_thousands(tmp_path):
    ((uid, url, caption, image),) = _samples(1)
    with ShardWriter(tmp_path, 0) as writer:
        for _ in range(2500):
            writer.write(uid, url, caption, image)
    meta = pq.ParquetFile(tmp_path / "00000.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000, 1000, 500]


def test_webdataset_tar_reads_back(tmp_path):
    import webdataset as wds

    config = ImageConfig(image_size=32, encode_format="webp")
    samples = _samples(4, config)
    with ShardWriter(tmp_path, 1, "webp", webdataset=True) as writer:
        for sample in samples:
            writer.write(*sample)
    with tarfile.open(tmp_path / "00001.tar") as tar:
        names = tar.getnames()
    assert sorted(names[:3]) == ["000010000.json", "000010000.txt", "000010000.webp"]
    read = list(wds.WebDataset(str(tmp_path / "00001.tar"), shardshuffle=False).decode("pil"))
    assert [s["__key__"] for s in read] == [compute_key(1, i) for i in range(4)]
    for got, (uid, url, caption, image) in zip(read, samples, strict=True):
        assert got["webp"].size == (image.width, image.height)
        assert got["txt"] == caption
        assert got["json"]["uid"] == uid and got["json"]["url"] == url
        assert got["json"]["sha256"] == image.sha256
    parquet = pq.read_table(tmp_path / "00001.parquet")
    assert parquet.column("webp").to_pylist() == [s[3].image for s in samples]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_open_clip_train_reads_the_tar(tmp_path):
    """The loader `open_clip_train --dataset-type webdataset` uses, on our tar."""
    from types import SimpleNamespace

    import open_clip
    from open_clip_train.data import get_dataset_size, get_wds_dataset
    from torchvision import transforms

    with ShardWriter(tmp_path, 0, webdataset=True) as writer:
        for sample in _samples(3):
            writer.write(*sample)
    with ShardWriter(tmp_path, 1, webdataset=True) as writer:
        writer.write(*_samples(1)[0])
    write_webdataset_sizes(tmp_path)
    assert get_dataset_size(str(tmp_path / "{00000..00001}.tar")) == (4, 2)
    args = SimpleNamespace(
        val_data=str(tmp_path / "00000.tar"),
        val_num_samples=3,
        batch_size=2,
        workers=0,
        train_data=None,
        dataset_resampled=False,
        seed=0,
        world_size=1,
    )
    preprocess = transforms.Compose([transforms.Resize(16), transforms.ToTensor()])
    data = get_wds_dataset(
        args, preprocess, is_train=False, tokenizer=open_clip.get_tokenizer("RN50")
    )
    batches = list(data.dataloader)
    assert [tuple(images.shape) for images, _ in batches] == [(2, 3, 16, 16), (1, 3, 16, 16)]
    assert tuple(batches[0][1].shape) == (2, 77)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("resampled", [False, True], ids=["shards", "resampled"])
def test_open_clip_train_trains_on_the_tars(tmp_path, resampled):
    """open_clip_train's *training* loader (`--dataset-type webdataset --train-data
    'DIR/{00000..00002}.tar'`, with and without --dataset-resampled) over our tars, two passes
    per epoch, two epochs: it crosses many tar ends, where webdataset >= 0.2.96 yields an
    end-of-shard marker that open_clip_train's grouper fails on (KeyError: 'fname')."""
    from collections import Counter
    from types import SimpleNamespace

    import open_clip
    from open_clip_train.data import get_wds_dataset
    from torchvision import transforms

    samples = _samples(8)
    for shard, part in enumerate([samples[:4], samples[4:6], samples[6:]]):
        with ShardWriter(tmp_path, shard, webdataset=True) as writer:
            for sample in part:
                writer.write(*sample)
    write_webdataset_sizes(tmp_path)
    tokenizer = open_clip.get_tokenizer("RN50")
    caption_of = {tuple(tokenizer(s[2])[0].tolist()): s[2] for s in samples}
    args = SimpleNamespace(  # the options open_clip_train's main passes on (params.py)
        train_data=str(tmp_path / "{00000..00002}.tar"),
        train_num_samples=2 * len(samples),  # two passes over the tars per epoch
        train_data_upsampling_factors=None,
        dataset_resampled=resampled,
        batch_size=2,
        workers=0,
        seed=0,
        world_size=1,
    )
    preprocess = transforms.Compose([transforms.Resize(16), transforms.ToTensor()])
    data = get_wds_dataset(args, preprocess, is_train=True, tokenizer=tokenizer)
    assert data.dataloader.num_batches == len(samples)
    for epoch in range(2):
        data.set_epoch(epoch)  # as open_clip_train's train_one_epoch does
        seen = Counter()
        for images, tokens in data.dataloader:
            assert tuple(images.shape) == (2, 3, 16, 16)
            seen.update(caption_of[tuple(row.tolist())] for row in tokens)
        assert sum(seen.values()) == 2 * len(samples)
        if resampled:  # shards drawn with replacement: only ours, in whatever proportion
            assert set(seen) <= set(caption_of.values())
        else:
            assert seen == Counter({s[2]: 2 for s in samples})


def test_failed_shard_leaves_nothing(tmp_path):
    samples = _samples(2)
    with pytest.raises(RuntimeError), ShardWriter(tmp_path, 0, webdataset=True) as writer:
        writer.write(*samples[0])
        raise RuntimeError("worker died")
    assert list(tmp_path.iterdir()) == []


def test_bad_writes_are_refused(tmp_path):
    kept = _samples(2)
    dropped = process_image(b"", "image/png", CONFIG)
    with ShardWriter(tmp_path, 0, samples_per_shard=1) as writer:
        with pytest.raises(ValueError, match="kept"):
            writer.write("u", "http://x/", "c", dropped)
        with pytest.raises(ValueError, match="webp"):
            writer.write(
                "u",
                "http://x/",
                "c",
                process_image(encode(noise(9, 9), "PNG"), None, ImageConfig(encode_format="webp")),
            )
        writer.write(*kept[0])
        assert writer.full and len(writer) == 1
        with pytest.raises(ValueError, match="full"):
            writer.write(*kept[1])
        with pytest.raises(ValueError, match="stage"):
            writer.count_failure("x", stage="upload")
    with pytest.raises(ValueError, match="digits"):
        ShardWriter(tmp_path, 100_000)
    with pytest.raises(ValueError, match="image column"):
        ShardWriter(tmp_path, 1, "gif")
