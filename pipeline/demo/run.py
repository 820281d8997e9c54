"""`pipeline demo`: the whole story on the embedded sample web, in one command.

1. serve the sample web on loopback and build a dataset from it (crawl, match and balance,
   caption filters, images, dedup and the eval-leak check against the Twitter-style artwork,
   shards), then write the report;
2. train a tiny CLIP model on the kept pairs for a few minutes on the CPU;
3. evaluate it zero-shot on the Twitter-style artwork (the same emoji by other artists)."""

import logging
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)
MARK = ".clipengine-demo"  # marks a folder the demo made, so a rerun may replace it


def _fresh_out(out: Path) -> None:
    if out.exists():
        if not (out / MARK).exists():
            raise FileExistsError(f"{out} exists and is not a demo output; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARK).write_text("made by `pipeline demo`; safe to delete\n")


def write_eval_set(web, folder: Path) -> Path:
    """The Twitter-style artwork as an ImageFolder eval set, one class per English name."""
    for row in web.emoji:
        name = re.sub(r"[^\w\- ]+", "", row["labels"]["en"]).strip().replace(" ", "_")
        (folder / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(web.data_dir / "twitter" / row["image"], folder / name / row["image"])
    return folder


def build(out_dir: Path, executor: str):
    from pipeline.build import run_build
    from pipeline.buildconfig import BuildConfig
    from pipeline.demo.site import SampleWeb
    from pipeline.report import write_report

    web = SampleWeb()
    queries = out_dir / "queries.txt"
    queries.write_text("\n".join(web.queries()) + "\n", encoding="utf-8")
    eval_set = write_eval_set(web, out_dir / "evalsets" / "emoji-twitter")
    with web.serve() as site:
        log.info("sample web of %d pages at %s", len(web.pages), site.base)
        config = BuildConfig.of(
            out=str(out_dir / "dataset"),
            query_list=str(queries),
            seeds=[site.base],
            allow_network=["127.0.0.1/32"],  # the sample web is on loopback
            per_query_cap=10,  # small, so balancing visibly drops pairs of common words
            warc_out=str(out_dir / "crawl.warc.gz"),
            eval_set=[str(eval_set)],
            image_size=64,  # clip-tiny's input size
            executor=executor,
        )
        layout = run_build(config)
        if [h for h in site.hits if h.startswith("/private/")]:
            raise RuntimeError("robots.txt was not respected: the demo's private pages were read")
    return layout, write_report(layout.root), eval_set


def train(dataset: Path, run_dir: Path, samples: int) -> Path:
    from trainer.launch import launch, resolve_config
    from trainer.plot import plot_run

    cfg = resolve_config(
        dict(
            data=str(dataset),
            subset="kept",
            model="clip-tiny",
            out=str(run_dir),
            samples=samples,
            batch_size=64,
            lr=1e-3,
            workers=1,
            save_every=100,
            log_every=5,
        )
    )
    launch(cfg)
    plot_run(run_dir)
    return run_dir / "latest.pt"


def evaluate(checkpoint: Path, eval_set: Path, dataset: Path, out: Path) -> dict:
    from trainer.evaluation.cli import EvalOptions, evaluate_and_write

    opts = EvalOptions(
        checkpoint=str(checkpoint),
        eval_set=[str(eval_set)],
        data=str(dataset),
        out=str(out),
        templates="plain",
        probe=False,
        retrieval=False,
    )
    results, _ = evaluate_and_write(opts)
    return results[eval_set.name]


def run_demo(out: str, executor: str = "auto", train_samples: int = 20_000) -> int:
    from pipeline.summary import print_summary

    out_dir = Path(out).resolve()
    _fresh_out(out_dir)
    layout, report, eval_set = build(out_dir, executor)
    print_summary(layout)
    checkpoint = results = None
    if train_samples:
        checkpoint = train(layout.root, out_dir / "run", train_samples)
        results = evaluate(checkpoint, eval_set, layout.root, out_dir / "eval.json")
    print(f"\nreport:     {report}")
    print(f"dataset:    {layout.root}   (crawl recorded in {out_dir / 'crawl.warc.gz'})")
    print(f"eval set:   {eval_set}")
    if checkpoint:
        print(f"checkpoint: {checkpoint}   (curves: {checkpoint.parent / 'curves.png'})")
        zero_shot = results["zero_shot"]
        print(
            f"zero-shot on {eval_set.name} ({len(list(eval_set.iterdir()))} classes, other artists): "
            f"top-1 {zero_shot['top1']:.1%}, top-5 {zero_shot['top5']:.1%}   "
            f"(results: {out_dir / 'eval.json'}, {out_dir / 'eval.md'})"
        )
    print(f'try: pipeline query {layout.root} "SELECT status, count(*) FROM samples GROUP BY 1"')
    return 0
