"""Decisions: ``drop``, ``keep`` and ``tag``, over conditions on score columns."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa

from corpusfilter.batch import BOOKKEEPING_COLUMNS, Batch
from corpusfilter.blocks.base import Decision, FilterDecision
from corpusfilter.errors import RecipeError
from corpusfilter.expr import Condition
from corpusfilter.registry import register


def _reason_ok(reason: str, path: str) -> None:
    if not reason or not all(c.isalnum() or c in "_-." for c in reason):
        raise RecipeError(f"{path}.reason: use letters, digits, '_', '-' or '.' (got {reason!r})")


class _ConditionMixin:
    params: Any
    _cond: Condition | None = None

    @property
    def condition(self) -> Condition:
        if self._cond is None:
            self._cond = Condition(self.params.where, path=f"{getattr(self, 'label', '')}.where")
        return self._cond

    def validate(self, schema: pa.Schema, path: str) -> None:
        self._cond = Condition(self.params.where, path=f"{path}.where")
        self._cond.validate(schema)

    def columns_read(self) -> set[str] | None:
        return set(self.condition.columns) | {getattr(self.params, "column", "labels")}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DropParams:
    where: str = dataclasses.field(metadata={"help": "SQL condition; matching rows are rejected"})
    reason: str = dataclasses.field(metadata={"help": "reason recorded on rejected rows and in stats"})

    def check(self, path: str) -> None:
        Condition(self.where, path=f"{path}.where")
        _reason_ok(self.reason, path)


@register("drop", version=1)
class Drop(_ConditionMixin, FilterDecision):
    """Reject rows where the condition holds (null counts as false: unscored rows are kept)."""

    Params = DropParams

    def select(self, table: pa.Table) -> np.ndarray:
        return self.condition.evaluate(table)


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeepParams(DropParams):
    where: str = dataclasses.field(
        metadata={"help": "SQL condition; rows where it does not hold are rejected"}
    )
    reason: str = dataclasses.field(metadata={"help": "reason recorded on rejected rows and in stats"})


@register("keep", version=1)
class Keep(_ConditionMixin, FilterDecision):
    """Keep only rows where the condition holds; reject the rest (null counts as false: rejected)."""

    Params = KeepParams

    def select(self, table: pa.Table) -> np.ndarray:
        return ~self.condition.evaluate(table)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TagParams:
    where: str = dataclasses.field(metadata={"help": "SQL condition; matching rows get the label"})
    label: str = dataclasses.field(metadata={"help": "label appended to the list column"})
    column: str = dataclasses.field(default="labels", metadata={"help": "list<string> column of labels"})

    def check(self, path: str) -> None:
        Condition(self.where, path=f"{path}.where")
        if not self.label:
            raise RecipeError(f"{path}.label: must not be empty")


LABELS_TYPE = pa.list_(pa.string())


@register("tag", version=1)
class Tag(_ConditionMixin, Decision):
    """Append ``label`` to a list column on rows where the condition holds; drops nothing."""

    Params = TagParams

    def output_fields(self, schema: pa.Schema) -> list[pa.Field]:
        return [] if self.params.column in schema.names else [pa.field(self.params.column, LABELS_TYPE)]

    def validate(self, schema: pa.Schema, path: str) -> None:
        super().validate(schema, path)
        col = self.params.column
        if col in BOOKKEEPING_COLUMNS:
            raise RecipeError(
                f"{path}.column: {col!r} is reserved for corpusfilter's bookkeeping; name another"
            )
        if col in schema.names and schema.field(col).type != LABELS_TYPE:
            raise RecipeError(
                f"{path}.column: {col!r} exists with type {schema.field(col).type}, not list<string>"
            )

    def process(self, batch: Batch) -> Batch:
        table = batch.table
        mask = self.condition.evaluate(table) if table.num_rows else np.zeros(0, dtype=bool)
        batch.table = add_label(table, mask, self.params.label, column=self.params.column)
        self.stat_update(f"tagged_{self.params.label}", value=int(mask.sum()))
        label_removed(batch, self.condition, self.params.label, column=self.params.column)
        return batch


def label_removed(batch: Batch, condition: Condition | None, label: str, *, column: str = "labels") -> None:
    """Label the rows an earlier block of this batch removed where ``condition`` (None: every row)
    holds, so a category's share of the input counts them (a tag after a drop had seen only the rows
    kept). Rows without a column the condition reads (one scored after they were removed) are left
    unlabelled, and so is a removed row the condition cannot be evaluated on (a cast that only the
    kept rows allow): row by row, so the labels do not depend on which rows share a batch."""
    for i, t in enumerate(batch.rejected):
        if not t.num_rows or (condition is not None and not set(condition.columns) <= set(t.column_names)):
            continue
        mask = np.ones(t.num_rows, dtype=bool) if condition is None else _holds(condition, t)
        batch.rejected[i] = add_label(t, mask, label, column=column)


def _holds(condition: Condition, table: pa.Table) -> np.ndarray:
    """``condition`` on ``table``'s rows; a row it cannot be evaluated on does not match."""
    import polars as pl

    try:
        return condition.evaluate(table)
    except (pl.exceptions.PolarsError, pa.ArrowException, ValueError, TypeError):
        out = np.zeros(table.num_rows, dtype=bool)
        for r in range(table.num_rows):
            try:
                out[r] = bool(condition.evaluate(table.slice(r, 1))[0])
            except (pl.exceptions.PolarsError, pa.ArrowException, ValueError, TypeError):
                pass
        return out


def add_label(table: pa.Table, mask: np.ndarray, label: str, *, column: str = "labels") -> pa.Table:
    """Append ``label`` to the list column ``column`` (created if missing) on rows where ``mask``;
    a row holds each label once (two blocks giving one category must not count its tokens twice)."""
    n = table.num_rows
    old = table.column(column).to_pylist() if column in table.column_names else [[] for _ in range(n)]
    new = [
        (list(v or []) + [label]) if m and label not in (v or ()) else list(v or [])
        for v, m in zip(old, mask)
    ]
    arr = pa.array(new, LABELS_TYPE)
    if column in table.column_names:
        return table.set_column(table.column_names.index(column), pa.field(column, LABELS_TYPE), arr)
    return table.append_column(pa.field(column, LABELS_TYPE), arr)
