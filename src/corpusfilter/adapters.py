"""Use any corpusfilter block as an ordinary document-level step in your own datatrove pipeline.

``DocumentAdapter(KeywordDetector(...))`` gathers ``Document`` objects into Arrow batches, runs the
block once per batch, and writes score columns back into ``doc.metadata``; a drop/keep decision
drops documents (counted as ``dropped_<reason>``, and written by ``exclusion_writer`` if given), as
datatrove's ``BaseFilter`` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched

from corpusfilter.batch import REASON_COLUMN, Batch
from corpusfilter.blocks.base import Block, FilterDecision
from corpusfilter.errors import RecipeError, first_line
from corpusfilter.expr import Condition

_POS = "_cf_position"


class DocumentAdapter(PipelineStep):
    """Wrap ``block`` so it consumes and yields datatrove ``Document`` objects."""

    type = "corpusfilter"

    def __init__(self, block: Block, *, batch_size: int = 1000, exclusion_writer: Any = None) -> None:
        from corpusfilter.blocks.resample import _Resampler

        if not isinstance(block, Block):
            raise RecipeError(
                f"DocumentAdapter: expected a corpusfilter block (e.g. from_config(...)), got {type(block).__name__}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise RecipeError(f"DocumentAdapter: batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(block, _Resampler):  # copies are rows no Document stands for
            raise RecipeError(
                f"DocumentAdapter: {block.block_type} adds copies of documents, which a document-level "
                "step cannot yield; run it in a corpusfilter recipe (`corpusfilter run`)"
            )
        self.block = block
        super().__init__()
        self.batch_size = batch_size
        self.exclusion_writer = exclusion_writer
        self.block.text_column = "text"
        self._needed = self._reads()  # once, not per batch (a condition is parsed by polars)
        self._checked: pa.Schema | None = None  # the last batch schema the block was validated on

    @property
    def name(self) -> str:
        return f"adapter({self.block.label})"

    def _reads(self) -> set[str] | None:
        """The metadata keys the block reads (None: all): a detector its ``when`` condition's."""
        if self.block.kind == "detector":
            when = getattr(self.block, "when", None)
            return set(Condition(when).columns) if when else set()
        return self.block.columns_read()

    def _table(self, docs: list[Document]) -> pa.Table:
        table = pa.table(
            {
                "id": [d.id for d in docs],
                "text": [d.text for d in docs],
                _POS: pa.array(range(len(docs)), pa.int64()),
            }
        )
        # only the metadata the block reads becomes columns: other keys stay in each document's
        # metadata untouched (a key holding 2020 in one document and "unknown" in another has no type)
        needed = self._needed
        keys = dict.fromkeys(k for d in docs for k in d.metadata if needed is None or k in needed)
        # a column the block writes is computed afresh, not kept from earlier metadata (the
        # block would add a second column of that name and the stale one would be read back)
        fresh = {f.name for f in self.block.output_fields(table.schema)} - self._tag_cols()
        for name in keys:
            if name in table.column_names or name in fresh:
                continue
            values = [d.metadata.get(name) for d in docs]
            try:
                col = self._tag_column(values) if name in self._tag_cols() else pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                kinds = sorted({type(v).__name__ for v in values if v is not None})
                raise RecipeError(
                    f"{self.name}: metadata key {name!r}, which the block reads, holds values of "
                    f"several types in one batch ({', '.join(kinds)}): {first_line(e)}"
                ) from None
            table = table.append_column(name, col)
        return table

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        if data is None:
            return
        self.block.ensure_setup()
        with self.exclusion_writer if self.exclusion_writer else contextlib.nullcontext() as writer:
            for docs in batched(data, self.batch_size):
                docs = list(docs)
                table = self._table(docs)
                if self._checked is None or not table.schema.equals(self._checked):
                    # as a recipe's blocks are checked before a run: a condition reading a missing
                    # key, not boolean, or aggregating over the batch, and a labels key of another type
                    self.block.validate(table.schema, self.name)
                    self._checked = table.schema
                before = set(table.column_names)
                with self.track_time("batch"):
                    batch = self.block.process(Batch(table, "<documents>", len(docs)))
                self.stat_update("total", value=len(docs))
                if isinstance(self.block, FilterDecision):
                    removed: dict[int, str] = {}
                    for rej in batch.rejected:
                        removed.update(
                            zip(rej.column(_POS).to_pylist(), rej.column(REASON_COLUMN).to_pylist())
                        )
                    for pos, doc in enumerate(docs):
                        if pos in removed:
                            reason = removed[pos]
                            self.stat_update("dropped", f"dropped_{reason}")
                            if writer is not None:
                                doc.metadata["filter_reason"] = reason
                                writer.write(doc, rank)
                        else:
                            self.stat_update("forwarded")
                            yield doc
                    continue
                if batch.table.num_rows != len(docs):  # pragma: no cover - resamplers are refused above
                    raise RecipeError(
                        f"{self.name}: {len(docs)} documents in, {batch.table.num_rows} rows out"
                    )
                new_cols = [c for c in batch.table.column_names if c not in before or c in self._tag_cols()]
                values = {c: batch.table.column(c).to_pylist() for c in new_cols}
                for i, doc in enumerate(docs):
                    for c in new_cols:
                        doc.metadata[c] = values[c][i]
                    self.stat_update("forwarded")
                    yield doc
        self.block.teardown()
        self.block._ready = False  # a second run sets the block up again

    @staticmethod
    def _tag_column(values: list[Any]) -> pa.Array:
        """A tag's labels key as list<string>: a batch where every document holds [] or None would
        otherwise be typed list<null> or null (a tag before matched nothing there)."""
        from corpusfilter.blocks.decisions import LABELS_TYPE

        if all(v is None or isinstance(v, list | tuple) for v in values):  # a string is no list of labels
            try:
                return pa.array(values, LABELS_TYPE)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                pass
        return pa.array(values)  # another type: the block's check names it

    def _tag_cols(self) -> set[str]:
        col = getattr(self.block.params, "column", None)
        return {col} if isinstance(col, str) else set()
