"""`clip_bootstrap`: the bootstrap loop of model-based curation, with no pretrained model.

    build_unfiltered >> train_first >> embed >> build_filtered >> train_second >> evaluate_both

1. `build_unfiltered`: `pipeline build` of the source into OUT/round1 (no model yet);
2. `train_first`: `trainer run --resume` on it into OUT/run1; returns OUT/run1/latest.pt;
3. `embed`: `pipeline embed OUT/round1 --checkpoint OUT/run1/latest.pt` (embeddings + FAISS
   index, so `pipeline search OUT/round1 "..."` works while round 2 is built);
4. `build_filtered`: the same source built again into OUT/round2 with `--clip-model
   OUT/run1/latest.pt` and the filter params (`low_clip_score` drops, `clip_score` on every row);
5. `train_second`: the same model, samples and options on OUT/round2 into OUT/run2;
6. `evaluate_both`: `trainer eval` of both checkpoints on `eval_sets`, and OUT/bootstrap.json with
   both models' zero-shot results side by side (plus each dataset's status counts).

Tasks pass paths, never data; every task resumes (stage markers, --resume, per-shard
embeddings), so a cleared task or a second run with the same params redoes no finished work. The
first task checks all params (both builds' options, the filter, the eval sets) before building.
The model that scores round 2 was trained on the very pairs it scores, noisy ones included: see
docs/bootstrap.md for what that costs and how to cross-fit instead.

Params:
    out            folder of the whole loop (absolute path): round1/, run1/, round2/, run2/
    query_list, seeds | warc | url_list, allow_network, executor, ray_address, build_options
                   the source and build options of both builds, as in the clip_dataset DAG
    min_clip_score | clip_top_fraction   the round 2 filter (one of them); semdedup_eps too
    device         scoring and embedding device: auto | cpu | cuda
    model, subset, samples, batch_size, train_options   both training runs, as in clip_train
    eval_sets      ImageFolder eval sets (absolute paths, at least one)
    eval_options   other `trainer eval` options, e.g. {"probe": false, "templates": "plain"}
"""

import datetime

from airflow.sdk import DAG, Param, task

from dags._params import STRINGS, build_source_params

_NUMBER = ["null", "number"]


@task(task_id="build_unfiltered", doc_md="check every param, then `pipeline build` OUT/round1")
def build_unfiltered(params=None) -> str:
    from dags._bootstrap import build_unfiltered as run

    return run(dict(params))


@task(task_id="train_first", doc_md="`trainer run --resume` on round 1; returns run1/latest.pt")
def train_first(data: str, params=None) -> str:
    from dags._bootstrap import train

    return train(dict(params), data, "run1")


@task(task_id="embed", doc_md="`pipeline embed` round 1 with the first model; returns the folder")
def embed(data: str, checkpoint: str, params=None) -> str:
    from dags._bootstrap import embed as run

    return run(dict(params), data, checkpoint)


@task(task_id="build_filtered", doc_md="`pipeline build --clip-model run1/latest.pt` OUT/round2")
def build_filtered(checkpoint: str, params=None) -> str:
    from dags._bootstrap import build_filtered as run

    return run(dict(params), checkpoint)


@task(task_id="train_second", doc_md="`trainer run --resume` on round 2; returns run2/latest.pt")
def train_second(data: str, params=None) -> str:
    from dags._bootstrap import train

    return train(dict(params), data, "run2")


@task(task_id="evaluate_both", doc_md="`trainer eval` of both models; writes OUT/bootstrap.json")
def evaluate_both(first: str, second: str, params=None) -> str:
    from dags._bootstrap import evaluate_both as run

    return run(dict(params), first, second)


with DAG(
    dag_id="clip_bootstrap",
    description="Build, train, embed, rebuild with the model as CLIP-score filter, train again",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    max_active_runs=1,  # two runs on the same `out` would race on its markers and checkpoints
    tags=["clipengine"],
    doc_md=__doc__,
    params={
        "out": Param(type="string", minLength=1, description="folder of the loop (absolute)"),
        **build_source_params(),
        "min_clip_score": Param(None, type=_NUMBER, description="drop pairs scoring below"),
        "clip_top_fraction": Param(0.3, type=_NUMBER, description="keep this best fraction"),
        "semdedup_eps": Param(None, type=_NUMBER, description="SemDeDup; null: off"),
        "device": Param("auto", enum=["auto", "cpu", "cuda"], description="scoring device"),
        "model": Param("clip-tiny", type="string", description="open_clip model name"),
        "subset": Param("", type="string", description="named subset; empty: kept"),
        "samples": Param(100_000, type="integer", minimum=1, description="per training run"),
        "batch_size": Param(256, type="integer", minimum=1),
        "train_options": Param({}, type="object", description="other `trainer run` options"),
        "eval_sets": Param([], **STRINGS, description="ImageFolder eval sets (absolute)"),
        "eval_options": Param({}, type="object", description="other `trainer eval` options"),
    },
) as dag:
    round1 = build_unfiltered()
    first = train_first(round1)
    embedded = embed(round1, first)
    round2 = build_filtered(first)
    embedded >> round2
    evaluate_both(first, train_second(round2))
