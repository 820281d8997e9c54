"""The conventions both CLIs (`pipeline`, `trainer`) share, so they read alike:

- flags generated from config fields (manifests.config.option): `--x/--no-x` for booleans,
  repeatable list options (`--eval-set A --eval-set B`, or `--eval-set A B`), the field's
  default in the help, one flag per option in one place;
- `-v/--verbose` (debug logging and a traceback on errors) and `-q/--quiet` (warnings only);
- one error format: `<prog> <command>: error: <one line>`, exit status 2 for bad input
  (ConfigError and the user errors a CLI names), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import traceback
import typing
from collections.abc import Callable

from manifests.config import ConfigError, flag, leaf_fields

log = logging.getLogger(__name__)


class UsageError(ConfigError):
    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (UsageError), not usage + message."""

    def error(self, message):
        raise UsageError(self.prog, f"{message} (see `{self.prog} --help`)")


def _scalar(tp):
    """The item type of a field type: Optional[int] -> int, list[str] -> str."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (list, tuple):
        return _scalar(args[0]) if args else str
    if args:
        return _scalar(args[0])
    return tp


def _is_list(tp) -> bool:
    if typing.get_origin(tp) in (list, tuple):
        return True
    return any(_is_list(a) for a in typing.get_args(tp) if a is not type(None))


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value == [] or value == "":
        return "none"
    return str(value)


class _SplitExtend(argparse.Action):
    """A repeatable list option whose values may also be joined by `sep` ("en,fr")."""

    def __init__(self, *args, sep: str = ",", convert=str, **kwargs):
        self.sep, self.convert = sep, convert
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, self.dest, None) or [])
        for value in values:
            for item in (v.strip() for v in value.split(self.sep)):
                if not item:
                    continue
                try:
                    items.append(self.convert(item))
                except ValueError:
                    parser.error(f"{option_string}: {item!r} is not {self.convert.__name__}")
        setattr(namespace, self.dest, items)


def add_option(parser, name: str, f: dataclasses.Field, tp) -> None:
    """One flag for config field `f` (flat name `name`, type `tp`). Defaults are SUPPRESSed:
    only options given on the command line reach the config, whose defaults are the only ones."""
    meta = f.metadata
    text = meta.get("help", "")
    if "default" not in text:  # a help text may say its default better in its own words
        text += f" (default: {_default_text(f)})"
    text = text.replace("%", "%%")
    kwargs: dict = {"dest": name, "help": text, "default": argparse.SUPPRESS}
    required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    if required:
        kwargs["required"] = True
    item = _scalar(tp)
    if item is bool and not _is_list(tp):
        parser.add_argument(flag(name), action=argparse.BooleanOptionalAction, **kwargs)
        return
    if meta.get("choices"):
        kwargs["choices"] = meta["choices"]  # argparse shows them in place of a metavar
    else:
        kwargs["metavar"] = meta.get("metavar") or name.upper()
    kwargs["type"] = item if item in (int, float, str) else str
    if _is_list(tp):
        kwargs["nargs"] = "+"
        if meta.get("sep"):
            kwargs.update(action=_SplitExtend, sep=meta["sep"], convert=kwargs.pop("type"))
        else:
            kwargs["action"] = "extend"
    parser.add_argument(flag(name), **kwargs)


def add_config_options(parser, cls, skip: tuple[str, ...] = (), only: tuple[str, ...] = ()):
    """A flag for every CLI option of config `cls` (nested sections become argument groups,
    titled by their field's help), except flat names in `skip` (or outside `only`)."""
    hints = {cls: typing.get_type_hints(cls)}
    groups: dict[tuple[str, ...], object] = {(): parser}
    for name, (path, f) in leaf_fields(cls).items():
        if not f.metadata.get("cli", True) or name in skip or (only and name not in only):
            continue
        owner, section = cls, None
        for part in path[:-1]:
            section = next(x for x in dataclasses.fields(owner) if x.name == part)
            owner = hints.setdefault(owner, typing.get_type_hints(owner))[part]
            hints.setdefault(owner, typing.get_type_hints(owner))
        key = path[:-1]
        if key not in groups:
            groups[key] = parser.add_argument_group(section.metadata.get("help") or key[-1])
        add_option(groups[key], name, f, hints[owner][f.name])


def given(args: argparse.Namespace, cls) -> dict:
    """The flat options of `cls` that the command line gave (the others keep their defaults)."""
    names = set(leaf_fields(cls))
    return {k: v for k, v in vars(args).items() if k in names}


def add_command(sub, name: str, handler: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose handler, "module:function", is imported only when it runs (so
    `--help` imports no command code)."""
    module, _, func = handler.partition(":")

    def run(args):
        import importlib

        return getattr(importlib.import_module(module), func)(args)

    parser = sub.add_parser(name, **kwargs)
    parser.set_defaults(handler=run)
    add_verbosity(parser, default=argparse.SUPPRESS)  # also after the subcommand
    return parser


def add_verbosity(parser, default=False) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="debug logging, and a traceback with an error",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="warnings and errors only"
    )


def configure_logging(verbose: bool = False, quiet: bool = False, level: int | None = None):
    if level is None:
        level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, datefmt="%H:%M:%S")


def _verbosity(argv: list[str]) -> tuple[bool, bool]:
    """-v / -q anywhere before `--` (so they work before or after the subcommand)."""
    head = argv[: argv.index("--")] if "--" in argv else argv
    return ("-v" in head or "--verbose" in head), ("-q" in head or "--quiet" in head)


def run_cli(
    prog: str,
    parser: argparse.ArgumentParser,
    argv: list[str] | None = None,
    user_errors: Callable[[], tuple] | None = None,
    log_level: int | None = None,
) -> int:
    """Parse `argv`, run `args.handler(args)` (each subcommand's parser sets its handler with
    `set_defaults(handler=...)`), and turn bad input into one line on
    stderr with exit status 2 (a traceback too with -v). `user_errors()`: exception types besides
    ConfigError that are the user's doing (e.g. duckdb.Error for bad SQL); a function, so they
    are imported only when something went wrong."""
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose, quiet = _verbosity(argv)
    commands = {
        name
        for a in parser._actions
        if isinstance(a, argparse._SubParsersAction)
        for name in a.choices
    }
    command = next((w for w in argv if not w.startswith("-")), "")
    command = command if command in commands else ""
    try:
        args = parser.parse_args(argv)
        command = args.command
        configure_logging(verbose, quiet, log_level)
        return args.handler(args) or 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        if not isinstance(exc, (ConfigError, *(user_errors() if user_errors else ()))):
            raise  # a bug: its traceback is what a maintainer needs
        if verbose:
            traceback.print_exc()
        where = f"{prog} {command}".strip()
        message = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, UsageError) and exc.prog != prog:  # a subcommand's parser said it
            where = exc.prog
        elif isinstance(exc, UsageError):  # e.g. unrecognized arguments after the subcommand
            message = message.replace(f"`{prog} --help`", f"`{where} --help`")
        print(f"{where}: error: {message}", file=sys.stderr)
        return 2
