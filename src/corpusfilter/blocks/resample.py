"""Resampling decisions: ``upsample`` (by a weight or to a target token share) and ``backfill``
(replace removed tokens with copies of kept documents), plus the random selection of a matched control.

A document's occurrences are the original and its copies: ``weight`` and ``max_copies`` count the
original (``max_copies: 2`` allows one copy), while ``added`` and the summary's "added (copies)"
count only the copies, and ``copy_index`` numbers them from 1. Every copy is a new row with
``copy_index`` > 0, ``original_id`` = the id it copies and ``id`` = ``<original_id>#<copy_index>``,
so lineage is never lost and ids stay unique. Randomness comes only from hashes of (seed, block
name, original id, copy index): the same recipe and seed give the same copies on any number of tasks.

Blocks that need corpus-wide totals (``upsample`` with ``target_share``, ``backfill``, the matched
control) are solved by the runner from the scored pass before the decide pass runs; the solution is
stored on the block (``solution``) and recorded in the manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpusfilter.batch import COPY_COLUMN, ORIGINAL_COLUMN, ROW_COLUMN, SHARD_COLUMN, Batch
from corpusfilter.blocks.base import Decision, reject_rows
from corpusfilter.blocks.decisions import LABELS_TYPE, add_label, label_removed
from corpusfilter.errors import RecipeError
from corpusfilter.expr import Condition, Expression
from corpusfilter.registry import register

COPY_FIELDS = [pa.field(ORIGINAL_COLUMN, pa.string()), pa.field(COPY_COLUMN, pa.int32())]


def unit_draws(ids: Iterable[Any], copies: Iterable[int], *, seed: int, salt: str) -> np.ndarray:
    """Uniform [0, 1) numbers from blake2b(seed, salt, id, copy): the same on every machine and task."""
    prefix = f"{seed}\x1f{salt}\x1f".encode()
    out = [
        int.from_bytes(hashlib.blake2b(prefix + f"{i}\x1f{c}".encode(), digest_size=8).digest(), "little")
        for i, c in zip(ids, copies)
    ]
    return np.asarray(out, dtype=np.uint64).astype(np.float64) / 2.0**64


def lineage(table: pa.Table, id_column: str) -> tuple[pa.Array, np.ndarray]:
    """(original ids, copy indices) of the rows: from the copy columns if present, else the ids, 0."""
    if ORIGINAL_COLUMN in table.column_names:
        orig = table.column(ORIGINAL_COLUMN).combine_chunks()
        idx = table.column(COPY_COLUMN).to_numpy(zero_copy_only=False).astype(np.int64)
        return orig, idx
    return table.column(id_column).combine_chunks(), np.zeros(table.num_rows, dtype=np.int64)


def repeat_rows(table: pa.Table, counts: np.ndarray, *, id_column: str) -> pa.Table:
    """Repeat row i ``counts[i]`` times (counts >= 1) and number every original's rows 0, 1, 2, ...

    Copies sit next to the row they copy, and every copy of a document is made in the batch that
    holds it, so numbering each original row and the copies after it keeps indices unique across any
    chain of resampling blocks. Copy k of document D gets the id ``D#k``. A run starts at every
    original row (copy index 0), not only where the id changes: two input rows that share an id are
    two documents, not a document and its copy.
    """
    orig, copy_idx = lineage(table, id_column)
    counts = counts.astype(np.int64)
    src = np.repeat(np.arange(table.num_rows), counts)
    take = pa.array(src)
    out = table.take(take)
    orig_rep = orig.take(take).cast(pa.string())
    n = len(orig_rep)
    if n:
        starts = np.ones(n, dtype=bool)
        if n > 1:
            first = src[1:] != src[:-1]  # the row itself, not one of the copies made here
            starts[1:] = pc.not_equal(orig_rep[1:], orig_rep[:-1]).to_numpy(zero_copy_only=False) | (
                first & (copy_idx[src[1:]] == 0)
            )
        run_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
        new_idx = np.arange(n) - run_start
    else:
        new_idx = np.zeros(0, dtype=np.int64)
    if ORIGINAL_COLUMN in out.column_names:
        out = out.drop_columns([ORIGINAL_COLUMN, COPY_COLUMN])
    ids = pc.if_else(
        pa.array(new_idx > 0),
        pc.binary_join_element_wise(orig_rep, pa.array(new_idx.astype(str)), "#"),
        orig_rep,
    )
    out = out.set_column(out.column_names.index(id_column), pa.field(id_column, pa.string()), ids)
    out = out.append_column(COPY_FIELDS[0], orig_rep)
    return out.append_column(COPY_FIELDS[1], pa.array(new_idx, pa.int32()))


def extra_copies(table: pa.Table, chosen: dict[str, dict[int, int]]) -> np.ndarray:
    """Per row, ``chosen[cf_shard][cf_row]`` (0 when absent): selections are keyed by input position."""
    out = np.zeros(table.num_rows, dtype=np.int64)
    if not chosen or table.num_rows == 0:
        return out
    shards = table.column(SHARD_COLUMN).to_pylist()
    rows = table.column(ROW_COLUMN).to_numpy(zero_copy_only=False)
    for i, (s, r) in enumerate(zip(shards, rows)):
        got = chosen.get(s)
        if got:
            out[i] = got.get(int(r), 0)
    return out


class _Resampler(Decision):
    """Base of blocks that add copies: counts per row in :meth:`copies`; the base repeats and counts."""

    seed: int = 0
    id_column: str = "id"

    def output_fields(self, schema: pa.Schema) -> list[pa.Field]:
        new = [f for f in COPY_FIELDS if f.name not in schema.names]
        if getattr(self.params, "label", None) and "labels" not in schema.names:
            new.append(pa.field("labels", LABELS_TYPE))
        return new

    def copies(self, table: pa.Table) -> np.ndarray:
        """Number of rows each row becomes (>= 1)."""
        raise NotImplementedError

    def process(self, batch: Batch) -> Batch:
        table = batch.table
        counts = np.maximum(self.copies(table).astype(np.int64), 1)
        label = getattr(self.params, "label", None)
        new_labels = bool(label) and "labels" not in table.column_names
        if label:
            table = add_label(table, self._matches(table), label)
            where = getattr(self.params, "where", None)
            label_removed(batch, Condition(where, path=f"{self.label}.where") if where else None, label)
        table = repeat_rows(table, counts, id_column=self.id_column)
        if new_labels:  # in the order output_fields declares: the lineage columns, then labels
            table = table.select([c for c in table.column_names if c != "labels"] + ["labels"])
        batch.table = table
        added = int(counts.sum() - len(counts))
        batch.added += added
        self.stat_update("added", value=added)
        return batch

    def _matches(self, table: pa.Table) -> np.ndarray:
        return np.ones(table.num_rows, dtype=bool)


def require_columns(schema: pa.Schema, path: str, *, by: list[str], tokens: str) -> None:
    """Grouping columns must exist and ``tokens`` must be an integer column (a ``tokens`` detector's)."""
    for c in by:
        if c not in schema.names:
            raise RecipeError(f"{path}.by: unknown column {c!r} (columns: {', '.join(schema.names)})")
        t = schema.field(c).type
        if pa.types.is_nested(t) or (pa.types.is_dictionary(t) and pa.types.is_nested(t.value_type)):
            raise RecipeError(
                f"{path}.by: column {c!r} holds {t} values; group by a column of strings, numbers, "
                "booleans or dates"
            )
    if tokens not in schema.names or not pa.types.is_integer(schema.field(tokens).type):
        raise RecipeError(
            f"{path}.tokens: no integer column {tokens!r}; add a `tokens` detector (its count column is "
            "<name>_count) before this block"
        )


def _check_common(name: str, where: str | None, max_copies: int, path: str) -> None:
    """Checks every resampling block's parameters share: name, donor/target condition, copy cap."""
    if not name or not name.replace("_", "a").isalnum():
        raise RecipeError(f"{path}.name: use letters, digits and '_' (got {name!r})")
    if where is not None:
        Condition(where, path=f"{path}.where")
    if not 1 <= max_copies <= 1000:
        raise RecipeError(f"{path}.max_copies: must be between 1 and 1000")


MAX_COPIES_HELP = "cap on one document's occurrences, the original included (2 = at most one copy)"


@dataclasses.dataclass(frozen=True, kw_only=True)
class UpsampleParams:
    name: str = dataclasses.field(default="upsample", metadata={"help": "name in stats and hash salt"})
    where: str | None = dataclasses.field(
        default=None, metadata={"help": "SQL condition: rows to upsample (others occur once, uncopied)"}
    )
    weight: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "numeric SQL expression: expected occurrences per row, the original included "
            "(3 = the original and 2 copies), e.g. 1 + 4 * misaligned_score"
        },
    )
    target_share: float | None = dataclasses.field(
        default=None, metadata={"help": "make rows matching `where` this share (0-1) of output tokens"}
    )
    tokens: str = dataclasses.field(
        default="tokens_count", metadata={"help": "token-count column for target_share"}
    )
    max_copies: int = dataclasses.field(default=10, metadata={"help": MAX_COPIES_HELP})
    label: str | None = dataclasses.field(
        default=None, metadata={"help": "label added to the `labels` of matching rows (a category)"}
    )

    def check(self, path: str) -> None:
        _check_common(self.name, self.where, self.max_copies, path)
        if (self.weight is None) == (self.target_share is None):
            raise RecipeError(f"{path}: give exactly one of weight and target_share")
        if self.target_share is not None:
            if not 0 < self.target_share < 1:
                raise RecipeError(f"{path}.target_share: must be between 0 and 1 (a share, not a percent)")
            if self.where is None:
                raise RecipeError(f"{path}.target_share: needs `where` (the documents whose share is set)")
        if self.weight is not None:
            Expression(self.weight, path=f"{path}.weight")


