"""``corpusfilter eval MODEL --data LABELLED.parquet``: how well a trained detector separates labels.

Scores come from the detector blocks themselves (fastText or embedding head, configured from the
model's sidecar ``<model>.json``), so they equal what a recipe computes. Reports precision, recall,
F1, AUROC, the threshold that reaches a target recall or false-positive rate, calibration (expected
calibration error and a reliability table), a printed table, JSON and a PR-curve PNG.
"""

from __future__ import annotations

import json
import numbers
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from corpusfilter.errors import CorpusfilterError, InputError, RecipeError, first_line


def load_sidecar(model: str | Path, *, positive: str | None = None) -> tuple[dict[str, Any], Path]:
    """The model's sidecar (written by ``corpusfilter train``), or one inferred for a bare fastText
    model given ``positive``."""
    path = Path(model)
    if path.is_dir():  # a classifiers/<name>/ folder: its single model
        found = [p for p in sorted(path.iterdir()) if p.suffix in (".bin", ".ftz", ".npz", ".safetensors")]
        if len(found) != 1:
            raise RecipeError(
                f"{path}: expected one model file (.bin/.ftz/.npz/.safetensors), found {len(found)}"
            )
        path = found[0]
    if not path.is_file():
        raise RecipeError(f"model not found: {path}")
    side_path = path.with_suffix(".json")
    if path.suffix not in (".bin", ".ftz", ".npz", ".safetensors"):
        raise RecipeError(
            f"{path}: not a model file (.bin/.ftz fastText, .npz/.safetensors head or fine-tune)"
        )
    if side_path.is_file():
        try:
            side = json.loads(side_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise RecipeError(f"{side_path}: not a corpusfilter sidecar (invalid JSON: {e})") from None
        missing = [k for k in ("name", "trainer", "positive") if not isinstance(side, dict) or k not in side]
        if missing:
            raise RecipeError(f"{side_path}: not a corpusfilter sidecar (no {', '.join(missing)})")
        if positive is not None:
            side["positive"] = positive
    elif path.suffix in (".bin", ".ftz"):
        if positive is None:
            raise RecipeError(f"{path}: no sidecar {side_path.name}; give --positive LABEL")
        side = {"name": "model", "trainer": "fasttext", "positive": positive}
    else:
        raise RecipeError(f"{path}: a head needs its sidecar {side_path.name} (it names the embedding model)")
    from corpusfilter.train import score_column

    side["score_column"] = score_column(side)
    return side, path


def detector_for(side: Mapping[str, Any], model: Path, **params: Any) -> Any:
    """The detector block a recipe would use for this model (an embedding one on the CPU, a fine-tuned
    one in fp32 on a GPU if present, unless ``params`` say otherwise, e.g. ``device``, ``batch_size``)."""
    from corpusfilter.blocks.embedding import EmbeddingDetector
    from corpusfilter.blocks.fasttext import FastTextDetector

    if side["trainer"] == "fasttext":
        return FastTextDetector(name=side["name"], model=str(model))
    if side["trainer"] == "finetune":
        from corpusfilter.blocks.finetuned import FinetunedDetector

        # fp32 wherever it runs: GPU and CPU scores then agree to ~1e-6
        return FinetunedDetector(
            name=side["name"], model=str(model), **{"device": "auto", "fp16": False, **params}
        )
    return EmbeddingDetector(
        name=side["name"],
        model=side["embedding_model"],
        head=str(model),
        chunk_tokens=side["chunk_tokens"],
        stride=side.get("stride"),
        max_chunks=side["max_chunks"],
        aggregate=[side["aggregate"]],
        **{"device": "cpu", **params},
    )


def score_texts(
    side: Mapping[str, Any],
    model: Path,
    texts: Sequence[str],
    *,
    batch: int = 2000,
    detector: Any = None,
    cached: bool = False,
) -> np.ndarray:
    """The positive label's score for each text, through the detector block.

    ``cached``: a head on document features is applied to the features training computes, read from
    the embedding cache ($CORPUSFILTER_EMB_CACHE) when these texts were embedded before: the block's
    numbers (tested) without re-running the encoder (goodness_minilm's full evaluation on 2 CPU
    cores: 3,594 s through the block, 668 s cached). Other models go through the block."""
    if from_cache(side, cached):
        return _score_document_head(side, model, texts)
    import pyarrow as pa

    from corpusfilter.batch import Batch

    d = detector or detector_for(side, model)
    schema = pa.schema([("text", pa.string())])
    d.validate(schema, "model")
    col = side["score_column"]
    given = [f.name for f in d.output_fields(schema)]
    if col not in given:
        raise RecipeError(
            f"{model}: the model has no class {side['positive']!r} (it writes {', '.join(given)}); "
            "--positive names one of the model's labels (data rows count as positive when their label "
            "is that label, or true / 1 where no row has it)"
        )
    d.ensure_setup()
    out = np.zeros(len(texts), dtype=np.float64)
    for s in range(0, len(texts), batch):
        part = list(texts[s : s + batch])
        table = d.process(Batch(pa.table({"text": pa.array(part, pa.string())}), "eval", len(part))).table
        out[s : s + len(part)] = table.column(col).to_numpy(zero_copy_only=False)
    return out


def score_by_source(
    side: Mapping[str, Any],
    model: Path,
    texts: Sequence[str],
    sources: Sequence[str],
    *,
    cached: bool = False,
    detector: Any = None,
) -> np.ndarray:
    """``score_texts`` one source at a time, in the input order. With ``cached``, each source's texts
    are one embedding-cache entry, so a source scores from the cache whichever other sources are
    left in or out (a leave-one-source-out run re-embeds only what it has never seen)."""
    skip_block = from_cache(side, cached) or not texts
    d = None if skip_block else detector or detector_for(side, model)  # one model load for all
    out = np.zeros(len(texts), dtype=np.float64)
    src = np.asarray(sources)
    for name in dict.fromkeys(sources):
        idx = np.flatnonzero(src == name)
        out[idx] = score_texts(side, model, [texts[int(i)] for i in idx], detector=d, cached=cached)
    return out


def from_cache(side: Mapping[str, Any], cached: bool) -> bool:
    """Whether ``cached`` scoring of this model skips the block: heads on document features only."""
    return bool(cached and side["trainer"] == "head" and side.get("features", "chunks") != "chunks")


def _score_document_head(side: Mapping[str, Any], model: Path, texts: Sequence[str]) -> np.ndarray:
    from corpusfilter.blocks.embedding import Head
    from corpusfilter.train import HeadSpec, head_features

    spec = HeadSpec(
        model=side["embedding_model"],
        chunk_tokens=side["chunk_tokens"],
        stride=side.get("stride"),
        max_chunks=side["max_chunks"],
        features=side["features"],
        sentence_top_k=side.get("sentence_top_k", 3),
    )
    if not texts:
        return np.zeros(0, dtype=np.float64)
    head = Head.load(str(model))
    x, _ = head_features(texts, spec)
    return head(x)[:, head.labels.index(side["positive"])].astype(np.float64)


# ---------------------------------------------------------------------------------------- metrics


def auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve by ranks (ties get their average rank)."""
    y = np.asarray(y, dtype=bool)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = np.asarray(s)[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def threshold_for_fpr(neg_scores: np.ndarray, fpr: float) -> float:
    """The lowest threshold t (score >= t is flagged) that flags at most ``fpr`` of ``neg_scores``."""
    s = np.sort(np.asarray(neg_scores, dtype=np.float64))[::-1]
    k = int(np.floor(fpr * len(s) + 1e-9))  # how many negatives may be flagged
    if len(s) == 0:
        return 0.5
    if k >= len(s):
        return float(s[-1])
    # flag the top k: a threshold just above the (k+1)-th highest score
    return float(np.nextafter(s[k], np.inf))


def threshold_for_recall(pos_scores: np.ndarray, recall: float) -> float:
    """The highest threshold that flags at least ``recall`` of ``pos_scores``."""
    s = np.sort(np.asarray(pos_scores, dtype=np.float64))[::-1]
    if len(s) == 0:
        return 0.5
    k = max(1, int(np.ceil(recall * len(s) - 1e-9)))
    return float(s[min(k, len(s)) - 1])


def short_threshold(t: float, scores: np.ndarray) -> float:
    """The shortest decimal (at most 12 places) that flags exactly the rows ``t`` flags among
    ``scores`` (``score >= threshold``): the same operating point, written so that a user who copies
    it gets the rates printed beside it. The smallest such decimal above the highest unflagged score,
    so it stays close to a lowest-threshold rule; ``t`` itself when no short decimal does."""
    import math

    s = np.asarray(scores, dtype=np.float64)
    if not math.isfinite(t) or len(s) == 0:
        return t
    hit = s >= t
    lo = float(s[~hit].max()) if (~hit).any() else -math.inf  # any c in (lo, hi] flags the same rows
    hi = float(s[hit].min()) if hit.any() else math.inf
    # with no row on one side the gap is unbounded: two places at least keep it near the rows
    for k in range(0 if math.isfinite(lo) and math.isfinite(hi) else 2, 13):
        scale = 10.0**k
        ref = lo if math.isfinite(lo) else hi
        if not math.isfinite(ref) or not math.isfinite(ref * scale):
            continue
        if math.isfinite(lo):  # the smallest k-place decimal above lo
            c = (math.floor(lo * scale) + 1) / scale
            if c <= lo:
                c = (math.floor(lo * scale) + 2) / scale
        else:  # every row flagged: the largest k-place decimal at or below the lowest score
            c = math.floor(hi * scale) / scale
        if lo < c <= hi and np.array_equal(s >= c, hit):
            return c
    return t


def rates(y: np.ndarray, s: np.ndarray, thr: float) -> dict[str, float]:
    y = np.asarray(y, dtype=bool)
    hit = s >= thr
    tp, fp = int((hit & y).sum()), int((hit & ~y).sum())
    fn = int((~hit & y).sum())
    prec = tp / (tp + fp) if tp + fp else float("nan")
    rec = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * prec * rec / (prec + rec) if tp else 0.0
    fpr = fp / int((~y).sum()) if (~y).any() else float("nan")
    return {"threshold": thr, "precision": prec, "recall": rec, "f1": f1, "fpr": fpr}


def calibration(y: np.ndarray, s: np.ndarray, bins: int = 10) -> tuple[float, list[dict[str, Any]]]:
    """Expected calibration error over equal-width score bins, and the reliability table."""
    y = np.asarray(y, dtype=np.float64)
    idx = np.minimum((np.clip(s, 0, 1) * bins).astype(int), bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        m = idx == b
        if not m.any():
            continue
        conf, acc = float(s[m].mean()), float(y[m].mean())
        ece += m.mean() * abs(conf - acc)
        table.append(
            {
                "bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}",
                "n": int(m.sum()),
                "mean_score": conf,
                "positive_rate": acc,
            }
        )
    return float(ece), table


def binary_metrics(
    y: np.ndarray,
    s: np.ndarray,
    *,
    threshold: float = 0.5,
    target_recall: float | None = None,
    target_fpr: float | None = None,
) -> dict[str, Any]:
    y = np.asarray(y, dtype=bool)
    s = np.asarray(s, dtype=np.float64)
    out: dict[str, Any] = {"documents": len(y), "positives": int(y.sum()), "negatives": int((~y).sum())}
    out["auroc"] = auroc(y, s)
    out.update(rates(y, s, threshold))
    ece, table = calibration(y, s)
    out["ece"] = ece
    out["reliability"] = table
    # the thresholds are written so that applying the printed number gives the printed rates
    chosen = {}
    if target_recall is not None:
        chosen["at_target_recall"] = short_threshold(threshold_for_recall(s[y], target_recall), s)
        out["at_target_recall"] = {"target_recall": target_recall, **rates(y, s, chosen["at_target_recall"])}
    if target_fpr is not None:
        chosen["at_target_fpr"] = short_threshold(threshold_for_fpr(s[~y], target_fpr), s)
        out["at_target_fpr"] = {"target_fpr": target_fpr, **rates(y, s, chosen["at_target_fpr"])}
    out = _round(out)
    for key, t in chosen.items():  # not rounded to 6 places: that could move it past a score
        out[key]["threshold"] = t
    return out


def group_names(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Group labels as strings (a column may hold numbers)."""
    return np.asarray([str(g) for g in values], dtype=object)


def read_groups(table: Any, column: str, path: str) -> np.ndarray:
    """A table's group column as strings; a null is an error naming the file and the row."""
    vals = table.column(column).to_pylist()
    bad = next((i for i, g in enumerate(vals) if g is None), None)
    if bad is not None:
        raise InputError(f"{path}: row {bad}: {column} is null (every row needs a group)")
    return group_names(vals)


def per_group_metrics(
    y: np.ndarray, s: np.ndarray, groups: np.ndarray, thresholds: Mapping[str, float]
) -> dict[str, Any]:
    """Per group (a source or register): its counts, AUROC where it has both labels, and at each
    named operating threshold its recall (positives) and FPR (negatives). A pooled AUROC can hide a
    source the detector misses, or one where its false positives sit."""
    y = np.asarray(y, dtype=bool)
    names = group_names(groups)
    out: dict[str, Any] = {}
    for g in sorted(set(names)):
        m = names == g
        yg, sg = y[m], s[m]
        row: dict[str, Any] = {
            "documents": int(m.sum()),
            "positives": int(yg.sum()),
            "negatives": int((~yg).sum()),
        }
        row["auroc"] = auroc(yg, sg) if 0 < yg.sum() < len(yg) else None
        for point, t in thresholds.items():
            row[point] = {
                "recall": float((sg[yg] >= t).mean()) if yg.any() else None,
                "fpr": float((sg[~yg] >= t).mean()) if (~yg).any() else None,
            }
        out[g] = row
    return _round(out)


def format_groups(groups: Mapping[str, Any]) -> str:
    """The per-group table: recall and FPR at each operating point."""
    f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    first = next(iter(groups.values()))
    points = [k for k, v in first.items() if isinstance(v, dict)]
    w = max([5, *(len(g) for g in groups)])
    head = f"  {'group':<{w}} {'docs':>6} {'pos':>5} {'AUROC':>7}" + "".join(
        f" {p + ' recall':>18} {p + ' FPR':>15}" for p in points
    )
    lines = ["per group:", head]
    for g, r in groups.items():
        cells = "".join(f" {f(r[p]['recall']):>18} {f(r[p]['fpr']):>15}" for p in points)
        lines.append(f"  {g:<{w}} {r['documents']:>6} {r['positives']:>5} {f(r['auroc']):>7}{cells}")
    return "\n".join(lines)


def _round(x: Any) -> Any:
    if isinstance(x, float):
        return None if x != x else round(x, 6)
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v) for v in x]
    return x


