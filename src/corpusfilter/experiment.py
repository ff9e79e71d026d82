"""Corpus-level steps of an experiment: solving target shares and backfill from the scored pass,
choosing a matched control, and token reports per category and arm.

These need totals over the whole corpus, which a streaming pipeline does not have, so they run
between ``score`` and ``decide``: the scored rows are read once (only the columns needed), the
row-local decisions are replayed on them, and the solution is stored on the blocks before the decide
pass runs. Selections are keyed by input position (``cf_shard``, ``cf_row``) and ordered by seeded
hashes of document ids, so they do not depend on task count or file order.
"""

from __future__ import annotations

import bisect
import copy
import itertools
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from corpusfilter.batch import COPY_COLUMN, ORIGINAL_COLUMN, REASON_COLUMN, ROW_COLUMN, SHARD_COLUMN, Batch
from corpusfilter.blocks.base import Block
from corpusfilter.blocks.resample import (
    Backfill,
    MatchedControl,
    Upsample,
    lineage,
    unit_draws,
)
from corpusfilter.blocks.tokens import TokenCounter
from corpusfilter.errors import RecipeError
from corpusfilter.expr import Condition
from corpusfilter.io import iter_parquet, read_parquet
from corpusfilter.recipe import ControlSpec, Plan, needs_totals


def token_column(blocks: Sequence[Block]) -> str | None:
    """The count column of the recipe's first ``tokens`` detector, if it has one."""
    for b in blocks:
        if isinstance(b, TokenCounter):
            return f"{b.prefix}_count"
    return None


def _scored_batches(plan: Plan, columns: list[str] | None = None) -> Iterator[pa.Table]:
    folder = plan.inputs.folder
    for shard in plan.inputs.shards:
        yield from iter_parquet(folder, shard.path, batch_size=plan.recipe.input.batch_size, columns=columns)


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _bucket(tokens: np.ndarray, edges: Sequence[int]) -> list[str]:
    """Each document's length bucket by its token count; no edges (``length_buckets: []``): one, "all"."""
    if not edges:
        return ["all"] * len(tokens)
    names = [f"<{edges[0]}"] + [f"{a}-{b}" for a, b in itertools.pairwise(edges)] + [f">={edges[-1]}"]
    return [names[bisect.bisect_right(list(edges), int(t))] for t in tokens]


# -- solving blocks from the scored pass -------------------------------------------------------------


def solve(plan: Plan) -> None:
    """Replay the row-local decisions over the scored rows and solve every block that needs totals.

    Sets ``solution`` on each ``upsample`` with ``target_share`` and each ``backfill`` in ``plan``.
    """
    needy = [b for b in plan.blocks if needs_totals(b)]
    if not needy:
        return
    first = plan.blocks.index(needy[0])
    # Copies, so that replaying them here adds nothing to the real blocks' stats.
    local = [copy.deepcopy(b) for b in plan.blocks[:first]]
    for b in local:
        b.ensure_setup()
    keep_cols: set[str] = {SHARD_COLUMN, ROW_COLUMN}
    for b in needy:
        keep_cols.add(b.params.tokens)
        keep_cols.update(getattr(b.params, "by", []))
    id_col = plan.recipe.input.id_column or "id"
    cols = sorted(keep_cols)
    # Read only what the replay needs (never the text, unless a condition uses it).
    read: set[str] | None = {*keep_cols, id_col, ORIGINAL_COLUMN, COPY_COLUMN}
    for b in [*local, *needy]:
        used = b.columns_read()
        read = None if read is None or used is None else read | used
    kept_parts: list[pl.DataFrame] = []
    rej_parts: list[pl.DataFrame] = []
    for table in _scored_batches(plan, None if read is None else sorted(read)):
        batch = Batch(table, "scored", table.num_rows)
        for b in local:
            batch = b.process(batch)
        t = batch.table
        orig, idx = lineage(t, id_col)
        frame = _frame(t.select(cols)).with_columns(
            pl.Series("_orig", orig.to_pylist(), dtype=pl.String), pl.Series("_copy", idx)
        )
        for k, b in enumerate(needy):
            cond = getattr(b.params, "where", None)
            m = Condition(cond).evaluate(t) if cond else np.ones(t.num_rows, dtype=bool)
            frame = frame.with_columns(pl.Series(f"_m{k}", m))
        kept_parts.append(frame)
        rej_parts += [_frame(r.select(cols)) for r in batch.rejected]
    kept = pl.concat(kept_parts) if kept_parts else pl.DataFrame()
    rejected = pl.concat(rej_parts) if rej_parts else pl.DataFrame()
    mult = np.ones(kept.height)
    for k, b in enumerate(needy):
        if isinstance(b, Upsample):
            mult = _solve_target(b, kept, mult, f"_m{k}", plan.recipe.seed)
        elif isinstance(b, Backfill):
            mult = _solve_backfill(b, kept, rejected, mult, f"_m{k}", plan.recipe.seed)
        else:  # pragma: no cover - every needy block type is handled above
            raise RecipeError(f"{b.label}: no solver for this block")


