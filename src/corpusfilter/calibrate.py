"""``corpusfilter calibrate``: a detector threshold chosen on reference documents the user trusts.

``--target-fpr F``: the lowest threshold that flags at most F of the reference's negatives (all of
it when it has no labels: it is then taken to be neutral). ``--target-share S``: the lowest
threshold that flags at most S of the whole reference ("remove the most moral 5%"). A document is
flagged when ``score >= threshold``; rows a cascade did not score (``when:``) are never flagged.

``--group-column G`` (a source, register or domain per document) measures whether the threshold
transfers: the rate in every group, and for each group the rate a threshold chosen on all the
*other* groups gives it. A group over twice the target is one where a threshold calibrated
elsewhere would not hold. ``--per-group`` then picks the threshold that meets the target in every
group (the highest of the groups' own thresholds) instead of over the pooled reference.

With ``--recipe R --block N --write OUT.yaml`` the threshold goes into block N's condition in a
copy of the recipe; the copy is the recipe's text with that one number changed, so comments and
layout are kept.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from corpusfilter.errors import CorpusfilterError, InputError, RecipeError
from corpusfilter.evaluate import (
    group_names,
    label_values,
    read_columns,
    read_groups,
    short_threshold,
    text_values,
    threshold_for_fpr,
)

_NUM = r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _comparisons(condition: str, operators: str = ">=|>") -> list[tuple[str, str, str]]:
    """``(column, operator, number)`` of every ``column >= number`` / ``column > number`` (or of
    the ``operators`` given, a regex alternation)."""
    return re.findall(rf"\b([A-Za-z_]\w*)\s*({operators})\s*({_NUM})", condition)


def _set_comparison(where: str, column: str, operator: str | None, number: str) -> str:
    """``where`` with its ``column >= number`` (or ``>``) comparing ``number`` instead, under
    ``operator`` (None: the one written)."""
    op = operator if operator is not None else r"\1"
    return re.sub(rf"\b{re.escape(column)}\s*(>=|>)\s*{_NUM}", rf"{column} {op} {number}", where)


def _block_condition(recipe: Any, n: int) -> tuple[str, str]:
    """Block N's type and its ``where`` condition."""
    blocks = recipe.data["blocks"]
    if not 0 <= n < len(blocks):
        raise RecipeError(f"--block {n}: the recipe has blocks 0..{len(blocks) - 1}")
    ((btype, params),) = blocks[n].items()
    where = (params or {}).get("where")
    if not isinstance(where, str):
        raise RecipeError(f"--block {n} ({btype}): has no `where` condition to set a threshold in")
    return btype, where


def compared_column(recipe: Any, n: int, column: str | None) -> str:
    """The score column block N's condition compares with a number: ``column`` if given (it must be
    compared there), else the only one."""
    btype, where = _block_condition(recipe, n)
    cols = sorted({c for c, _, _ in _comparisons(where)})
    below = sorted({c for c, _, _ in _comparisons(where, "<=|<")})
    # a `<` comparison of the column is refused only where it has no `>=` one (a band `x >= a AND
    # x < b` sets its lower edge, as before)
    if below and (column in below and column not in cols if column is not None else not cols):
        keep = (
            f'; a keep of `{below[0]} < t` keeps what `drop: {{where: "{below[0]} >= t"}}` keeps: '
            "write it so and calibrate the drop"
            if btype == "keep"
            else ""
        )
        raise RecipeError(
            f"--block {n}: condition {where!r} compares {', '.join(below)} with `<`; calibrate sets the "
            f"threshold of a `column >= number` (or `>`) comparison, which flags more rows as it falls{keep}"
        )
    if column is None:
        if len(cols) != 1:
            raise RecipeError(
                f"--block {n}: condition {where!r} compares {cols or 'no column'} with a number; "
                "name the score column with --column"
            )
        return str(cols[0])
    if column not in cols:
        raise RecipeError(f"--block {n}: condition {where!r} has no `{column} >= number`")
    return column


