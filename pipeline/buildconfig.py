"""The resolved configuration of `pipeline build`: one screen of defaults, each choice explained.
It is stored in DIR/run.json, and a rerun into the same folder must ask for the same build."""

import os
from dataclasses import dataclass, field

from pipeline.config import ConfigError
from pipeline.executor import EXECUTOR_KINDS


@dataclass
class BuildConfig:
    out: str
    query_list: str | None = None  # None: no matching or balancing (a curated URL list)
    # Exactly one source kind: seed URLs to crawl, WARC/WAT globs, or a URL list file.
    seeds: list[str] = field(default_factory=list)
    warc: list[str] = field(default_factory=list)
    url_list: str | None = None
    url_col: str = "url"  # img2dataset's default column names
    caption_col: str = "caption"
    input_format: str | None = None  # None: from the URL list's file extension
    rows_per_part: int = 10_000  # URL-list rows per part (one Ray task each; its images in memory)
    # Crawl limits. Same-site links only; breadth-first by depth, so a page cap is deterministic.
    max_pages: int = 1_000
    max_depth: int = 3
    warc_out: str | None = None  # record the crawl's pages as a WARC, so it can be replayed
    # Network: public addresses only unless widened; see pipeline/net.
    allow_network: list[str] = field(default_factory=list)
    per_host_concurrency: int = 8
    per_host_rps: float = 0.0  # 0: no rate limit beyond concurrency and robots' crawl-delay
    timeout_s: float = 20.0  # per response, connect to last byte
    contact_url: str = "https://github.com/clipengine/clipengine"
    # Balancing as in MetaCLIP: at most about per_query_cap pairs per query, seeded.
    per_query_cap: int = 20_000
    seed: int = 0
    # Caption filters (pipeline.filters.text), applied before any image is fetched.
    languages: list[str] = field(default_factory=list)  # empty: keep every language
    min_words: int = 1
    max_words: int | None = 200
    text_model: str | None = None  # fastText classifier from `pipeline textmodel train`
    min_text_score: float = 0.5
    # Images (pipeline.images): img2dataset's Resizer settings and our safety caps.
    image_size: int = 256
    resize_mode: str = "border"  # border | keep_ratio | center_crop | no
    encode_format: str = "jpg"  # jpg | webp | png
    encode_quality: int | None = None  # None: 95 for jpg/webp, 6 for png
    min_size: int = 0  # shorter original side below this: too_small
    max_aspect_ratio: float | None = None
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 50_000_000  # declared pixels above this: a decompression bomb
    # Shards, in img2dataset's layout.
    shard_size: int = 10_000
    webdataset: bool = False  # also write tar shards for open_clip_train --dataset-type webdataset
    no_fetch: bool = False  # stop after matching, balancing and text filters
    # Dedup and decontamination (pipeline.dedup): exact sha256 duplicates always; copies of
    # eval-set images (ImageFolder dirs) become eval_leak; near-dup clusters when a radius is set.
    eval_set: list[str] = field(default_factory=list)
    near_dup_radius: int | None = None  # bits of the 64-bit phash; None: no near-dup clustering
    # Model-based curation (pipeline.stages.clip), after exact dedup: a trainer checkpoint scores
    # every pending pair by the cosine of its image and caption embeddings (`clip_score`). Drops:
    # below min_clip_score (LAION kept ViT-B/32 >= 0.28), or outside the best clip_top_fraction
    # (DataComp's best baselines keep 0.3). Neither: score only. semdedup_eps: SemDeDup within
    # k-means clusters, cosine > 1 - eps is a semantic_duplicate (the paper's eps: 0.01-0.1).
    clip_model: str | None = None
    min_clip_score: float | None = None
    clip_top_fraction: float | None = None
    semdedup_eps: float | None = None
    clip_batch_size: int = 256
    device: str = "auto"  # the scoring model's device: auto (cuda when present) | cpu | cuda
    # Execution (pipeline.executor): 'auto' runs in-process where this process may use one CPU
    # (or a stage has one part) and Ray tasks on a local runtime otherwise; 'ray' always Ray (a
    # cluster with ray_address); 'local' always in-process.
    executor: str = "auto"
    ray_address: str | None = None

    def __post_init__(self):
        sources = [bool(self.seeds), bool(self.warc), self.url_list is not None]
        if sum(sources) != 1:
            raise ConfigError(
                "give exactly one source: --seeds URL..., --warc GLOB or --url-list FILE"
            )
        for name in (
            "max_pages",
            "max_depth",
            "per_query_cap",
            "rows_per_part",
            "per_host_concurrency",
        ):
            if getattr(self, name) < (0 if name == "max_depth" else 1):
                raise ConfigError(
                    f"{name.replace('_', '-')} must be positive, not {getattr(self, name)}"
                )
        if self.executor not in EXECUTOR_KINDS:
            kinds = ", ".join(EXECUTOR_KINDS)
            raise ConfigError(f"executor must be one of {kinds}, not {self.executor!r}")
        for folder in self.eval_set:
            if not os.path.isdir(folder):
                raise ConfigError(
                    f"eval set {folder} is not a folder (ImageFolder: DIR/<class>/<image>)"
                )
        if self.near_dup_radius is not None and not 0 <= self.near_dup_radius <= 16:
            raise ConfigError(f"near-dup-radius must be 0..16 bits, not {self.near_dup_radius}")
        if self.timeout_s <= 0 or self.per_host_rps < 0:
            raise ConfigError("timeout must be > 0 and per-host-rps >= 0")
        self._check_clip_options()

    def _check_clip_options(self) -> None:
        wanted = [n for n in ("min_clip_score", "clip_top_fraction", "semdedup_eps")
                  if getattr(self, n) is not None]  # fmt: skip
        if self.clip_model is None:
            if wanted:
                flags = ", ".join("--" + n.replace("_", "-") for n in wanted)
                raise ConfigError(f"{flags} need(s) --clip-model CHECKPOINT")
            return
        if not os.path.isfile(self.clip_model):
            raise ConfigError(f"clip model {self.clip_model} is not a file (a trainer checkpoint)")
        if self.min_clip_score is not None and self.clip_top_fraction is not None:
            raise ConfigError("give --min-clip-score or --clip-top-fraction, not both")
        if self.min_clip_score is not None and not -1.0 <= self.min_clip_score <= 1.0:
            raise ConfigError(f"min-clip-score is a cosine in [-1, 1], not {self.min_clip_score}")
        if self.clip_top_fraction is not None and not 0.0 < self.clip_top_fraction <= 1.0:
            raise ConfigError(f"clip-top-fraction must be in (0, 1], not {self.clip_top_fraction}")
        if self.semdedup_eps is not None and not 0.0 < self.semdedup_eps < 1.0:
            raise ConfigError(f"semdedup-eps must be in (0, 1), not {self.semdedup_eps}")
        if self.clip_batch_size < 1:
            raise ConfigError(f"clip-batch-size must be positive, not {self.clip_batch_size}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, not {self.device!r}")

    @property
    def source_kind(self) -> str:
        return "crawl" if self.seeds else "warc" if self.warc else "url_list"

    # Options that do not change the manifests: a rerun may change them freely.
    # no_fetch too: a text-only build may be continued into a full one.
    RUNTIME_ONLY = (
        "executor",
        "ray_address",
        "per_host_concurrency",
        "per_host_rps",
        "timeout_s",
        "no_fetch",
        "clip_batch_size",
        "device",
    )

    def text_filter_config(self):
        from pipeline.filters.text import TextFilterConfig

        return TextFilterConfig(
            languages=list(self.languages),
            min_words=self.min_words,
            max_words=self.max_words,
            text_model=self.text_model,
            min_text_score=self.min_text_score,
        )

    def image_config(self):
        from pipeline.images.resize import ImageConfig

        return ImageConfig(
            image_size=self.image_size,
            resize_mode=self.resize_mode,
            encode_format=self.encode_format,
            encode_quality=self.encode_quality,
            min_size=self.min_size,
            max_aspect_ratio=self.max_aspect_ratio,
            max_pixels=self.max_image_pixels,
            max_bytes=self.max_image_bytes,
        )
