"""The `pipeline` subcommands: argument namespaces in, work and printed summaries out."""

import logging
import sys
from pathlib import Path

import duckdb

from manifests.db import NotADatasetError
from pipeline.config import ConfigError

log = logging.getLogger("pipeline")
USER_ERRORS = (
    ConfigError,
    NotADatasetError,
    FileNotFoundError,
    FileExistsError,
    KeyError,
    duckdb.Error,
)

_BUILD_KEYS = (
    "query_list", "seeds", "warc", "url_list", "url_col", "caption_col", "input_format",
    "rows_per_part", "max_pages", "max_depth", "warc_out", "allow_network",
    "per_host_concurrency", "per_host_rps", "timeout_s", "contact_url", "per_query_cap", "seed",
    "eval_set", "executor", "ray_address", "languages", "min_words", "max_words", "text_model",
    "min_text_score", "image_size", "resize_mode", "encode_format", "encode_quality", "min_size",
    "max_aspect_ratio", "max_image_bytes", "max_image_pixels", "shard_size", "webdataset", "no_fetch", "near_dup_radius",
    "clip_model", "min_clip_score", "clip_top_fraction", "semdedup_eps", "clip_batch_size", "device",
)  # fmt: skip


def build_config_from_args(args):
    from pipeline.buildconfig import BuildConfig
    from pipeline.config import from_dict

    values = {k: getattr(args, k) for k in _BUILD_KEYS if hasattr(args, k)}
    return from_dict(BuildConfig, {"out": args.out, **values})


def print_summary(layout) -> None:
    from rich.console import Console
    from rich.table import Table

    import manifests

    con = manifests.open(layout.root)
    console = Console()
    stages = Table(title="stages", title_justify="left")
    for col in ("stage", "rows in", "rows out", "drops", "seconds"):
        stages.add_column(col, justify="left" if col in ("stage", "drops") else "right")
    for stage, rows_in, rows_out, drops, seconds in con.execute(
        "SELECT stage, rows_in, rows_out, drops, seconds FROM stats"
    ).fetchall():
        stages.add_row(stage, f"{rows_in:,}", f"{rows_out:,}", drops, f"{seconds:.2f}")
    statuses = Table(title="samples by status", title_justify="left")
    statuses.add_column("status")
    statuses.add_column("rows", justify="right")
    for status, count in con.execute(
        "SELECT status, count(*) FROM samples GROUP BY 1 ORDER BY 2 DESC, 1"
    ).fetchall():
        statuses.add_row(status, f"{count:,}")
    console.print(stages)
    console.print(statuses)
    console.print(f'dataset: {layout.root}  (try: pipeline query {layout.root} "SELECT ...")')


def cmd_build(args) -> int:
    from pipeline.build import run_build

    layout = run_build(build_config_from_args(args), stages=args.stages)
    if args.stages:
        print(f"ran stage(s) {', '.join(args.stages)} of {layout.root}")
        return 0
    print_summary(layout)
    return 0


def cmd_crawl(args) -> int:
    from pipeline.build import run_build
    from pipeline.buildconfig import BuildConfig
    from pipeline.config import from_dict

    values = {k: getattr(args, k) for k in _BUILD_KEYS if hasattr(args, k)}
    # The crawl's level markers live next to the WARC, so a killed crawl resumes.
    work = Path(str(args.warc_out) + ".work")
    config = from_dict(BuildConfig, {**values, "out": str(work), "executor": "local"})
    layout = run_build(config)
    import manifests

    con = manifests.open(layout.root)
    pages, pairs = con.execute("SELECT count(*), coalesce(sum(pairs), 0) FROM pages").fetchone()
    print(f"crawled {pages} pages ({pairs} image pairs) into {args.warc_out}")
    return 0


def _print_result(cursor, fmt: str, limit: int) -> None:
    import csv
    import json

    columns = [d[0] for d in cursor.description]
    rows = cursor.fetchall()
    if fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    elif fmt == "json":
        print(json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str, indent=1))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table()
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows[:limit]:
            table.add_row(*("NULL" if v is None else str(v) for v in row))
        Console().print(table)
        if len(rows) > limit:
            print(f"({len(rows) - limit} more rows; use --format csv or --limit)")


def cmd_query(args) -> int:
    import manifests

    if args.subsets:
        for name, path in manifests.list_subsets(args.dir).items():
            print(f"{name}\t{path}")
        return 0
    if not args.sql:
        raise ConfigError("give a SQL query, or --subsets")
    con = manifests.open(args.dir)
    for name in manifests.list_subsets(args.dir):
        con.execute(f'CREATE OR REPLACE VIEW "{name}" AS {manifests.subset_sql(name, args.dir)}')
    _print_result(con.execute(args.sql), args.format, args.limit)
    return 0


def cmd_queries(args) -> int:
    from pipeline.queries import build_query_list, write_query_list

    queries = build_query_list(
        min_zipf=args.min_zipf,
        lang=args.lang,
        wordnet_dir=args.wordnet,
        max_queries=args.max_queries,
    )
    write_query_list(queries, args.out)
    print(f"wrote {len(queries):,} queries to {args.out}")
    return 0


def cmd_demo(args) -> int:
    from pipeline.demo.run import run_demo

    return run_demo(args.out, executor=args.executor, train_samples=args.train_samples)


def cmd_textmodel(args) -> int:
    from pipeline.filters.textmodel import cmd_textmodel_train

    return cmd_textmodel_train(args)


def cmd_report(args) -> int:
    from pipeline.report import write_report

    path = write_report(args.dir, out=args.out)
    print(f"wrote {path}")
    return 0


def cmd_embed(args) -> int:
    from pipeline.embed.run import run_embed

    meta = run_embed(args.dir, args.checkpoint, device=args.device, batch_size=args.batch_size,
                     overwrite=args.overwrite, recall_target=args.recall_target)  # fmt: skip
    index = meta["index"]
    recall = index.get("recall_at_10")
    print(
        f"embedded {meta['rows']:,} samples ({meta['model']}, dim {meta['dim']}) into "
        f"{args.dir}/embeddings; index {index['kind']} ({index['factory']})"
        + (f", recall@10 vs flat {recall:.3f}" if recall is not None else ", exact")
    )
    return 0


def cmd_search(args) -> int:
    import dataclasses

    from pipeline.embed.search import search, write_html

    hits = search(args.dir, text=args.text, image=args.image, k=args.k,
                  checkpoint=args.checkpoint, device=args.device)  # fmt: skip
    rows = [dataclasses.asdict(h) for h in hits]
    if args.format == "table":
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{args.text or args.image}", title_justify="left")
        for col in ("rank", "score", "pair score", "caption", "url"):
            table.add_column(col, overflow="fold", justify="left" if col == "caption" else "right")
        for r in rows:
            pair = "" if r["clip_score"] is None else f"{r['clip_score']:.3f}"
            table.add_row(str(r["rank"]), f"{r['score']:.3f}", pair, r["caption"] or "",
                          r["url"] or "")  # fmt: skip
        Console().print(table)
    else:
        _print_rows(rows, args.format)
    if args.html:
        path = write_html(args.dir, hits, args.text or f"image: {args.image}", args.html)
        print(f"wrote {path}")
    return 0


def _print_rows(rows: list[dict], fmt: str) -> None:
    import csv
    import json

    if fmt == "json":
        print(json.dumps(rows, indent=1))
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["rank"])
    writer.writeheader()
    writer.writerows(rows)