def _solve_target(b: Upsample, kept: pl.DataFrame, mult: np.ndarray, match_col: str, seed: int) -> np.ndarray:
    p = b.params
    assert p.target_share is not None
    t = kept[p.tokens].fill_null(0).to_numpy().astype(np.float64) if kept.height else np.zeros(0)
    m = kept[match_col].to_numpy().astype(bool) if kept.height else np.zeros(0, dtype=bool)
    t_match = float((mult * t)[m].sum())
    t_other = float((mult * t)[~m].sum())
    s = p.target_share
    if t_match <= 0:
        weight, note = 1.0, "no tokens match `where`: nothing to upsample"
    else:
        weight = s * t_other / ((1 - s) * t_match)
        note = "solved"
        if weight < 1:
            weight, note = 1.0, "the share before upsampling already exceeds the target"
        elif weight > p.max_copies:
            weight, note = float(p.max_copies), "capped by max_copies: the target is out of reach"
    expected = weight * t_match / (weight * t_match + t_other) if t_match + t_other else 0.0
    whole = math.floor(weight)
    cut = (
        _draw_cut(b, kept, t, m, need=s * t_other / (1 - s) - whole * t_match, seed=seed)
        if note == "solved" and weight > whole and m.any() and (mult[m] == 1).all()
        else None  # no fraction to round, or rows an earlier backfill multiplies (not rows here)
    )
    if cut is not None:  # the allocation is fixed, so its share is known exactly
        added = cut[1]
        matched = whole * t_match + added
        expected = matched / (matched + t_other)
    b.solution = {
        "weight": round(weight, 9),
        "note": note,
        "target_share": s,
        "share_before": round(t_match / (t_match + t_other), 9) if t_match + t_other else 0.0,
        "expected_share": round(expected, 9),
        "tokens_matching": int(t_match),
        "tokens_other": int(t_other),
        **({"draw_cut": cut[0]} if cut is not None else {}),
    }
    out = mult.copy()
    out[m] *= weight
    return out


def _draw_cut(
    b: Upsample, kept: pl.DataFrame, t: np.ndarray, m: np.ndarray, *, need: float, seed: int
) -> tuple[float, float]:
    """Which matching documents get the weight's fractional copy, so the share lands on the target:
    each document's hash draw (the one the block draws) against one cut, chosen so the extra copies'
    tokens come closest to ``need``, the tokens the target wants beyond the whole copies (taken in
    draw order). Without it, each document rounded its fraction on its own and a small set missed
    the target (3 matching documents: 18-22% for 20%). Returns (cut, tokens added by it)."""
    p = b.params
    idx = np.flatnonzero(m)
    origs, copies = kept["_orig"].to_list(), kept["_copy"].to_list()
    draws = unit_draws((origs[i] for i in idx), (int(copies[i]) for i in idx), seed=seed, salt=p.name)
    order = np.argsort(draws, kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(t[idx][order])])
    k = int(np.argmin(np.abs(cum - need)))  # the first k documents by draw get the copy
    cut = float(draws[order[k]]) if k < len(order) else 1.0
    return cut, float(cum[k])


