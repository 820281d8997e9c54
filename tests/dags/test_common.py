"""What the DAG tasks hand to the entry points: params -> BuildConfig, TrainConfig and
EvalOptions, the configs the CLIs build (no Airflow needed)."""

import pytest

from dags._common import build_config, eval_options, run_training, train_options
from manifests.config import ConfigError


def _params(tmp_path, **overrides) -> dict:
    values = dict(
        out=str(tmp_path / "ds"),
        query_list=None,
        seeds=["http://127.0.0.1:1/"],
        warc=[],
        url_list=None,
        allow_network=["127.0.0.1/32"],
        executor="local",
        ray_address="",
        build_options={"max_pages": 5, "languages": ["en"]},
    )
    values.update(overrides)
    return values


def test_build_config_takes_the_named_params_and_build_options(tmp_path):
    config = build_config(_params(tmp_path))
    assert (config.out, config.source.seeds, config.execution.kind) == (
        str(tmp_path / "ds"),
        ["http://127.0.0.1:1/"],
        "local",
    )
    assert (config.source.max_pages, config.text.languages, config.net.allow_networks) == (
        5,
        ["en"],
        ["127.0.0.1/32"],
    )
    assert config.execution.ray_address is None  # the UI's emptied text field


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"build_options": {"max_pagez": 5}}, "unknown option(s) max_pagez"),
        ({"build_options": {"max_pages": "5"}}, "--max-pages must be int"),
        ({"build_options": {"seeds": ["http://x/"]}}, "build_options repeats seeds"),
        ({"build_options": {"out": "/elsewhere"}}, "build_options repeats out"),
        ({"build_options": ["max_pages"]}, "must be a JSON object"),
        ({"out": "relative/ds"}, "must be an absolute path"),
        ({"out": ""}, "'out' is required"),
        ({"url_list": "/tmp/urls.csv"}, "exactly one source"),
        ({"executor": "dask"}, "--executor must be one of auto, ray, local"),
    ],
)
def test_bad_params_are_config_errors(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_config(_params(tmp_path, **overrides))


def test_train_options_are_a_trainconfig_with_resume(tmp_path):
    from trainer.config import TrainConfig

    params = dict(
        data=str(tmp_path / "ds"),
        subset="",
        model="clip-tiny",
        run_dir=str(tmp_path / "run"),
        samples=64,
        batch_size=8,
        ray_address="auto",
        num_workers=2,
        use_gpu=False,
        train_options={"workers": 0, "compile": False, "lr": 0.001},
    )
    options, ray = train_options(params)
    assert options == dict(
        data=str(tmp_path / "ds"),
        out=str(tmp_path / "run"),
        resume=True,
        model="clip-tiny",
        samples=64,
        batch_size=8,
        workers=0,
        compile=False,
        lr=0.001,
    )
    assert ray == {"ray_address": "auto", "num_workers": 2}
    cfg = TrainConfig.from_dict(options)
    assert (cfg.resume, cfg.samples, cfg.lr, cfg.subset) == (True, 64, 0.001, "")
    with pytest.raises(ConfigError, match="unknown option.*lrr"):
        TrainConfig.from_dict(train_options({**params, "train_options": {"lrr": 1}})[0])


def test_eval_options_are_evaloptions(tmp_path):
    params = dict(
        data=str(tmp_path / "ds"),
        run_dir=str(tmp_path / "run"),
        eval_out=None,
        eval_sets=[str(tmp_path / "pets"), str(tmp_path / "cars")],
        eval_options={"probe": False, "templates": "plain"},
    )
    opts = eval_options(params, str(tmp_path / "run" / "latest.pt"))
    assert opts.out == str(tmp_path / "run" / "eval.json")
    assert opts.eval_set == [str(tmp_path / "pets"), str(tmp_path / "cars")]
    assert (opts.checkpoint, opts.data) == (
        str(tmp_path / "run" / "latest.pt"),
        str(tmp_path / "ds"),
    )
    assert (opts.probe, opts.templates, opts.retrieval) == (False, "plain", True)
    with pytest.raises(ConfigError, match="unknown option.*probes"):
        eval_options({**params, "eval_options": {"probes": False}}, "c.pt")


def test_a_failing_trainer_run_fails_the_task_with_the_reason(tmp_path):
    params = dict(
        data=str(tmp_path / "no-such-dataset"),
        run_dir=str(tmp_path / "run"),
        samples=8,
        batch_size=4,
    )
    with pytest.raises(ConfigError, match="no-such-dataset does not exist"):
        run_training(params)
