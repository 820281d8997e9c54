"""The resolved configuration of `pipeline build`: one nested config, one section per concern, every
option defined once (its default, type, help and flag: `pipeline build --help` is generated from
these fields, and so are the Airflow params' checks).

Each stage reads its own section (`config.text` is the caption filters' TextFilterConfig itself).
The resolved config is stored flat in DIR/run.json, and a rerun into the same folder must ask for
the same build (options marked `runtime` may change).
"""

from __future__ import annotations

from dataclasses import dataclass

from manifests.config import (
    ConfigError,
    check_device,
    check_fields,
    from_flat,
    option,
    runtime_options,
    to_flat,
)
from manifests.storage import location
from pipeline.dedup.decide import DedupConfig
from pipeline.executor import ExecutorConfig
from pipeline.filters.text import TextFilterConfig
from pipeline.images.resize import ImageConfig
from pipeline.net.config import FetchConfig


@dataclass
class SourceConfig:
    seeds: list[str] = option(default_factory=list, metavar="URL", help="crawl from these URLs")
    warc: list[str] = option(
        default_factory=list,
        metavar="GLOB",
        help="WARC, WAT or ARC files (Common Crawl layout), .gz or not; globs allowed",
    )
    url_list: str | None = option(
        None, metavar="FILE", help="img2dataset-style list: txt, csv, tsv, json, jsonl or parquet"
    )
    url_col: str = option("url", help="the URL list's URL column")
    caption_col: str = option("caption", help="the URL list's caption column")
    input_format: str | None = option(
        None,
        choices=("txt", "csv", "tsv", "json", "jsonl", "parquet"),
        help="the URL list's format (default: from its file extension)",
    )
    rows_per_part: int = option(
        10_000, help="URL-list rows per part (one task each, its images in memory)"
    )
    # Same-site links only; breadth-first by depth, so a page cap is deterministic.
    max_pages: int = option(1_000, help="pages a crawl fetches at most")
    max_depth: int = option(3, help="link depth a crawl follows from the seeds")
    crawl_lanes: int = option(
        16,
        help="lanes a crawl's hosts are split into (a host's pages go to one task per depth); "
        "fixed per build, so any executor and cluster size crawl the same parts",
    )
    warc_out: str | None = option(
        None, metavar="FILE", help="also record the crawled pages as a WARC, to replay later"
    )

    def __post_init__(self):
        check_fields(self)
        given = [bool(self.seeds), bool(self.warc), self.url_list is not None]
        if sum(given) != 1:
            raise ConfigError(
                "give exactly one source: --seeds URL..., --warc GLOB or --url-list FILE"
            )
        for name, low in (
            ("max_pages", 1),
            ("max_depth", 0),
            ("rows_per_part", 1),
            ("crawl_lanes", 1),
        ):
            if getattr(self, name) < low:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least {low}")
        # Crawl parts are named crawl-DDD-LLLL and must sort in crawl order.
        for name, high in (("max_depth", 999), ("crawl_lanes", 9999)):
            if getattr(self, name) > high:
                raise ConfigError(f"--{name.replace('_', '-')} must be at most {high}")

    @property
    def kind(self) -> str:
        return "crawl" if self.seeds else "warc" if self.warc else "url_list"


@dataclass
class BalanceConfig:
    """MetaCLIP's balancing: at most about per_query_cap pairs per query, seeded."""

    query_list: str | None = option(
        None,
        metavar="FILE",
        help="UTF-8, one query a line; none: no matching or balancing (a curated URL list)",
    )
    per_query_cap: int = option(20_000, metavar="N", help="MetaCLIP's t: pairs per query at most")

    def __post_init__(self):
        check_fields(self)
        if self.per_query_cap < 1:
            raise ConfigError("--per-query-cap must be at least 1")
        if self.query_list is not None and not location(self.query_list).is_file():
            raise ConfigError(f"query list {self.query_list} does not exist")