def greedy_fill(tokens: np.ndarray, target: float, *, rounds: int) -> np.ndarray:
    """Copies per item (in the given order) whose tokens sum closest to ``target`` from below or just
    above: an item is taken when it fits, or when overshooting by it beats stopping short."""
    counts = np.zeros(len(tokens), dtype=np.int64)
    added = 0.0
    for _ in range(rounds):
        progress = False
        for i, tk in enumerate(tokens):
            if added >= target:
                break
            if tk <= 0:
                continue
            if added + tk <= target or (added + tk - target) < (target - added):
                counts[i] += 1
                added += float(tk)
                progress = True
        if added >= target or not progress:
            break
    return counts


def _groups(frame: pl.DataFrame, by: Sequence[str]) -> list[tuple[Any, ...]]:
    """Each row's group key: its ``by`` values, a float NaN as the string "NaN" (NaN never equals
    itself, so as a key it would match no other row)."""
    if not by or frame.height == 0:
        return [()] * frame.height
    values = [frame[c].to_list() for c in by]
    if not any(frame[c].dtype.is_float() for c in by):  # no NaN possible: the plain tuples
        return list(zip(*values))
    return [tuple(_nan_key(v) for v in g) for g in zip(*values)]


def _nan_key(v: Any) -> Any:
    return "NaN" if isinstance(v, float) and v != v else v


def _group_names(keys: Sequence[tuple[Any, ...]]) -> dict[tuple[Any, ...], str]:
    """A report name per group key: its values joined by "/" ("all" for none), or, where two keys
    would print alike (a null and the string "None", values holding "/"), their JSON lists."""
    plain = {k: "/".join(map(str, k)) or "all" for k in keys}
    clash = {n for n, c in Counter(plain.values()).items() if c > 1}
    return {k: json.dumps(list(k), default=str) if n in clash else n for k, n in plain.items()}


def _solve_backfill(
    b: Backfill, kept: pl.DataFrame, rejected: pl.DataFrame, mult: np.ndarray, donor_col: str, seed: int
) -> np.ndarray:
    p = b.params
    removed: dict[tuple[Any, ...], float] = defaultdict(float)
    if rejected.height:
        for g, tk in zip(_groups(rejected, p.by), rejected[p.tokens].fill_null(0).to_list()):
            removed[g] += tk
    members: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    if kept.height:
        donor = kept[donor_col].to_numpy().astype(bool) & (kept["_copy"].to_numpy() == 0)
        for i, g in enumerate(_groups(kept, p.by)):
            if donor[i]:
                members[g].append(i)
    tokens = kept[p.tokens].fill_null(0).to_numpy() if kept.height else np.zeros(0)
    origs = kept["_orig"].to_list() if kept.height else []
    extra: dict[str, dict[int, int]] = defaultdict(dict)
    per_group = {}
    out = mult.copy()
    shards, rows = (kept[SHARD_COLUMN].to_list(), kept[ROW_COLUMN].to_list()) if kept.height else ([], [])
    names = _group_names(list(removed))
    for g, want in sorted(removed.items(), key=lambda kv: str(kv[0])):
        idx = members.get(g, [])
        draws = unit_draws((origs[i] for i in idx), (0 for _ in idx), seed=seed, salt=p.name)
        order = [idx[j] for j in np.argsort(draws, kind="stable")]
        counts = greedy_fill(tokens[order], want, rounds=p.max_copies - 1) if order else np.zeros(0, np.int64)
        got = 0
        for i, c in zip(order, counts):
            if c:
                extra[shards[i]][int(rows[i])] = int(c)
                got += int(c) * int(tokens[i])
                out[i] += c
        per_group[names[g]] = {
            "removed_tokens": int(want),
            "added_tokens": got,
            "donors": len(idx),
        }
    total_removed = int(sum(removed.values()))
    total_added = sum(v["added_tokens"] for v in per_group.values())
    b.solution = {
        "extra": dict(extra),
        "removed_tokens": total_removed,
        "added_tokens": total_added,
        "relative_error": round((total_added - total_removed) / total_removed, 6) if total_removed else 0.0,
        "groups": per_group,
    }
    return out


# -- matched control ------------------------------------------------------------------------------


