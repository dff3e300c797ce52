"""Dataclasses to and from plain dicts (YAML, JSON, checkpoints), with the fields' types enforced.

``from_dict`` checks every value against its field's annotation (``int``, ``float``, ``bool``,
``str``, ``Literal``, ``Optional``, ``tuple[X, ...]`` element by element, nested dataclasses) and
raises a ConfigError naming the key, so a bad value fails when the config is read, not deep inside
the model. No torch here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from oanet.errors import ConfigError


def to_dict(cfg: Any) -> dict:
    """A plain, YAML/JSON-serialisable dict (tuples become lists)."""

    def convert(value):
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return value

    return convert(cfg)


def _field_types(cls) -> dict:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if annotation is tuple or origin is tuple:
        if isinstance(value, (int, float, str)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        # tuple[X, ...]: every element is an X (a bare tuple would let [abc] through to fail later).
        element = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if element is None:
            return tuple(value)
        return tuple(_coerce(v, element, f"{where}[{k}]") for k, v in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):
            # YAML 1.1 (PyYAML) reads 1e-4 (no dot) as a string; accept what Python reads as a number.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls, data: dict, where: str = "config"):
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}"[:300])
    upgrade = getattr(cls, "_upgrade_legacy", None)
    if upgrade is not None:
        data = upgrade(data, where)
    types_ = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {name: _coerce(value, types_[name], f"{where}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def diff_configs(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two config dicts (for refusing mismatched checkpoints)."""
    lines = []
    for key in sorted(set(a) | set(b)):
        name = f"{prefix}{key}"
        va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
        if isinstance(va, dict) and isinstance(vb, dict):
            lines += diff_configs(va, vb, name + ".")
        elif va != vb:
            lines.append(f"{name}: {va!r} != {vb!r}")
    return lines
