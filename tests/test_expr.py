"""Conditions: type errors that polars raises only on values are found at validation, before a run."""

from __future__ import annotations

import pyarrow as pa
import pytest

from corpusfilter.errors import RecipeError
from corpusfilter.expr import Condition

SCHEMA = pa.schema(
    [
        ("v_hits", pa.int64()),
        ("v_categories", pa.list_(pa.string())),
        ("source", pa.string()),
        ("labels", pa.list_(pa.string())),
        ("when", pa.timestamp("us")),
        ("date", pa.string()),
        ("amount", pa.decimal256(40, 2)),
    ]
)


@pytest.mark.parametrize(
    "sql",
    ["v_categories >= 1", "v_categories = 'care'", "source >= 1", "v_hits = 'abc'"],
)
def test_operand_types_polars_checks_only_on_values_are_refused(sql: str) -> None:
    with pytest.raises(RecipeError, match=r"blocks\[1\]\.drop\.where: invalid condition"):
        Condition(sql, path="blocks[1].drop.where").validate(SCHEMA)


@pytest.mark.parametrize(
    "sql",
    [
        "v_hits >= 2 AND source <> 'docs'",
        "array_contains(labels, 'ai')",
        "CAST(source AS INT) > 1",  # fails on the sample's "a", not on a source of digits
        "v_hits / 0 > 1",
        "when IS NULL",
        "DATE(date) > DATE('2020-01-01')",  # parses real dates; the sample's "a" is not one
        "EXTRACT(YEAR FROM DATE(date)) >= 2020",
        "amount IS NOT NULL",  # a type polars cannot sample: no probe, no panic
    ],
)
def test_valid_conditions_pass_and_evaluate(sql: str) -> None:
    Condition(sql).validate(SCHEMA)