def _read_cols(folder: Any, files: Sequence[dict[str, Any]], columns: Sequence[str]) -> pl.DataFrame:
    parts = []
    for entry in files:
        parts.append(pl.from_arrow(read_parquet(folder, entry["path"], columns, present_only=True)))
    frames = [p for p in parts if isinstance(p, pl.DataFrame)]
    return pl.concat(frames, how="diagonal") if frames else pl.DataFrame()


def solve_control(plan: Plan, treatment_manifest: dict[str, Any], treatment_path: str) -> MatchedControl:
    """A ``matched_control`` block that removes and adds, at random within each group and length
    bucket, the tokens the treatment removed and added there."""
    from datatrove.io import get_datafolder

    spec: ControlSpec = plan.recipe.control  # type: ignore[assignment]
    by, tok, edges = list(spec.by), spec.tokens, list(spec.length_buckets)
    schema = plan.input_schema
    for c in [*by, tok]:
        if c not in schema.names:
            raise RecipeError(
                f"control: column {c!r} is not in the scored rows (columns: {', '.join(schema.names)}); "
                "control.by names input columns and control.tokens a `tokens` detector's count column"
            )
    tfold = get_datafolder(treatment_path)
    outs = treatment_manifest["outputs"]
    id_col = plan.recipe.input.id_column or "id"
    rej = _read_cols(tfold, outs["rejected"], [*by, tok, id_col])
    data = _read_cols(tfold, outs["data"], [*by, tok, COPY_COLUMN, ORIGINAL_COLUMN])
    added = data.filter(pl.col(COPY_COLUMN) > 0) if COPY_COLUMN in data.columns else data.clear()
    # what the treatment itself removed or copied: the control should mostly pick other documents
    treated_removed = set(rej[id_col].to_list()) if id_col in rej.columns else set()
    treated_copied = set(added[ORIGINAL_COLUMN].to_list()) if ORIGINAL_COLUMN in added.columns else set()

    def strata(frame: pl.DataFrame) -> list[tuple[Any, ...]]:
        if frame.height == 0:
            return []
        lb = _bucket(frame[tok].fill_null(0).to_numpy(), edges)
        return [(*g, b) for g, b in zip(_groups(frame, by), lb)]

    def sums(frame: pl.DataFrame) -> dict[tuple[Any, ...], float]:
        out: dict[tuple[Any, ...], float] = defaultdict(float)
        if frame.height:
            for g, tk in zip(strata(frame), frame[tok].fill_null(0).to_list()):
                out[g] += tk
        return out

    want_drop, want_add = sums(rej), sums(added)
    # as many extra copies of one document as the treatment may make (its blocks' caps) or made
    caps = [b.params.max_copies - 1 for b in plan.blocks if b.block_type in ("upsample", "backfill")]
    made = int(added[COPY_COLUMN].to_numpy().max()) if added.height else 0
    rounds = max([1, made, *caps])
    cols = list(dict.fromkeys([SHARD_COLUMN, ROW_COLUMN, id_col, *by, tok]))
    parts = [_frame(t) for t in _scored_batches(plan, cols)]
    allrows = pl.concat(parts) if parts else pl.DataFrame()
    st = strata(allrows)
    members: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i, g in enumerate(st):
        members[g].append(i)
    tokens = allrows[tok].fill_null(0).to_numpy() if allrows.height else np.zeros(0)
    ids = allrows[id_col].to_list() if allrows.height else []
    shards = allrows[SHARD_COLUMN].to_list() if allrows.height else []
    rows = allrows[ROW_COLUMN].to_list() if allrows.height else []
    seed = plan.recipe.seed
    drop: dict[str, dict[int, int]] = defaultdict(dict)
    extra: dict[str, dict[int, int]] = defaultdict(dict)
    report: dict[str, dict[str, int]] = {}
    keys = sorted(set(want_drop) | set(want_add), key=str)
    names = _group_names(keys)
    for g in keys:
        idx = members.get(g, [])
        if spec.exclude_treated:
            idx = [i for i in idx if ids[i] not in treated_removed and ids[i] not in treated_copied]
        d1 = unit_draws((ids[i] for i in idx), (0 for _ in idx), seed=seed, salt="control_drop")
        order = [idx[j] for j in np.argsort(d1, kind="stable")]
        dc = greedy_fill(tokens[order], want_drop.get(g, 0.0), rounds=1) if order else np.zeros(0, np.int64)
        dropped = {i for i, c in zip(order, dc) if c}
        for i in dropped:
            drop[shards[i]][int(rows[i])] = 1
        rest = [i for i in idx if i not in dropped]
        d2 = unit_draws((ids[i] for i in rest), (0 for _ in rest), seed=seed, salt="control_add")
        order2 = [rest[j] for j in np.argsort(d2, kind="stable")]
        ac = (
            greedy_fill(tokens[order2], want_add.get(g, 0.0), rounds=rounds)
            if order2
            else np.zeros(0, np.int64)
        )
        copies = [(i, int(c)) for i, c in zip(order2, ac) if c]
        for j, n in copies:
            extra[shards[j]][int(rows[j])] = n
        report[names[g]] = {
            "treatment_removed_tokens": int(want_drop.get(g, 0)),
            "control_removed_tokens": int(sum(tokens[i] for i in dropped)),
            "treatment_added_tokens": int(want_add.get(g, 0)),
            "control_added_tokens": int(sum(c * int(tokens[i]) for i, c in copies)),
            # the control's picks that the treatment also picked (a small stratum cannot avoid them)
            "control_removed_treated_tokens": int(
                sum(tokens[i] for i in dropped if ids[i] in treated_removed)
            ),
            "control_added_treated_tokens": int(
                sum(c * int(tokens[i]) for i, c in copies if ids[i] in treated_copied)
            ),
        }
    block = MatchedControl(by=by, length_buckets=edges, tokens=tok)
    block.solution = {"drop": dict(drop), "extra": dict(extra), "strata": report, "overlap": overlap(report)}
    return block


