"""The one typed-config helper both halves use: checks, nesting and the flat option names."""

from dataclasses import dataclass

import pytest

from manifests.config import (
    ConfigError,
    check_device,
    check_fields,
    from_dict,
    from_flat,
    leaf_fields,
    option,
    runtime_options,
    to_flat,
)


@dataclass
class Inner:
    size: int = option(3, help="a size")
    ratio: float | None = option(None, help="a ratio")
    names: list[str] = option(default_factory=list, flag="name", help="names")

    def __post_init__(self):
        check_fields(self)


@dataclass
class Outer:
    out: str = option(help="required")
    fast: bool = option(False, runtime=True, help="a runtime switch")
    inner: Inner = option(default_factory=Inner, help="a section")
    mode: str = option("a", choices=("a", "b"), help="a choice")

    def __post_init__(self):
        check_fields(self)


def test_fields_are_checked_and_coerced():
    assert Inner(ratio=2).ratio == 2.0 and isinstance(Inner(ratio=2).ratio, float)
    for bad, words in [
        ({"size": "3"}, "--size must be int"),
        ({"size": True}, "not a boolean"),
        ({"names": "x"}, "--name must be a list"),
        ({"names": [1]}, "--name must be str"),
        ({"ratio": "1"}, "--ratio must be"),
    ]:
        with pytest.raises(ConfigError, match=words):
            Inner(**bad)
    with pytest.raises(ConfigError, match="--mode must be one of a, b, not 'c'"):
        Outer(out="x", mode="c")


def test_sections_nest_and_have_flat_names():
    assert list(leaf_fields(Outer)) == ["out", "fast", "size", "ratio", "name", "mode"]
    config = from_flat(Outer, {"out": "d", "size": 5, "name": ["a"]})
    assert (config.inner.size, config.inner.names, config.mode) == (5, ["a"], "a")
    assert to_flat(config) == {
        "out": "d",
        "fast": False,
        "size": 5,
        "ratio": None,
        "name": ["a"],
        "mode": "a",
    }
    assert from_dict(Outer, {"out": "d", "inner": {"size": 7}}).inner.size == 7
    assert runtime_options(Outer) == {"fast"}


def test_unknown_and_missing_options_say_what_is_allowed():
    with pytest.raises(ConfigError, match="unknown option.*sise; allowed: .*size"):
        from_flat(Outer, {"out": "d", "sise": 1})
    with pytest.raises(ConfigError, match="unknown option.*bogus for Outer; allowed: fast"):
        from_dict(Outer, {"out": "d", "bogus": 1})
    with pytest.raises(ConfigError, match="out"):
        from_dict(Outer, {})


def test_one_device_grammar():
    for good in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        assert check_device(good) == good
    for bad in ("gpu", "cuda:", "cuda:x", "CPU", "mps"):
        with pytest.raises(ConfigError, match="auto | cpu | cuda | cuda:N"):
            check_device(bad)
