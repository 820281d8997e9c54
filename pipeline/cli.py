"""The `pipeline` command line. Build options are generated from pipeline.buildconfig (one place
defines each), the conventions are manifests.cli's; heavy imports live inside the commands, so
`--help` is instant."""

from __future__ import annotations

import argparse
import sys

from manifests.cli import Parser, add_command, add_config_options, add_verbosity, run_cli
from manifests.config import DEVICES, check_device

# What `pipeline crawl` takes of the build's options: the crawl and the network.
CRAWL_OPTIONS = ("seeds", "max_pages", "max_depth")


def command(sub, name: str, **kwargs) -> argparse.ArgumentParser:
    """Subcommand `name` (queries_build: `queries build`), run by commands.cmd_<name>."""
    shown = name.split("_")[-1] if name.startswith(("queries_", "textmodel_")) else name
    return add_command(sub, shown, f"pipeline.commands:cmd_{name}", **kwargs)


def device(value: str) -> str:
    from manifests.config import ConfigError

    try:
        return check_device(value)
    except ConfigError as exc:  # argparse shows an ArgumentTypeError's own words
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_build(sub) -> None:
    from pipeline.buildconfig import BuildConfig
    from pipeline.stages.registry import STAGE_NAMES

    build = command(sub, "build", help="build or resume a dataset")
    add_config_options(build, BuildConfig)
    build.add_argument(
        "--stage",
        action="append",
        dest="stages",
        choices=STAGE_NAMES,
        metavar="NAME",
        help=f"run only this stage (repeatable): {', '.join(STAGE_NAMES)}; each resumes from "
        "its markers",
    )


def _add_crawl(sub) -> None:
    from manifests.config import leaf_fields
    from pipeline.buildconfig import BuildConfig

    crawl = command(sub, "crawl", help="crawl seeds and record the pages as a WARC (no dataset)")
    crawl.add_argument("--warc-out", required=True, metavar="FILE", help="the WARC to write")
    net = tuple(n for n, (path, _) in leaf_fields(BuildConfig).items() if path[0] == "net")
    add_config_options(crawl, BuildConfig, only=CRAWL_OPTIONS + net)


def _add_recheck(sub) -> None:
    from manifests.config import leaf_fields
    from pipeline.buildconfig import BuildConfig

    recheck = command(
        sub, "recheck", help="re-verify consent for a dataset's kept rows: a new version"
    )
    recheck.add_argument("dir", metavar="DIR")
    recheck.add_argument(
        "--older-than",
        type=float,
        default=0.0,
        metavar="DAYS",
        help="only rows whose image was last checked more than DAYS ago (default: every kept row)",
    )
    net = tuple(n for n, (path, _) in leaf_fields(BuildConfig).items() if path[0] == "net")
    add_config_options(recheck, BuildConfig, only=net)  # default: the build's own (run.json)


def _add_remove(sub) -> None:
    remove = command(
        sub, "remove", help="a takedown request: rows, their images and captions leave DIR"
    )
    remove.add_argument("dir", metavar="DIR")
    what = remove.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--urls", metavar="FILE", help="image or page URLs, one per line (either matches a row)"
    )
    what.add_argument(
        "--domains", metavar="FILE", help="host names, one per line (their subdomains too)"
    )
    what.add_argument("--uids", metavar="FILE", help="row uids, one per line: those captions")
    remove.add_argument(
        "--requested-by", required=True, metavar="WHO", help="who asked (free text, audited)"
    )
    remove.add_argument("--reason", required=True, metavar="WHY", help="why (free text, audited)")
    remove.add_argument(
        "--request-id", metavar="ID", help="the request's name in the audit (default: date-token)"
    )


def _add_serve(sub) -> None:
    serve = command(sub, "serve", help="browse a dataset in the browser (read-only)")
    serve.add_argument("dir", metavar="DIR", help="dataset folder or s3://bucket/prefix")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument(
        "--token",
        help="required on every request; needed to bind off loopback "
        "(default: $PIPELINE_SERVE_TOKEN)",
    )


