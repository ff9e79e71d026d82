"""Cascades: a detector with `when:` scores only the rows where the condition holds."""

import pyarrow as pa
import pytest

from corpusfilter.batch import Batch
from corpusfilter.blocks.keyword import KeywordDetector
from corpusfilter.errors import RecipeError
from corpusfilter.registry import from_config


def test_unscored_rows_get_null_not_zero() -> None:
    cheap = KeywordDetector(name="ai", terms=["ai"])
    costly = KeywordDetector(name="risk", terms=["takeover", "risk"], when="ai_hits >= 1")
    table = pa.table({"id": ["a", "b", "c"], "text": ["AI takeover risk", "a takeover", "AI is fine"]})
    schema = table.schema
    cheap.validate(schema, "blocks[0]")
    costly.validate(schema.append(pa.field("ai_hits", pa.int32())), "blocks[1]")
    batch = Batch(table, "s", 3)
    for d in (cheap, costly):
        d.ensure_setup()
        batch = d.process(batch)
    assert batch.table.column("risk_hits").to_pylist() == [2, None, 0]
    assert batch.table.column("risk_categories").to_pylist() == [[], None, []]
    assert costly.stats["scored"].total == 2 and cheap.stats["scored"].total == 3


def test_when_round_trips_and_is_validated() -> None:
    d = KeywordDetector(name="x", terms=["a"], when="y_hits > 0")
    assert d.to_config()["params"]["when"] == "y_hits > 0"
    assert from_config(d.to_config()).when == "y_hits > 0"
    with pytest.raises(RecipeError, match=r"when: unknown column 'y_hits'"):
        d.validate(pa.schema([("text", pa.string())]), "blocks[1].keywords")
    with pytest.raises(RecipeError, match="cannot parse"):
        KeywordDetector(name="x", terms=["a"], when="y_hits >")


def test_nothing_matches_gives_all_null() -> None:
    d = KeywordDetector(name="k", terms=["a"], when="flag")
    d.ensure_setup()
    out = d.process(Batch(pa.table({"text": ["a", "a"], "flag": [False, None]}), "s", 2))
    assert out.table.column("k_hits").null_count == 2
