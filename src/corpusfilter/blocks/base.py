"""Base classes: a block is a datatrove ``PipelineStep`` that passes :class:`Batch` objects.

Subclasses override one method: :meth:`Detector.score` (texts in, typed columns out) or
:meth:`FilterDecision.select` (table in, boolean mask out). The base classes do the rest: lifecycle,
column naming and typing, moving rejected rows aside with their reason, and datatrove stats.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from datatrove.pipeline.base import PipelineStep

from corpusfilter.batch import BLOCK_COLUMN, REASON_COLUMN, Batch
from corpusfilter.errors import RecipeError
from corpusfilter.params import build_params, params_to_dict

TEXT_COLUMN_DEFAULT = "text"


@dataclasses.dataclass(frozen=True, kw_only=True)
class NoParams:
    """Blocks without parameters."""


class Block(PipelineStep):
    """A pipeline step over :class:`Batch` objects, described by typed, keyword-only parameters.

    Construct with keyword arguments (``KeywordDetector(name="virtue", lexicon="virtue")``); they are
    checked against ``Params`` exactly as a recipe's keys are.
    """

    block_type: ClassVar[str] = "block"
    version: ClassVar[int] = 1
    kind: ClassVar[str] = "block"
    Params: ClassVar[type] = NoParams
    type = "corpusfilter"

    params: Any

    def __init__(self, **params: Any) -> None:
        self.params = build_params(self.Params, params, self.block_type)
        self.label = self.block_type  # replaced by the pipeline builder with a unique, positional label
        self.text_column = TEXT_COLUMN_DEFAULT  # set by the pipeline builder from the recipe's input
        super().__init__()
        self._ready = False

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, path: str | None = None) -> Block:
        obj = cls.__new__(cls)
        obj.params = build_params(cls.Params, params, path or cls.block_type)
        obj.label = cls.block_type
        obj.text_column = TEXT_COLUMN_DEFAULT
        PipelineStep.__init__(obj)
        obj._ready = False
        return obj

    @property
    def name(self) -> str:
        return self.label

    def to_config(self) -> dict[str, Any]:
        """``{"type": "name@version", "params": {...}}``; ``registry.from_config`` inverts it."""
        return {"type": f"{self.block_type}@{self.version}", "params": params_to_dict(self.params)}

    # -- lifecycle ---------------------------------------------------------------------------------
    def setup(self) -> None:
        """Load what the block needs (models, compiled patterns). Called once per worker, lazily."""

    def teardown(self) -> None:
        """Release what :meth:`setup` took."""

    def ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    def __getstate__(self) -> dict[str, Any]:
        # Workers receive the block unloaded and set it up themselves.
        state = self.__dict__.copy()
        state["_ready"] = False
        for key in self._unpicklable():
            state.pop(key, None)
        return state

    def _unpicklable(self) -> Sequence[str]:
        """Attribute names built in :meth:`setup` that must not travel to workers."""
        return ()

    # -- schema ------------------------------------------------------------------------------------
    def output_fields(self, schema: pa.Schema) -> list[pa.Field]:
        """Columns this block adds to a table of ``schema``."""
        return []

    def validate(self, schema: pa.Schema, path: str) -> None:
        """Check, before any data is read, that the block can run on ``schema``."""

    def provenance(self) -> dict[str, Any]:
        """Extra facts for the manifest that pin down what the block used (file hashes, sizes)."""
        return {}

    # -- data --------------------------------------------------------------------------------------
    def process(self, batch: Batch) -> Batch:
        raise NotImplementedError

    def run(self, data: Iterable[Batch] | None, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        if data is None:
            return
        self.ensure_setup()
        try:
            for batch in data:
                n_in = batch.num_rows
                self.stat_update("in", value=n_in)
                with self.track_time("batch"):
                    batch = self.process(batch)
                self.stat_update("out", value=batch.num_rows)
                yield batch
        finally:
            self.teardown()
            self._ready = False


class Detector(Block):
    """Adds typed score columns ``<name>_<field>``; never drops a row.

    Override :meth:`score`. Declare the columns in ``fields`` (suffix → Arrow type) or
    :meth:`field_types` when they depend on parameters.
    """

    kind = "detector"
    fields: ClassVar[dict[str, pa.DataType]] = {}

    @property
    def prefix(self) -> str:
        return str(getattr(self.params, "name", self.block_type))

    def field_types(self) -> dict[str, pa.DataType]:
        return dict(self.fields)

    def score(self, texts: pa.StringArray) -> Mapping[str, Any]:
        """Score a batch of texts; return one array (or sequence) per declared field, same length."""
        raise NotImplementedError

    def output_fields(self, schema: pa.Schema) -> list[pa.Field]:
        return [pa.field(f"{self.prefix}_{k}", t) for k, t in self.field_types().items()]

    def validate(self, schema: pa.Schema, path: str) -> None:
        for f in self.output_fields(schema):
            if f.name in schema.names:
                raise RecipeError(f"{path}: column {f.name!r} already exists; give the detector another name")

    def process(self, batch: Batch) -> Batch:
        table = batch.table
        text_col = (
            table.column(self.text_column).combine_chunks() if table.num_rows else pa.array([], pa.string())
        )
        out = self.score(text_col) if table.num_rows else {}
        for key, typ in self.field_types().items():
            col_name = f"{self.prefix}_{key}"
            if table.num_rows == 0:
                arr: pa.Array = pa.array([], typ)
            else:
                if key not in out:
                    raise KeyError(f"{type(self).__name__}.score() did not return field {key!r}")
                arr = _to_arrow(out[key], typ)
                if len(arr) != table.num_rows:
                    raise ValueError(
                        f"{type(self).__name__}.score() returned {len(arr)} values for {key!r}, "
                        f"expected {table.num_rows}"
                    )
            table = table.append_column(pa.field(col_name, typ), arr)
        batch.table = table
        self.stat_update("scored", value=batch.num_rows)
        return batch


def _to_arrow(values: Any, typ: pa.DataType) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values if values.type == typ else values.cast(typ)
    if isinstance(values, np.ndarray) and not pa.types.is_nested(typ):
        return pa.array(values).cast(typ)
    return pa.array(values, type=typ)


class Decision(Block):
    """Acts on score columns. Drop/keep decisions move rows aside; tag decisions add columns."""

    kind = "decision"


class FilterDecision(Decision):
    """Removes the rows :meth:`select` marks, recording ``reason`` and this block on each."""

    def select(self, table: pa.Table) -> np.ndarray:
        """Boolean mask over ``table``: True = remove the row."""
        raise NotImplementedError

    @property
    def reason(self) -> str:
        return str(getattr(self.params, "reason", self.block_type))

    def process(self, batch: Batch) -> Batch:
        if batch.num_rows == 0:
            return batch
        mask = np.asarray(self.select(batch.table), dtype=bool)
        n_drop = int(mask.sum())
        if n_drop:
            rejected = batch.table.filter(pa.array(mask))
            rejected = rejected.append_column(
                pa.field(REASON_COLUMN, pa.string()), pa.array([self.reason] * n_drop, pa.string())
            ).append_column(pa.field(BLOCK_COLUMN, pa.string()), pa.array([self.label] * n_drop, pa.string()))
            batch.rejected.append(rejected)
            batch.table = batch.table.filter(pa.array(~mask))
            self.stat_update("dropped", value=n_drop)
            self.stat_update(f"dropped_{self.reason}", value=n_drop)
        return batch
