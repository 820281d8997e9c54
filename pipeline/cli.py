"""The `pipeline` command line. Heavy imports live inside the commands, so `--help` is instant."""

import argparse
import logging
import sys

log = logging.getLogger("pipeline")


def _add_build_args(p: argparse.ArgumentParser, crawl_only: bool = False) -> None:
    src = p.add_argument_group("source (exactly one)")
    src.add_argument("--seeds", nargs="+", default=[], metavar="URL", help="crawl from these URLs")
    if not crawl_only:
        src.add_argument(
            "--warc",
            action="append",
            default=[],
            metavar="GLOB",
            help="WARC or WAT files (Common Crawl layout), .warc or .warc.gz; repeatable",
        )
        src.add_argument(
            "--url-list",
            metavar="FILE",
            help="img2dataset-style list: txt, csv, tsv, json, jsonl or parquet",
        )
        src.add_argument("--url-col", default="url")
        src.add_argument("--caption-col", default="caption")
        src.add_argument(
            "--input-format", choices=["txt", "csv", "tsv", "json", "jsonl", "parquet"]
        )
    crawl = p.add_argument_group("crawl")
    crawl.add_argument(
        "--max-pages", type=int, default=1000, help="pages fetched at most (default 1000)"
    )
    crawl.add_argument(
        "--max-depth", type=int, default=3, help="link depth from the seeds (default 3)"
    )
    if not crawl_only:
        crawl.add_argument(
            "--warc-out", metavar="FILE", help="also record the crawled pages as a WARC"
        )
    net = p.add_argument_group("network")
    net.add_argument(
        "--allow-network",
        action="append",
        default=[],
        metavar="CIDR",
        help="also allow these addresses (default: public addresses only)",
    )
    net.add_argument("--per-host-concurrency", type=int, default=8)
    net.add_argument(
        "--per-host-rps", type=float, default=0.0, help="requests/s per host; 0 = no cap"
    )
    net.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        dest="timeout_s",
        help="seconds per response (default 20)",
    )
    net.add_argument(
        "--contact-url",
        default="https://github.com/clipengine/clipengine",
        help="named in the User-Agent so site owners can reach you",
    )


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _add_filter_args(build: argparse.ArgumentParser) -> None:
    text = build.add_argument_group("caption filters (before any image is fetched)")
    text.add_argument(
        "--languages",
        type=_comma_list,
        default=[],
        metavar="LANGS",
        help="keep only these fastText lid.176 languages, e.g. en,fr (default: all)",
    )
    text.add_argument("--min-words", type=int, default=1)
    text.add_argument("--max-words", type=int, default=200)
    text.add_argument("--text-model", metavar="FILE", help="fastText model from `textmodel train`")
    text.add_argument("--min-text-score", type=float, default=0.5)
    img = build.add_argument_group("images and shards")
    img.add_argument("--image-size", type=int, default=256, help="output side in pixels")
    img.add_argument(
        "--resize-mode", choices=["border", "keep_ratio", "center_crop", "no"], default="border"
    )
    img.add_argument("--encode-format", choices=["jpg", "webp", "png"], default="jpg")
    img.add_argument("--encode-quality", type=int, help="95 for jpg/webp, 6 for png by default")
    img.add_argument(
        "--min-size", type=int, default=0, help="drop images whose shorter side is less"
    )
    img.add_argument("--max-aspect-ratio", type=float, help="drop images more elongated than this")
    img.add_argument("--max-image-bytes", type=int, default=20 * 1024 * 1024)
    img.add_argument(
        "--max-image-pixels",
        type=int,
        default=50_000_000,
        help="declared pixels above this are refused (decompression bombs)",
    )
    img.add_argument("--shard-size", type=int, default=10_000, help="samples per shard")
    img.add_argument("--webdataset", action="store_true", help="also write tar shards")
    img.add_argument(
        "--no-fetch", action="store_true", help="stop after matching, balancing and caption filters"
    )


def _add_clip_args(build: argparse.ArgumentParser) -> None:
    clip = build.add_argument_group("model-based curation (after exact dedup)")
    clip.add_argument(
        "--clip-model",
        metavar="CKPT",
        help="trainer checkpoint that scores every pair (clip_score: cosine of image and caption)",
    )
    which = clip.add_mutually_exclusive_group()
    which.add_argument(
        "--min-clip-score", type=float, metavar="X", help="drop pairs scoring below X (LAION: 0.28)"
    )
    which.add_argument(
        "--clip-top-fraction",
        type=float,
        metavar="F",
        help="keep the best-scored fraction F of pairs (DataComp: 0.3)",
    )
    clip.add_argument(
        "--semdedup-eps",
        type=float,
        metavar="EPS",
        help="SemDeDup: image embeddings with cosine > 1-EPS in a k-means cluster are "
        "semantic_duplicate (off by default; the paper uses 0.01-0.1)",
    )
    clip.add_argument("--clip-batch-size", type=int, default=256)
    clip.add_argument(
        "--device", default="auto", help="scoring device: auto (cuda when present), cpu, cuda"
    )