def overlap(strata: dict[str, dict[str, int]]) -> dict[str, float | None]:
    """Share of the control's removed / added tokens that are documents the treatment removed /
    copied too. Near the treated documents' share of their strata, the control is as random as the
    strata allow; near 1, the strata hold little else and the two arms barely differ there."""
    out: dict[str, float | None] = {}
    for what in ("removed", "added"):
        total = sum(s[f"control_{what}_tokens"] for s in strata.values())
        treated = sum(s[f"control_{what}_treated_tokens"] for s in strata.values())
        out[f"{what}_tokens_also_treated"] = round(treated / total, 4) if total else None
    return out


# -- token reports ---------------------------------------------------------------------------------


def label_columns(configs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The list columns a recipe labels rows in, from its blocks' configs (``to_config()``, as the
    manifest records them): ``labels`` (tags and labelled upsamples) and each tag's own ``column``."""
    cols = ["labels"]
    for c in configs:
        if str(c.get("type", "")).split("@")[0] == "tag":
            col = (c.get("params") or {}).get("column") or "labels"
            if col not in cols:
                cols.append(col)
    return cols


def category_name(column: str, label: str) -> str:
    """A label's category in token reports: the label for ``labels``, else ``<column>: <label>``."""
    return label if column == "labels" else f"{column}: {label}"