def column_label(recipe: Any, n: int, column: str) -> str | None:
    """The label a score column stands for (``<detector name>_<label>``), from the detector before
    block N that writes it; None when no detector's name prefixes it."""
    for b in recipe.blocks[:n]:
        prefix = getattr(b, "prefix", None)
        if b.kind == "detector" and prefix and column.startswith(f"{prefix}_"):
            return column[len(prefix) + 1 :]
    return None


def reference_scores_recipe(
    recipe: Any, n: int, column: str | None, texts: list[str], columns: Any = None
) -> tuple[np.ndarray, str]:
    """Block N's decision on the reference as one score per row, so that a threshold on it acts as
    the block does in the recipe: the recipe's blocks before N run on the reference (detectors, and
    the drops, keeps and tags that decide which rows reach block N and what they carry; resampling
    only adds copies), then per row the compared column's value where block N's condition turns on
    it, +inf where the condition holds whatever the threshold, -inf where it fails whatever the
    threshold or an earlier block removed the row. ``columns``: the reference's other columns (a
    pyarrow Table), which conditions may read as they read the corpus's."""
    import pyarrow as pa

    from corpusfilter.batch import Batch
    from corpusfilter.blocks.resample import Backfill, Upsample
    from corpusfilter.expr import Condition

    column = compared_column(recipe, n, column)
    row = "_cf_reference_row"
    table = pa.table(
        {recipe.input.text_column: pa.array(texts, pa.string()), row: pa.array(range(len(texts)))}
    )
    written = {f.name for b in recipe.blocks[:n] for f in b.output_fields(pa.schema([]))}
    for name in columns.column_names if columns is not None else ():
        if name not in table.column_names and name not in written:
            table = table.append_column(name, columns.column(name))
    schema = table.schema
    removed: list[pa.Table] = []  # rows earlier blocks removed, with the columns they carried then
    for i, b in enumerate(recipe.blocks[:n]):
        if isinstance(b, Upsample | Backfill):
            continue
        _validate_on_reference(b, schema, f"blocks[{i}].{b.block_type}", row)
        for f in b.output_fields(schema):
            schema = schema.append(f)
        b.ensure_setup()
        batch = b.process(Batch(table, "reference", table.num_rows))
        table = batch.table
        removed += batch.rejected
    if column not in table.column_names:
        raise RecipeError(f"--block {n}: no detector before block {n} writes column {column!r}")
    _, where = _block_condition(recipe, n)
    if (k := sum(c == column for c, _, _ in _comparisons(where))) != 1:
        raise RecipeError(
            f"--block {n}: condition {where!r} compares {column} {k} times; calibrate sets one threshold"
        )
    block = recipe.blocks[n]
    _validate_on_reference(block, table.schema, f"blocks[{n}].{block.block_type}", row)

    def values(t: pa.Table, *, lenient: bool = False) -> np.ndarray:
        """Per row of ``t``: the compared value, or ±inf where the threshold cannot change the outcome.
        ``lenient``: a row the condition cannot be evaluated on does not match (as a tag labels rows
        removed earlier), where on the rows reaching the block it is an error, as in a run."""
        from corpusfilter.blocks.decisions import _holds

        def holds(number: str) -> np.ndarray:
            cond = Condition(_set_comparison(where, column, None, number), path=f"blocks[{n}].where")
            return _holds(cond, t) if lenient else cond.evaluate(t)

        always, ever = holds("1e308"), holds("-1e308")
        if (always & ~ever).any():  # matched at the highest threshold but not at the lowest: NOT, ...
            raise RecipeError(
                f"--block {n}: condition {where!r} matches fewer rows as {column}'s threshold falls (a NOT "
                "around the comparison?); calibrate sets the threshold of a condition that grows with the score"
            )
        vals = t.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
        return np.where(always, np.inf, np.where(ever & ~np.isnan(vals), vals, -np.inf))

    out = np.full(len(texts), -np.inf)
    out[table.column(row).to_numpy()] = values(table)
    if block.block_type == "tag":  # a run labels the rows removed earlier too, where they carry the columns
        needs = set(Condition(where).columns)
        for t in removed:
            if t.num_rows and needs <= set(t.column_names):
                out[t.column(row).to_numpy()] = values(t, lenient=True)
    return out, column


