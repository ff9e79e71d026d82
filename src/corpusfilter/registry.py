"""Blocks registered by name and version, so old recipes keep meaning what they meant."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from corpusfilter.errors import RecipeError

if TYPE_CHECKING:
    from corpusfilter.blocks.base import Block

B = TypeVar("B", bound="type[Block]")

_REGISTRY: dict[tuple[str, int], type[Block]] = {}
# Modules whose import registers the built-in blocks; imported on first lookup, not with the package.
_BUILTIN_MODULES = (
    "corpusfilter.blocks.keyword",
    "corpusfilter.blocks.decisions",
    "corpusfilter.blocks.resample",
    "corpusfilter.blocks.fasttext",
    "corpusfilter.blocks.embedding",
    "corpusfilter.blocks.finetuned",
    "corpusfilter.blocks.tokens",
)
_loaded = False


def register(name: str, version: int) -> Callable[[B], B]:
    """Class decorator: make a block available to recipes as ``name`` (latest) or ``name@version``."""
    import re

    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]+", name):  # as a manifest records it
        raise ValueError(f"register({name!r}): a block name is lower-case letters, digits and _")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"register({name!r}, version={version!r}): a version is an integer of at least 1")

    def deco(cls: B) -> B:
        key = (name, version)
        old = _REGISTRY.get(key)
        # the same class defined again (a notebook cell re-run) replaces itself; another class may not
        if (
            old is not None
            and old is not cls
            and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__)
        ):
            raise ValueError(f"block {name}@{version} registered twice")
        cls.block_type = name
        cls.version = version
        _REGISTRY[key] = cls
        return cls

    return deco


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        for mod in _BUILTIN_MODULES:
            importlib.import_module(mod)
        _loaded = True


def all_blocks() -> list[type[Block]]:
    _load_builtins()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def lookup(spec: str, path: str = "block") -> type[Block]:
    """Resolve ``name`` (highest version) or ``name@N``; an unknown name lists what exists."""
    _load_builtins()
    name, _, ver = spec.partition("@")
    versions = sorted(v for (n, v) in _REGISTRY if n == name)
    if not versions:
        known = ", ".join(sorted({n for (n, _), c in _REGISTRY.items() if not c.not_in_recipes}))
        raise RecipeError(f"{path}: unknown block {spec!r} (known: {known})")
    if not ver:
        return _REGISTRY[(name, versions[-1])]
    try:
        v = int(ver.removeprefix("v"))
    except ValueError:
        raise RecipeError(f"{path}: bad version in {spec!r}") from None
    if (name, v) not in _REGISTRY:
        raise RecipeError(f"{path}: {name} has no version {v} (known: {', '.join(map(str, versions))})")
    return _REGISTRY[(name, v)]


def from_config(config: dict[str, Any], path: str = "block") -> Block:
    """Inverse of ``Block.to_config()``."""
    if not isinstance(config, dict) or "type" not in config:
        raise RecipeError(f"{path}: a block config needs a 'type' key")
    extra = sorted(set(config) - {"type", "params"})
    if extra:
        raise RecipeError(f"{path}.{extra[0]}: unknown key (a block config has type and params)")
    if not isinstance(config["type"], str):
        raise RecipeError(f"{path}.type: a block name such as 'drop' or 'drop@1', not {config['type']!r}")
    params = config.get("params")
    if params is None:
        params = {}
    elif isinstance(params, Mapping):
        params = dict(params)
    else:
        raise RecipeError(f"{path}.params: a mapping of parameter names to values, not {params!r}")
    cls = lookup(config["type"], path)
    return cls.from_params(params, path=path)
