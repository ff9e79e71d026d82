"""``corpusfilter calibrate``: a detector threshold chosen on reference documents the user trusts.

``--target-fpr F``: the lowest threshold that flags at most F of the reference's negatives (all of
it when it has no labels: it is then taken to be neutral). ``--target-share S``: the lowest
threshold that flags at most S of the whole reference ("remove the most moral 5%"). A document is
flagged when ``score >= threshold``; rows a cascade did not score (``when:``) are never flagged.

With ``--recipe R --block N --write OUT.yaml`` the threshold goes into block N's condition in a
copy of the recipe; the copy is the recipe's text with that one number changed, so comments and
layout are kept.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from corpusfilter.errors import CorpusfilterError, InputError, RecipeError
from corpusfilter.evaluate import threshold_for_fpr

_NUM = r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _comparisons(condition: str) -> list[tuple[str, str, str]]:
    """``(column, operator, number)`` of every ``column >= number`` / ``column > number``."""
    return re.findall(rf"\b([A-Za-z_]\w*)\s*(>=|>)\s*({_NUM})", condition)


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


def reference_scores_recipe(
    recipe: Any, n: int, column: str | None, texts: list[str]
) -> tuple[np.ndarray, str]:
    """Run the recipe's detectors before block N on the reference; the compared column's values."""
    import pyarrow as pa

    from corpusfilter.batch import Batch

    _, where = _block_condition(recipe, n)
    comps = _comparisons(where)
    cols = sorted({c for c, _, _ in comps})
    if column is None:
        if len(cols) != 1:
            raise RecipeError(
                f"--block {n}: condition {where!r} compares {cols or 'no column'} with a number; "
                "name the score column with --column"
            )
        column = cols[0]
    elif column not in cols:
        raise RecipeError(f"--block {n}: condition {where!r} has no `{column} >= number`")
    table = pa.table({recipe.input.text_column: pa.array(texts, pa.string())})
    schema = table.schema
    for i, b in enumerate(recipe.blocks[:n]):
        if b.kind != "detector":
            continue
        b.validate(schema, f"blocks[{i}].{b.block_type}")
        for f in b.output_fields(schema):
            schema = schema.append(f)
        b.ensure_setup()
        table = b.process(Batch(table, "reference", table.num_rows)).table
    if column not in table.column_names:
        raise RecipeError(f"--block {n}: no detector before block {n} writes column {column!r}")
    vals = table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
    return np.where(np.isnan(vals), -np.inf, vals), column


def pick_threshold(
    scores: np.ndarray, y: np.ndarray | None, *, fpr: float | None, share: float | None
) -> dict[str, Any]:
    if (fpr is None) == (share is None):
        raise CorpusfilterError("give one of --target-fpr or --target-share")
    target = fpr if fpr is not None else share
    assert target is not None
    if not 0 <= target <= 1:
        raise CorpusfilterError("targets are shares between 0 and 1")
    base = scores if share is not None or y is None else scores[~y]
    if len(base) == 0:
        raise InputError("the reference has no negative documents to measure false positives on")
    t = threshold_for_fpr(base, target)
    t = _short(t, base)
    out: dict[str, Any] = {
        "threshold": t,
        "reference_documents": len(scores),
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
    return out


def _short(t: float, base: np.ndarray) -> float:
    """The shortest decimal at or above t that flags the same documents (nicer in a recipe)."""
    import math

    if not math.isfinite(t):
        return t
    flagged = int((base >= t).sum())
    for k in range(2, 12):
        c = math.ceil(t * 10**k) / 10**k
        if c >= t and int((base >= c).sum()) == flagged:
            return c
    return t


def write_recipe(recipe_path: Path, n: int, column: str, threshold: float, out: Path) -> str:
    """Copy of the recipe text with block N's ``column >= number`` set to the threshold.

    Only that one comparison changes, so comments and layout stay. Returns a note for the user."""
    import yaml

    from corpusfilter.recipe import load_recipe

    text = recipe_path.read_text(encoding="utf-8")
    recipe = load_recipe(recipe_path)
    _, where = _block_condition(recipe, n)
    new_where = re.sub(rf"\b{re.escape(column)}\s*(>=|>)\s*{_NUM}", f"{column} >= {threshold!r}", where)
    note = ""
    if text.count(where) == 1:
        new_text = text.replace(where, new_where)
    else:  # the condition is written differently in the file (folded or escaped): rewrite it
        data = yaml.safe_load(text)
        ((btype, _),) = data["blocks"][n].items()
        data["blocks"][n][btype]["where"] = new_where
        new_text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        note = "the condition is not written literally in the file: the copy was re-serialized and has no comments"
    check = yaml.safe_load(new_text)
    ((btype, params),) = check["blocks"][n].items()
    if params.get("where") != new_where:
        raise CorpusfilterError(f"could not set the threshold in block {n}'s condition")
    out.write_text(new_text, encoding="utf-8")
    load_recipe(out)  # the copy must still be a valid recipe
    if out.resolve().parent != recipe_path.resolve().parent:
        note = (note + "; " if note else "") + (
            f"relative paths in the copy now resolve against {out.resolve().parent}"
        )
    return note


def cmd_calibrate(args: Any) -> int:
    import json

    from corpusfilter.evaluate import load_sidecar, score_texts

    target = Path(args.model)
    is_recipe = target.suffix in (".yaml", ".yml")
    recipe_path = Path(args.recipe) if args.recipe else (target if is_recipe else None)
    if (args.write or is_recipe) and (recipe_path is None or args.block is None):
        raise CorpusfilterError(
            "writing or calibrating a recipe needs --recipe R (or a recipe as MODEL) and --block N"
        )
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(args.reference).names
    except FileNotFoundError:
        raise InputError(f"{args.reference}: file not found") from None
    except Exception as e:
        raise InputError(f"{args.reference}: not a Parquet file ({e})") from None
    if args.text_column not in names:
        raise InputError(f"{args.reference}: no column {args.text_column!r} (has {', '.join(names)})")
    label_col = args.label_column if args.label_column in names else None
    cols = [args.text_column] + ([label_col] if label_col else [])
    table = pq.read_table(args.reference, columns=cols)
    texts = table.column(args.text_column).to_pylist()
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise InputError(f"{args.reference}: row {bad}: {args.text_column} is not a string")
    y = None
    if label_col:
        raw = table.column(label_col).to_pylist()
        y = np.asarray([v is True or v == 1 or v in ("1", "true", args.positive) for v in raw])
    column = args.column
    if is_recipe:
        from corpusfilter.recipe import load_recipe

        recipe = load_recipe(target)
        scores, column = reference_scores_recipe(recipe, args.block, column, texts)
    else:
        side, model = load_sidecar(target, positive=args.positive if args.positive != "1" else None)
        scores = score_texts(side, model, texts)
        column = column or side["score_column"]
    res = pick_threshold(scores, y, fpr=args.target_fpr, share=args.target_share)
    res["column"] = column
    what = (
        f"FPR <= {args.target_fpr}"
        if args.target_fpr is not None
        else f"share removed <= {args.target_share}"
    )
    print(f"{column} >= {res['threshold']!r}  ({what} on {len(texts)} reference documents)")
    print("  " + ", ".join(f"{k} {v:.4f}" for k, v in res.items() if k in ("flagged_share", "fpr", "recall")))
    if args.write:
        assert recipe_path is not None
        note = write_recipe(recipe_path, args.block, str(column), res["threshold"], Path(args.write))
        print(f"wrote {args.write} (block {args.block}: {column} >= {res['threshold']!r})")
        if note:
            print(f"note: {note}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 0
