"""Helpers for testing your own blocks: check the contracts every block keeps, and run blocks on a
few inline documents through the real pipeline.

``check_block(block, texts)`` catches the faults that make a corpus silently irreproducible: a block
that is not registered under its name and version, a ``to_config()`` that does not rebuild the same
block, a block that cannot travel to a worker, columns other than those declared (or of another
type), rows lost or changed (by a detector or a decision), results that vary from run to run, with
how documents are batched or with state a block carries from one batch to the next (which then
change with ``tasks`` or the batch size), and an empty batch that crashes.

``run_blocks(blocks, texts)`` writes the documents as a Parquet shard and runs the blocks as a recipe
through datatrove, with the accounting check and the manifest, and returns what was kept and
rejected.
"""

from __future__ import annotations

import json
import pickle
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import pyarrow as pa

from corpusfilter.batch import BLOCK_COLUMN, COPY_COLUMN, REASON_COLUMN, Batch
from corpusfilter.errors import OutputError, RecipeError

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
    return _gathered(list(block.run(iter(_batches(table, batch_rows)))), table)


def _batches(table: pa.Table, batch_rows: int | None) -> list[Batch]:
    """``table`` cut into batches of ``batch_rows`` (None: one batch; an empty table: one empty batch).
    A table that holds copies (``copy_index``) is cut only before an original, so each batch holds
    ``batch_rows`` originals with their copies: a pipeline never parts a copy from its original (the
    reader refuses copy columns in input), and resamplers number copies per batch on that ground."""
    n = table.num_rows
    size = max(1, batch_rows or n or 1)
    if COPY_COLUMN in table.column_names and n:
        idx = table.column(COPY_COLUMN).to_numpy(zero_copy_only=False)
        originals = np.flatnonzero(np.nan_to_num(idx.astype(np.float64)) == 0).tolist()
        cuts = sorted({0, *originals[::size]}) + [n]
    else:
        cuts = list(range(0, n, size)) + [n]
    batches = [Batch(table.slice(a, b - a), "check", b - a) for a, b in pairwise(cuts) if b > a]
    return batches or [Batch(table.slice(0, 0), "check", 0)]


def _gathered(out: Sequence[Batch], table: pa.Table) -> Applied:
    """The batches a block passed on, joined in order."""
    kept = pa.concat_tables([b.table for b in out]) if out else table.slice(0, 0)
    rejected_parts = [t for b in out for t in b.rejected]
    rejected = pa.concat_tables(rejected_parts) if rejected_parts else None
    return Applied(kept, rejected, sum(b.added for b in out))


