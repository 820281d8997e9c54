"""Typed configs, shared by both halves: one error type for bad input, one type checker, and the
field metadata both CLIs generate their flags from (manifests.cli).

A config is a dataclass whose fields are made with `option(...)`; its `__post_init__` calls
`check_fields(self)`, so a config built from Python, a CLI, JSON or Airflow params is checked the
same way. A config may nest others (a build has `net`, `text`, `images`, ... sections); every leaf
field also has a flat name, unique over the whole tree (the flag without its dashes), which is
what CLIs, Airflow params and run.json speak.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING
from typing import Any


class ConfigError(ValueError):
    """Bad input from a user (an option, a file, a dataset folder): the CLIs print it as one line
    and exit with status 2. Anything else that goes wrong is a bug and keeps its traceback."""


def option(
    default=MISSING,
    *,
    help: str,  # noqa: A002 - argparse's word
    flag: str | None = None,
    default_factory=MISSING,
    choices: tuple | None = None,
    metavar: str | None = None,
    runtime: bool = False,
    cli: bool = True,
    sep: str | None = None,
):
    """A dataclass field with what a CLI needs to offer it.

    flag: the flat name as a flag (default: the field name with dashes), e.g. "max-image-bytes"
    for `images.max_bytes`; runtime: the option changes how a build runs, not what it makes (a
    rerun may change it); cli: offered as a flag (False: config files and params only); sep: a
    list option whose values may also be given joined by this separator ("en,fr")."""
    metadata = dict(
        help=help, flag=flag, choices=choices, metavar=metavar, runtime=runtime, cli=cli, sep=sep
    )
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flat_name(f: dataclasses.Field) -> str:
    return (f.metadata.get("flag") or f.name).replace("-", "_")


def flag(name: str) -> str:
    """The command-line flag of a flat option name: max_pages -> --max-pages."""
    return "--" + name.replace("_", "-")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def check_value(name: str, value: Any, tp) -> Any:
    """`value` as type `tp` (ints widen to float; a dict becomes a nested config), or a
    ConfigError that names the option and what it accepts."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return check_value(name, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{flag(name)}: bad value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(
                f"{flag(name)} must be a list, not {type(value).__name__} ({value!r})"
            )
        item = args[0] if args else Any
        return [check_value(name, v, item) for v in value]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return from_dict(tp, value)
        if not isinstance(value, tp):
            raise ConfigError(f"{name} must be a {tp.__name__} section, not {value!r}")
        return value
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{flag(name)} must be a number, not a boolean ({value!r})")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(
            f"{flag(name)} must be {_type_name(tp)}, not {type(value).__name__} ({value!r})"
        )
    return value


def check_fields(obj) -> None:
    """Check (and coerce, see check_value) every field of a config; for `__post_init__`."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = check_value(flat_name(f), getattr(obj, f.name), hints[f.name])
        choices = f.metadata.get("choices")
        if choices and value is not None and value not in choices:
            allowed = ", ".join(str(c) for c in choices)
            raise ConfigError(f"{flag(flat_name(f))} must be one of {allowed}, not {value!r}")
        object.__setattr__(obj, f.name, value)  # works on frozen configs too


def from_dict(cls, values: dict):
    """Build config `cls` from `values` (field names; a nested section is a dict); unknown keys
    and wrong types are ConfigErrors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{cls.__name__} options must be a mapping, not {values!r}")
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; "
            f"allowed: {', '.join(sorted(fields))}"
        )
    try:
        return cls(**values)
    except TypeError as exc:  # a required option is missing
        raise ConfigError(f"{cls.__name__}: {exc}") from None


# --- the flat namespace of a nested config ---------------------------------------------------


def leaf_fields(cls, path: tuple[str, ...] = ()) -> dict[str, tuple[tuple[str, ...], Any]]:
    """flat name -> (field path, dataclasses.Field) for every leaf option of `cls`."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[tuple[str, ...], Any]] = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            nested = leaf_fields(hints[f.name], (*path, f.name))
            clash = sorted(set(nested) & set(out))
            if clash:
                raise TypeError(f"{cls.__name__}: flat option names used twice: {clash}")
            out.update(nested)
        else:
            name = flat_name(f)
            if name in out:
                raise TypeError(f"{cls.__name__}: flat option name {name!r} used twice")
            out[name] = ((*path, f.name), f)
    return out


def from_flat(cls, values: dict):
    """Build nested config `cls` from flat option names (max_pages, max_image_bytes, ...)."""
    leaves = leaf_fields(cls)
    unknown = sorted(set(values) - set(leaves))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(leaves))}"
        )
    nested: dict = {}
    for name, value in values.items():
        path = leaves[name][0]
        target = nested
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return from_dict(cls, nested)


def to_flat(obj) -> dict:
    """flat option name -> value of a (nested) config, in field order."""
    out = {}
    for name, (path, _) in leaf_fields(type(obj)).items():
        value = obj
        for part in path:
            value = getattr(value, part)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def runtime_options(cls) -> set[str]:
    """Flat names of the options that do not change what is built (see `option(runtime=)`)."""
    return {name for name, (_, f) in leaf_fields(cls).items() if f.metadata.get("runtime")}


DEVICES = "auto | cpu | cuda | cuda:N"


def check_device(value: str) -> str:
    """The one device grammar of both CLIs: auto (cuda when present), cpu, cuda, cuda:N."""
    index = value[5:] if value.startswith("cuda:") else None
    if value in ("auto", "cpu", "cuda") or (index is not None and index.isdigit()):
        return value
    raise ConfigError(f"--device must be {DEVICES}, not {value!r}")
