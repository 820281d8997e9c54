"""The `pipeline` subcommands: argument namespaces in, work and printed summaries out."""

import logging
import sys

from manifests.cli import given
from manifests.config import ConfigError

log = logging.getLogger("pipeline")


def build_config_from_args(args, **overrides):
    """The BuildConfig of the options given on the command line (the rest: its defaults)."""
    from pipeline.buildconfig import BuildConfig

    return BuildConfig.from_options({**given(args, BuildConfig), **overrides})


def cmd_build(args) -> int:
    from pipeline.build import run_build
    from pipeline.summary import print_summary

    layout = run_build(build_config_from_args(args), stages=args.stages)
    if args.stages:
        print(f"ran stage(s) {', '.join(args.stages)} of {layout.root}")
        return 0
    print_summary(layout)
    return 0


def cmd_crawl(args) -> int:
    import manifests
    from pipeline.build import run_build

    # The crawl's task markers live next to the WARC, so a killed crawl resumes.
    work = str(args.warc_out) + ".work"
    config = build_config_from_args(args, out=work, warc_out=args.warc_out, executor="local")
    layout = run_build(config)
    con = manifests.open(layout.root)
    pages, pairs = con.execute("SELECT count(*), coalesce(sum(pairs), 0) FROM pages").fetchone()
    print(f"crawled {pages} pages ({pairs} image pairs) into {args.warc_out}")
    return 0


def cmd_recheck(args) -> int:
    from pipeline.buildconfig import BuildConfig
    from pipeline.recheck import recheck

    summary = recheck(args.dir, args.older_than, given(args, BuildConfig))
    print(
        f"rechecked {summary['rechecked']:,} kept rows ({summary['urls']:,} images, "
        f"{summary['origins']:,} origins): {summary['opted_out']:,} opted out since, "
        f"{summary['unreachable']:,} unreachable (left as they were); version "
        f"{summary['version']} (the one before: pipeline query {args.dir} --version "
        f"{summary['base_version']} ...)"
    )
    return 0


def cmd_serve(args) -> int:
    from pipeline.serve.run import serve

    return serve(args.dir, host=args.host, port=args.port, token=args.token)


def cmd_remove(args) -> int:
    from pipeline.takedown.request import read_request
    from pipeline.takedown.run import remove

    kind = next(k for k in ("urls", "domains", "uids") if getattr(args, k))
    request = read_request(
        kind, getattr(args, kind), args.requested_by, args.reason, args.request_id
    )
    summary = remove(args.dir, request)
    rid = summary["request"]["request_id"]
    print(
        f"removal {rid}: {summary['rows']:,} rows removed "
        f"({summary['kept_rows']:,} of them kept), {summary['images']:,} images out of the "
        f"shards, {summary['pages']:,} pages, {summary['unmatched_entries']:,} entries matched "
        f"nothing; version {summary['version']} (audit: pipeline query {args.dir} "
        f"\"FROM removals WHERE request_id = '{rid}'\")"
    )
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
    con = manifests.open(args.dir, version=args.version)
    for name in manifests.list_subsets(args.dir):
        con.execute(f'CREATE OR REPLACE VIEW "{name}" AS {manifests.subset_sql(name, args.dir)}')
    _print_result(con.execute(args.sql), args.format, args.limit)
    return 0


def cmd_queries_build(args) -> int:
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


def cmd_textmodel_train(args) -> int:
    from pipeline.filters.textmodel import cmd_textmodel_train

    return cmd_textmodel_train(args)


def cmd_completion(args) -> int:
    """A bash completion script for both CLIs, made from their parsers (no extra package)."""
    from manifests.completion import bash_completion
    from pipeline.cli import build_parser
    from trainer.cli import build_parser as trainer_parser

    print(bash_completion({"pipeline": build_parser(), "trainer": trainer_parser()}))
    return 0


def cmd_report(args) -> int:
    from pipeline.report import write_report

    path = write_report(args.dir, out=args.out)
    print(f"wrote {path}")
    return 0


def cmd_embed(args) -> int:
    from pipeline.embed.run import run_embed

    meta = run_embed(
        args.dir,
        args.checkpoint,
        device=args.device,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        recall_target=args.recall_target,
    )
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

    hits = search(
        args.dir,
        text=args.text,
        image=args.image,
        k=args.k,
        checkpoint=args.checkpoint,
        device=args.device,
    )
    rows = [dataclasses.asdict(h) for h in hits]
    if args.format == "table":
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{args.text or args.image}", title_justify="left")
        for col in ("rank", "score", "pair score", "caption", "url"):
            table.add_column(col, overflow="fold", justify="left" if col == "caption" else "right")
        for r in rows:
            pair = "" if r["clip_score"] is None else f"{r['clip_score']:.3f}"
            table.add_row(
                str(r["rank"]), f"{r['score']:.3f}", pair, r["caption"] or "", r["url"] or ""
            )
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