def _apply_as_tasks(block: Block, table: pa.Table, batch_rows: int) -> Applied:
    """Batches of ``batch_rows`` split between two fresh copies of ``block`` (as two datatrove tasks
    get theirs), each taking its batches last first, and put back in order: a block that carries
    state from one batch to the next (a counter, a cache of earlier rows) gives other results."""
    batches = _batches(table, batch_rows)
    out: list[Batch] = []
    half = (len(batches) + 1) // 2
    for part in (batches[:half], batches[half:]):
        copy = pickle.loads(pickle.dumps(block))
        got = list(copy.run(iter(part[::-1])))
        if len(got) != len(part):
            raise RuntimeError(f"run() passed on {len(got)} batches for {len(part)}")
        out += got[::-1]
    return _gathered(out, table)


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
    from corpusfilter.registry import from_config

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
        unregistered = _not_registered(block)
        if unregistered:
            problems.append(("registered", unregistered))
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

    def again(name: str, apply: Callable[[], Applied], what: str, why: str = "") -> bool:
        """Whether ``apply()`` gives what the first run gave; a problem named ``name`` if not."""
        try:
            res = apply()
        except Exception as e:
            problems.append((name, f"{what} fails: {type(e).__name__}: {e}"))
            return False
        diff = _differs(first, res, atol)
        if diff:
            problems.append((name, f"{what} gives other results: {diff}{why}"))
        return not diff

    def copied() -> Block:
        return pickle.loads(pickle.dumps(block))

    again("deterministic", lambda: apply_block(copied(), table), "a second run of a fresh copy")
    if rebuilt is not None:
        again(
            "config_describes_block",
            lambda: apply_block(rebuilt, table),
            "the block rebuilt from to_config()",
        )
    if table.num_rows > batch_rows and again(
        "batch_independent",
        lambda: apply_block(copied(), table, batch_rows=batch_rows),
        f"scoring in batches of {batch_rows} row(s)",
    ):
        again(
            "stateless_across_batches",
            lambda: _apply_as_tasks(block, table, batch_rows),
            f"scoring batches of {batch_rows} row(s) with two fresh copies, each taking its batches "
            "last first (as separate tasks would)",
            "; the block carries state from one batch to the next (a result must not depend on the "
            "batches scored before it)",
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


def _not_registered(block: Block) -> str | None:
    """Why the registry would not rebuild ``block`` as its own class (None: it would). A subclass of a
    registered block inherits its parent's name and version, so a recipe would silently run the parent."""
    from corpusfilter.registry import lookup

    spec, cls = f"{block.block_type}@{block.version}", type(block).__name__
    try:
        found = lookup(spec)
    except RecipeError as e:
        return f"{spec} ({cls}) is not in the registry ({e}); decorate {cls} with @register(name, version)"
    if found is not type(block):
        return (
            f"{cls} reports {spec}, which the registry maps to {found.__name__}, so a recipe would run "
            f"{found.__name__} instead; register {cls} under its own name and version with "
            f"@register(name, version)"
        )
    return None


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
        else:
            cols = [
                c
                for c in table.column_names
                if table[c].type != res.kept[c].type or _first_difference(table[c], res.kept[c]) is not None
            ]
            if cols:
                out.append(("input_unchanged", f"a detector changed column(s) {cols} it did not add"))
    else:
        changed = _decision_changed(block, table, res)
        if changed:
            out.append(("input_unchanged", changed))
    if res.rejected is not None:
        cols = res.rejected.column_names
        if REASON_COLUMN not in cols or BLOCK_COLUMN not in cols:
            out.append(("rejected_have_reason", f"rejected rows lack {REASON_COLUMN!r} / {BLOCK_COLUMN!r}"))
        elif any(not r for r in res.rejected.column(REASON_COLUMN).to_pylist()):
            out.append(("rejected_have_reason", "a rejected row has an empty reason"))
    return out


def _decision_changed(block: Block, table: pa.Table, res: Applied) -> str | None:
    """How a decision changed the rows it passed on or rejected, in columns it does not write (None:
    it did not). It may write the columns it declares on a table without them (a tag's labels, a
    resampler's lineage); rows it copies get new ids, so with copies the id is not compared."""
    written = {f.name for f in block.output_fields(table.schema)}
    try:
        written |= {f.name for f in block.output_fields(pa.schema([]))}
    except Exception:  # declarations that need the table's columns: those above
        pass
    cols = [c for c in table.column_names if c not in written and not (res.added and c == block.id_column)]
    parts = [res.kept] + ([res.rejected] if res.rejected is not None else [])
    for part, what in zip(parts, ("passed on", "rejected")):
        missing = [c for c in cols if c not in part.column_names]
        if missing:
            return f"a decision removed column(s) {missing} from the rows it {what}"
        retyped = [c for c in cols if part.schema.field(c).type != table.schema.field(c).type]
        if retyped:  # equal values of another type (int64 -> int32) compare alike below
            return f"a decision changed the type of column(s) {retyped} of the rows it {what}"

    def rows(t: pa.Table) -> list[str]:
        values = t.select(cols).to_pylist()
        return [repr(tuple(r.values())) for r in values]

    before = Counter(rows(table))
    for part, what in zip(parts, ("passed on", "rejected")):
        for i, key in enumerate(rows(part)):
            if before[key] > 0:
                if not res.added:  # with copies, a row may appear more than once
                    before[key] -= 1
                continue
            return f"a decision changed a row it {what} ({_which(table, part, i, cols, block.id_column)})"
    return None


def _which(table: pa.Table, part: pa.Table, i: int, cols: list[str], id_column: str) -> str:
    """Row ``i`` of ``part`` named by id, with the columns in which it differs from the input row."""
    row = part.slice(i, 1).to_pylist()[0]
    if id_column not in cols:
        return f"row {i} matches no input row"
    ids = table.column(id_column).to_pylist()
    if row[id_column] not in ids:
        return f"{id_column} {row[id_column]!r} is not an input row's"
    src = table.slice(ids.index(row[id_column]), 1).to_pylist()[0]
    diff = [c for c in cols if repr(src[c]) != repr(row[c])]
    return f"{id_column} {row[id_column]!r}: column(s) {diff} differ from the input"


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
            first = _first_difference(cx, cy)
            if first is None:
                continue
            if atol > 0 and pa.types.is_floating(cx.type):
                vx = cx.to_numpy(zero_copy_only=False).astype(np.float64)
                vy = cy.to_numpy(zero_copy_only=False).astype(np.float64)
                if np.allclose(vx, vy, rtol=0.0, atol=atol, equal_nan=True):
                    continue
            return f"{what}: column {name!r} row {first}: {cx[first].as_py()!r} vs {cy[first].as_py()!r}"
    return None


def _first_difference(x: pa.ChunkedArray, y: pa.ChunkedArray) -> int | None:
    """The first row where two equally long columns differ (None: none does). NaN equals NaN here: a
    block that passes a NaN on, or scores one, gives the same result twice, while Arrow's ``equals``
    holds NaN unequal to itself. Values compare by ``repr`` (exact for floats, nested values too)."""
    if x.equals(y):
        return None
    for i, (p, q) in enumerate(zip(x.to_pylist(), y.to_pylist())):
        if p != q and repr(p) != repr(q):
            return i
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
    recipe's would, so an unregistered block is an error here too (a subclass of a registered block
    included: it would run as its parent). Extra keyword arguments are recipe keys
    (``control={...}``, ``input={...}`` merged over the written input). The input and output live in
    ``workdir/input`` and ``workdir/output`` (kept; each call replaces what an earlier call wrote
    there, and refuses files it did not write) or in a temporary folder (removed once read back).
    """
    import polars as pl
    import pyarrow.parquet as pq

    from corpusfilter.recipe import load_recipe
    from corpusfilter.report import load_output
    from corpusfilter.runner import run

    items: list[dict[str, Any]] = []
    for i, b in enumerate(blocks):
        if isinstance(b, Mapping):
            items.append(dict(b))
        else:
            unregistered = _not_registered(b)
            if unregistered:
                raise RecipeError(f"blocks[{i}]: {unregistered}")
            cfg = b.to_config()
            items.append({cfg["type"]: cfg["params"]})
    with tempfile.TemporaryDirectory(prefix="corpusfilter-test-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        inp = root / "input"
        extra_input = dict(recipe.pop("input", {}) or {})
        table = as_table(
            data,
            text_column=extra_input.get("text_column", "text"),
            id_column=extra_input.get("id_column", "id"),
        )
        n = max(1, shards)
        size = -(-table.num_rows // n) if table.num_rows else 0
        names = [f"shard-{s:03d}.parquet" for s in range(n)]
        _claim_workdir(root, names)
        for s, name in enumerate(names):
            pq.write_table(table.slice(s * size, size), inp / name)
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
        _record_output(root)
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


#: in a workdir: the input shards run_blocks wrote there, so the next call removes those and only those
_WORKDIR_MARK = ".corpusfilter-run-blocks.json"


def _claim_workdir(root: Path, names: list[str]) -> None:
    """Make ``root/input`` ready to hold exactly ``names``: remove the shards an earlier call wrote
    there (a call with fewer shards would read them too), and refuse an ``input/`` or ``output/`` that
    holds files run_blocks did not write, rather than read or delete them."""
    mark, inp, out = root / _WORKDIR_MARK, root / "input", root / "output"
    written = json.loads(mark.read_text()) if mark.is_file() else {}
    ours = {inp: set(written.get("input", [])), out: set(written.get("output", []))}
    for folder in (inp, out):
        if not folder.is_dir():
            continue
        theirs = sorted(
            rel
            for f in folder.rglob("*")
            if not f.is_dir() and (rel := str(f.relative_to(folder))) not in ours[folder]
        )
        if theirs:
            raise OutputError(
                f"run_blocks workdir {root}: {folder.name}/ holds files this workdir's record does not "
                f"list ({len(theirs)}, e.g. {theirs[0]}: yours, or written by an earlier corpusfilter "
                "version's run_blocks); remove them or choose another workdir"
            )
    for name in ours[inp]:
        (inp / name).unlink(missing_ok=True)
    inp.mkdir(parents=True, exist_ok=True)
    # the output is recorded once the run has written it; until then only the input is ours
    mark.write_text(json.dumps({"input": names, "output": sorted(ours[out])}))


def _record_output(root: Path) -> None:
    """After a run: the files in ``root/output`` are run_blocks' own, which the next call may replace."""
    mark, out = root / _WORKDIR_MARK, root / "output"
    written = json.loads(mark.read_text())
    written["output"] = sorted(str(f.relative_to(out)) for f in out.rglob("*") if not f.is_dir())
    mark.write_text(json.dumps(written))


def _arrow_type(name: str) -> pa.DataType:
    try:
        return pa.type_for_alias(name)
    except ValueError:  # nested types (lists of labels) have no alias
        return pa.null()