def _validate_on_reference(block: Any, schema: Any, path: str, row: str) -> None:
    """A block's validation against the reference's columns, with what to do when one is missing."""
    try:
        block.validate(schema, path)
    except RecipeError as e:
        msg = str(e).replace(f", {row}", "").replace(f"{row}, ", "")
        raise RecipeError(
            f"{msg} (the reference must carry the input columns the recipe's conditions read)"
        ) from None


def _schema_names(path: str) -> list[str]:
    """A Parquet file's column names; none when it cannot be read (read_columns then says why)."""
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except Exception:
        return []


def _acts(recipe: Any, n: int) -> str:
    """What block N does to the rows its condition matches, for the printed share."""
    btype, _ = _block_condition(recipe, n)
    done = {"drop": "removed", "keep": "kept", "tag": "tagged", "upsample": "upsampled"}.get(btype, "matched")
    if btype == "tag":  # a tag labels the rows earlier blocks removed too (where they carry its columns)
        return f"{done} by block {n}, the rows earlier blocks removed included,"
    return f"{done} by block {n}, after the blocks before it,"


def pick_threshold(
    scores: np.ndarray,
    y: np.ndarray | None,
    *,
    fpr: float | None,
    share: float | None,
    groups: np.ndarray | None = None,
    per_group: bool = False,
    never: str = "a cascade's `when` skips the rest, which are never flagged",
) -> dict[str, Any]:
    """The threshold for the target over the pooled reference (or, with ``per_group``, in every
    group), its rates, and with ``groups`` the per-group transfer report (:func:`group_report`).
    ``never``: why rows scored -inf can never be flagged, for the warning when that falls short."""
    if (fpr is None) == (share is None):
        raise CorpusfilterError("give one of --target-fpr or --target-share")
    target = fpr if fpr is not None else share
    assert target is not None
    if not 0 <= target <= 1:
        raise CorpusfilterError("targets are shares between 0 and 1")
    if per_group and groups is None:
        raise CorpusfilterError("--per-group needs --group-column")
    base = scores[_base(scores, y, fpr)]
    if len(base) == 0:
        raise InputError("the reference has no negative documents to measure false positives on")
    if per_group:
        assert groups is not None
        t = per_group_threshold(scores, y, groups, fpr=fpr, share=share)
    else:
        t = threshold_for_fpr(base, target)
    t = short_threshold(t, scores)  # flags the same rows (every label, every group)
    out: dict[str, Any] = {
        "threshold": t,
        "reference_documents": len(scores),
        "counted_documents": len(base),  # the target's denominator: the negatives for an FPR
        "flagged_share": float((scores >= t).mean()),
    }
    if fpr is not None:
        out["target_fpr"] = fpr
        out["fpr"] = float((base >= t).mean())
    else:
        out["target_share"] = share
    if y is not None and y.any():
        out["recall"] = float((scores[y] >= t).mean())
    if y is not None and (~y).any():
        out["fpr"] = float((scores[~y] >= t).mean())
    what = "negative reference documents" if len(base) < len(scores) else "reference documents"
    warnings = []
    if target == 0:  # nothing of the reference flagged: the threshold is its highest score, nudged
        warnings.append(
            f"a target of 0 sets the threshold just above the highest of {len(base)} reference scores: "
            "it flags none of them, and says nothing about how few other documents it flags"
        )
    elif 0 < target < 1 and len(base) * target < 1:  # the target is finer than one document
        warnings.append(
            f"{len(base)} {what} cannot resolve a target of {target:g}: one document is "
            f"{1 / len(base):.3g} of them; use at least {int(np.ceil(1 / target))}"
        )
    elif not per_group:
        warnings += _shortfall(base, t, target, what, never)
    if warnings:
        out["warning"] = "; ".join(warnings)
    if groups is not None:
        out["per_group"] = per_group
        out["group_report"] = group_report(scores, y, groups, t, fpr=fpr, share=share, per_group=per_group)
    return out


