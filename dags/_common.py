"""What the DAGs' tasks do: Airflow params in, the Python entry points of `pipeline` and
`trainer` out (the same configs their CLIs build: BuildConfig, TrainConfig, EvalOptions).

The DAG files only wire these functions into tasks; this module imports neither Airflow nor
anything heavy at import time, so the scheduler parses the DAGs fast and the functions are
testable without Airflow. Tasks get params (small JSON) and return paths, never data: every
stage reads and writes the dataset folder, resumes from its markers, and is safe to rerun.
"""

import logging
import os

log = logging.getLogger(__name__)

# `clip_dataset` params that map one to one onto BuildConfig fields; everything else the
# pipeline accepts goes in the free-form `build_options` dict.
BUILD_PARAMS = (
    "query_list",
    "seeds",
    "warc",
    "url_list",
    "allow_network",
    "executor",
    "ray_address",
)
# `clip_train` params that launch training as a Ray Train job rather than options of the run.
RAY_PARAMS = ("ray_address", "num_workers", "use_gpu")


def config_error(message: str):
    from manifests.config import ConfigError

    return ConfigError(message)


def blank_to_none(value):
    """The Airflow form sends "" for an emptied text field: read it as not given."""
    return None if isinstance(value, str) and not value.strip() else value


def absolute_path(name: str, path) -> str:
    """An absolute local path or an object-store URI (s3://, gs://)."""
    if not isinstance(path, str) or not path.strip():
        raise config_error(f"param {name!r} is required (an absolute path or a URI)")
    if "://" not in path and not os.path.isabs(path):
        # Tasks run in the worker's working directory, which differs between workers.
        raise config_error(f"param {name!r} must be an absolute path, not {path!r}")
    return path


def build_config(params: dict):
    """The BuildConfig of a `clip_dataset` run: the named params plus `build_options`.
    Unknown or ill-typed options, and options given twice, are ConfigErrors."""
    from pipeline.buildconfig import BuildConfig

    options = params.get("build_options") or {}
    if not isinstance(options, dict):
        raise config_error(f"param 'build_options' must be a JSON object, not {options!r}")
    named = {k: blank_to_none(params[k]) for k in BUILD_PARAMS if k in params}
    named = {k: v for k, v in named.items() if v is not None}
    twice = sorted(set(options) & (set(named) | {"out"}))
    if twice:
        raise config_error(
            f"build_options repeats {', '.join(twice)}; set it with the DAG param of that name"
        )
    out = absolute_path("out", params.get("out"))
    return BuildConfig.from_options({"out": out, **named, **options})


def run_stages(params: dict, stages) -> str:
    """Run (or resume; a finished stage does nothing) `stages` of the build; returns the
    dataset folder."""
    from pipeline.build import run_build

    config = build_config(params)
    log.info("running stage(s) %s of %s", ", ".join(stages), config.out)
    layout = run_build(config, stages=list(stages))
    return str(layout.root)


def write_report(dataset_dir: str) -> str:
    """`pipeline report DIR`: writes DIR/report.html and returns its path."""
    from pipeline.report import write_report as write

    return str(write(absolute_path("dataset_dir", dataset_dir)))


def _object(params: dict, name: str) -> dict:
    value = params.get(name) or {}
    if not isinstance(value, dict):
        raise config_error(f"param {name!r} must be a JSON object, not {value!r}")
    return value


def train_options(params: dict) -> tuple[dict, dict]:
    """(TrainConfig options, Ray launch options) of a `clip_train` run. `resume` makes the task
    idempotent: a rerun continues from RUN_DIR/latest.pt, or reports the finished run."""
    options = dict(_object(params, "train_options"))
    ray = {k: options.pop(k) for k in RAY_PARAMS if k in options}  # also allowed there
    ray.update({k: blank_to_none(params[k]) for k in RAY_PARAMS if blank_to_none(params.get(k))})
    options.update(
        data=absolute_path("data", params.get("data")),
        out=absolute_path("run_dir", params.get("run_dir")),
        resume=True,
    )
    for key in ("subset", "model", "samples", "batch_size"):
        if blank_to_none(params.get(key)) is not None:
            options[key] = params[key]
    return options, ray


def run_training(params: dict) -> str:
    """Train (or resume) and return the checkpoint to evaluate: RUN_DIR/latest.pt."""
    from trainer.launch import launch, resolve_config

    options, ray = train_options(params)
    log.info("training %s on %s", options["out"], options["data"])
    launch(resolve_config(options), **ray)
    checkpoint = os.path.join(options["out"], "latest.pt")
    from manifests.storage import location  # not at import: DAG files import nothing heavy

    if not location(checkpoint).is_file():
        raise RuntimeError(f"training wrote no checkpoint at {checkpoint}")
    return checkpoint


def eval_options(params: dict, checkpoint: str):
    """The EvalOptions of evaluating `checkpoint` on the params' eval sets and dataset."""
    from trainer.evaluation.cli import EvalOptions

    out = blank_to_none(params.get("eval_out")) or os.path.join(params["run_dir"], "eval.json")
    sets = params.get("eval_sets") or []
    if not isinstance(sets, list):
        raise config_error(f"param 'eval_sets' must be a list of folders, not {sets!r}")
    sets = [absolute_path("eval_sets[]", path) for path in sets]
    values = {
        **_object(params, "eval_options"),
        "checkpoint": checkpoint,
        "eval_set": sets,
        "data": params["data"],
        "out": out,
    }
    return EvalOptions.from_dict(values)


def run_evaluation(params: dict, checkpoint: str) -> str:
    """Evaluate `checkpoint` on the eval sets (zero-shot, probes) and the dataset's held-out
    rows (retrieval, clean vs overlap); returns the results JSON."""
    from trainer.evaluation.cli import evaluate_and_write

    opts = eval_options(params, checkpoint)
    evaluate_and_write(opts)
    return opts.out
