"""Stage `sources`: seeds, WARC/WAT files or a URL list → candidate parts.

Output per part: DIR/work/sources/<part>.parquet (url, caption, page_url) and, for page sources,
DIR/manifests/pages/<part>.parquet. Part names sort in source order, which is the order used to
decide which copy of a repeated (url, caption) pair is the one kept."""

import asyncio
import glob
import logging
import time
from pathlib import Path

from manifests import schema
from manifests.layout import DatasetLayout, write_parquet_atomic
from pipeline.buildconfig import BuildConfig
from pipeline.stages.base import PartStats, StageRun

log = logging.getLogger(__name__)
STAGE = "sources"


def candidates_table(pairs: list[tuple[str, str, str]]):
    import pyarrow as pa

    urls, captions, pages = (list(c) for c in zip(*pairs, strict=True)) if pairs else ([], [], [])
    return pa.table(
        {"url": urls, "caption": captions, "page_url": pages},
        schema=pa.schema(
            [("url", pa.string()), ("caption", pa.string()), ("page_url", pa.string())]
        ),
    )


def pages_table(rows: list[dict]):
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=schema.PAGES)


def fetch_config(config: BuildConfig, **overrides):
    from pipeline.net.fetch import FetchConfig

    return FetchConfig(
        **overrides,
        allow_networks=list(config.allow_network),
        per_host_concurrency=config.per_host_concurrency,
        per_host_rps=config.per_host_rps,
        total_timeout_s=config.timeout_s,
        contact_url=config.contact_url,
    )


def _write_part(run: StageRun, layout: DatasetLayout, part: str, pairs, pages, stats) -> None:
    write_parquet_atomic(candidates_table(pairs), run.dir / f"{part}.parquet")
    if pages is not None:
        write_parquet_atomic(pages_table(pages), layout.pages / f"{part}.parquet")
    run.mark_done(part, stats)


# --- crawl -------------------------------------------------------------------------------------


async def _crawl(
    config: BuildConfig, layout: DatasetLayout, run: StageRun, resolver=None
) -> list[str]:
    from pipeline.net.fetch import Fetcher
    from pipeline.sources.crawl import crawl_level, next_frontier, site_key

    sites = {site_key(u) for u in config.seeds}
    frontier, seen, fetched, parts = list(dict.fromkeys(config.seeds)), set(config.seeds), 0, []
    async with Fetcher(fetch_config(config), resolver=resolver) as fetcher:
        for depth in range(config.max_depth + 1):
            part = f"crawl-level-{depth:03d}"
            if run.is_done(part):  # resume: the marker holds the frontier that came next
                extra = run.part_stats(part).extra
                frontier, seen, fetched = (
                    extra["next_frontier"],
                    set(extra["seen"]),
                    extra["fetched"],
                )
                parts.append(part)
                continue
            frontier = frontier[: max(0, config.max_pages - fetched)]
            if not frontier:
                break
            started = time.perf_counter()
            recorder = _recorder(config, run, part)
            try:
                level = await crawl_level(fetcher, frontier, depth, recorder)
            finally:
                if recorder is not None:
                    recorder.close()
            fetched += len(frontier)
            budget = config.max_pages - fetched if depth < config.max_depth else 0
            frontier = next_frontier(level, seen, sites, budget)
            stats = PartStats(rows_in=len(level.pages), rows_out=len(level.pairs))
            for page in level.pages:
                if page["status"] != "ok":
                    stats.drop(f"page_{page['status']}")
            stats.seconds = time.perf_counter() - started
            stats.extra = {"next_frontier": frontier, "seen": sorted(seen), "fetched": fetched}
            _write_part(run, layout, part, level.pairs, level.pages, stats)
            parts.append(part)
            log.info(
                "crawl depth %d: %d pages, %d pairs", depth, len(level.pages), len(level.pairs)
            )
    return parts


def _recorder(config: BuildConfig, run: StageRun, part: str):
    if not config.warc_out:
        return None
    from pipeline.sources.warc import WarcRecorder

    recorder = WarcRecorder(run.dir / f"{part}.warc.gz", mode="w")
    recorder.__enter__()
    return recorder