def _shortfall(base: np.ndarray, t: float, target: float, what: str, never: str) -> list[str]:
    """Why the threshold flags fewer documents than the target allows, if it does: rows a cascade
    left unscored (never flagged), or documents tied at the next score (all or none are flagged)."""
    allowed = int(np.floor(target * len(base) + 1e-9))
    flagged = int((base >= t).sum())
    if flagged >= allowed:
        return []
    rest = base[(base < t) & np.isfinite(base)]
    unscored = int(np.isneginf(base).sum())
    if len(rest) == 0:
        return [
            f"only {len(base) - unscored} of {len(base)} {what} can be flagged ({never}): flagging all "
            f"of them is {flagged / len(base):.4f}, short of the target {target:g}"
        ]
    nxt = float(rest.max())
    tied = int((base == nxt).sum())
    return [
        f"ties: {tied} {what} share the next score ({nxt:g}); the threshold flags "
        f"{flagged / len(base):.4f} (target {target:g}), and including them would flag "
        f"{(flagged + tied) / len(base):.4f}"
    ]


def _base(scores: np.ndarray, y: np.ndarray | None, fpr: float | None) -> np.ndarray:
    """Which rows the target counts: the negatives for an FPR with labels, else every row."""
    if fpr is not None and y is not None:
        return ~y
    return np.ones(len(scores), dtype=bool)


def per_group_threshold(
    scores: np.ndarray, y: np.ndarray | None, groups: np.ndarray, *, fpr: float | None, share: float | None
) -> float:
    """The lowest threshold that meets the target in every group (the highest per-group threshold)."""
    target = fpr if fpr is not None else share
    assert target is not None
    base, groups = _base(scores, y, fpr), group_names(groups)
    ts = [threshold_for_fpr(scores[base & (groups == g)], target) for g in np.unique(groups[base])]
    if not ts:
        raise InputError("the reference has no negative documents to measure false positives on")
    return max(ts)


def group_report(
    scores: np.ndarray,
    y: np.ndarray | None,
    groups: np.ndarray,
    threshold: float,
    *,
    fpr: float | None,
    share: float | None,
    per_group: bool = False,
) -> dict[str, Any]:
    """Per group: its documents, the rate at ``threshold``, and the rate at the threshold chosen on
    the other groups alone (leave one group out), i.e. whether a threshold set elsewhere holds there.

    The threshold without a group is chosen by the same rule as ``threshold``: pooled over the
    other groups, or with ``per_group`` meeting the target in each of them, so the verdict is about
    the rule the user calibrates with. The rate is the FPR (over negatives) or the flagged share, as
    the target is. A group with fewer than 1/target documents cannot show a rate at the target; it is
    marked ``too_small``."""
    target = fpr if fpr is not None else share
    assert target is not None
    base, groups = _base(scores, y, fpr), group_names(groups)
    out: dict[str, Any] = {}
    for g in np.unique(groups[base]):
        here = base & (groups == g)
        rest = base & (groups != g)
        row: dict[str, Any] = {
            "documents": int(here.sum()),
            "rate": float((scores[here] >= threshold).mean()),
            "too_small": bool(here.sum() * target < 1),
        }
        if rest.any():
            t = (
                per_group_threshold(scores[rest], None, groups[rest], fpr=target, share=None)
                if per_group
                else threshold_for_fpr(scores[rest], target)
            )
            row["threshold_without_it"] = t
            row["rate_at_threshold_without_it"] = float((scores[here] >= t).mean())
        out[g] = row
    held = {
        g: r["rate_at_threshold_without_it"] for g, r in out.items() if "rate_at_threshold_without_it" in r
    }
    worst = max(held, key=lambda g: held[g]) if held else None
    return {
        "rate": "fpr" if fpr is not None else "share",
        "target": target,
        "rule": "in every group" if per_group else "pooled",
        "groups": out,
        "worst_left_out": worst,
        "worst_left_out_rate": held[worst] if worst is not None else None,
        # the transfer rule, generalized: a threshold set for F elsewhere stays <= 2F
        "transfers": bool(worst is None or held[worst] <= 2 * target),
    }


