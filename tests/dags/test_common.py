"""What the DAG tasks hand to the entry points: params -> BuildConfig and `trainer` argv, checked
against the real config classes and argument parsers (no Airflow needed)."""

import argparse

import pytest

from dags._common import build_config, eval_argv, options_argv, run_training, train_argv
from pipeline.config import ConfigError


def _params(tmp_path, **overrides) -> dict:
    values = dict(out=str(tmp_path / "ds"), query_list=None, seeds=["http://127.0.0.1:1/"],
                  warc=[], url_list=None, allow_network=["127.0.0.1/32"], executor="local",
                  ray_address="", build_options={"max_pages": 5, "languages": ["en"]})  # fmt: skip
    values.update(overrides)
    return values


def test_build_config_takes_the_named_params_and_build_options(tmp_path):
    config = build_config(_params(tmp_path))
    assert (config.out, config.seeds, config.executor) == (
        str(tmp_path / "ds"), ["http://127.0.0.1:1/"], "local",
    )  # fmt: skip
    assert (config.max_pages, config.languages, config.allow_network) == (
        5, ["en"], ["127.0.0.1/32"],
    )  # fmt: skip
    assert config.ray_address is None  # the UI's emptied text field


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"build_options": {"max_pagez": 5}}, "unknown option(s) max_pagez"),
        ({"build_options": {"max_pages": "5"}}, "max_pages must be int"),
        ({"build_options": {"seeds": ["http://x/"]}}, "build_options repeats seeds"),
        ({"build_options": {"out": "/elsewhere"}}, "build_options repeats out"),
        ({"build_options": ["max_pages"]}, "must be a JSON object"),
        ({"out": "relative/ds"}, "must be an absolute path"),
        ({"out": ""}, "'out' is required"),
        ({"url_list": "/tmp/urls.csv"}, "exactly one source"),
        ({"executor": "dask"}, "executor must be one of ray, local, auto"),
    ],
)
def test_bad_params_are_config_errors(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_config(_params(tmp_path, **overrides))


def test_options_argv_spells_flags_like_the_clis():
    argv = options_argv({"log_every": 5, "compile": False, "probe": True, "lr": 1e-3,
                         "probe_train": ["a", "b"], "warmup": None}, "x")  # fmt: skip
    assert argv == ["--log-every", "5", "--no-compile", "--probe", "--lr", "0.001",
                    "--probe-train", "a", "--probe-train", "b"]  # fmt: skip


def test_train_argv_parses_with_the_trainer_cli(tmp_path):
    from trainer.cli import build_parser

    params = dict(data=str(tmp_path / "ds"), subset="", model="clip-tiny",
                  run_dir=str(tmp_path / "run"), samples=64, batch_size=8, ray_address="auto",
                  num_workers=2, use_gpu=False,
                  train_options={"workers": 0, "compile": False, "lr": 0.001})  # fmt: skip
    args = vars(build_parser().parse_args(train_argv(params)))
    assert args == dict(command="run", data=str(tmp_path / "ds"), out=str(tmp_path / "run"),
                        resume=True, model="clip-tiny", samples=64, batch_size=8,
                        ray_address="auto", num_workers=2, workers=0, compile=False, lr=0.001)  # fmt: skip


def test_eval_argv_parses_with_the_eval_cli(tmp_path):
    from trainer.evaluation.cli import add_eval_arguments

    params = dict(data=str(tmp_path / "ds"), run_dir=str(tmp_path / "run"), eval_out=None,
                  eval_sets=[str(tmp_path / "pets"), str(tmp_path / "cars")],
                  eval_options={"probe": False, "templates": "plain"})  # fmt: skip
    argv, out = eval_argv(params, str(tmp_path / "run" / "latest.pt"))
    assert argv[0] == "eval" and out == str(tmp_path / "run" / "eval.json")
    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    args = parser.parse_args(argv[1:])
    assert args.eval_set == [str(tmp_path / "pets"), str(tmp_path / "cars")]
    assert (args.checkpoint, args.data, args.out) == (
        str(tmp_path / "run" / "latest.pt"), str(tmp_path / "ds"), out,
    )  # fmt: skip
    assert (args.probe, args.templates) == (False, "plain")


def test_a_failing_trainer_run_fails_the_task(tmp_path, capsys):
    params = dict(data=str(tmp_path / "no-such-dataset"), run_dir=str(tmp_path / "run"),
                  samples=8, batch_size=4)  # fmt: skip
    with pytest.raises(RuntimeError, match="`trainer run` ended with status 2"):
        run_training(params)
    assert "trainer: error:" in capsys.readouterr().err