def join_warcs(run: StageRun, parts: list[str], out: str) -> None:
    """Concatenate the levels' gzip members into one WARC (valid: WARC.gz is member-per-record)."""
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "wb") as dst:
        for part in parts:
            src = run.dir / f"{part}.warc.gz"
            if src.exists():
                dst.write(src.read_bytes())
    tmp.replace(target)


# --- WARC / WAT ---------------------------------------------------------------------------------


def warc_files(patterns: list[str]) -> list[str]:
    files: list[str] = []
    for pattern in patterns:
        matched = sorted(glob.glob(pattern, recursive=True)) or (
            [pattern] if Path(pattern).is_file() else []
        )
        if not matched:
            raise FileNotFoundError(f"--warc {pattern!r} matches no file")
        files.extend(m for m in matched if m not in files)
    return files


def extract_warc_part(task: dict) -> dict:
    """Ray task: one WARC/WAT file → a candidates part and a pages part."""
    from pipeline.sources.warc import pairs_from_warc

    started = time.perf_counter()
    pairs, pages = [], []
    source = Path(task["path"]).name
    for page, page_pairs in pairs_from_warc(task["path"]):
        pages.append(
            {
                "url": page.url,
                "final_url": page.url,
                "depth": None,
                "status": page.status,
                "http_status": page.http_status,
                "error": page.error,
                "pairs": len(page_pairs),
                "source": source,
            }
        )
        pairs.extend((p.url, p.caption, p.page_url) for p in page_pairs)
    stats = PartStats(rows_in=len(pages), rows_out=len(pairs))
    for page in pages:
        if page["status"] != "ok":
            stats.drop(f"page_{page['status']}")
    stats.seconds = time.perf_counter() - started
    layout = DatasetLayout(Path(task["root"]))
    _write_part(StageRun(layout, STAGE), layout, task["part"], pairs, pages, stats)
    return {"part": task["part"], "pairs": len(pairs)}


# --- URL lists ----------------------------------------------------------------------------------


def _url_list_parts(config: BuildConfig, layout: DatasetLayout, run: StageRun) -> list[str]:
    from pipeline.sources.urllist import iter_url_list_chunks

    parts = []
    chunks = iter_url_list_chunks(
        config.url_list,
        rows_per_chunk=config.rows_per_part,
        url_col=config.url_col,
        caption_col=config.caption_col,
        input_format=config.input_format,
    )
    for index, chunk in enumerate(chunks):
        part = f"list-{index:05d}"
        parts.append(part)
        if run.is_done(part):
            continue
        table = chunk.table
        # A URL list has no pages, so no page_url; a missing caption matches no query.
        pairs = [
            (u, c or "", None)
            for u, c in zip(table["url"].to_pylist(), table["caption"].to_pylist(), strict=True)
        ]
        stats = PartStats(rows_in=chunk.rows_in, rows_out=len(pairs))
        stats.drop("empty_url", chunk.dropped_empty_url)
        stats.drop("malformed_row", chunk.dropped_malformed)
        _write_part(run, layout, part, pairs, None, stats)
    return parts


def run_sources(config: BuildConfig, layout: DatasetLayout, executor, resolver=None) -> list[str]:
    run = StageRun(layout, STAGE)
    if config.source_kind == "crawl":
        parts = asyncio.run(_crawl(config, layout, run, resolver))
        if config.warc_out:
            join_warcs(run, parts, config.warc_out)
    elif config.source_kind == "warc":
        files = warc_files(config.warc)
        parts = [f"warc-{i:05d}" for i in range(len(files))]
        todo = [
            {"path": str(Path(f).resolve()), "part": p, "root": str(layout.root)}
            for f, p in zip(files, parts, strict=True)
            if not run.is_done(p)
        ]
        for _ in _progress(executor.map(extract_warc_part, todo), len(todo), "WARC files"):
            pass
    else:
        parts = _url_list_parts(config, layout, run)
    run.finish(parts)
    return parts


def _progress(iterable, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="part", leave=False, disable=total < 2)