def format_group_report(rep: dict[str, Any]) -> list[str]:
    """The group report as printed lines (a table, then a one-line verdict)."""
    what = "FPR" if rep["rate"] == "fpr" else "flagged"
    w = max([5, *(len(g) for g in rep["groups"])])
    lines = [f"  {'group':<{w}}  {'docs':>6}  {what:>8}  {'chosen without it':>17}"]
    for g, r in rep["groups"].items():
        left = r.get("rate_at_threshold_without_it")
        mark = " (too few documents for the target)" if r["too_small"] else ""
        if left is not None and left > 2 * rep["target"]:
            mark += "  <- over 2x the target"
        left_s = f"{left:.4f}" if left is not None else "-"
        lines.append(f"  {g:<{w}}  {r['documents']:>6}  {r['rate']:>8.4f}  {left_s:>17}{mark}")
    if rep["worst_left_out"] is not None:
        verdict = (
            "within 2x the target: it transfers"
            if rep["transfers"]
            else "over 2x the target: it does NOT transfer"
        )
        lines.append(
            f"  leave-one-group-out: a threshold set on the other groups"
            f"{' (target met in each)' if rep.get('rule') == 'in every group' else ''} gives {rep['worst_left_out']} "
            f"{rep['worst_left_out_rate']:.4f} (target {rep['target']:g}), {verdict}"
        )
    return lines


def one_comparison(where: str, column: str, n: int) -> None:
    """``--write`` sets one number: block N's condition must compare ``column`` exactly once."""
    found = sum(c == column for c, _, _ in _comparisons(where))
    if found != 1:  # none: the block compares another column; several: which one is meant?
        raise CorpusfilterError(
            f"block {n}'s condition {where!r} has {found or 'no'} `{column} >= number` "
            f"comparison{'s' if found > 1 else ''}; --write sets exactly one"
            + ("" if found else " (name the compared column with --column)")
        )


def write_recipe(
    recipe_path: Path, n: int, column: str, threshold: float, out: Path, *, overwrite: bool = False
) -> str:
    """Copy of the recipe text with block N's ``column >= number`` set to the threshold.

    Only that one comparison changes, so comments and layout stay. An existing ``out`` (the recipe
    itself included) is replaced only with ``overwrite``, and only by a copy that loads as a valid
    recipe: it is written beside ``out`` under a temporary name, loaded, then renamed over it.
    Returns a note for the user."""
    import yaml

    from corpusfilter.recipe import load_recipe

    if not np.isfinite(threshold):  # its repr (nan, inf) would read as a column name
        raise CorpusfilterError(f"threshold {threshold!r} is not a finite number; nothing written")
    text = recipe_path.read_text(encoding="utf-8")
    recipe = load_recipe(recipe_path)
    _, where = _block_condition(recipe, n)
    one_comparison(where, column, n)
    new_where = _set_comparison(where, column, ">=", repr(threshold))
    notes = []
    if any(c == column and op == ">" for c, op, _ in _comparisons(where)):
        notes.append(f"block {n} compared {column} > a number; the copy uses >=, as the threshold was chosen")
    if text.count(where) == 1:
        new_text = text.replace(where, new_where)
    else:  # the condition is written differently in the file (folded or escaped): rewrite it
        data = yaml.safe_load(text)
        ((btype, _),) = data["blocks"][n].items()
        data["blocks"][n][btype]["where"] = new_where
        new_text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        notes.append(
            "the condition is not written literally in the file: the copy was re-serialized and has no comments"
        )
    check = yaml.safe_load(new_text)
    ((btype, params),) = check["blocks"][n].items()
    if params.get("where") != new_where:
        raise CorpusfilterError(f"could not set the threshold in block {n}'s condition")
    if out.exists() and not overwrite:
        raise CorpusfilterError(f"{out}: exists; pass --overwrite to replace it")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".yaml", dir=out.resolve().parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new_text)
        try:
            copy = load_recipe(Path(tmp))  # the copy must still be a valid recipe
        except CorpusfilterError as e:
            raise CorpusfilterError(
                f"{out}: not written, the copy would not be a valid recipe: {e}"
            ) from None
        moved = _moved_paths(load_recipe(recipe_path).data, copy.data, n)
        if moved:  # relative paths resolve against the copy's folder: they would name other files
            raise CorpusfilterError(
                f"{out}: not written: in another folder the copy's relative paths name other files "
                f"({moved}); write it beside {recipe_path} or make those paths absolute"
            )
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if out.resolve() == recipe_path.resolve():
        notes.append(f"{out} was the recipe itself: replaced")
    return "; ".join(notes)


