"""A mapping read from YAML or JSON, as the dataclass it describes: the one converter of recipes and grids
(`train.config`, beside `strict_yaml`) and of the core's manifests (`manifest`).

A wrong value is a `ConfigError` naming its dotted key (`optimizer.lr`, `source_info[0].name`); the
caller adds which file it is in. `Rules` say how forgiving a reading is: a file a person typed, or one a
program wrote.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from midmix.errors import ConfigError


@dataclass(frozen=True)
class Rules:
    # Typed by hand in YAML: a number where a string is expected is that string, a string that reads as
    # a number is a float (YAML 1.1 reads 3e-4 as a string), and an empty section is its defaults.
    lenient: bool
    # A key the dataclass lacks: an error (a typo in a recipe) or ignored (a field of a newer writer).
    unknown_keys_are_errors: bool


HAND_WRITTEN = Rules(lenient=True, unknown_keys_are_errors=True)
MACHINE_WRITTEN = Rules(lenient=False, unknown_keys_are_errors=False)


def to_dataclass(cls: type, data: Any, rules: Rules, key: str = "", top: str = "mapping") -> Any:
    """Dataclass `cls` from the mapping `data` found at `key` ("" at the top of a file, named `top` in
    errors). A field without a default must be given."""
    where = key or top
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    if rules.unknown_keys_are_errors:
        unknown = sorted(set(map(str, data)) - names)
        if unknown:
            bad = ", ".join(_child(key, k) for k in unknown)
            raise ConfigError(f"unknown key {bad} in {where}; known: {', '.join(sorted(names))}")
    values = {k: convert(hints[k], v, _child(key, k), rules) for k, v in data.items() if k in names}
    for f in fields:
        if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_child(key, f.name)}: missing")
    return cls(**values)


def convert(tp: Any, value: Any, key: str, rules: Rules) -> Any:
    """`value` as type `tp`, or a ConfigError naming `key`."""
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
                return convert(arg, value, key, rules)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(
            errors[0]
            if len(errors) == 1
            else f"{key}: {value!r} fits none of {' | '.join(_type_name(a) for a in args)}"
        )
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return to_dataclass(tp, {} if value is None and rules.lenient else value, rules, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = args
        return [convert(item, v, f"{key}[{i}]", rules) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, item = args
        return {str(k): convert(item, v, f"{key}.{k}", rules) for k, v in value.items()}
    return _scalar(tp, value, key, rules.lenient)


def _scalar(tp: Any, value: Any, key: str, lenient: bool) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if number:
            return float(value)
        if lenient and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if lenient and number:
            return str(value)
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _child(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))
