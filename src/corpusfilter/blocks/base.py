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

from corpusfilter.batch import BLOCK_COLUMN, COPY_COLUMN, ORIGINAL_COLUMN, REASON_COLUMN, Batch
from corpusfilter.errors import RecipeError
from corpusfilter.expr import Condition
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
    #: why a recipe's ``blocks:`` may not name this block ("" = it may): registered for manifests
    #: and rebuilds, made by the runner
    not_in_recipes: ClassVar[str] = ""
    type = "corpusfilter"

    params: Any
    #: set from the recipe by the pipeline builder: the id column and the seed for hash draws
    id_column: str = "id"
    seed: int = 0

    def __init__(self, **params: Any) -> None:
        self._init(params, self.block_type)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, path: str | None = None) -> Block:
        """Build from a recipe mapping; errors name ``path`` (e.g. ``blocks[2].keywords``)."""
        obj = cls.__new__(cls)
        obj._init(params, path or cls.block_type)
        return obj

    def _init(self, params: Mapping[str, Any], path: str) -> None:
        own = self._take_common(dict(params), path)
        self.params = build_params(self.Params, own, path, also=list(self.common_params_names))
        self.label = self.block_type  # replaced by the pipeline builder with a unique, positional label
        self.text_column = TEXT_COLUMN_DEFAULT  # set by the pipeline builder from the recipe's input
        PipelineStep.__init__(self)
        self._ready = False

    @property
    def name(self) -> str:
        return self.label

    def _take_common(self, params: dict[str, Any], path: str) -> dict[str, Any]:
        """Remove parameters every block of a kind shares (``when`` for detectors) before the
        block's own ``Params`` are built."""
        return params

    #: parameter names :meth:`_take_common` takes (for the list of allowed keys in errors)
    common_params_names: ClassVar[tuple[str, ...]] = ()

    def common_params(self) -> dict[str, Any]:
        return {}

    def to_config(self) -> dict[str, Any]:
        """``{"type": "name@version", "params": {...}}``; ``registry.from_config`` inverts it."""
        params = params_to_dict(self.params)
        params.update(self.common_params())
        return {"type": f"{self.block_type}@{self.version}", "params": params}

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

    def columns_read(self) -> set[str] | None:
        """Columns :meth:`process` reads, so a replay can skip the rest (the text); None: all of them."""
        return None

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
    :meth:`field_types` when they depend on parameters. Every detector also takes ``when``, a
    condition over earlier columns: it then scores only the rows where the condition holds and
    leaves null (not 0) in its columns elsewhere — a cascade, cheap detectors first.
    """

    kind = "detector"
    fields: ClassVar[dict[str, pa.DataType]] = {}
    when: str | None = None
    _when: Condition | None = None

    common_params_names = ("when",)

    def _take_common(self, params: dict[str, Any], path: str) -> dict[str, Any]:
        when = params.pop("when", None)
        if when is not None:
            if not isinstance(when, str):
                raise RecipeError(f"{path}.when: expected a condition string, got {when!r}")
            Condition(when, path=f"{path}.when")  # syntax errors now, columns at validation
        self.when = when
        return params

    def common_params(self) -> dict[str, Any]:
        return {"when": self.when} if self.when is not None else {}

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
        if self.when is not None:
            self._when = Condition(self.when, path=f"{path}.when")
            self._when.validate(schema)

    # -- two-stage scoring: prepare (CPU, may run a batch ahead in a thread), then score -----------
    #: Run ``prepare`` for the next batch in a background thread while ``score_prepared`` works on
    #: this one. Worth it when preparing releases the GIL and scoring runs elsewhere (a GPU).
    overlap = False

    def prepare(self, texts: pa.StringArray) -> Any:
        """CPU work that can run ahead of scoring (tokenizing); by default nothing."""
        return texts

    def score_prepared(self, prepared: Any) -> Mapping[str, Any]:
        """Score what :meth:`prepare` returned; by default :meth:`score` on the texts."""
        return self.score(prepared)

    def _prepare_batch(self, batch: Batch) -> tuple[np.ndarray | None, int, Any]:
        """Which rows to score (``when``), how many, and their prepared input."""
        table = batch.table
        n = table.num_rows
        texts = table.column(self.text_column).combine_chunks() if n else pa.array([], pa.string())
        mask = None
        if self.when is not None and n:
            if self._when is None:
                self._when = Condition(self.when, path=f"{self.label}.when")
            mask = self._when.evaluate(table)
            if mask.all():
                mask = None
        if mask is not None:
            texts = texts.filter(pa.array(mask))
        return mask, len(texts), (self.prepare(texts) if len(texts) else None)

    def _finish_batch(self, batch: Batch, prepared: tuple[np.ndarray | None, int, Any]) -> Batch:
        mask, scored, inputs = prepared
        table = batch.table
        n = table.num_rows
        out = self.score_prepared(inputs) if scored else {}
        sub: dict[str, pa.Array] = {}
        for key, typ in self.field_types().items():
            if not scored:
                continue
            if key not in out:
                raise KeyError(f"{type(self).__name__} did not return field {key!r}")
            arr = _to_arrow(out[key], typ)
            if len(arr) != scored:
                raise ValueError(
                    f"{type(self).__name__} returned {len(arr)} values for {key!r}, expected {scored}"
                )
            sub[key] = arr
        if mask is not None:  # scored only where `when` held: scatter back, null elsewhere
            where = np.full(n, -1, dtype=np.int64)
            where[mask] = np.arange(scored)
            take = pa.array(where, mask=~mask)
        for key, typ in self.field_types().items():
            if not scored:
                arr = pa.nulls(n, typ) if n else pa.array([], typ)
            else:
                arr = sub[key] if mask is None else sub[key].take(take)
            table = table.append_column(pa.field(f"{self.prefix}_{key}", typ), arr)
        batch.table = table
        self.stat_update("scored", value=scored)
        return batch

    def process(self, batch: Batch) -> Batch:
        return self._finish_batch(batch, self._prepare_batch(batch))

    def run(self, data: Iterable[Batch] | None, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        if data is None:
            return
        self.ensure_setup()  # may decide `overlap` (e.g. only when a GPU is used)
        if not self.overlap:
            yield from super().run(data, rank, world_size)
            return
        from corpusfilter.prefetch import prefetch

        staged = ((b, self._prepare_batch(b)) for b in data)
        try:
            for batch, prepared in prefetch(staged, depth=2, name="corpusfilter-prepare"):
                self.stat_update("in", value=batch.num_rows)
                with self.track_time("batch"):
                    batch = self._finish_batch(batch, prepared)
                self.stat_update("out", value=batch.num_rows)
                yield batch
        finally:
            self.teardown()
            self._ready = False


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
        reject_rows(self, batch, np.asarray(self.select(batch.table), dtype=bool), self.reason)
        return batch


def reject_rows(block: Block, batch: Batch, mask: np.ndarray, reason: str) -> None:
    """Move the rows of ``batch`` where ``mask`` holds to its rejected rows, with ``reason`` and the
    block's label, and count them in the block's stats (``dropped``, ``dropped_<reason>``)."""
    n_drop = int(mask.sum())
    if not n_drop:
        return
    rejected = batch.table.filter(pa.array(mask))
    rejected = rejected.append_column(
        pa.field(REASON_COLUMN, pa.string()), pa.array([reason] * n_drop, pa.string())
    ).append_column(pa.field(BLOCK_COLUMN, pa.string()), pa.array([block.label] * n_drop, pa.string()))
    batch.rejected.append(rejected)
    batch.table = batch.table.filter(pa.array(~mask))
    block.stat_update("dropped", value=n_drop)
    block.stat_update(f"dropped_{reason}", value=n_drop)


def reads_copies(block: Block) -> bool:
    """Whether ``block``'s condition reads a copy's lineage (``copy_index``, ``original_id``): a tag
    of copies, which the control arm runs after the block that makes its copies."""
    return bool({COPY_COLUMN, ORIGINAL_COLUMN} & (block.columns_read() or set()))