@register("upsample", version=1)
class Upsample(_Resampler):
    """Repeat documents ``weight`` times, the original included; a seeded hash draw rounds the fraction.

    With ``target_share`` the weight of matching documents is solved from corpus totals so that they
    make up that share of output tokens (the runner scores first, then solves, then decides).
    """

    Params = UpsampleParams

    @property
    def needs_totals(self) -> bool:
        return self.params.target_share is not None

    #: set by the runner for target_share: {"weight": w, ...}
    solution: dict[str, Any] | None = None

    def validate(self, schema: pa.Schema, path: str) -> None:
        p = self.params
        if p.where is not None:
            Condition(p.where, path=f"{path}.where").validate(schema)
        if p.weight is not None:
            Expression(p.weight, path=f"{path}.weight").validate(schema)
        if p.target_share is not None:
            require_columns(schema, path, by=[], tokens=p.tokens)

    def columns_read(self) -> set[str] | None:
        p = self.params
        exprs = [Condition(p.where) if p.where else None, Expression(p.weight) if p.weight else None]
        cols = {c for e in exprs if e is not None for c in e.columns}
        return cols | {self.id_column, ORIGINAL_COLUMN, COPY_COLUMN, "labels"}

    def _matches(self, table: pa.Table) -> np.ndarray:
        if self.params.where is None:
            return np.ones(table.num_rows, dtype=bool)
        return Condition(self.params.where, path=f"{self.label}.where").evaluate(table)

    def weights(self, table: pa.Table) -> np.ndarray:
        """Expected occurrences per row, the original included, before the cap (>= 1)."""
        p = self.params
        match = self._matches(table)
        if p.target_share is not None:
            if self.solution is None:
                raise RecipeError(
                    f"{self.label}: target_share needs corpus totals; run the recipe with `corpusfilter run` "
                    "or `corpusfilter decide` (they solve the weight from the scored pass)"
                )
            w = np.full(table.num_rows, float(self.solution["weight"]))
        else:
            assert p.weight is not None
            w = Expression(p.weight, path=f"{self.label}.weight").evaluate(table, default=1.0)
        w = np.where(match, w, 1.0)
        return np.clip(w, 1.0, float(p.max_copies))

    def copies(self, table: pa.Table) -> np.ndarray:
        w = self.weights(table)
        whole = np.floor(w)
        frac = w - whole
        orig, idx = lineage(table, self.id_column)
        draws = np.ones(len(w))
        need = frac > 0
        cut = (self.solution or {}).get("draw_cut")
        if cut is not None:  # a target share's allocation: every fraction against one solved cut
            frac = np.where(need, float(cut), 0.0)
        if need.any():
            sel = np.flatnonzero(need)
            draws[sel] = unit_draws(
                (orig[i].as_py() for i in sel), (idx[i] for i in sel), seed=self.seed, salt=self.params.name
            )
        return (whole + (draws < frac)).astype(np.int64)

    def provenance(self) -> dict[str, Any]:
        return {"solution": self.solution} if self.solution is not None else {}


