"""What the DAGs' tasks do: Airflow params in, the entry points of `pipeline` and `trainer` out.

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
    "query_list", "seeds", "warc", "url_list", "allow_network", "executor", "ray_address",
)  # fmt: skip


def config_error(message: str):
    from pipeline.config import ConfigError

    return ConfigError(message)


def blank_to_none(value):
    """The Airflow form sends "" for an emptied text field: read it as not given."""
    return None if isinstance(value, str) and not value.strip() else value


def absolute_path(name: str, path) -> str:
    if not isinstance(path, str) or not path.strip():
        raise config_error(f"param {name!r} is required (an absolute path)")
    if not os.path.isabs(path):
        # Tasks run in the worker's working directory, which differs between workers.
        raise config_error(f"param {name!r} must be an absolute path, not {path!r}")
    return path


def build_config(params: dict):
    """The BuildConfig of a `clip_dataset` run: the named params plus `build_options`.
    Unknown or ill-typed options, and options given twice, are ConfigErrors."""
    from pipeline.buildconfig import BuildConfig
    from pipeline.config import from_dict

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
    return from_dict(BuildConfig, {"out": out, **named, **options})


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


def options_argv(options: dict, name: str) -> list[str]:
    """A JSON object of options as command-line flags: {"log_every": 5, "compile": false,
    "probe_train": ["a", "b"]} -> --log-every 5 --no-compile --probe-train a --probe-train b."""
    if not isinstance(options, dict):
        raise config_error(f"param {name!r} must be a JSON object, not {options!r}")
    argv = []
    for key, value in options.items():
        flag = "--" + str(key).replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def _run_cli(argv: list[str]) -> None:
    from trainer.cli import main

    log.info("trainer %s", " ".join(argv))
    status = main(argv)
    if status != 0:
        # The CLI printed the one-line reason to stderr, which is in the task log above.
        raise RuntimeError(f"`trainer {argv[0]}` ended with status {status}; see the log above")


def train_argv(params: dict) -> list[str]:
    """`trainer run` arguments of a `clip_train` run. --resume makes the task idempotent: a
    rerun continues from RUN_DIR/latest.pt, or reports the finished run."""
    argv = ["run", "--data", absolute_path("data", params.get("data"))]
    argv += ["--out", absolute_path("run_dir", params.get("run_dir")), "--resume"]
    for key in ("subset", "model", "samples", "batch_size"):
        value = blank_to_none(params.get(key))
        if value is not None:
            argv += ["--" + key.replace("_", "-"), str(value)]
    if blank_to_none(params.get("ray_address")) is not None:
        argv += ["--ray-address", params["ray_address"]]
        argv += options_argv({"num_workers": params.get("num_workers"),
                              "use_gpu": params.get("use_gpu") or None}, "ray")  # fmt: skip
    return argv + options_argv(params.get("train_options") or {}, "train_options")


def run_training(params: dict) -> str:
    """Train (or resume) and return the checkpoint to evaluate: RUN_DIR/latest.pt."""
    argv = train_argv(params)
    _run_cli(argv)
    checkpoint = os.path.join(params["run_dir"], "latest.pt")
    if not os.path.isfile(checkpoint):
        raise RuntimeError(f"`trainer run` wrote no checkpoint at {checkpoint}")
    return checkpoint


def eval_argv(params: dict, checkpoint: str) -> tuple[list[str], str]:
    out = blank_to_none(params.get("eval_out")) or os.path.join(params["run_dir"], "eval.json")
    argv = ["eval", "--checkpoint", checkpoint, "--data", params["data"], "--out", out]
    sets = params.get("eval_sets") or []
    if not isinstance(sets, list):
        raise config_error(f"param 'eval_sets' must be a list of folders, not {sets!r}")
    for path in sets:
        argv += ["--eval-set", absolute_path("eval_sets[]", path)]
    return argv + options_argv(params.get("eval_options") or {}, "eval_options"), out


def run_evaluation(params: dict, checkpoint: str) -> str:
    """Evaluate `checkpoint` on the eval sets (zero-shot, probes) and the dataset's held-out
    rows (retrieval, clean vs overlap); returns the results JSON."""
    argv, out = eval_argv(params, checkpoint)
    _run_cli(argv)
    return out
