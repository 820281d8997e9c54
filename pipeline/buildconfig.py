"""The resolved configuration of `pipeline build`: one screen of defaults, each choice explained.
It is stored in DIR/run.json, and a rerun into the same folder must ask for the same build."""

from dataclasses import dataclass, field

from pipeline.config import ConfigError


@dataclass
class BuildConfig:
    out: str
    query_list: str | None = None  # None: every candidate is 'no_query_match'
    # Exactly one source kind: seed URLs to crawl, WARC/WAT globs, or a URL list file.
    seeds: list[str] = field(default_factory=list)
    warc: list[str] = field(default_factory=list)
    url_list: str | None = None
    url_col: str = "url"  # img2dataset's default column names
    caption_col: str = "caption"
    input_format: str | None = None  # None: from the URL list's file extension
    rows_per_part: int = 100_000  # URL-list rows per part (one Ray task each)
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
    eval_set: list[str] = field(default_factory=list)
    # Execution: Ray tasks on a local runtime by default, a cluster with ray_address.
    executor: str = "ray"
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
        if self.executor not in ("ray", "local"):
            raise ConfigError(f"executor must be 'ray' or 'local', not {self.executor!r}")
        if self.timeout_s <= 0 or self.per_host_rps < 0:
            raise ConfigError("timeout must be > 0 and per-host-rps >= 0")

    @property
    def source_kind(self) -> str:
        return "crawl" if self.seeds else "warc" if self.warc else "url_list"

    # Options that do not change the manifests: a rerun may change them freely.
    RUNTIME_ONLY = ("executor", "ray_address", "per_host_concurrency", "per_host_rps", "timeout_s")