def pr_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every distinct threshold, high to low."""
    y = np.asarray(y, dtype=bool)
    order = np.argsort(-s, kind="mergesort")
    tp = np.cumsum(y[order])
    fp = np.cumsum(~y[order])
    last = np.r_[np.diff(s[order]) != 0, True]  # one point per distinct score
    tp, fp = tp[last], fp[last]
    return tp / np.maximum(tp + fp, 1), tp / max(int(y.sum()), 1)


def plot_pr(y: np.ndarray, s: np.ndarray, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prec, rec = pr_curve(y, s)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.plot(rec, prec, lw=1.5)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_metrics(m: Mapping[str, Any]) -> str:
    f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [
        f"documents {m['documents']} ({m['positives']} positive, {m['negatives']} negative)",
        f"AUROC {f(m['auroc'])}   ECE {f(m['ece'])}",
        "",
        f"{'operating point':24s} {'threshold':>10s} {'precision':>10s} {'recall':>10s} {'F1':>8s} {'FPR':>8s}",
    ]
    points = [(f"threshold {m['threshold']:g}", m)]
    if "at_target_recall" in m:
        points.append((f"recall >= {m['at_target_recall']['target_recall']}", m["at_target_recall"]))
    if "at_target_fpr" in m:
        points.append((f"FPR <= {m['at_target_fpr']['target_fpr']}", m["at_target_fpr"]))
    for name, p in points:
        t = f(p["threshold"]) if p is m else repr(p["threshold"])  # a chosen threshold: in full
        lines.append(
            f"{name:24s} {t:>10s} {f(p['precision']):>10s} {f(p['recall']):>10s} "
            f"{f(p['f1']):>8s} {f(p['fpr']):>8s}"
        )
    lines += ["", "reliability:", f"  {'bin':10s} {'n':>7s} {'mean score':>11s} {'positive rate':>14s}"]
    for r in m["reliability"]:
        lines.append(f"  {r['bin']:10s} {r['n']:7d} {f(r['mean_score']):>11s} {f(r['positive_rate']):>14s}")
    return "\n".join(lines)


def read_labelled(
    path: str,
    text_column: str,
    label_column: str,
    positive: str,
    group_column: str | None = None,
    *,
    named: bool = False,
) -> tuple[list[str], np.ndarray, np.ndarray | None, str]:
    """Texts, boolean labels (:func:`label_values`: positive when equal to ``positive``), with
    ``group_column`` each row's group (no nulls), and the label counts (:func:`label_values`)."""
    table = read_columns(path, [text_column, label_column] + ([group_column] if group_column else []))
    texts = text_values(table.column(text_column), path, text_column)
    y, counts = label_values(
        table.column(label_column).to_pylist(), positive, path, label_column, named=named
    )
    return texts, y, read_groups(table, group_column, path) if group_column else None, counts


