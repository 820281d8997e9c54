"""Training shards in img2dataset's layout, so open_clip and DataComp tooling read them.

Per shard `NNNNN` (shard index zero-padded to `oom_shard_count` digits):
  NNNNN.parquet      kept samples, columns `manifests.schema.shard_schema(encode_format)`, in row
                     groups of `row_group_size` rows so readers can stream them;
  NNNNN.tar          optional WebDataset copy (`<key>.jpg`, `<key>.txt`, `<key>.json`) for
                     `open_clip_train --dataset-type webdataset`;
  NNNNN_stats.json   img2dataset's per-shard stats (count, successes, failed_to_download,
                     failed_to_resize, duration, start_time, end_time, status_dict).
Data files are written to local temporary files and put whole on close (manifests.storage), the
stats file last; the shards stage's marker, written after them, commits the shard.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import Counter
from pathlib import Path

from manifests.layout import atomic_path, write_json_atomic
from manifests.schema import shard_schema
from manifests.storage import location
from pipeline.images.process import ProcessedImage

FAILURE_STAGES = ("download", "resize")


def shard_basename(shard_index: int, oom_shard_count: int = 5) -> str:
    """img2dataset's shard name: the index zero-padded to `oom_shard_count` digits."""
    return f"{shard_index:0{oom_shard_count}d}"


def compute_key(
    shard_index: int, row: int, samples_per_shard: int = 10_000, oom_shard_count: int = 5
) -> str:
    """img2dataset's sample key (downloader.compute_key): shard digits then row digits."""
    oom_sample_per_shard = math.ceil(math.log10(samples_per_shard))
    true_key = (10**oom_sample_per_shard) * shard_index + row
    return f"{true_key:0{oom_sample_per_shard + oom_shard_count}d}"


