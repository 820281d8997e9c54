"""`clip_train`: train a CLIP model on a built dataset, then evaluate it.

    train >> evaluate

`train` runs `trainer run --data DATA --out RUN_DIR --resume ...` (trainer.cli.main), so a
cleared and rerun task continues from RUN_DIR/latest.pt, or finds the run finished; it returns
the checkpoint path. `evaluate` runs `trainer eval --checkpoint RUN_DIR/latest.pt --eval-set ...
--data DATA --out EVAL_OUT` and returns the results file. With `ray_address` training runs as a
Ray Train job on the cluster; DATA and RUN_DIR must then be on a filesystem every node sees.

Params:
    data           dataset folder from `pipeline build` / the clip_dataset DAG (absolute path)
    subset         named subset of the dataset ("" = kept)
    model          open_clip architecture or clip-tiny
    run_dir        run folder (absolute path)
    samples, batch_size   training samples in all, samples per rank per step
    eval_sets      ImageFolder eval sets (absolute paths)
    eval_out       results JSON; null: RUN_DIR/eval.json
    ray_address, num_workers, use_gpu   a Ray Train job instead of one process
    train_options  other `trainer run` options, e.g. {"lr": 0.001, "precision": "bf16"}
    eval_options   other `trainer eval` options, e.g. {"probe": false, "templates": "plain"}
"""

import datetime

from airflow.sdk import DAG, Param, task


@task(task_id="train", doc_md="`trainer run --resume ...`; returns RUN_DIR/latest.pt")
def train(params=None) -> str:
    from dags._common import run_training

    return run_training(dict(params))


@task(task_id="evaluate", doc_md="`trainer eval --checkpoint ...`; returns the results JSON")
def evaluate(checkpoint: str, params=None) -> str:
    from dags._common import run_evaluation

    return run_evaluation(dict(params), checkpoint)


with DAG(
    dag_id="clip_train",
    description="Train a CLIP model on a clipengine dataset, then evaluate it zero-shot",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    max_active_runs=1,  # two runs on the same run_dir would race on its checkpoints
    tags=["clipengine"],
    doc_md=__doc__,
    params={
        "data": Param(type="string", minLength=1, description="dataset folder (absolute path)"),
        "subset": Param("", type="string", description="named subset; empty: kept"),
        "model": Param("clip-tiny", type="string", description="open_clip model name"),
        "run_dir": Param(type="string", minLength=1, description="run folder (absolute path)"),
        "samples": Param(100_000, type="integer", minimum=1),
        "batch_size": Param(256, type="integer", minimum=1),
        "eval_sets": Param([], type="array", items={"type": "string"}),
        "eval_out": Param(None, type=["null", "string"], description="default RUN_DIR/eval.json"),
        "ray_address": Param(None, type=["null", "string"], description="Ray cluster address"),
        "num_workers": Param(None, type=["null", "integer"], minimum=1),
        "use_gpu": Param(False, type="boolean"),
        "train_options": Param({}, type="object", description="other `trainer run` options"),
        "eval_options": Param({}, type="object", description="other `trainer eval` options"),
    },
) as dag:
    evaluate(train())
