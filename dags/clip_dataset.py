"""`clip_dataset`: build a CLIP dataset with `pipeline build`, one Airflow task per stage of
the registry (pipeline.stages.registry), in its order, then the report:

    sources >> match >> balance >> text >> robots >> fetch >> images >> dedup >> score >> clip
        >> shards >> publish >> report

`score` scores pairs with `build_options.clip_model` and `clip` drops by min_clip_score or
clip_top_fraction (SemDeDup with semdedup_eps); without a clip model they do nothing, as the
image stages do with `no_fetch`.

Each task runs `pipeline.build.run_build(config, stages=[NAME])` (what `pipeline build --stage
NAME` runs) on the dataset folder `out` and returns that folder's path; the data never passes
through Airflow. A stage resumes from its markers, so a task that is cleared and rerun (or a
whole run triggered again with the same params) skips finished work. With `executor: ray` the
per-part work of each stage runs as Ray tasks, on a local Ray runtime or on the cluster at
`ray_address`; `out` must then be on a filesystem every node sees (see docs/scaling.md).

Params (trigger with a JSON conf, or the form in the UI):
    out            dataset folder, an absolute path (required)
    query_list     UTF-8 file, one query a line; null: no matching or balancing
    seeds | warc | url_list   exactly one source: URLs to crawl, WARC/WAT globs, a URL list file
    allow_network  extra CIDRs the fetcher may reach (default: public addresses only)
    executor       auto (in-process on 1 CPU or for a 1-part stage, else Ray) | ray | local
    ray_address    e.g. "auto" or "ray://head:10001"; null: a local Ray runtime per task
    build_options  any other BuildConfig field, e.g. {"max_pages": 100, "languages": ["en"]}
"""

import datetime

from airflow.sdk import DAG, Param, task

from dags._params import build_source_params
from pipeline.stages.registry import STAGE_NAMES


def _stage_task(stage: str):
    @task(task_id=stage, doc_md=f"`pipeline build --stage {stage}`")
    def run_stage(params=None) -> str:
        from dags._common import run_stages

        return run_stages(dict(params), [stage])

    return run_stage


@task(task_id="report", doc_md="`pipeline report OUT`: writes OUT/report.html")
def report(dataset_dir: str) -> str:
    from dags._common import write_report

    return write_report(dataset_dir)


with DAG(
    dag_id="clip_dataset",
    description="Build a CLIP (image, alt-text) dataset: crawl, match, filter, fetch, dedup, shard",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    max_active_runs=1,  # two runs on the same `out` would race on its markers
    tags=["clipengine"],
    doc_md=__doc__,
    params={
        "out": Param(type="string", minLength=1, description="dataset folder (absolute path)"),
        **build_source_params(),
    },
) as dag:
    previous = None
    for stage in STAGE_NAMES:
        current = _stage_task(stage)()
        if previous is not None:
            previous >> current
        previous = current
    report(previous)