class ShardWriter:
    """Write one shard; use as a context manager (an exception inside discards the shard).

    `write` takes kept ProcessedImages and returns (shard file name, row index) for the manifest's
    `shard`/`shard_row` columns; `count_failure` records a dropped candidate of this shard in the
    stats only, as img2dataset counts its failed rows.
    """

    def __init__(
        self,
        out_dir: str | Path,
        shard_index: int,
        encode_format: str = "jpg",
        *,
        webdataset: bool = False,
        samples_per_shard: int = 10_000,
        oom_shard_count: int = 5,
        row_group_size: int = 1000,
    ):
        if samples_per_shard < 1 or row_group_size < 1 or oom_shard_count < 1:
            raise ValueError("samples_per_shard, row_group_size and oom_shard_count must be >= 1")
        if not 0 <= shard_index < 10**oom_shard_count:
            raise ValueError(f"shard index {shard_index} does not fit {oom_shard_count} digits")
        import pyarrow.parquet as pq

        self.schema = shard_schema(encode_format)  # validates the format
        self.encode_format = encode_format
        self.shard_index = shard_index
        self.samples_per_shard = samples_per_shard
        self.oom_shard_count = oom_shard_count
        self.row_group_size = row_group_size
        base = shard_basename(shard_index, oom_shard_count)
        out_dir = location(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.parquet_path = out_dir / f"{base}.parquet"
        self.stats_path = out_dir / f"{base}_stats.json"
        self.tar_path = out_dir / f"{base}.tar" if webdataset else None
        self.start_time = time.time()
        self._rows = 0
        self._buffer: dict[str, list] = {name: [] for name in self.schema.names}
        self._status = Counter()
        self._failed = dict.fromkeys(FAILURE_STAGES, 0)
        self._closed = False
        self._final_stats: dict | None = None
        # The data files are written under temporary names that become final in close() (the
        # layout's one commit point, entered here and left there; the tar is committed first).
        self._commit = contextlib.ExitStack()
        parquet_tmp = self._commit.enter_context(atomic_path(self.parquet_path))
        # Images are already compressed: compressing their column again only costs CPU.
        compression = {name: "zstd" for name in self.schema.names}
        compression[encode_format] = "none"
        self._parquet = pq.ParquetWriter(
            parquet_tmp,
            self.schema,
            compression=compression,
            write_statistics=[n for n in self.schema.names if n != encode_format],
        )
        self._tar = self._tar_file = None
        if self.tar_path is not None:
            import webdataset as wds

            tar_tmp = self._commit.enter_context(atomic_path(self.tar_path))
            self._tar_file = open(tar_tmp, "wb")  # noqa: SIM115 (closed in close/abort)
            # A fixed mtime makes reruns write byte-identical tars.
            self._tar = wds.TarWriter(self._tar_file, mtime=0.0)

    @property
    def name(self) -> str:
        """The shard's file name under the shards folder (the manifest's `shard` value)."""
        return self.parquet_path.name

    def __len__(self) -> int:
        return self._rows

    @property
    def full(self) -> bool:
        return self._rows >= self.samples_per_shard

    def write(
        self, uid: str, url: str, caption: str, image: ProcessedImage, captions=None
    ) -> tuple[str, int]:
        """Append one image; `captions`: all of its captions (default [caption]), the first
        being `caption`."""
        if self._closed:
            raise ValueError(f"shard {self.name} is closed")
        if not image.kept or image.image is None:
            raise ValueError(f"only kept images go into shards, not status {image.status!r}")
        if image.encode_format != self.encode_format:
            raise ValueError(
                f"image is {image.encode_format}, shard {self.name} holds {self.encode_format}"
            )
        if self.full:
            raise ValueError(f"shard {self.name} is full ({self.samples_per_shard} samples)")
        row = self._rows
        key = compute_key(self.shard_index, row, self.samples_per_shard, self.oom_shard_count)
        meta = {
            "key": key,
            "caption": caption,
            "captions": list(captions) if captions else [caption],
            "url": url,
            "uid": uid,
            "status": "success",
            "error_message": None,
            "width": image.width,
            "height": image.height,
            "original_width": image.original_width,
            "original_height": image.original_height,
            "exif": image.exif,
            "sha256": image.sha256,
        }
        for name, value in meta.items():
            self._buffer[name].append(value)
        self._buffer[self.encode_format].append(image.image)
        if self._tar is not None:
            self._tar.write(
                {
                    "__key__": key,
                    self.encode_format: image.image,
                    "txt": caption,
                    "json": json.dumps(meta, indent=4),
                }
            )
        self._rows += 1
        self._status["success"] += 1
        if len(self._buffer["key"]) >= self.row_group_size:
            self._flush()
        return self.name, row

    def count_failure(self, reason: str, stage: str = "download") -> None:
        """Count a candidate of this shard that was dropped (`stage`: 'download' or 'resize')."""
        if stage not in FAILURE_STAGES:
            raise ValueError(f"stage must be one of {FAILURE_STAGES}, not {stage!r}")
        self._failed[stage] += 1
        self._status[reason] += 1

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._buffer["key"]:
            return
        table = pa.Table.from_pydict(self._buffer, schema=self.schema)
        self._parquet.write_table(table, row_group_size=self.row_group_size)
        self._buffer = {name: [] for name in self.schema.names}

    def stats(self, end_time: float | None = None) -> dict:
        end_time = time.time() if end_time is None else end_time
        return {
            "count": self._rows + sum(self._failed.values()),
            "successes": self._rows,
            "failed_to_download": self._failed["download"],
            "failed_to_resize": self._failed["resize"],
            "duration": end_time - self.start_time,
            "start_time": self.start_time,
            "end_time": end_time,
            "status_dict": dict(self._status),
        }

    def close(self) -> dict:
        """Finish the shard: rename data files into place, then write `_stats.json`."""
        if self._closed:
            if self._final_stats is None:
                raise ValueError(f"shard {self.name} was aborted")
            return self._final_stats
        self._flush()
        self._parquet.close()
        if self._tar is not None:
            self._tar.close()
            self._tar_file.close()
        self._commit.close()
        stats = self.stats()
        write_json_atomic(stats, self.stats_path)
        self._closed = True
        self._final_stats = stats
        return stats

    def abort(self) -> None:
        """Discard the shard: nothing under a final name is written."""
        if self._closed:
            return
        self._closed = True
        closers = [self._parquet.close]
        if self._tar is not None:
            closers += [self._tar.close, self._tar_file.close]
        for closer in closers:
            # Already failing: a close error must not hide the first one; files go below anyway.
            with contextlib.suppress(Exception):
                closer()
        aborted = RuntimeError(f"shard {self.name} aborted")
        self._commit.__exit__(RuntimeError, aborted, None)  # removes the temporary files

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_webdataset_sizes(out_dir: str | Path) -> Path:
    """Write `sizes.json` ({"00000.tar": samples, ...}) over the finished tar shards of `out_dir`,
    which open_clip_train reads so that `--train-num-samples` can be left out."""
    out_dir = location(out_dir)
    sizes = {}
    for stats_path in sorted(out_dir.glob("*_stats.json")):
        tar = out_dir / (stats_path.name[: -len("_stats.json")] + ".tar")
        if tar.exists():
            sizes[tar.name] = json.loads(stats_path.read_text())["successes"]
    return write_json_atomic(sizes, out_dir / "sizes.json")