def _add_query_report(sub) -> None:
    query = command(sub, "query", help="run SQL over a dataset's manifests with DuckDB")
    query.add_argument("dir", metavar="DIR")
    query.add_argument(
        "sql",
        nargs="?",
        metavar="SQL",
        help="views: samples, pages, origins, consent, removals, shards, stats; subsets by "
        "name, e.g. "
        "FROM kept",
    )
    query.add_argument("--format", choices=["table", "csv", "json"], default="table")
    query.add_argument(
        "--subsets",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="list the named subsets",
    )
    query.add_argument("--limit", type=int, default=1000, help="rows printed as a table at most")
    query.add_argument(
        "--version",
        type=int,
        metavar="N",
        help="query version N (DIR/versions; a recheck writes a new one); default the latest",
    )
    report = command(sub, "report", help="write DIR/report.html: funnel, histograms, samples")
    report.add_argument("dir", metavar="DIR")
    report.add_argument("--out", metavar="FILE", help="default DIR/report.html")


def _add_model_options(parser) -> None:
    """The options every command that runs a model shares, under the same names."""
    parser.add_argument(
        "--batch-size", type=int, default=256, help="per forward pass (default 256)"
    )
    parser.add_argument("--device", type=device, default="auto", help=f"{DEVICES} (default auto)")


def _add_embed_search(sub) -> None:
    embed = command(sub, "embed", help="image and caption embeddings of DIR's shards + an index")
    embed.add_argument("dir", metavar="DIR")
    embed.add_argument("--checkpoint", required=True, metavar="CKPT", help="trainer checkpoint")
    _add_model_options(embed)
    embed.add_argument(
        "--overwrite",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="replace embeddings of another checkpoint",
    )
    embed.add_argument(
        "--recall-target",
        type=float,
        default=0.95,
        help="tune an approximate index until recall@10 vs flat search reaches this",
    )
    search = command(sub, "search", help="text or image query -> the closest kept samples")
    search.add_argument("dir", metavar="DIR")
    search.add_argument("text", nargs="?", metavar="TEXT", help="text query, e.g. 'a red apple'")
    search.add_argument("--image", metavar="FILE", help="image query instead of text")
    search.add_argument("-k", type=int, default=20, help="results (default 20)")
    search.add_argument("--html", metavar="FILE", help="also write an HTML page with thumbnails")
    search.add_argument("--format", choices=["table", "csv", "json"], default="table")
    search.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="default: the one `embed` used (it must hold the same weights)",
    )
    _add_model_options(search)


def _add_tools(sub) -> None:
    from pipeline.filters.textmodel import add_textmodel_train_arguments

    queries = sub.add_parser("queries", help="query lists")
    qsub = queries.add_subparsers(dest="queries_command", required=True, parser_class=Parser)
    qbuild = command(qsub, "queries_build", help="make a CLIP-style query list")
    qbuild.add_argument("--out", required=True, metavar="FILE")
    qbuild.add_argument(
        "--min-zipf",
        type=float,
        default=3.0,
        help="wordfreq Zipf frequency threshold (default 3.0)",
    )
    qbuild.add_argument("--lang", default="en")
    qbuild.add_argument("--wordnet", metavar="DIR", help="WordNet dict/ folder to add lemma names")
    qbuild.add_argument("--max-queries", type=int)
    textmodel = sub.add_parser("textmodel", help="caption quality models (fastText)")
    tsub = textmodel.add_subparsers(dest="textmodel_command", required=True, parser_class=Parser)
    add_textmodel_train_arguments(
        command(tsub, "textmodel_train", help="train a caption classifier")
    )
    demo = command(sub, "demo", help="build a dataset from the embedded sample web on loopback")
    demo.add_argument("--out", default="demo-output", metavar="DIR")
    demo.add_argument("--executor", choices=["auto", "ray", "local"], default="auto")
    demo.add_argument(
        "--train-samples",
        type=int,
        default=20_000,
        help="samples to train the tiny model on (0: no training)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="pipeline", description="Build CLIP-style (image, alt-text) datasets from the web."
    )
    add_verbosity(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_build(sub)
    _add_crawl(sub)
    _add_query_report(sub)
    _add_recheck(sub)
    _add_remove(sub)
    _add_embed_search(sub)
    _add_serve(sub)
    _add_tools(sub)
    command(sub, "completion", help="print a bash completion script for pipeline and trainer")
    return parser


def _user_errors() -> tuple:
    """Besides ConfigError: bad SQL, and files named on the command line that do not exist."""
    import duckdb

    return (duckdb.Error, FileNotFoundError, FileExistsError)


def main(argv: list[str] | None = None) -> int:
    return run_cli("pipeline", build_parser(), argv, _user_errors)


if __name__ == "__main__":
    sys.exit(main())