def _add_embed_search(sub) -> None:
    embed = sub.add_parser("embed", help="image and caption embeddings of DIR's shards + an index")
    embed.add_argument("dir", metavar="DIR")
    embed.add_argument("--checkpoint", required=True, metavar="CKPT", help="trainer checkpoint")
    embed.add_argument("--batch-size", type=int, default=256)
    embed.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda")
    embed.add_argument(
        "--overwrite", action="store_true", help="replace embeddings of another checkpoint"
    )
    embed.add_argument(
        "--recall-target",
        type=float,
        default=0.95,
        help="tune an approximate index until recall@10 vs flat search reaches this",
    )
    search = sub.add_parser("search", help="text or image query -> the closest kept samples")
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
    search.add_argument("--device", default="auto")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline", description="Build CLIP-style (image, alt-text) datasets from the web."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build", help="build or resume a dataset")
    build.add_argument("--query-list", metavar="FILE", help="UTF-8, one query a line")
    build.add_argument("--out", required=True, metavar="DIR")
    _add_build_args(build)
    bal = build.add_argument_group("balancing")
    bal.add_argument(
        "--per-query-cap", type=int, default=20_000, help="MetaCLIP's t (default 20000)"
    )
    bal.add_argument("--seed", type=int, default=0)
    _add_filter_args(build)
    build.add_argument(
        "--eval-set",
        action="append",
        default=[],
        metavar="DIR",
        help="ImageFolder eval set to check for leaks (repeatable)",
    )
    build.add_argument(
        "--near-dup-radius",
        type=int,
        metavar="BITS",
        help="cluster images whose 64-bit phashes differ in at most BITS bits; "
        "keep the largest of each cluster (default: exact duplicates only)",
    )
    _add_clip_args(build)
    run = build.add_argument_group("execution")
    run.add_argument(
        "--stage",
        action="append",
        dest="stages",
        metavar="NAME",
        help="run only this stage (repeatable): sources, match, balance, text, "
        "images, dedup, clip, shards; each resumes from its markers",
    )
    run.add_argument(
        "--executor",
        choices=["auto", "ray", "local"],
        default="auto",
        help="auto (default: in-process when this process may use 1 CPU or a stage has 1 part, "
        "else Ray), ray (a local ray.init(), or --ray-address) or local (in-process)",
    )
    run.add_argument("--ray-address", metavar="ADDR", help="e.g. auto, or ray://head:10001")
    run.add_argument("--rows-per-part", type=int, default=10_000, help="URL-list rows per task")

    crawl = sub.add_parser("crawl", help="crawl seeds and record the pages as a WARC (no dataset)")
    crawl.add_argument("--warc-out", required=True, metavar="FILE", help="the WARC to write")
    _add_build_args(crawl, crawl_only=True)

    query = sub.add_parser("query", help="run SQL over a dataset's manifests with DuckDB")
    query.add_argument("dir", metavar="DIR")
    query.add_argument(
        "sql",
        nargs="?",
        metavar="SQL",
        help="views: samples, pages, shards, stats; subsets by name, e.g. FROM kept",
    )
    query.add_argument("--format", choices=["table", "csv", "json"], default="table")
    query.add_argument("--subsets", action="store_true", help="list the named subsets")
    query.add_argument("--limit", type=int, default=1000, help="rows printed as a table at most")

    _add_embed_search(sub)

    report = sub.add_parser("report", help="write DIR/report.html: funnel, histograms, samples")
    report.add_argument("dir", metavar="DIR")
    report.add_argument("--out", metavar="FILE", help="default DIR/report.html")

    queries = sub.add_parser("queries", help="query lists")
    qsub = queries.add_subparsers(dest="queries_command", required=True)
    qbuild = qsub.add_parser("build", help="make a CLIP-style query list")
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
    tsub = textmodel.add_subparsers(dest="textmodel_command", required=True)
    from pipeline.filters.textmodel import add_textmodel_train_arguments

    add_textmodel_train_arguments(tsub.add_parser("train", help="train a caption classifier"))

    demo = sub.add_parser("demo", help="build a dataset from the embedded sample web on loopback")
    demo.add_argument("--out", default="demo-output", metavar="DIR")
    demo.add_argument("--executor", choices=["auto", "ray", "local"], default="auto")
    demo.add_argument(
        "--train-samples",
        type=int,
        default=20_000,
        help="samples to train the tiny model on (0: no training)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from pipeline import commands

    handler = getattr(commands, f"cmd_{args.command}")
    try:
        return handler(args) or 0
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except commands.USER_ERRORS as exc:
        print(f"pipeline {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
