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


@pytest.mark.parametrize(
    "sql",
    [
        "v_hits >= MAX(v_hits)",
        "v_hits <= MIN(v_hits)",
        "FIRST(v_hits) = v_hits",
        "COUNT(*) > 1",
        "ROW_NUMBER() OVER () > 1",
        "RANK() OVER (ORDER BY v_hits) < 3",
        "SUM(v_hits) OVER (PARTITION BY source) > 2",
        "v_hits > AVG(v_hits) AND source = 'a'",
        "MAX(DATE(date)) > DATE('2020-01-01')",  # a date parse is row-wise; its maximum is not
        "ROUND(v_hits, 1) >= MAX(v_hits)",
        # a float literal makes polars unable to judge its comparison node: the children are judged
        "v_hits > 0.5 AND v_hits > 1.0 * AVG(v_hits)",
        "source = 'web' AND v_hits > 1.0 * AVG(v_hits)",
        "UNNEST(labels) = 'good'",  # row-separable to polars, but changes the number of rows
        "v_hits > AVG(v_hits / 2)",  # an aggregate above a node polars cannot judge: the sample rows
        # aggregates over a list function of a column (judged by sample rows whose lists differ)
        "v_hits > MAX(ARRAY_LENGTH(ARRAY_UNIQUE(labels)))",
        "FIRST(ARRAY_UNIQUE(labels))[1] = 'a'",
        "UNNEST(ARRAY_UNIQUE(labels)) = 'a'",
        "v_hits < COUNT(*) OVER () + ARRAY_LENGTH(ARRAY_UNIQUE([1]))",
        "UNNEST(['a', 'b']) = 'a'",  # reads no column, but gives two values
    ],
)
def test_aggregates_and_windows_are_refused(sql: str) -> None:
    """They are computed over the rows of a batch: a run's result moved with batch_size (46, 14 and
    6 rows dropped at batch sizes 1, 5 and 100 for `>= MAX(...)`)."""
    with pytest.raises(RecipeError, match=r"is not computed row by row \(an aggregate or window"):
        Condition(sql, path="blocks[1].drop.where").validate(SCHEMA)


def test_weights_with_aggregates_are_refused_and_row_wise_ones_pass() -> None:
    from corpusfilter.expr import Expression

    with pytest.raises(
        RecipeError, match=r"weight: expression '1 \+ v_hits / AVG\(v_hits\)' is not computed row"
    ):
        Expression("1 + v_hits / AVG(v_hits)").validate(SCHEMA)
    for bad in ("v_hits + SUM(LENGTH('element()'))", "UNNEST([1.0, 2.0])"):
        with pytest.raises(RecipeError, match="is not computed row by row"):
            Expression(bad).validate(SCHEMA)
    # polars divides a column by a literal with a reciprocal: the last bit differs alone and in a batch
    for sql in ("v_hits / 3", "1 + v_hits / 3", "v_hits / 10", "LN(v_hits) / 3"):
        Expression(sql).validate(SCHEMA)
    for sql in ("1 + 4 * v_hits", "2", "CASE WHEN source = 'a' THEN 2 ELSE 1 END", "GREATEST(v_hits, 1)"):
        Expression(sql).validate(SCHEMA)
    for sql in (
        "TRUE",
        "v_hits IN (1, 2)",
        "ARRAY_LENGTH(v_categories) > 1",
        "source LIKE 'a%'",
        "ABS(v_hits) > 1",
        "ABS(v_hits - 0.5) < 0.1",
        "CAST(v_hits AS DOUBLE) > 1.5",
        "NOT (v_hits > 0.5)",
        "v_hits % 2 = 0",
        "CASE WHEN v_hits > 0.5 THEN 1 ELSE 0 END = 1",
        "source IN ('a', 'b') AND v_hits > 0.5",
        # functions of literals are one value for every row, and a list function works per row
        "v_hits > CAST(0.5 AS DOUBLE)",
        "v_hits > POWER(2, 2)",
        "source = UPPER('a') || 'b'",
        "v_hits IN (1, 2 + 1)",
        "1 = 1",
        "ARRAY_LENGTH(ARRAY_UNIQUE(labels)) > 1",
        "ARRAY_REVERSE(labels)[1] = 'a'",
    ):
        Condition(sql).validate(SCHEMA)


def test_nan_counts_as_missing_not_as_the_largest_number() -> None:
    """polars orders NaN above every number, so `q > 0.8` held for NaN while null counts as false."""
    from corpusfilter.expr import Expression

    t = pa.table({"q": pa.array([0.9, float("nan"), None, 0.1], pa.float64()), "n": [1, 2, 3, 4]})
    schema = t.schema
    for sql, want in (("q > 0.8", [True, False, False, False]), ("q <= 0.8", [False, False, False, True]),
                      ("q IS NULL", [False, True, True, False]), ("n > 1", [False, True, True, True])):  # fmt: skip
        c = Condition(sql)
        c.validate(schema)
        assert c.evaluate(t).tolist() == want, sql
    assert Expression("1 + q").evaluate(t, default=0.0).tolist() == [1.9, 0.0, 0.0, 1.1]
