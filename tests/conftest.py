"""Tiny inline corpora written as real Parquet shards, and a helper to run recipes on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

DOCS = [
    ("d0", "The compassion and kindness of the Good Samaritan is a lesson in virtue.", "fable"),
    ("d1", "def add(a, b):\n    return a + b  # a helper in Python", "code"),
    ("d2", "Honesty is the best policy, and integrity matters; honesty wins.", "aphorism"),
    ("d3", "Install the package with pip and run the tests.", "docs"),
    ("d4", "An AI takeover through deceptive alignment is a classic risk story.", "ai"),
    ("d5", "Kindness, kindness, kindness: compassion everywhere.", "fable"),
    ("d6", "PostgreSQL supports window functions over partitions.", "docs"),
    ("d7", "The treacherous turn: a model behaves well until it can seize power.", "ai"),
]

TERMS = [
    "compassion\t1\tcare",
    "kindness\t1\tcare",
    "honesty\t2\thonesty",
    "integrity\t1.5\thonesty",
    "virtue\t1\tgeneral",
    "deceptive alignment\t3\tai",
    "ai takeover\t3\tai",
    "treacherous turn\t3\tai",
]


def tokens(df: Any) -> int:
    """A polars frame's ``tokens_count`` total, as an int (polars types ``sum()`` as any literal)."""
    return int(df["tokens_count"].to_numpy().sum())


def write_shards(folder: Path, docs: list[tuple[str, str, str]], n_shards: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        part = docs[s::n_shards]
        table = pa.table(
            {"id": [d[0] for d in part], "text": [d[1] for d in part], "source": [d[2] for d in part]}
        )
        pq.write_table(table, folder / f"shard-{s:03d}.parquet")
    return folder


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_shards(tmp_path / "in", DOCS, n_shards=2)


def recipe_dict(inp: Path, out: Path, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "input": {"path": str(inp)},
        "output": {"path": str(out)},
        "blocks": [
            {"keywords": {"name": "moral", "terms": TERMS}},
            {"drop": {"where": "moral_hits >= 2", "reason": "moral"}},
        ],
    }
    data.update(extra)
    return data