@dataclass
class ClipConfig:
    """Model-based curation after exact dedup: a trainer checkpoint scores every pending pair by
    the cosine of its image and caption embeddings (`clip_score`). Drops below min_clip_score
    (LAION kept ViT-B/32 >= 0.28) or outside the best clip_top_fraction (DataComp's best
    baselines keep 0.3); neither: score only. semdedup_eps: SemDeDup within k-means clusters,
    cosine > 1 - eps is a semantic_duplicate (the paper's eps: 0.01-0.1)."""

    clip_model: str | None = option(
        None,
        metavar="CKPT",
        help="trainer checkpoint that scores every pair (clip_score: cosine of image and caption)",
    )
    min_clip_score: float | None = option(
        None, metavar="X", help="drop pairs scoring below X (LAION: 0.28)"
    )
    clip_top_fraction: float | None = option(
        None, metavar="F", help="keep the best-scored fraction F of pairs (DataComp: 0.3)"
    )
    semdedup_eps: float | None = option(
        None,
        metavar="EPS",
        help="SemDeDup: image embeddings with cosine > 1-EPS in a k-means cluster are "
        "semantic_duplicate (the paper uses 0.01-0.1)",
    )
    batch_size: int = option(256, runtime=True, help="pairs per forward pass of the model")
    device: str = option(
        "auto", runtime=True, help="the model's device: auto | cpu | cuda | cuda:N"
    )

    def __post_init__(self):
        check_fields(self)
        check_device(self.device)
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be positive, not {self.batch_size}")
        wanted = [
            n
            for n in ("min_clip_score", "clip_top_fraction", "semdedup_eps")
            if getattr(self, n) is not None
        ]
        if self.clip_model is None:
            if wanted:
                flags = ", ".join("--" + n.replace("_", "-") for n in wanted)
                raise ConfigError(f"{flags} need(s) --clip-model CHECKPOINT")
            return
        if not location(self.clip_model).is_file():
            raise ConfigError(f"clip model {self.clip_model} is not a file (a trainer checkpoint)")
        if self.min_clip_score is not None and self.clip_top_fraction is not None:
            raise ConfigError("give --min-clip-score or --clip-top-fraction, not both")
        if self.min_clip_score is not None and not -1.0 <= self.min_clip_score <= 1.0:
            raise ConfigError(f"--min-clip-score is a cosine in [-1, 1], not {self.min_clip_score}")
        if self.clip_top_fraction is not None and not 0.0 < self.clip_top_fraction <= 1.0:
            raise ConfigError(
                f"--clip-top-fraction must be in (0, 1], not {self.clip_top_fraction}"
            )
        if self.semdedup_eps is not None and not 0.0 < self.semdedup_eps < 1.0:
            raise ConfigError(f"--semdedup-eps must be in (0, 1), not {self.semdedup_eps}")


@dataclass
class ShardConfig:
    """Training shards in img2dataset's layout (the image format is images.encode_format)."""

    shard_size: int = option(10_000, help="samples per shard")
    webdataset: bool = option(
        False, help="also write tar shards for open_clip_train --dataset-type webdataset"
    )

    def __post_init__(self):
        check_fields(self)
        if self.shard_size < 1:
            raise ConfigError("--shard-size must be at least 1")


@dataclass
class BuildConfig:
    out: str = option(metavar="DIR", help="the dataset folder (a rerun resumes it)")
    seed: int = option(0, help="seeds balancing and SemDeDup's k-means")
    fetch: bool = option(
        True,
        runtime=True,
        help="fetch images; --no-fetch stops after matching, balancing and caption filters",
    )
    source: SourceConfig = option(
        default_factory=SourceConfig, help="source (exactly one of --seeds, --warc, --url-list)"
    )
    balance: BalanceConfig = option(default_factory=BalanceConfig, help="query list and balancing")
    net: FetchConfig = option(default_factory=FetchConfig, help="network (pages and images)")
    text: TextFilterConfig = option(
        default_factory=TextFilterConfig, help="caption filters (before any image is fetched)"
    )
    images: ImageConfig = option(default_factory=ImageConfig, help="images")
    dedup: DedupConfig = option(
        default_factory=DedupConfig, help="duplicates and eval-set decontamination"
    )
    clip: ClipConfig = option(
        default_factory=ClipConfig, help="model-based curation (after exact dedup)"
    )
    shards: ShardConfig = option(default_factory=ShardConfig, help="shards")
    execution: ExecutorConfig = option(default_factory=ExecutorConfig, help="execution")

    def __post_init__(self):
        check_fields(self)

    @classmethod
    def of(cls, **options) -> BuildConfig:
        """From flat options as keywords: BuildConfig.of(out=DIR, url_list=FILE, max_pages=5)."""
        return from_flat(cls, options)

    @classmethod
    def from_options(cls, values: dict) -> BuildConfig:
        """From flat option names (`max_pages`, `languages`, ...): CLI, Airflow params, run.json."""
        return from_flat(cls, values)

    def options(self) -> dict:
        """The flat options (what run.json stores)."""
        return to_flat(self)

    @staticmethod
    def runtime_only() -> set[str]:
        """Options a rerun may change: they change how a build runs, not what it makes."""
        return runtime_options(BuildConfig)

    def image_fetch(self) -> FetchConfig:
        """The fetch settings of the image stage: the network's, with the image byte cap."""
        from dataclasses import replace

        return replace(self.net, max_bytes=self.images.max_bytes)