def _moved_paths(before: dict[str, Any], after: dict[str, Any], n: int) -> str:
    """The first setting (other than block ``n``'s condition) that loads differently from the copy,
    as "key: old -> new", or "" when the copy means the same recipe."""

    def flat(d: Any, key: str = "") -> dict[str, Any]:
        if isinstance(d, dict):
            return {
                k: v
                for name, sub in d.items()
                for k, v in flat(sub, f"{key}.{name}" if key else str(name)).items()
            }
        if isinstance(d, list):
            return {k: v for i, sub in enumerate(d) for k, v in flat(sub, f"{key}.{i}").items()}
        return {key: d}

    a, b = flat(before), flat(after)
    for k in sorted(set(a) | set(b)):
        if k.startswith(f"blocks.{n}.") and k.endswith(".where"):
            continue
        if a.get(k) != b.get(k):
            return f"{k}: {a.get(k)} -> {b.get(k)}"
    return ""


def cmd_calibrate(args: Any) -> int:
    import json

    from corpusfilter.evaluate import load_sidecar, score_texts

    for flag, v in (("--target-fpr", args.target_fpr), ("--target-share", args.target_share)):
        if v is not None and not 0 <= v <= 1:  # before anything is read or scored (nan fails too)
            raise CorpusfilterError(f"{flag} {v}: a share between 0 and 1")
    if args.per_group and args.group_column is None:
        raise CorpusfilterError("--per-group needs --group-column")

    target = Path(args.model)
    is_recipe = target.suffix in (".yaml", ".yml")
    recipe_path = Path(args.recipe) if args.recipe else (target if is_recipe else None)
    if (args.write or is_recipe) and (recipe_path is None or args.block is None):
        raise CorpusfilterError(
            "writing or calibrating a recipe needs --recipe R (or a recipe as MODEL) and --block N"
        )
    group_col = args.group_column
    given = [args.label_column] if args.label_column else []
    table = read_columns(  # without --label-column, a column named `label` is the labels
        args.reference,
        [args.text_column, *given, *([group_col] if group_col else [])],
        # a recipe's conditions may read any input column (source, year, ...)
        optional=[*([] if given else ["label"]), *(_schema_names(args.reference) if is_recipe else [])],
    )
    label_col = args.label_column or ("label" if "label" in table.column_names else None)
    texts = text_values(table.column(args.text_column), args.reference, args.text_column)
    if not texts:
        raise InputError(f"{args.reference}: 0 rows: nothing to calibrate on")
    groups = read_groups(table, group_col, args.reference) if group_col is not None else None
    column = args.column
    positive = args.positive
    if is_recipe:
        from corpusfilter.recipe import load_recipe

        recipe = load_recipe(target)
        column = compared_column(recipe, args.block, column)
        label = column_label(recipe, args.block, column)
        if positive is None and label_col and label is not None:
            # the data's positive label is the one the compared column scores (as in model mode)
            if label in {str(v) for v in table.column(label_col).to_pylist()}:
                positive = label
    else:  # the data's positive label is the model's (as in eval) unless given
        side, model = load_sidecar(target, positive=args.positive)
        positive = side["positive"]
        column = column or side["score_column"]
    if args.write:  # before scoring: the copy must have exactly one comparison to set
        assert recipe_path is not None
        from corpusfilter.recipe import load_recipe

        written = recipe if is_recipe and recipe_path == target else load_recipe(recipe_path)  # not twice
        one_comparison(_block_condition(written, args.block)[1], str(column), args.block)
    y = None
    if label_col:
        raw = table.column(label_col).to_pylist()
        y, counts = label_values(
            raw,
            args.data_positive or positive or "1",
            args.reference,
            label_col,
            named=args.data_positive is not None,
        )
        print(counts, file=sys.stderr)
        if (
            args.target_fpr is not None
            and args.data_positive is None
            and (positive is None or not is_recipe)
            and not y.any()
            and len({str(v) for v in raw}) > 1
        ):
            # several classes, none positive: fine for a neutral reference labelled by register, wrong
            # for labelled data that names the detector's class otherwise
            named = (
                f"the positive label named by column {column!r}" if is_recipe else f"the model's {positive!r}"
            )
            print(
                f"warning: {label_col!r} holds {len({str(v) for v in raw})} labels and none is {named} "
                "(nor true / 1): every row counts as a negative; pass --data-positive LABEL if one of "
                "them is the detector's class",
                file=sys.stderr,
            )
    if is_recipe:
        scores, column = reference_scores_recipe(recipe, args.block, column, texts, table)
    else:
        scores = score_texts(side, model, texts)
    never = (
        "the rest an earlier block removes, a cascade's `when` leaves unscored, or the condition's other "
        "terms leave unmatched at any threshold"
        if is_recipe
        else "a cascade's `when` skips the rest, which are never flagged"
    )
    res = pick_threshold(
        scores,
        y,
        fpr=args.target_fpr,
        share=args.target_share,
        groups=groups,
        per_group=args.per_group,
        never=never,
    )
    res["column"] = column
    what = (
        f"FPR <= {args.target_fpr}"
        if args.target_fpr is not None
        else f"share {'removed' if not is_recipe else _acts(recipe, args.block)} <= {args.target_share}"
    )
    where = f"in every {group_col} of" if args.per_group else "on"
    counted = (
        f"the {res['counted_documents']} negative of {len(texts)} reference documents"
        if res["counted_documents"] < len(texts)
        else f"{len(texts)} reference documents"
    )
    print(f"{column} >= {res['threshold']!r}  ({what} {where} {counted})")
    print("  " + ", ".join(f"{k} {v:.4f}" for k, v in res.items() if k in ("flagged_share", "fpr", "recall")))
    if "warning" in res:
        print(f"warning: {res['warning']}", file=sys.stderr)
    if args.recipe and not is_recipe and args.target_share is not None:
        print(
            f"note: the share is of the model's scores over every reference row; the recipe's blocks "
            f"before block {args.block} and its condition's other terms are not applied. For the share "
            f"block {args.block} removes in the recipe, calibrate the recipe: corpusfilter calibrate "
            f"{recipe_path} --block {args.block} --reference ... --target-share {args.target_share}",
            file=sys.stderr,
        )
    if "group_report" in res:
        print("\n".join(format_group_report(res["group_report"])))
    if args.write:
        assert recipe_path is not None
        note = write_recipe(
            recipe_path, args.block, str(column), res["threshold"], Path(args.write), overwrite=args.overwrite
        )
        print(f"wrote {args.write} (block {args.block}: {column} >= {res['threshold']!r})")
        if note:
            print(f"note: {note}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 0
