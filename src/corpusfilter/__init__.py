"""corpusfilter: composable, accountable filter blocks for LLM pretraining corpora, on datatrove.

Importing the package is cheap: blocks, datatrove and the model libraries load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Batch": "corpusfilter.batch",
    "Block": "corpusfilter.blocks.base",
    "Detector": "corpusfilter.blocks.base",
    "Decision": "corpusfilter.blocks.base",
    "FilterDecision": "corpusfilter.blocks.base",
    "KeywordDetector": "corpusfilter.blocks.keyword",
    "Drop": "corpusfilter.blocks.decisions",
    "Keep": "corpusfilter.blocks.decisions",
    "Tag": "corpusfilter.blocks.decisions",
    "DocumentAdapter": "corpusfilter.adapters",
    "register": "corpusfilter.registry",
    "from_config": "corpusfilter.registry",
    "load_recipe": "corpusfilter.recipe",
    "run": "corpusfilter.runner",
    "CorpusfilterError": "corpusfilter.errors",
}

__all__ = ["__version__", *sorted(_LAZY)]

if TYPE_CHECKING:
    from corpusfilter.adapters import DocumentAdapter
    from corpusfilter.batch import Batch
    from corpusfilter.blocks.base import Block, Decision, Detector, FilterDecision
    from corpusfilter.blocks.decisions import Drop, Keep, Tag
    from corpusfilter.blocks.keyword import KeywordDetector
    from corpusfilter.errors import CorpusfilterError
    from corpusfilter.recipe import load_recipe
    from corpusfilter.registry import from_config, register
    from corpusfilter.runner import run


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'corpusfilter' has no attribute {name!r}")
