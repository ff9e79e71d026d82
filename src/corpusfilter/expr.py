"""Conditions over score columns: SQL expressions compiled by polars, never Python ``eval``.

A condition is checked against the pipeline's schema when the recipe is validated, so an unknown
column, a syntax error or a non-boolean result is reported before any data is read. At run time a
null result (e.g. a detector that did not score the row) counts as false; NaN is read as null.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa

from corpusfilter.errors import RecipeError, first_line


def _pl() -> Any:
    """polars, imported on first use: a block that never evaluates a condition does not load it."""
    import polars

    return polars


class _SqlExpression:
    """A SQL expression compiled by polars, checked against a schema before any data is read."""

    kind = "expression"

    def __init__(self, sql: str, *, path: str = "where") -> None:
        if not isinstance(sql, str) or not sql.strip():
            raise RecipeError(f"{path}: empty {self.kind}")
        self.sql = sql
        self.path = path
        try:
            self.expr = _pl().sql_expr(sql)
            self.columns = sorted(set(self.expr.meta.root_names()))
        except Exception as e:
            raise RecipeError(f"{path}: cannot parse {sql!r}: {first_line(e)}") from None

    def _check_dtype(self, dtype: Any) -> None:
        raise NotImplementedError

    def validate(self, schema: pa.Schema) -> None:
        missing = [c for c in self.columns if c not in schema.names]
        if missing:
            raise RecipeError(
                f"{self.path}: unknown column {missing[0]!r} in {self.sql!r} "
                f"(columns at this point: {', '.join(schema.names)})"
            )
        pl = _pl()
        empty = pl.from_arrow(schema.empty_table().select(self.columns)) if self.columns else pl.DataFrame()
        assert isinstance(empty, pl.DataFrame)
        try:
            dtype = empty.select(self.expr.alias("_c")).schema["_c"]
        except Exception as e:
            raise RecipeError(f"{self.path}: invalid {self.kind} {self.sql!r}: {first_line(e)}") from None
        # polars checks some operand types only on values (a list compared with a number): one row
        # of non-null sample values finds those before a run does
        probe = _probe_frame(schema, self.columns)  # four varied rows of sample values, or None
        one = probe.head(1) if probe is not None else None
        if one is not None:
            try:
                one.select(self.expr.alias("_c"))
            except (Exception, pl.exceptions.PanicException) as e:  # a panic is no Exception
                # only operand-type errors: a parse of the sample's own value ("a" as a date) is not
                if isinstance(e, pl.exceptions.SchemaError) or any(m in str(e) for m in _TYPE_ERRORS):
                    raise RecipeError(
                        f"{self.path}: invalid {self.kind} {self.sql!r}: {first_line(e)}"
                    ) from None
        self._check_dtype(dtype)
        self._check_row_wise(probe)

    def _check_row_wise(self, sample: Any) -> None:
        """An aggregate or window (``MAX(x)``, ``COUNT(*)``, ``... OVER (...)``) is computed over the
        rows that share a batch, so the result would move with the batch size and the input's
        split into files (``UNNEST`` changes the number of rows). Found from polars' own verdict on
        each node of the expression and, where it cannot judge a node, also by evaluating four varied
        sample rows together and one by one."""
        pl = _pl()
        bad = _not_row_wise(self.expr)
        probe = sample if bad is None else None
        if probe is not None:
            try:
                whole = probe.select(self.expr.alias("_c")).to_series().to_list()
                each = [
                    probe.slice(i, 1).select(self.expr.alias("_c")).to_series().to_list() for i in range(4)
                ]
            except (Exception, pl.exceptions.PanicException):  # the samples do not suit it: no verdict
                return
            if len(whole) == 1:
                whole = whole * 4
            bad = any(len(e) != 1 for e in each) or _plain(whole) != _plain([e[0] for e in each if e])
        if bad:
            raise RecipeError(
                f"{self.path}: {self.kind} {self.sql!r} is not computed row by row (an aggregate or "
                "window function such as MAX, AVG, COUNT or OVER, or UNNEST): its value would depend "
                "on which rows share a batch"
            )

    def _frame(self, table: pa.Table) -> Any:
        """The referenced columns; NaN in a float column as null, so it counts as missing (false in a
        condition) rather than, as polars orders it, above every number."""
        pl = _pl()
        if not self.columns:
            return pl.DataFrame({"_n": np.zeros(table.num_rows, dtype=np.int8)})
        frame = pl.from_arrow(table.select(self.columns))
        floats = [c for c, t in frame.schema.items() if t in (pl.Float32, pl.Float64)]
        return frame.with_columns(pl.col(floats).fill_nan(None)) if floats else frame


def _sample(t: pa.DataType) -> Any:
    """A non-null value of type ``t`` (0, "a", a one-item list, ...), or None where none is simple."""
    if pa.types.is_dictionary(t):
        return _sample(t.value_type)
    if pa.types.is_boolean(t):
        return False
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return 0
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "a"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return b"a"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        n = t.list_size if pa.types.is_fixed_size_list(t) else 1
        return [_sample(t.value_type)] * n
    if pa.types.is_struct(t):
        return {t.field(i).name: _sample(t.field(i).type) for i in range(t.num_fields)}
    return None


#: polars messages that say two operand types do not go together (whatever the values)
_TYPE_ERRORS = ("cannot compare", "could not evaluate", "cannot cast List", "cannot cast Array")


_STRPTIME = re.compile(r"\.str\.strptime\(\[[^\]]*\]\)$")  # the node is the parse itself


def _not_row_wise(expr: Any) -> bool | None:
    """Whether some node of the expression is computed over several rows or changes their number
    (polars' ``is_row_separable`` and ``is_length_preserving``: an aggregate, a window, ``UNNEST``);
    None when a node's verdict is unknown (polars cannot judge ``sql_*`` nodes without a schema, but
    their children are still judged) or the tree cannot be walked. A node that reads no column needs
    only be row-separable and give one value (a function of literals, not ``UNNEST([...])``); the
    body of a list function (``.list.eval(body)``) runs within each row's list and is not judged. A
    date parse that infers its format (``DATE(col)``) counts as row-wise: a value in another format
    fails the run."""
    try:
        nodes, bad, unknown = [expr], False, False
        while nodes:
            e = nodes.pop()
            m = e.meta
            if m.is_literal():
                continue
            roots = m.root_names()
            try:
                one = not roots and m.is_scalar()
                separable = m.is_row_separable() and (m.is_length_preserving() or one)
            except Exception:  # a node polars cannot judge here: its children still are
                unknown = True
            else:
                bad |= not separable and not _STRPTIME.search(str(e))
            text = str(e)
            nodes.extend(k for k in m.pop() if not text.endswith(f".list.eval({k})"))
        return True if bad else (None if unknown else False)
    except Exception:
        return None


def _plain(values: list[Any]) -> list[Any]:
    """Values comparable with ``==``: NaN as None, floats to 9 significant digits (polars divides a
    column by a literal with a reciprocal, so 5 / 3 differs in the last bit alone and in a batch)."""
    return [
        None if isinstance(v, float) and v != v else float(f"{v:.9g}") if isinstance(v, float) else v
        for v in values
    ]


#: four rows per column pattern (ranks): varied, with repeats (so a partition has more than one row)
_PATTERNS = ((0, 1, 2, 3), (1, 1, 2, 2), (3, 0, 2, 1))
#: the numbers the ranks stand for: no zero and uneven gaps, so an average is no row's own value
_NUMBERS = (1, 2, 5, 11)


def _listable(t: pa.DataType) -> bool:
    """Whether list items of type ``t`` get varied probe values (numbers, strings)."""
    return bool(
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
    )


def _probe_items(t: pa.DataType) -> list[Any]:
    return list(_NUMBERS) if pa.types.is_integer(t) or pa.types.is_floating(t) else list("abcd")


def _probe_frame(schema: pa.Schema, columns: list[str]) -> Any:
    """Four rows of varied sample values for ``columns`` (numbers, strings, booleans; one sample
    value repeated for other types), or None when a type has no sample."""
    pl = _pl()
    if not columns:  # COUNT(*) or ROW_NUMBER() read no column, but rows all the same
        return pl.DataFrame({"_n": [0, 1, 2, 3]})
    arrays = {}
    for j, c in enumerate(columns):
        t = schema.field(c).type
        base = t.value_type if pa.types.is_dictionary(t) else t
        k = _PATTERNS[j % len(_PATTERNS)]
        if pa.types.is_integer(base) or pa.types.is_floating(base):
            vals: list[Any] = [_NUMBERS[i] for i in k]
        elif pa.types.is_string(base) or pa.types.is_large_string(base) or pa.types.is_string_view(base):
            vals = ["abcd"[i] for i in k]
        elif pa.types.is_boolean(base):
            vals = [i % 2 == 1 for i in k]
        elif (pa.types.is_list(base) or pa.types.is_large_list(base)) and _listable(base.value_type):
            # lists of rank+1 items, each starting elsewhere: lengths and first items differ by row
            items = _probe_items(base.value_type)
            vals = [[items[(i + n) % 4] for n in range(i + 1)] for i in k]
        else:
            v = _sample(t)
            if v is None:
                return None
            vals = [v] * 4
        try:
            arrays[c] = pa.array(vals, t)
        except (Exception, pl.exceptions.PanicException):
            return None
    try:
        return pl.from_arrow(pa.table(arrays))
    except (Exception, pl.exceptions.PanicException):
        return None


class Condition(_SqlExpression):
    """A compiled boolean SQL expression such as ``virtue_hits >= 2 AND source <> 'python-docs'``."""

    kind = "condition"

    def _check_dtype(self, dtype: Any) -> None:
        if dtype != _pl().Boolean:
            raise RecipeError(f"{self.path}: condition {self.sql!r} gives {dtype}, not a boolean")

    def evaluate(self, table: pa.Table) -> np.ndarray:
        """Boolean numpy mask, null → False. Only the referenced columns are converted."""
        n = table.num_rows
        res = self._frame(table).select(self.expr.fill_null(False).alias("_c")).to_series()
        if len(res) == 1 and n != 1:  # a constant expression
            return np.full(n, bool(res[0]), dtype=bool)
        return res.to_numpy().astype(bool, copy=False)


class Expression(_SqlExpression):
    """A compiled numeric SQL expression such as ``1 + 4 * misaligned_ai_score`` (null → ``default``)."""

    def __init__(self, sql: str, *, path: str = "weight") -> None:
        super().__init__(sql, path=path)

    def _check_dtype(self, dtype: Any) -> None:
        if not dtype.is_numeric():
            raise RecipeError(f"{self.path}: expression {self.sql!r} gives {dtype}, not a number")

    def evaluate(self, table: pa.Table, *, default: float = 0.0) -> np.ndarray:
        """float64 numpy array, null/NaN → ``default``."""
        n = table.num_rows
        res = self._frame(table).select(self.expr.cast(_pl().Float64).alias("_e")).to_series()
        arr = res.fill_null(default).to_numpy().astype(np.float64, copy=True)
        if len(arr) == 1 and n != 1:
            arr = np.full(n, arr[0])
        arr[np.isnan(arr)] = default
        return arr