def read_columns(path: str, required: Sequence[str], optional: Sequence[str] = ()) -> Any:
    """A Parquet file's ``required`` columns and those of ``optional`` it has (a pyarrow Table); a
    missing file or column, or an unreadable file, is an :class:`InputError` naming the file."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        missing = [c for c in required if c not in names]
        if missing:
            raise InputError(f"{path}: no column {missing[0]!r} (has {', '.join(names)})")
        cols = list(dict.fromkeys([*required, *(c for c in optional if c in names)]))
        return pq.read_table(path, columns=cols)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{path}: not a readable Parquet file ({first_line(e)})") from None


def text_values(col: Any, path: str, column: str) -> list[str]:
    """A text column's values, or an error naming the first row whose text is not a string (null
    included), is empty, or is not valid UTF-8: the rows a run sets aside unscored as unreadable,
    which a threshold or a metric must not count either."""
    try:
        raw = col.to_pylist()
    except UnicodeDecodeError:
        from corpusfilter.io import invalid_utf8

        row = int(np.argmax(invalid_utf8(col)))
        raise InputError(f"{path}: row {row}: {column} is not valid UTF-8") from None
    bad = next((i for i, t in enumerate(raw) if not isinstance(t, str)), None)
    if bad is not None:
        raise InputError(f"{path}: row {bad}: {column} is not a string")
    empty = next((i for i, t in enumerate(raw) if not t), None)
    if empty is not None:
        raise InputError(
            f"{path}: row {empty}: {column} is empty (a run sets empty text aside unscored; drop such rows)"
        )
    return raw


def label_values(
    raw: Sequence[Any], positive: str, path: str, column: str, *, named: bool = False
) -> tuple[np.ndarray, str]:
    """Which rows are positive (:func:`positive_rows`); a null, NaN or empty label is an error naming
    its row, and so is a positive the user ``named`` (``--data-positive``) that no row has (true / 1
    stand in only for the model's label). Also the counts by value, for the command to print, so an
    unexpected label is seen."""
    from corpusfilter.train import label_problem, label_text

    bad = label_problem(raw)
    if bad is not None:  # no class: counted as a negative it would hide
        raise InputError(f"{path}: row {bad[0]}: {bad[1]} label in column {column!r}")
    names = [label_text(v) for v in raw]
    if named and positive not in set(names):
        have = ", ".join(sorted(repr(v) for v in set(names))[:10])
        raise InputError(f"{path}: no row of column {column!r} has the label {positive!r} (labels: {have})")
    y = positive_rows(raw, positive)
    pos = Counter(n for n, p in zip(names, y) if p)
    neg = Counter(n for n, p in zip(names, y) if not p)
    return y, f"labels in {column!r}: positive {_counts(pos)}; negative {_counts(neg)}"


def positive_rows(raw: Sequence[Any], positive: str) -> np.ndarray:
    """The rows whose label is ``positive``, read as ``corpusfilter train`` reads a label column
    (:func:`corpusfilter.train.label_text`: 2 is "2", True is "True"), so a model trained with
    ``positive: "2"`` counts its 2s, not its 1s, as positive. Only where no row has that label is a
    value compared as a number or truth value: to ``positive`` when it is one ("1" matches 1.0,
    "True" matches 1, "0" matches 0.0, "2" none of 1), else true / 1 stand for a class name the data
    does not use (a model of ``good`` on data labelled 0/1)."""
    from corpusfilter.train import label_text

    names = [label_text(v) for v in raw]
    if positive in set(names):
        return np.asarray([n == positive for n in names], dtype=bool)
    target = _truth_or_number(positive)
    want = 1.0 if target is None else target
    return np.asarray([_truth_or_number(v) == want for v in raw], dtype=bool)


def _truth_or_number(value: Any) -> float | None:
    """A label as a number: true / false (bool, or the word in any case) as 1 / 0, a number or a
    decimal string as its value; None for anything else (a class name)."""
    if isinstance(value, numbers.Real | Decimal):  # bool too: True is 1
        return float(value)
    if isinstance(value, str):
        v = value.strip()
        if v.lower() in ("true", "false"):
            return float(v.lower() == "true")
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _counts(c: Counter[str]) -> str:
    return ", ".join(f"{k!r} {n}" for k, n in c.most_common()) or "none"


def cmd_eval(args: Any) -> int:
    for name in ("threshold", "target_recall", "target_fpr"):
        v = getattr(args, name)
        if v is not None and not 0 <= v <= 1:  # nan fails too
            raise CorpusfilterError(f"--{name.replace('_', '-')} {v}: a share between 0 and 1")
    side, model = load_sidecar(args.model, positive=args.positive)
    data_positive = args.data_positive or side["positive"]
    texts, y, groups, counts = read_labelled(
        args.data,
        args.text_column,
        args.label_column,
        data_positive,
        args.group_column,
        named=args.data_positive is not None,
    )
    print(counts, file=sys.stderr)
    if y.all() or not y.any():
        raise CorpusfilterError(
            f"{args.data}: needs both positive and negative rows (positive = {data_positive!r}; "
            "--data-positive names the data's label for the model's class)"
        )
    t0 = time.perf_counter()
    s = score_texts(side, model, texts)
    elapsed = time.perf_counter() - t0
    m = binary_metrics(
        y, s, threshold=args.threshold, target_recall=args.target_recall, target_fpr=args.target_fpr
    )
    m["model"] = str(model)
    m["data"] = str(args.data)
    m["score_column"] = side["score_column"]
    m["docs_per_second"] = round(len(texts) / elapsed, 1) if elapsed > 0 else None
    if groups is not None:
        points = {"threshold": float(args.threshold)}  # the operating points binary_metrics reports
        for key in ("target_recall", "target_fpr"):
            if f"at_{key}" in m:
                points[key] = m[f"at_{key}"]["threshold"]
        m["per_group"] = per_group_metrics(y, s, groups, points)
    print(f"model {model} ({side['trainer']}, column {side['score_column']}) on {args.data}")
    print(format_metrics(m))
    if groups is not None:
        print(format_groups(m["per_group"]))
    if args.json:
        Path(args.json).write_text(json.dumps(m, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if args.plot:
        plot_pr(y, s, args.plot, f"{side['name']} on {Path(args.data).name}")
        print(f"wrote {args.plot}")
    return 0