def token_report(
    folder: Any,
    outputs: dict[str, list[dict[str, Any]]],
    tokens: str | None,
    accounting: dict[str, Any],
    *,
    label_columns: Sequence[str] = ("labels",),
) -> dict[str, Any]:
    """Documents and tokens in, removed (by reason), added (copies) and out, and each label's share
    of tokens before and after, for the labels of every column in ``label_columns`` (see
    :func:`label_columns`). ``tokens`` None: documents only, taken from the accounting (no I/O)."""
    if tokens is None:

        def docs(n: int) -> dict[str, int]:
            return {"documents": n, "tokens": 0}

        return {
            "column": None,
            "in": docs(accounting["read"] - accounting["unreadable"]),
            "removed": {
                **docs(accounting["rejected_total"]),
                "by_reason": {r: docs(n) for r, n in accounting["rejected"].items()},
            },
            "added": docs(accounting.get("added", 0)),
            "out": docs(accounting["kept"]),
            "categories": {},
        }
    tcol = tokens
    lcols = list(dict.fromkeys(label_columns))
    data = _read_cols(folder, outputs["data"], [tcol, COPY_COLUMN, *lcols])
    rej = _read_cols(folder, outputs["rejected"], [tcol, COPY_COLUMN, *lcols, REASON_COLUMN])

    def prep(frame: pl.DataFrame, n: int) -> pl.DataFrame:
        if frame.height == 0 and n == 0:
            frame = pl.DataFrame({"_t": pl.Series([], dtype=pl.Int64)})
        if tcol not in frame.columns:
            frame = frame.with_columns(pl.lit(0, dtype=pl.Int64).alias("_t"))
        else:
            frame = frame.with_columns(pl.col(tcol).fill_null(0).cast(pl.Int64).alias("_t"))
        if COPY_COLUMN not in frame.columns:
            frame = frame.with_columns(pl.lit(0, dtype=pl.Int32).alias(COPY_COLUMN))
        else:  # rows rejected before any copying have null there
            frame = frame.with_columns(pl.col(COPY_COLUMN).fill_null(0))
        for col in lcols:
            if col not in frame.columns:
                frame = frame.with_columns(pl.lit(None, dtype=pl.List(pl.String)).alias(col))
        return frame

    data = prep(data, sum(f["rows"] for f in outputs["data"]))
    rej = prep(rej, sum(f["rows"] for f in outputs["rejected"]))
    orig = pl.concat(
        [
            data.filter(pl.col(COPY_COLUMN) == 0).select("_t", *lcols),
            rej.filter(pl.col(COPY_COLUMN) == 0).select("_t", *lcols),
        ]
    )
    copies = data.filter(pl.col(COPY_COLUMN) > 0)

    def count(frame: pl.DataFrame) -> dict[str, int]:
        return {"documents": frame.height, "tokens": int(frame["_t"].sum() or 0) if frame.height else 0}

    by_reason = {}
    if rej.height and REASON_COLUMN in rej.columns:
        for (reason,), grp in sorted(rej.group_by([REASON_COLUMN]), key=lambda kv: str(kv[0])):
            by_reason[str(reason)] = count(grp)

    def shares(frame: pl.DataFrame) -> dict[str, int]:
        out: dict[str, int] = {}
        for col in lcols if frame.height else ():
            # each label once per row (outputs written before labels were kept unique may repeat one)
            ex = frame.select("_t", pl.col(col).list.unique()).explode(col).drop_nulls(col)
            agg = ex.group_by(col).agg(pl.col("_t").sum())
            out.update(
                {category_name(col, str(k)): int(v) for k, v in zip(agg[col].to_list(), agg["_t"].to_list())}
            )
        return out

    tin, tout = count(orig), count(data)
    sin, sout = shares(orig), shares(data)
    cats = {}
    for lab in sorted(set(sin) | set(sout)):
        cats[lab] = {
            "tokens_in": sin.get(lab, 0),
            "share_in": round(sin.get(lab, 0) / tin["tokens"], 6) if tin["tokens"] else 0.0,
            "tokens_out": sout.get(lab, 0),
            "share_out": round(sout.get(lab, 0) / tout["tokens"], 6) if tout["tokens"] else 0.0,
        }
    return {
        "column": tokens,
        "in": tin,
        "removed": {**count(rej), "by_reason": by_reason},
        "added": count(copies),
        "out": tout,
        "categories": cats,
    }


def achieved_shares(blocks: Sequence[Any], folder: Any, outputs: dict[str, list[dict[str, Any]]]) -> None:
    """Record in each target-share block's solution the share its documents reached in data/."""
    for b in blocks:
        if not (isinstance(b, Upsample) and b.params.target_share is not None and b.solution):
            continue
        cond = Condition(b.params.where or "TRUE")
        match = total = 0
        for entry in outputs["data"]:
            t = read_parquet(folder, entry["path"], sorted({*cond.columns, b.params.tokens}))
            tk = t.column(b.params.tokens).to_numpy(zero_copy_only=False)
            tk = np.nan_to_num(tk.astype(np.float64))
            m = cond.evaluate(t)
            match += int(tk[m].sum())
            total += int(tk.sum())
        b.solution["achieved_share"] = round(match / total, 6) if total else 0.0


def relpath(target: str, start: str) -> str:
    """``target`` relative to ``start`` when both are local paths, else ``target`` as given."""
    if "://" in target or "://" in start:
        return target
    return os.path.relpath(target, start)
