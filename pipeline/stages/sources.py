"""Stage `sources`: seeds, WARC/WAT/ARC files or a URL list -> candidate parts.

Output per part: DIR/work/sources/<part>.parquet (url, caption, page_url) and, for page sources,
DIR/manifests/pages/<part>.parquet. Part names sort in source order, which is the order used to
decide which copy of a repeated (url, caption) pair is the one kept. The parts a build has are
known only here, so this stage writes them to DIR/work/parts.json for the others.

How it splits into parts depends on the source: one task per WARC file; one part per crawl
depth and lane of hosts (pipeline.stages.crawl: each host owned by one lane, so its limits and
robots.txt hold in one place); one part per `rows_per_part` rows of a URL list, read in tasks
(pipeline.stages.urllists: by row groups for Parquet, one streaming task for text)."""

import glob
import logging
from dataclasses import dataclass
from pathlib import Path

from manifests import schema, storage
from manifests.config import ConfigError
from manifests.layout import atomic_path, write_json_atomic
from pipeline.stages.base import PartOutput, PartStats, PartTask, Stage, StageRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarcTask(PartTask):
    path: str = ""


def candidates_table(pairs: list[tuple[str, str, str]]):
    import pyarrow as pa

    urls, captions, pages = (list(c) for c in zip(*pairs, strict=True)) if pairs else ([], [], [])
    return pa.table(
        {"url": urls, "caption": captions, "page_url": pages},
        schema=pa.schema(
            [("url", pa.string()), ("caption", pa.string()), ("page_url", pa.string())]
        ),
    )


def pages_output(pairs, pages: list[dict], stats: PartStats) -> PartOutput:
    import pyarrow as pa

    for page in pages:
        if page["status"] != "ok":
            stats.drop(f"page_{page['status']}")
    schema.check_statuses([p["status"] for p in pages], schema.PAGE_STATUSES, "pages")
    files = {"pages": pa.Table.from_pylist(pages, schema=schema.PAGES)}
    return PartOutput(candidates_table(pairs), files=files, stats=stats)


def warc_files(patterns: list[str]) -> list[str]:
    files: list[str] = []
    for pattern in patterns:
        if storage.is_remote(pattern):  # s3:// or gs://: the store lists what matches
            matched = [str(p) for p in storage.expand(pattern) if p.is_file()]
        else:
            matched = sorted(glob.glob(pattern, recursive=True)) or (
                [pattern] if Path(pattern).is_file() else []
            )
        if not matched:
            raise ConfigError(f"--warc {pattern!r} matches no file")
        files.extend(m for m in matched if m not in files)
    return files


class SourcesStage(Stage):
    name, samples = "sources", False

    def file_target(self, layout, part: str, kind: str):
        if kind == "pages":  # the audit log of the page side is a manifest from the start
            return layout.pages / f"{part}.parquet"
        if kind == "origins":  # the robots.txt the crawl read: the build's store of them
            return layout.origins / f"{part}.parquet"
        return super().file_target(layout, part, kind)

    def check_config(self, run: StageRun) -> None:
        if run.config.source.kind == "warc":
            warc_files(run.config.source.warc)
        elif run.config.source.kind == "url_list":
            from pipeline.stages.urllists import check

            check(run.config.source)

    def execute(self, run: StageRun, executor) -> dict:
        run.sweep()  # part files of killed attempts (the base's execute is not used here)
        kind = run.config.source.kind
        if kind == "crawl":
            from pipeline.stages.crawl import crawl

            parts = crawl(self, run, executor)
            if run.config.source.warc_out:
                join_warcs(run, parts, run.config.source.warc_out)
        elif kind == "warc":
            parts = self._warcs(run, executor)
        else:
            from pipeline.stages.urllists import url_list_parts

            parts = url_list_parts(self, run, executor)
        write_json_atomic(parts, run.layout.work / "parts.json")
        return run.finish(parts)

    # --- WARC / WAT / ARC: one task per file -------------------------------------------------
    def _warcs(self, run: StageRun, executor) -> list[str]:
        files = warc_files(run.config.source.warc)
        parts = [f"warc-{i:05d}" for i in range(len(files))]
        todo = [
            run.task(p, WarcTask, path=str(storage.location(f).resolve()))
            for f, p in zip(files, parts, strict=True)
            if not run.is_done(p)
        ]
        self.run_tasks(todo, executor, desc="WARC files")
        return parts

    def process(self, task, rows) -> PartOutput:
        """One WARC/WAT/ARC file -> a candidates part and a pages part; a file that cannot be
        read is one `unreadable_file` pages row with the reason, not a failed build. (Or rows
        of a Parquet URL list: pipeline.stages.urllists.)"""
        from pipeline.net.consent import ConsentPolicy
        from pipeline.sources.warc import read_warc_file
        from pipeline.stages.urllists import ListTask, read_range

        if isinstance(task, ListTask):
            return read_range(task)

        source = storage.location(task.path).name
        with storage.local_copy(task.path) as local:  # a WARC in a store: one download
            result = read_warc_file(local, ConsentPolicy.of(task.config.net))
        pages = [page.to_row() for page in result.pages]
        if result.error is not None:
            log.warning("WARC file %s: %s", task.path, result.error)
            pages.append(
                {
                    "url": task.path,
                    "final_url": None,
                    "depth": None,
                    "status": schema.DropReason.UNREADABLE_FILE.value,
                    "http_status": None,
                    "error": result.error,
                    "pairs": 0,
                    "source": source,
                }
            )
        pairs = [(p.url, p.caption, p.page_url) for p in result.pairs]
        return pages_output(pairs, pages, PartStats(rows_in=len(pages), rows_out=len(pairs)))

    def run_part(self, task) -> PartStats:
        from pipeline.stages import crawl, urllists

        if isinstance(task, crawl.CrawlTask):
            return crawl.crawl_part(self, task)
        if isinstance(task, urllists.ListTask) and task.stream:
            return urllists.stream(self, task)
        return super().run_part(task)

    def run_phase(self, task) -> PartStats:
        from pipeline.stages.crawl import route

        return route(task)


def join_warcs(run: StageRun, parts: list[str], out: str) -> None:
    """Concatenate the levels' gzip members into one WARC (valid: WARC.gz is member-per-record)."""
    with atomic_path(out) as tmp, open(tmp, "wb") as dst:
        for part in parts:
            src = run.dir / f"{part}.warc.gz"
            if src.exists():
                dst.write(src.read_bytes())
