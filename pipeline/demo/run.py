"""`pipeline demo`: serve the sample web on loopback and build a dataset from it."""

import logging
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


def run_demo(out: str, executor: str = "ray") -> int:
    from pipeline.build import run_build
    from pipeline.buildconfig import BuildConfig
    from pipeline.commands import print_summary
    from pipeline.demo.site import SampleWeb

    out_dir = Path(out).resolve()
    _fresh_out(out_dir)
    web = SampleWeb()
    queries = out_dir / "queries.txt"
    queries.write_text("\n".join(web.queries()) + "\n", encoding="utf-8")
    with web.serve() as site:
        log.info("sample web of %d pages at %s", len(web.pages), site.url)
        config = BuildConfig(
            out=str(out_dir / "dataset"),
            query_list=str(queries),
            seeds=[site.url],
            allow_network=["127.0.0.1/32"],  # the sample web is on loopback
            per_query_cap=10,  # small, so balancing visibly drops pairs of common words
            warc_out=str(out_dir / "crawl.warc.gz"),
            executor=executor,
        )
        layout = run_build(config)
        private_hits = [h for h in site.hits if h.startswith("/private/")]
    from pipeline.report import write_report

    report = write_report(layout.root)
    print_summary(layout)
    print(f"\nreport:     {report}")
    print(f"query list: {queries}\ncrawl WARC: {config.warc_out}\ndataset:    {layout.root}")
    print(f'try: pipeline query {layout.root} "SELECT status, count(*) FROM samples GROUP BY 1"')
    if private_hits:
        log.error("robots.txt was not respected: %s", private_hits)
        return 1
    return 0
