"""Typed configs: dataclasses built from dicts (CLI, JSON, Airflow params) with clear errors for
unknown or ill-typed options."""

import dataclasses
import types
import typing
from typing import Any


class ConfigError(ValueError):
    pass


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_value(name: str, value: Any, tp) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(name, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{name}: bad value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list, not {type(value).__name__} ({value!r})")
        item_type = args[0] if args else Any
        return [_check_value(f"{name}[{i}]", v, item_type) for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, not a boolean")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(
            f"{name} must be {_type_name(tp)}, not {type(value).__name__} ({value!r})"
        )
    return value


def from_dict(cls, values: dict):
    """Build dataclass `cls` from `values`; unknown keys and wrong types are ConfigErrors."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; "
            f"allowed: {', '.join(sorted(fields))}"
        )
    checked = {k: _check_value(k, v, hints[k]) for k, v in values.items()}
    try:
        return cls(**checked)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)
