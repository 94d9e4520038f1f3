"""Strict construction of the frozen dataclass configs used across rmt_lab.

Every component has one frozen dataclass config. Building one from a plain dict (a JSON file, CLI
overrides) goes through `from_dict`, which fails loudly on unknown keys and wrong types, naming the
key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value or key is not allowed."""


def _check_type(cls: type, name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{cls.__name__}.{name}={value!r} is not allowed; allowed values: {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _check_type(cls, name, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{cls.__name__}.{name}={value!r} has type {type(value).__name__}; expected {hint}")
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{cls.__name__}.{name} must be None")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{cls.__name__}.{name} must be a list, got {type(value).__name__}")
        item = args[0] if args else Any
        return tuple(_check_type(cls, name, v, item) for v in value)
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else from_dict(hint, value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{cls.__name__}.{name} must be {hint.__name__}, got bool")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"{cls.__name__}.{name} must be {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build dataclass `cls` from `data`; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__} must be given a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} key(s) {unknown}; allowed keys: {names}")
    values = {k: _check_type(cls, k, v, hints[k]) for k, v in data.items()}
    return cls(**values)


def to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a (nested) dataclass config; tuples become lists."""
    return json.loads(json.dumps(dataclasses.asdict(config)))
