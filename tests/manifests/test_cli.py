"""The conventions both CLIs share: generated flags, one error format, -v and -q."""

import argparse
from dataclasses import dataclass

import pytest

from manifests.cli import Parser, add_command, add_config_options, add_verbosity, given, run_cli
from manifests.config import ConfigError, check_fields, from_flat, option


@dataclass
class Options:
    count: int = option(2, help="how many")
    loud: bool = option(True, help="say it")
    langs: list[str] = option(default_factory=list, sep=",", help="languages")
    shots: list[int] = option(default_factory=lambda: [1], sep=",", help="shots")
    sets: list[str] = option(default_factory=list, flag="set", metavar="DIR", help="folders")

    def __post_init__(self):
        check_fields(self)


def handle(args):
    if args.count < 0:
        raise ConfigError("count must not be negative")
    if args.count == 13:
        raise RuntimeError("a bug")
    return 0


def _parser():
    parser = Parser(prog="tool")
    add_verbosity(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_config_options(add_command(sub, "go", "tests.manifests.test_cli:handle"), Options)
    return parser


def test_flags_come_from_the_fields_and_only_given_ones_reach_the_config():
    args = _parser().parse_args(
        [
            "go",
            "--no-loud",
            "--langs",
            "en,fr",
            "--langs",
            "de",
            "--set",
            "a",
            "b",
            "--set",
            "c",
            "--shots",
            "1,4",
        ]
    )
    values = given(args, Options)
    assert values == {
        "loud": False,
        "langs": ["en", "fr", "de"],
        "set": ["a", "b", "c"],
        "shots": [1, 4],
    }
    options = from_flat(Options, values)  # flat names: the flag without dashes
    assert (options.sets, options.count) == (["a", "b", "c"], 2)  # count: the field's default
    assert given(_parser().parse_args(["go"]), Options) == {}


def test_bad_input_is_one_line_with_the_command_and_status_2(capsys):
    assert run_cli("tool", _parser(), ["go", "--count", "-1"]) == 2
    assert capsys.readouterr().err == "tool go: error: count must not be negative\n"
    assert run_cli("tool", _parser(), ["go", "--count", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tool go: error: argument --count: invalid int value: 'x'")
    assert run_cli("tool", _parser(), ["go", "--shots", "1,x"]) == 2
    assert "'x' is not int" in capsys.readouterr().err
    assert run_cli("tool", _parser(), ["go", "--nope"]) == 2
    assert "see `tool go --help`" in capsys.readouterr().err


def test_v_adds_the_traceback_and_a_bug_is_never_passed_off_as_bad_input(capsys):
    assert run_cli("tool", _parser(), ["go", "-v", "--count", "-1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith(
        "tool go: error: count must not be negative"
    )
    with pytest.raises(RuntimeError, match="a bug"):
        run_cli("tool", _parser(), ["go", "--count", "13"])


def test_both_clis_follow_the_conventions():
    from pipeline.cli import build_parser as pipeline_parser
    from trainer.cli import build_parser as trainer_parser

    build = pipeline_parser().parse_args(
        ["build", "--out", "d", "--no-webdataset", "-q", "--eval-set", "a", "--eval-set", "b"]
    )
    assert (build.webdataset, build.eval_set, build.quiet) == (False, ["a", "b"], True)
    run = trainer_parser().parse_args(["run", "--no-compile", "--eval-set", "a", "b", "-v"])
    assert (run.compile, run.eval_set, run.verbose) == (False, ["a", "b"], True)
    ev = trainer_parser().parse_args(
        ["eval", "--checkpoint", "c", "--no-probe", "--device", "cuda:1"]
    )
    assert (ev.probe, ev.device) == (False, "cuda:1")
    with pytest.raises(ConfigError, match="--device must be auto"):
        pipeline_parser().parse_args(["embed", "d", "--checkpoint", "c", "--device", "gpu"])


def test_bash_completion_lists_commands_flags_and_choices(capsys):
    from pipeline.cli import main

    assert main(["completion"]) == 0
    script = capsys.readouterr().out
    assert "complete -o default -F _clipengine_pipeline pipeline" in script
    assert "complete -o default -F _clipengine_trainer trainer" in script
    assert "--max-pages" in script and "--probe-shots" in script and "build*)" in script
    assert "--executor) COMPREPLY=($(compgen -W 'auto ray local'" in script


def test_argparse_namespace_defaults_do_not_leak():
    assert isinstance(_parser(), argparse.ArgumentParser)
