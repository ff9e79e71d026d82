"""Helpers for testing your own blocks: check the contracts every block keeps, and run blocks on a
few inline documents through the real pipeline.

``check_block(block, texts)`` catches the faults that make a corpus silently irreproducible: a block
that is not registered under its name and version, a ``to_config()`` that does not rebuild the same
block, a block that cannot travel to a worker, columns other than those declared (or of another
type), rows lost or changed, results that vary from run to run or with how documents are batched
(which then change with ``tasks`` or the batch size), and an empty batch that crashes.

``run_blocks(blocks, texts)`` writes the documents as a Parquet shard and runs the blocks as a recipe
through datatrove, with the accounting check and the manifest, and returns what was kept and
rejected.
"""

from __future__ import annotations

import json
import pickle
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import pyarrow as pa

from corpusfilter.batch import BLOCK_COLUMN, REASON_COLUMN, Batch
from corpusfilter.errors import RecipeError

if TYPE_CHECKING:
    import polars as pl

    from corpusfilter.blocks.base import Block

#: sample documents: texts (ids d0, d1, ... added), a column mapping, or an Arrow table
Data: TypeAlias = "Sequence[str] | Mapping[str, Sequence[Any]] | pa.Table"


class BlockCheckError(AssertionError):
    """One or more block contracts are broken; the message lists each one by name."""

    def __init__(self, block: str, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {name}: {what}" for name, what in self.problems)
        super().__init__(f"{block} breaks {len(self.problems)} block contract(s):\n{lines}")


def as_table(data: Data, *, text_column: str = "text", id_column: str = "id") -> pa.Table:
    """Texts (ids ``d0``, ``d1``, ... added), a column mapping or an Arrow table, as an Arrow table."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, Mapping):
        return pa.table(dict(data))
    texts = list(data)
    return pa.table(
        {id_column: [f"d{i}" for i in range(len(texts))], text_column: pa.array(texts, pa.string())}
    )


@dataclass
class Applied:
    """What one block did to a table: the rows it passed on, the rows it rejected, the copies it added."""

    kept: pa.Table
    rejected: pa.Table | None
    added: int


def apply_block(block: Block, table: pa.Table, *, batch_rows: int | None = None) -> Applied:
    """Run ``block`` on ``table`` in batches of ``batch_rows`` (default: one batch) through its own
    ``run()`` (setup, stats, teardown), as a pipeline would. The block is used as given."""
    n = table.num_rows
    size = max(1, batch_rows or n or 1)
    batches = [Batch(table.slice(o, size), "check", min(size, n - o)) for o in range(0, n, size)]
    if not batches:
        batches = [Batch(table.slice(0, 0), "check", 0)]
    out = list(block.run(iter(batches)))
    kept = pa.concat_tables([b.table for b in out]) if out else table.slice(0, 0)
    rejected_parts = [t for b in out for t in b.rejected]
    rejected = pa.concat_tables(rejected_parts) if rejected_parts else None
    return Applied(kept, rejected, sum(b.added for b in out))


def check_block(
    block: Block, data: Data, *, atol: float = 0.0, batch_rows: int = 1, registered: bool = True
) -> None:
    """Raise :class:`BlockCheckError` naming every contract ``block`` breaks on ``data``.

    ``data``: texts, a column mapping or an Arrow table holding the columns the block reads (score
    columns for a decision). ``atol``: tolerance for float columns when comparing runs (a transformer
    batched with padding differs from one run alone in the last bits). ``batch_rows``: the small batch
    size compared against one batch. ``registered=False`` skips the registry checks for a block
    used only in Python.
    """
    from corpusfilter.recipe import needs_totals
    from corpusfilter.registry import from_config, lookup

    problems: list[tuple[str, str]] = []
    spec = f"{block.block_type}@{block.version}"
    table = as_table(data, text_column=block.text_column, id_column=block.id_column)

    config = block.to_config()
    try:
        json.dumps(config)
    except (TypeError, ValueError) as e:
        problems.append(("config_is_plain_data", f"to_config() is not JSON data ({e})"))
    rebuilt: Block | None = None
    if registered:
        try:
            if lookup(spec) is not type(block):
                problems.append(
                    ("registered", f"{spec} names {lookup(spec).__name__}, not {type(block).__name__}")
                )
        except RecipeError as e:
            problems.append(
                ("registered", f"{spec} is not in the registry ({e}); decorate the class with @register")
            )
        else:
            try:
                rebuilt = from_config(config)
                _copy_pipeline_settings(block, rebuilt)
                if rebuilt.to_config() != config:
                    problems.append(
                        (
                            "config_round_trip",
                            f"from_config(to_config()) gives {rebuilt.to_config()!r}, not {config!r}",
                        )
                    )
            except Exception as e:
                problems.append(("config_round_trip", f"from_config(to_config()) fails: {e}"))
                rebuilt = None
    try:
        fresh = pickle.loads(pickle.dumps(block))
    except Exception as e:
        problems.append(("picklable", f"the block cannot be pickled for a worker ({type(e).__name__}: {e})"))
        raise BlockCheckError(spec, problems) from None

    try:
        block.validate(table.schema, spec)
    except Exception as e:
        problems.append(("validates", f"validate() rejects the sample table: {e}"))
        raise BlockCheckError(spec, problems) from None
    if needs_totals(block):  # solved from the whole corpus by the runner: check it with run_blocks
        if problems:
            raise BlockCheckError(spec, problems)
        return

    declared = block.output_fields(table.schema)
    try:
        first = apply_block(fresh, table)
    except Exception as e:
        problems.append(("runs", f"{type(e).__name__}: {e}"))
        raise BlockCheckError(spec, problems) from None
    problems += _check_columns(table, first.kept, declared)
    problems += _check_rows(block, table, first)

    def again(name: str, other: Block, batch: int | None, what: str) -> None:
        try:
            res = apply_block(other, table, batch_rows=batch)
        except Exception as e:
            problems.append((name, f"{what} fails: {type(e).__name__}: {e}"))
            return
        diff = _differs(first, res, atol)
        if diff:
            problems.append((name, f"{what} gives other results: {diff}"))

    again("deterministic", pickle.loads(pickle.dumps(block)), None, "a second run of a fresh copy")
    if rebuilt is not None:
        again("config_describes_block", rebuilt, None, "the block rebuilt from to_config()")
    if table.num_rows > batch_rows:
        again(
            "batch_independent",
            pickle.loads(pickle.dumps(block)),
            batch_rows,
            f"scoring in batches of {batch_rows} row(s)",
        )
    try:
        empty = apply_block(pickle.loads(pickle.dumps(block)), table.slice(0, 0))
        names = [f.name for f in empty.kept.schema]
        missing = [f.name for f in declared if f.name not in names]
        if empty.kept.num_rows or missing:
            problems.append(
                ("empty_batch", f"an empty batch gives {empty.kept.num_rows} rows, missing {missing}")
            )
    except Exception as e:
        problems.append(("empty_batch", f"an empty batch fails: {type(e).__name__}: {e}"))
    if problems:
        raise BlockCheckError(spec, problems)


def _copy_pipeline_settings(src: Block, dst: Block) -> None:
    """What the recipe builder sets on a block besides its parameters."""
    for attr in ("label", "text_column", "id_column", "seed"):
        setattr(dst, attr, getattr(src, attr))


def _check_columns(table: pa.Table, out: pa.Table, declared: list[pa.Field]) -> list[tuple[str, str]]:
    before = set(table.column_names)
    added = [f for f in out.schema if f.name not in before]
    want = [(f.name, f.type) for f in declared]
    got = [(f.name, f.type) for f in added]
    if got == want:
        return []
    return [("declared_columns", f"added {_fields(got)}, but output_fields() declares {_fields(want)}")]


def _fields(fields: list[tuple[str, pa.DataType]]) -> str:
    return "[" + ", ".join(f"{n}: {t}" for n, t in fields) + "]"


def _check_rows(block: Block, table: pa.Table, res: Applied) -> list[tuple[str, str]]:
    n_in = table.num_rows
    n_rej = res.rejected.num_rows if res.rejected is not None else 0
    out: list[tuple[str, str]] = []
    if res.kept.num_rows + n_rej != n_in + res.added:
        out.append(
            (
                "accounts_for_rows",
                f"{n_in} rows in + {res.added} added != {res.kept.num_rows} passed on + {n_rej} rejected",
            )
        )
    if block.kind == "detector":
        if n_rej or res.kept.num_rows != n_in:
            out.append(("detector_keeps_rows", "a detector must pass every row on and reject none"))
        elif not res.kept.select(table.column_names).equals(table):
            out.append(("input_unchanged", "a detector changed columns it did not add"))
    if res.rejected is not None:
        cols = res.rejected.column_names
        if REASON_COLUMN not in cols or BLOCK_COLUMN not in cols:
            out.append(("rejected_have_reason", f"rejected rows lack {REASON_COLUMN!r} / {BLOCK_COLUMN!r}"))
        elif any(not r for r in res.rejected.column(REASON_COLUMN).to_pylist()):
            out.append(("rejected_have_reason", "a rejected row has an empty reason"))
    return out


def _differs(a: Applied, b: Applied, atol: float) -> str | None:
    pairs = [("passed on", a.kept, b.kept)]
    if a.rejected is not None or b.rejected is not None:
        pairs.append(("rejected", a.rejected, b.rejected))
    if a.added != b.added:
        return f"{a.added} vs {b.added} copies added"
    for what, x, y in pairs:
        if x is None or y is None:
            return f"{what}: rows in one run only"
        if x.num_rows != y.num_rows:
            return f"{what}: {x.num_rows} vs {y.num_rows} rows"
        if x.schema != y.schema:
            return f"{what}: schema {x.schema.names} vs {y.schema.names}"
        for name in x.column_names:
            cx, cy = x.column(name), y.column(name)
            if cx.equals(cy):
                continue
            if atol > 0 and pa.types.is_floating(cx.type):
                vx = cx.to_numpy(zero_copy_only=False).astype(np.float64)
                vy = cy.to_numpy(zero_copy_only=False).astype(np.float64)
                if np.allclose(vx, vy, rtol=0.0, atol=atol, equal_nan=True):
                    continue
            rows = [i for i, (p, q) in enumerate(zip(cx.to_pylist(), cy.to_pylist())) if p != q]
            i = rows[0] if rows else 0
            return f"{what}: column {name!r} row {i}: {cx[i].as_py()!r} vs {cy[i].as_py()!r}"
    return None


@dataclass
class Outcome:
    """A finished run on inline documents, read back into memory."""

    kept: pl.DataFrame
    rejected: pl.DataFrame
    #: rows the reader could not use (null or empty text, null id), with the problem named
    unreadable: pl.DataFrame
    manifest: dict[str, Any]

    @property
    def accounting(self) -> dict[str, Any]:
        acc: dict[str, Any] = self.manifest["accounting"]
        return acc


def run_blocks(
    blocks: Sequence[Block | Mapping[str, Any]],
    data: Data,
    *,
    seed: int = 0,
    shards: int = 1,
    workdir: str | Path | None = None,
    **recipe: Any,
) -> Outcome:
    """Run ``blocks`` (objects, or recipe items such as ``{"drop": {...}}``) as a recipe over ``data``
    through the real datatrove pipeline, and return the kept and rejected rows.

    ``data`` is written as ``shards`` Parquet files; every block goes through the registry as a
    recipe's would, so an unregistered block is an error here too. Extra keyword arguments are
    recipe keys (``control={...}``, ``input={...}`` merged over the written input). The output lives
    in ``workdir`` (kept) or a temporary folder (removed once read back).
    """
    import polars as pl
    import pyarrow.parquet as pq

    from corpusfilter.recipe import load_recipe
    from corpusfilter.report import load_output
    from corpusfilter.runner import run

    items: list[dict[str, Any]] = []
    for b in blocks:
        if isinstance(b, Mapping):
            items.append(dict(b))
        else:
            cfg = b.to_config()
            items.append({cfg["type"]: cfg["params"]})
    with tempfile.TemporaryDirectory(prefix="corpusfilter-test-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        inp = root / "input"
        inp.mkdir(parents=True, exist_ok=True)
        extra_input = dict(recipe.pop("input", {}) or {})
        table = as_table(
            data,
            text_column=extra_input.get("text_column", "text"),
            id_column=extra_input.get("id_column", "id"),
        )
        n = max(1, shards)
        size = -(-table.num_rows // n) if table.num_rows else 0
        for s in range(n):
            pq.write_table(table.slice(s * size, size), inp / f"shard-{s:03d}.parquet")
        spec = {
            "input": {"path": str(inp), **extra_input},
            "output": {"path": str(root / "output")},
            "seed": seed,
            "blocks": items,
            **recipe,
        }
        result = run(
            load_recipe(spec, base_dir=Path.cwd()), tasks=n, workers=1, mode="overwrite", progress=False
        )
        out = load_output(result.output)

        def read(kind: str) -> pl.DataFrame:
            files = out.files(kind)
            if files:
                return pl.read_parquet([str(f) for f in files])
            # no file: an empty frame with the manifest's columns, so `frame["id"]` still works
            schema = pa.schema([(name, _arrow_type(t)) for name, t in out.columns(kind).items()])
            frame = pl.from_arrow(schema.empty_table())
            assert isinstance(frame, pl.DataFrame)
            return frame

        return Outcome(read("data"), read("rejected"), read("unreadable"), result.manifest)


def _arrow_type(name: str) -> pa.DataType:
    try:
        return pa.type_for_alias(name)
    except ValueError:  # nested types (lists of labels) have no alias
        return pa.null()
