"""Strict, typed block parameters: unknown keys and wrong types are errors that name the key path."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, Union

from corpusfilter.errors import RecipeError

P = TypeVar("P")

_MISSING = object()


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__name__", str(tp))


def check_value(value: Any, tp: Any, path: str) -> Any:
    """Return ``value`` converted to ``tp`` (ints widen to float, lists to tuples) or raise RecipeError."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        arms = [a for a in args if a is not type(None)]
        if value is None and len(arms) < len(args):
            return None
        if len(arms) == 1:  # Optional[X]: report X's precise error
            return check_value(value, arms[0], path)
        for a in args:
            try:
                return check_value(value, a, path)
            except RecipeError:
                continue
        raise RecipeError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise RecipeError(f"{path}: expected one of {', '.join(map(repr, args))}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise RecipeError(f"{path}: expected null, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{path}: expected a list, got {value!r}")
        item_t = args[0] if args else Any
        return tuple(check_value(v, item_t, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise RecipeError(f"{path}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {check_value(k, kt, path): check_value(v, vt, f"{path}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is bool or tp is str:
        if not isinstance(value, tp):
            raise RecipeError(f"{path}: expected {tp.__name__}, got {value!r}")
        return value
    raise TypeError(f"unsupported parameter type {tp!r} at {path}")


def build_params(cls: type[P], values: Mapping[str, Any], path: str, *, also: Sequence[str] = ()) -> P:
    """Build the dataclass ``cls`` from ``values``; unknown or missing keys raise RecipeError naming
    them (``also``: keys taken before, listed among the allowed ones, e.g. a detector's ``when``)."""
    if not isinstance(values, Mapping):
        raise RecipeError(f"{path}: expected a mapping of parameters, got {values!r}")
    assert dataclasses.is_dataclass(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise RecipeError(
            f"{path}.{unknown[0]}: unknown key (allowed: {', '.join(sorted([*fields, *also])) or 'none'})"
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in values:
            kwargs[name] = check_value(values[name], hints[name], f"{path}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"{path}.{name}: required key is missing")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        check(path)
    return obj


def describe_params(cls: type) -> list[dict[str, Any]]:
    """Name, type, default and help of each parameter, for ``corpusfilter blocks``."""
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = _MISSING
        out.append(
            {
                "name": f.name,
                "type": _type_name(hints[f.name]),
                "required": default is _MISSING,
                "default": None if default is _MISSING else default,
                "help": f.metadata.get("help", ""),
            }
        )
    return out


def params_to_dict(obj: Any) -> dict[str, Any]:
    """Plain JSON/YAML-ready dict of a params dataclass (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