@dataclasses.dataclass(frozen=True, kw_only=True)
class BackfillParams:
    name: str = dataclasses.field(default="backfill", metadata={"help": "name in stats and hash salt"})
    by: list[str] = dataclasses.field(
        default_factory=lambda: ["source"],
        metadata={
            "help": "columns whose values group documents (removed tokens are replaced within a group)"
        },
    )
    where: str | None = dataclasses.field(
        default=None, metadata={"help": "SQL condition: documents allowed as donors (default: all kept)"}
    )
    tokens: str = dataclasses.field(default="tokens_count", metadata={"help": "token-count column"})
    max_copies: int = dataclasses.field(default=10, metadata={"help": MAX_COPIES_HELP})

    def check(self, path: str) -> None:
        _check_common(self.name, self.where, self.max_copies, path)


@register("backfill", version=1)
class Backfill(_Resampler):
    """Replace the tokens earlier drops removed with extra copies of kept documents of the same group.

    Donors are chosen per group (``by``) in a seeded random order, so total tokens stay constant.
    """

    Params = BackfillParams
    needs_totals = True
    #: set by the runner: {"extra": {shard: {row: copies}}, "per_group": ...}
    solution: dict[str, Any] | None = None

    def validate(self, schema: pa.Schema, path: str) -> None:
        p = self.params
        require_columns(schema, path, by=p.by, tokens=p.tokens)
        if p.where is not None:
            Condition(p.where, path=f"{path}.where").validate(schema)

    def columns_read(self) -> set[str] | None:
        p = self.params
        cols = set(Condition(p.where).columns) if p.where else set()
        return cols | {
            *p.by,
            p.tokens,
            self.id_column,
            SHARD_COLUMN,
            ROW_COLUMN,
            ORIGINAL_COLUMN,
            COPY_COLUMN,
        }

    def copies(self, table: pa.Table) -> np.ndarray:
        if self.solution is None:
            raise RecipeError(f"{self.label}: backfill needs corpus totals; run it with `corpusfilter run`")
        _, idx = lineage(table, self.id_column)
        # Only originals carry the solved extra copies (copies made earlier are not donors).
        return extra_copies(table, self.solution["extra"]) * (idx == 0) + 1

    def provenance(self) -> dict[str, Any]:
        if self.solution is None:
            return {}
        return {k: v for k, v in self.solution.items() if k != "extra"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class MatchedControlParams:
    """Set from the recipe's ``control:`` section (``control.by``, ``.length_buckets``, ``.tokens``)."""

    by: list[str] = dataclasses.field(
        default_factory=lambda: ["source"],
        metadata={
            "help": "control.by: columns whose values group documents; tokens are matched within each group"
        },
    )
    length_buckets: list[int] = dataclasses.field(
        default_factory=lambda: [128, 512, 2048, 8192],
        metadata={
            "help": "control.length_buckets: token-count edges that split each group by length ([]: not by length)"
        },
    )
    tokens: str = dataclasses.field(
        default="tokens_count",
        metadata={"help": "control.tokens: token-count column (a `tokens` detector's <name>_count)"},
    )


@register("matched_control", version=1)
class MatchedControl(_Resampler):
    """The control arm's one decision: drop and copy the random rows the runner solved to match the treatment.

    Same tokens removed and added as the treatment, per group and length bucket. The runner adds it
    from a recipe's ``control:`` section; a recipe that names it in ``blocks:`` is an error. It is
    registered so that manifests and rebuilds can name it.
    """

    Params = MatchedControlParams
    not_in_recipes = (
        "the control arm's block, which the runner adds from a `control:` section (it solves the "
        "control's selection from the treatment); write `control: {}`"
    )
    reason = "control_random"
    #: {"drop": {shard: {row: 1}}, "extra": {shard: {row: copies}}, ...}
    solution: dict[str, Any] | None = None

    def process(self, batch: Batch) -> Batch:
        if self.solution is None:
            raise RecipeError("matched_control: the runner solves the control's selection before the run")
        if batch.num_rows:
            reject_rows(self, batch, extra_copies(batch.table, self.solution["drop"]) > 0, self.reason)
        return super().process(batch)

    def copies(self, table: pa.Table) -> np.ndarray:
        assert self.solution is not None
        return extra_copies(table, self.solution["extra"]) + 1


__all__ = [
    "COPY_COLUMN",
    "ORIGINAL_COLUMN",
    "SHARD_COLUMN",
    "Backfill",
    "MatchedControl",
    "Upsample",
    "repeat_rows",
    "unit_draws",
]


def control_tags(blocks: Iterable[Any]) -> list[Decision]:
    """The treatment's labels for its control arm, so both arms report the same categories: its
    tags, and for each labelled upsample a tag of its condition (labelled ``<upsample>:labels``)."""
    from corpusfilter.blocks.decisions import Tag

    tags: list[Decision] = []
    for b in blocks:
        if isinstance(b, Tag):
            tags.append(b)
        elif isinstance(b, Upsample) and b.params.label and b.params.where:
            t = Tag(where=b.params.where, label=b.params.label)
            t.label, t.text_column = f"{b.label}:labels", b.text_column
            t.stats.name = str(t)
            tags.append(t)
    return tags
