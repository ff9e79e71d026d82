"""The audit report: one self-contained HTML page (and a Markdown summary) about a finished run.

``corpusfilter report OUTPUT`` reads the manifest and the Parquet files of an output folder and shows
what the filter did, for a person to check it: the funnel per block, removal by source, score
histograms with the recipe's thresholds drawn, token shares per category before and after, the
treatment and control arms side by side (when the manifest names an experiment), and samples of
removed and borderline-kept documents.

Reading scales with the corpus: every aggregate is a column-projected polars scan, text is read only
for the rows shown (by row group), or streamed to count bytes when there is no token column. Samples
are chosen by a stable hash of each document's id and the run's seed, never by global RNG state.
Plots are PNGs (matplotlib, Agg canvas, imported on first use) embedded as data URIs, the page loads
nothing else, and all document text is HTML-escaped: it is untrusted.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from corpusfilter import __version__
from corpusfilter.batch import BLOCK_COLUMN, COPY_COLUMN, REASON_COLUMN, ROW_COLUMN, SHARD_COLUMN
from corpusfilter.errors import CorpusfilterError, first_line
from corpusfilter.hashing import stable_hash
from corpusfilter.manifest import control_overlap, documents_in, upstream_unreadable_outside

SNIPPET_CHARS = 400
MAX_GROUPS = 30  # rows in the removal-by-source table and chart; the rest are summed as "(other)"
HIST_BINS = 50
NUMERIC_PREFIXES = ("int", "uint", "float", "double", "halffloat")


class ReportError(CorpusfilterError):
    """The folder cannot be reported on (not a corpusfilter output, or its manifest is invalid), or
    the report cannot be written where asked."""


@dataclass
class ReportResult:
    html: Path
    markdown: Path
    seconds: float
    sections: list[str]


# -- reading an output folder ----------------------------------------------------------------------
@dataclass
class Output:
    """A finished corpusfilter output folder: its validated manifest and its Parquet files."""

    path: Path
    manifest: dict[str, Any]

    def files(self, kind: str) -> list[Path]:
        return [self.path / f["path"] for f in self.manifest["outputs"][kind]]

    def columns(self, kind: str) -> dict[str, str]:
        return {c["name"]: c["type"] for c in self.manifest["schemas"][kind]}

    @property
    def text_column(self) -> str:
        return str(self.manifest["recipe"]["resolved"].get("input", {}).get("text_column") or "text")

    @property
    def id_column(self) -> str | None:
        col = self.manifest["recipe"]["resolved"].get("input", {}).get("id_column", "id")
        return str(col) if col and col in self.columns("data") else None

    @property
    def seed(self) -> int:
        return int(self.manifest["seed"])

    def scan(self, kind: str, columns: Sequence[str], *, originals: bool = False) -> pl.LazyFrame | None:
        """A lazy scan of ``columns`` over the ``kind`` files; None when there are none.
        ``originals``: leave out the copies that upsample / backfill blocks added."""
        files = self.files(kind)
        if not files:
            return None
        lf = pl.scan_parquet([str(f) for f in files])
        if originals and COPY_COLUMN in self.columns(kind):
            lf = lf.filter(pl.col(COPY_COLUMN).fill_null(0) == 0)
        return lf.select(list(columns))


def load_output(path: str | Path) -> Output:
    """Open ``path`` as a corpusfilter output; ReportError naming what is wrong otherwise."""
    from corpusfilter.manifest import load_schema, validate_manifest

    root = Path(path)
    if not root.is_dir():
        raise ReportError(f"{root}: not a folder")
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise ReportError(f"{root}: no manifest.json (not a finished corpusfilter output)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{mpath}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise ReportError(f"{mpath}: not a JSON object")
    checked = manifest
    if "experiment" in manifest and "experiment" not in load_schema().get("properties", {}):
        # The schema of this version does not describe the experiment section yet: check it here.
        checked = {k: v for k, v in manifest.items() if k != "experiment"}
        exp = manifest["experiment"]
        if not isinstance(exp, dict) or exp.get("arm") not in ("treatment", "control"):
            raise ReportError(f"{mpath}: experiment.arm must be 'treatment' or 'control'")
        if not isinstance(exp.get("counterpart", ""), str):
            raise ReportError(f"{mpath}: experiment.counterpart must be a path")
    errors = validate_manifest(checked)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ReportError(f"{mpath}: invalid manifest: {errors[0]}{more}")
    out = Output(root, manifest)
    for kind in ("data", "rejected"):
        for f in out.files(kind):
            if not f.is_file():
                raise ReportError(f"{f}: listed in the manifest but missing")
    return out


# -- thresholds parsed from the recipe's conditions ------------------------------------------------
_FLIP = {">=": "<=", "<=": ">=", ">": "<", "<": ">", "=": "=", "==": "==", "<>": "<>", "!=": "!="}
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_OP = r">=|<=|<>|!=|==|=|>|<"
_COL_OP_NUM = re.compile(rf"^\s*({_IDENT})\s*({_OP})\s*({_NUM})\s*$")
_NUM_OP_COL = re.compile(rf"^\s*({_NUM})\s*({_OP})\s*({_IDENT})\s*$")
_ANY_COL_OP_NUM = re.compile(rf"(?<![\w.])({_IDENT})\s*({_OP})\s*({_NUM})(?![\w.])")
_KEYWORDS = {"and", "or", "not", "is", "null", "true", "false", "in", "like", "between"}


@dataclass(frozen=True)
class Threshold:
    """One ``column OP number`` comparison found in a decision's condition."""

    column: str
    op: str
    value: float
    block: str  # the block label, e.g. "5.drop"
    kind: str  # drop, keep or tag
    name: str  # the reject reason or the tag label
    where: str
    others: tuple[str, ...] | None = None  # the other conjuncts when the condition is a plain AND chain

    @property
    def text(self) -> str:
        return f"{self.column} {self.op} {_num(self.value)}"

    def holds(self, col: pl.Expr) -> pl.Expr:
        v = self.value
        return {
            ">=": col >= v,
            "<=": col <= v,
            ">": col > v,
            "<": col < v,
            "=": col == v,
            "==": col == v,
            "<>": col != v,
            "!=": col != v,
        }[self.op]


def _mask_strings(sql: str) -> str:
    """Blank out quoted literals so that nothing inside them is read as syntax."""
    return re.sub(
        r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", lambda m: "'" + "_" * (len(m.group()) - 2) + "'", sql
    )


def _strip_parens(sql: str, masked: str) -> tuple[str, str]:
    while masked.startswith("(") and masked.endswith(")"):
        depth = 0
        for i, ch in enumerate(masked):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(masked) - 1:
                return sql, masked  # the first "(" closes before the end: not one wrapping pair
        sql, masked = sql[1:-1].strip(), masked[1:-1].strip()
    return sql, masked


def split_conjuncts(sql: str) -> list[str] | None:
    """The top-level AND operands of ``sql``, or None when it has a top-level OR or NOT."""
    masked = _mask_strings(sql).strip()
    sql, masked = _strip_parens(sql.strip(), masked)
    parts, depth, start, between = [], 0, 0, False
    for m in re.finditer(r"\(|\)|\b(?:AND|OR|NOT|BETWEEN)\b", masked, flags=re.IGNORECASE):
        tok = m.group().upper()
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth -= 1
        elif depth == 0 and tok == "BETWEEN":
            between = True
        elif depth == 0 and tok == "NOT" and re.search(r"\bIS\s*$", masked[: m.start()], flags=re.IGNORECASE):
            continue  # "x IS NOT NULL"
        elif depth == 0 and tok in ("OR", "NOT"):
            return None
        elif depth == 0 and tok == "AND":
            if between:  # the AND of "x BETWEEN a AND b"
                between = False
                continue
            parts.append(sql[start : m.start()].strip())
            start = m.end()
    parts.append(sql[start:].strip())
    return [p for p in parts if p]


def parse_comparison(sql: str) -> tuple[str, str, float] | None:
    """``col OP number`` or ``number OP col`` (as ``col OP' number``); None for anything else."""
    sql, _ = _strip_parens(sql.strip(), _mask_strings(sql).strip())
    m = _COL_OP_NUM.match(sql)
    if m and m.group(1).lower() not in _KEYWORDS:
        return m.group(1), m.group(2), float(m.group(3))
    m = _NUM_OP_COL.match(sql)
    if m and m.group(3).lower() not in _KEYWORDS:
        return m.group(3), _FLIP[m.group(2)], float(m.group(1))
    return None


def thresholds(manifest: dict[str, Any]) -> list[Threshold]:
    """Every simple numeric comparison in the decisions' conditions; what cannot be parsed is skipped."""
    found: list[Threshold] = []
    for b in manifest["blocks"]:
        if b["kind"] != "decision":
            continue
        params = b["config"].get("params") or {}
        where = params.get("where")
        if not isinstance(where, str):
            continue
        kind = b["config"]["type"].split("@")[0]
        name = str(params.get("reason") or params.get("label") or kind)
        conj = split_conjuncts(where)
        if conj is not None:
            for i, part in enumerate(conj):
                cmp = parse_comparison(part)
                if cmp is not None:
                    others = tuple(conj[:i] + conj[i + 1 :])
                    found.append(Threshold(*cmp, b["label"], kind, name, where, others))
        else:
            for m in _ANY_COL_OP_NUM.finditer(_mask_strings(where)):
                if m.group(1).lower() not in _KEYWORDS:
                    found.append(
                        Threshold(m.group(1), m.group(2), float(m.group(3)), b["label"], kind, name, where)
                    )
    return found


# -- the numbers -----------------------------------------------------------------------------------
def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:.4g}"


def _pct(a: float, b: float) -> str:
    return f"{100.0 * a / b:.2f}%" if b else "-"


def _is_numeric(type_name: str) -> bool:
    return type_name.startswith(NUMERIC_PREFIXES)


def funnel(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per step: the reader, then each block with documents in and out and removals."""
    read, unreadable = documents_in(manifest)
    rows: list[dict[str, Any]] = [
        {
            "step": "read",
            "type": "reader",
            "condition": "",
            "in": read,
            "out": read - unreadable,
            "removed": {"unreadable": unreadable} if unreadable else {},
        }
    ]
    for b in (manifest.get("scores") or {}).get("blocks") or []:  # a decide output: its score pass
        cond = (b["config"].get("params") or {}).get("when") or ""
        rows.append(
            {"step": b["label"], "type": f"{b['config']['type']} (score pass)", "condition": str(cond)}
            | {"in": "", "out": "", "removed": {}}
        )
    for b in manifest["blocks"]:
        s = b["stats"]
        params = b["config"].get("params") or {}
        cond = params.get("where") or params.get("when") or ""
        rows.append(
            {
                "step": b["label"],
                "type": b["config"]["type"],
                "condition": str(cond),
                "in": s["in"],
                "out": s["out"],
                "removed": dict(s.get("dropped") or {}),
                "scored": s.get("scored"),
            }
        )
    return rows


def removal_by_group(out: Output) -> tuple[str, list[dict[str, Any]], list[str]]:
    """Documents read, kept and removed (by reason) per ``source`` value, else per input shard."""
    reasons = sorted(out.manifest["accounting"]["rejected"])
    groups: dict[str, dict[str, Any]] = {}

    def row(g: str) -> dict[str, Any]:
        return groups.setdefault(
            g, {"group": g, "read": 0, "kept": 0, "added": 0, "unreadable": 0, "removed": {}}
        )

    if "source" in out.columns("data"):
        by = "source"
        copies = COPY_COLUMN in out.columns("data")
        kept = out.scan("data", ["source", COPY_COLUMN] if copies else ["source"])
        if kept is not None:
            is_copy = (pl.col(COPY_COLUMN).fill_null(0) > 0) if copies else pl.lit(False)
            agg = kept.group_by("source").agg(pl.len().alias("n"), is_copy.sum().cast(pl.Int64).alias("c"))
            for g, n, c in agg.collect().iter_rows():
                row(str(g))["kept"] += n
                row(str(g))["added"] += c
        rej = out.scan("rejected", ["source", REASON_COLUMN])
        if rej is not None:
            for g, r, n in rej.group_by("source", REASON_COLUMN).len().collect().iter_rows():
                row(str(g))["removed"][str(r)] = n
        unread = documents_in(out.manifest)[1]
        if unread:
            row("(unreadable: no source)")["unreadable"] = unread
        for r in groups.values():
            r["read"] = r["kept"] - r["added"] + sum(r["removed"].values()) + r["unreadable"]
    else:
        by = "input shard"
        for shard, c in out.manifest["accounting"]["per_shard"].items():
            r = row(shard)
            r.update(read=c["read"], kept=c["kept"], unreadable=c["unreadable"], removed=dict(c["rejected"]))
            r["added"] = c.get("added", 0)
        upstream = documents_in(out.manifest)[1] - out.manifest["accounting"]["unreadable"]
        if upstream:  # a decide output: rows its score pass could not read
            row("(unreadable in the score pass)").update(read=upstream, unreadable=upstream)
    rows = sorted(groups.values(), key=lambda r: (-r["read"], r["group"]))
    if len(rows) > MAX_GROUPS:
        rest = rows[MAX_GROUPS - 1 :]
        other: dict[str, Any] = {"group": f"(other: {len(rest)} groups)", "removed": {}}
        other.update(read=0, kept=0, added=0, unreadable=0)
        for r in rest:
            for k in ("read", "kept", "added", "unreadable"):
                other[k] += r[k]
            for k, v in r["removed"].items():
                other["removed"][k] = other["removed"].get(k, 0) + v
        rows = rows[: MAX_GROUPS - 1] + [other]
    return by, rows, reasons


@dataclass
class Histogram:
    column: str
    edges: np.ndarray
    kept: np.ndarray
    rejected: np.ndarray
    nulls: int
    overflow_from: float | None  # values above this are counted in the last bin
    thresholds: list[Threshold]
    stats: dict[str, float]


def score_columns(out: Output, ths: Sequence[Threshold]) -> list[str]:
    """Numeric columns the detectors added (after the provenance columns) or that a condition reads;
    never the bookkeeping ones (``copy_index`` is 0 on every original, which is all a histogram counts)."""
    cols = out.columns("data")
    names = list(cols)
    after = names[names.index(ROW_COLUMN) + 1 :] if ROW_COLUMN in names else names
    used = {t.column for t in ths}
    return [
        c
        for c in names
        if _is_numeric(cols[c]) and c not in (ROW_COLUMN, COPY_COLUMN) and (c in after or c in used)
    ]


def histograms(out: Output, ths: Sequence[Threshold]) -> list[Histogram]:
    """Kept and rejected counts per bin for every score column (each input document once): one
    query for the ranges, then one binned count per column and kind, run together."""
    cols = score_columns(out, ths)
    if not cols:
        return []
    scans = [s for s in (out.scan("data", cols, originals=True), out.scan("rejected", cols)) if s is not None]
    if not scans:
        return []
    both = pl.concat(scans)
    aggs: list[pl.Expr] = []
    for c in cols:
        x = pl.col(c).cast(pl.Float64)
        aggs += [
            x.min().alias(f"{c}\0min"),
            x.max().alias(f"{c}\0max"),
            x.mean().alias(f"{c}\0mean"),
            x.median().alias(f"{c}\0median"),
            x.quantile(0.995).alias(f"{c}\0q"),
            x.null_count().cast(pl.Int64).alias(f"{c}\0nulls"),
        ]
    st = both.select(aggs).collect().row(0, named=True)
    types = out.columns("data")
    plans: list[tuple[str, np.ndarray, float | None]] = []
    for c in cols:
        lo, hi, q = st[f"{c}\0min"], st[f"{c}\0max"], st[f"{c}\0q"]
        if lo is None or hi is None:
            continue
        tvals = [t.value for t in ths if t.column == c]
        is_int = types[c].startswith(("int", "uint"))
        if is_int and hi - lo <= HIST_BINS:
            top = hi
        else:  # a long tail would squash the bulk: stop at the 99.5th percentile or past the thresholds
            top = min(hi, max([hi if q is None else q, *(t * 1.5 if t > 0 else t + 1 for t in tvals)]))
            top = hi if top <= lo else top
        overflow = top if top < hi else None
        if is_int and top - lo <= HIST_BINS:
            edges = np.arange(math.floor(lo), math.floor(top) + 2, dtype=np.float64) - 0.5
        else:
            span = top - lo if top > lo else 1.0
            edges = np.linspace(lo, lo + span, HIST_BINS + 1)
        plans.append((c, edges, overflow))
    queries: list[pl.LazyFrame] = []
    keys: list[tuple[str, int]] = []
    for c, edges, _ in plans:
        nb = len(edges) - 1
        width = (edges[-1] - edges[0]) / nb
        for k, scan in enumerate((out.scan("data", [c], originals=True), out.scan("rejected", [c]))):
            if scan is None:
                continue
            b = ((pl.col(c).cast(pl.Float64) - edges[0]) / width).floor().clip(0, nb - 1).cast(pl.Int64)
            queries.append(scan.drop_nulls().select(b.alias("b")).group_by("b").len())
            keys.append((c, k))
    counts: dict[tuple[str, int], np.ndarray] = {}
    nbins = {c: len(edges) - 1 for c, edges, _ in plans}
    for key, df in zip(keys, pl.collect_all(queries)):
        arr = np.zeros(nbins[key[0]], dtype=np.int64)
        for bin_, n in df.iter_rows():
            arr[int(bin_)] += n
        counts[key] = arr
    result = []
    for c, edges, overflow in plans:
        zero = np.zeros(len(edges) - 1, dtype=np.int64)
        result.append(
            Histogram(
                column=c,
                edges=edges,
                kept=counts.get((c, 0), zero),
                rejected=counts.get((c, 1), zero),
                nulls=int(st[f"{c}\0nulls"]),
                overflow_from=overflow,
                thresholds=[t for t in ths if t.column == c],
                stats={k: st[f"{c}\0{k}"] for k in ("min", "median", "mean", "max")},
            )
        )
    return result


@dataclass
class Shares:
    """Token (or byte) totals per category, before the decisions (all readable rows) and after (kept)."""

    unit: str
    before_total: int
    after_total: int
    rows: list[dict[str, Any]] = field(default_factory=list)  # category, kind, before, after, docs


def _all_blocks(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The blocks of the score pass (for a ``decide`` output: label and config only), then this run's."""
    scored: list[dict[str, Any]] = list((manifest.get("scores") or {}).get("blocks") or [])
    return scored + list(manifest["blocks"])


def _weight(out: Output) -> tuple[pl.Expr, str, list[str]]:
    """Tokens per document from the run's token column, else UTF-8 bytes of text."""
    cols = out.columns("data")
    recorded = (out.manifest.get("tokens") or {}).get("column")
    if isinstance(recorded, str) and recorded in cols:
        return pl.col(recorded).cast(pl.Int64).fill_null(0), "tokens", [recorded]
    for b in _all_blocks(out.manifest):
        if b["config"]["type"].split("@")[0] == "tokens":
            name = (b["config"].get("params") or {}).get("name") or "tokens"
            for col in (f"{name}_count", f"{name}_tokens"):
                if col in cols:
                    return pl.col(col).cast(pl.Int64).fill_null(0), "tokens", [col]
    text = out.text_column
    return pl.col(text).str.len_bytes().cast(pl.Int64).fill_null(0), "text bytes (UTF-8)", [text]


def _sums_by_row_group(
    files: Sequence[Path], columns: list[str], aggs: list[pl.Expr], by: str | None = None
) -> pl.DataFrame:
    """Additive aggregates (sums, counts) computed one Parquet row group at a time, then added up.

    Memory stays bounded by one row group of ``columns`` whatever the corpus size; a polars streaming
    scan over a text column was measured to hold more as the input grows.
    """
    parts: list[pl.DataFrame] = []

    def combine(frames: list[pl.DataFrame]) -> pl.DataFrame:
        df = pl.concat(frames, how="vertical_relaxed")
        return df.group_by(by).agg(pl.all().sum()) if by else df.select(pl.all().sum())

    for f in files:
        pf = pq.ParquetFile(f)
        for i in range(pf.num_row_groups):
            frame = pl.DataFrame(pl.from_arrow(pf.read_row_group(i, columns=columns)))
            parts.append(frame.group_by(by).agg(aggs) if by else frame.select(aggs))
            if len(parts) >= 256:
                parts = [combine(parts)]
    if not parts:
        empty = pl.DataFrame(pl.from_arrow(pq.read_schema(files[0]).empty_table().select(columns)))
        parts = [empty.group_by(by).agg(aggs) if by else empty.select(aggs)]
    return combine(parts)


def token_shares(out: Output) -> Shares:
    """Shares of tokens per tag label and reject reason, streaming over the needed columns only."""
    weight, unit, wcols = _weight(out)
    tags: list[tuple[str, str]] = []
    for b in out.manifest["blocks"]:
        kind, p = b["config"]["type"].split("@")[0], b["config"].get("params") or {}
        # tags, and upsample blocks that label what they copy (the control arm carries both as tags)
        if kind == "tag" or (kind == "upsample" and p.get("label")):
            pair = (str(p.get("column") or "labels"), str(p["label"]))
            if pair not in tags and pair[0] in out.columns("data"):
                tags.append(pair)
    label_cols = sorted({c for c, _ in tags})
    copies = COPY_COLUMN in out.columns("data")
    # Before = every readable input document once: kept originals (not upsampled copies) + rejected.
    # One streaming pass per kind, grouped by reject reason for the rejected rows.
    sums: dict[str, dict[str, int]] = {"data": {}, "data0": {}, "rejected": {}}
    for kind in ("data", "rejected"):
        extra = [REASON_COLUMN] if kind == "rejected" else ([COPY_COLUMN] if copies else [])
        files = out.files(kind)
        if not files:
            continue
        variants = [("", pl.lit(True))]
        if kind == "data" and copies:
            variants.append(("_o", pl.col(COPY_COLUMN).fill_null(0) == 0))
        aggs: list[pl.Expr] = []
        for suffix, keep in variants:
            n_docs = keep.sum().cast(pl.Int64) if suffix else pl.len().cast(pl.Int64)
            aggs += [weight.filter(keep).sum().alias("total" + suffix), n_docs.alias("docs" + suffix)]
            for i, (col, label) in enumerate(tags):
                has = pl.col(col).list.contains(label).fill_null(False) & keep
                aggs += [
                    weight.filter(has).sum().alias(f"t{i}{suffix}"),
                    has.sum().cast(pl.Int64).alias(f"d{i}{suffix}"),
                ]
        columns = sorted(set(wcols + label_cols + extra))
        if kind == "rejected":
            frame = _sums_by_row_group(files, columns, aggs, by=REASON_COLUMN).sort(REASON_COLUMN)
        else:
            frame = _sums_by_row_group(files, columns, aggs).with_columns(pl.lit("").alias(REASON_COLUMN))
        for r in frame.iter_rows(named=True):
            reason = r.pop(REASON_COLUMN)
            for k, v in r.items():
                dest = "data0" if k.endswith("_o") else kind
                key = k.removesuffix("_o")
                sums[dest][key] = sums[dest].get(key, 0) + int(v or 0)
                if kind == "rejected" and k == "total":
                    sums[kind][f"reason:{reason}"] = int(v or 0)
                elif kind == "rejected" and k == "docs":
                    sums[kind][f"reasondocs:{reason}"] = int(v or 0)
    kept, rej = sums["data"], sums["rejected"]
    orig = sums["data0"] if copies else kept
    from corpusfilter.experiment import category_name

    shares = Shares(unit, orig.get("total", 0) + rej.get("total", 0), kept.get("total", 0))
    for i, (col, label) in enumerate(tags):
        shares.rows.append(
            {
                "category": category_name(col, label),
                "kind": "tag",
                "before": orig.get(f"t{i}", 0) + rej.get(f"t{i}", 0),
                "after": kept.get(f"t{i}", 0),
                "docs_before": orig.get(f"d{i}", 0) + rej.get(f"d{i}", 0),
                "docs_after": kept.get(f"d{i}", 0),
            }
        )
    for key in sorted(k for k in rej if k.startswith("reason:")):
        reason = key.split(":", 1)[1]
        shares.rows.append(
            {
                "category": reason,
                "kind": "removed",
                "before": rej[key],
                "after": 0,
                "docs_before": rej[f"reasondocs:{reason}"],
                "docs_after": 0,
            }
        )
    return shares


# -- samples ---------------------------------------------------------------------------------------
@dataclass
class Sample:
    file: Path
    row: int  # row index in the file
    group: str  # the reject reason, or the threshold text for borderline rows
    key: int
    distance: float | None = None
    values: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    length: int = 0


def _key_columns(out: Output) -> list[str]:
    return [out.id_column] if out.id_column else [SHARD_COLUMN, ROW_COLUMN]


def _keys(out: Output, df: pl.DataFrame) -> np.ndarray:
    if out.id_column:
        ids = df.get_column(out.id_column).cast(pl.String)
    else:
        ids = df.select(
            pl.concat_str(pl.col(SHARD_COLUMN), pl.lit(":"), pl.col(ROW_COLUMN).cast(pl.String))
        ).to_series()
    return stable_hash(ids.to_arrow(), out.seed)


def removed_samples(out: Output, n: int) -> dict[str, list[Sample]]:
    """Per reject reason, the ``n`` rejected rows with the smallest stable hash (id, seed)."""
    best: dict[str, list[Sample]] = {}
    if n <= 0:
        return best
    for f in out.files("rejected"):
        df = (
            pl.scan_parquet(str(f)).select([*_key_columns(out), REASON_COLUMN]).with_row_index("_r").collect()
        )
        if not df.height:
            continue
        df = df.with_columns(pl.Series("_k", _keys(out, df)))
        top = df.sort("_k").group_by(REASON_COLUMN, maintain_order=True).head(n)
        for reason, r, k in top.select(REASON_COLUMN, "_r", "_k").iter_rows():
            best.setdefault(str(reason), []).append(Sample(f, int(r), str(reason), int(k)))
    return {r: sorted(s, key=lambda x: x.key)[:n] for r, s in sorted(best.items())}


def borderline_samples(out: Output, ths: Sequence[Threshold], n: int) -> dict[Threshold, list[Sample]]:
    """Per threshold of a drop or keep, the ``n`` kept rows nearest to it (ties by stable hash).

    For a drop whose condition is an AND chain, a row counts when the other parts hold and this
    comparison alone fails: moving this threshold a little would have removed it. For a keep, every
    kept row satisfies the condition; the nearest are those with the least margin.
    """
    result: dict[Threshold, list[Sample]] = {}
    cols = out.columns("data")
    if n <= 0:
        return result
    for t in ths:
        if t.kind not in ("drop", "keep") or t.column not in cols or not _is_numeric(cols[t.column]):
            continue
        x = pl.col(t.column).cast(pl.Float64)
        cond = x.is_not_null()
        needed = {t.column}
        if t.kind == "drop":
            cond = cond & ~t.holds(x)
            if t.others:
                try:
                    from corpusfilter.expr import Condition

                    other = Condition(" AND ".join(f"({o})" for o in t.others))
                    cond = cond & other.expr.fill_null(False)
                    needed |= set(other.columns)
                except CorpusfilterError:
                    pass
        if COPY_COLUMN in cols:  # upsampled copies repeat their original
            cond = cond & (pl.col(COPY_COLUMN).fill_null(0) == 0)
            needed.add(COPY_COLUMN)
        if not needed <= set(cols):
            continue
        picked: list[Sample] = []
        for f in out.files("data"):
            lf = pl.scan_parquet(str(f)).select(sorted(needed | set(_key_columns(out)))).with_row_index("_r")
            lf = lf.filter(cond).with_columns((x - t.value).abs().alias("_d"))
            df = lf.collect()
            if not df.height:
                continue
            d_n = df.get_column("_d").sort()[min(n, df.height) - 1]
            df = df.filter(pl.col("_d") <= d_n)  # hash only the candidates
            df = df.with_columns(pl.Series("_k", _keys(out, df))).sort("_d", "_k").head(n)
            for r, d, k in df.select("_r", "_d", "_k").iter_rows():
                picked.append(Sample(f, int(r), t.text, int(k), float(d)))
        if picked:
            result[t] = sorted(picked, key=lambda s: (s.distance, s.key))[:n]
    return result


def fill_samples(out: Output, kind: str, samples: Iterable[Sample], show: Sequence[str]) -> None:
    """Read text and ``show`` columns for just the sampled rows, one row group at a time."""
    cols = out.columns(kind)
    wanted = [c for c in dict.fromkeys([out.text_column, *show]) if c in cols]
    by_file: dict[Path, list[Sample]] = {}
    for s in samples:
        by_file.setdefault(s.file, []).append(s)
    for f, ss in by_file.items():
        pf = pq.ParquetFile(f)
        starts = np.cumsum([0] + [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)])
        by_group: dict[int, list[Sample]] = {}
        for s in ss:
            by_group.setdefault(int(np.searchsorted(starts, s.row, side="right") - 1), []).append(s)
        for g, group in by_group.items():
            table = pf.read_row_group(g, columns=wanted)
            rows = table.take(pa.array([s.row - int(starts[g]) for s in group])).to_pylist()
            for s, r in zip(group, rows):
                text = r.pop(out.text_column, None) or ""
                s.length = len(text)
                s.text = text[:SNIPPET_CHARS]
                s.values = r


# -- plots -----------------------------------------------------------------------------------------
def _figure(w: float, h: float, layout: Literal["constrained"] | None = "constrained") -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ReportError("the report needs matplotlib: pip install 'corpusfilter[report]'") from None
    fig = Figure(figsize=(w, h), dpi=100, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


COLORS = {"kept": "#4C72B0", "removed": "#DD8452", "before": "#8C8C8C", "after": "#4C72B0"}
REASON_COLORS = ["#DD8452", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#CCB974", "#64B5CD", "#55A868"]


def plot_funnel(rows: list[dict[str, Any]]) -> str:
    steps = [r for r in rows[1:] if r["in"] != r["out"] or r["removed"]]
    if rows[0]["removed"]:
        steps.insert(0, {**rows[0], "step": "readable"})
    labels = ["read"] + [r["step"] for r in steps]
    values = [rows[0]["in"]] + [r["out"] for r in steps]
    fig = _figure(8, 0.45 * len(labels) + 1.0)
    ax = fig.add_subplot()
    ypos = np.arange(len(labels))[::-1]
    ax.barh(ypos, values, color=COLORS["kept"])
    top = max(values) or 1
    for y, v, r in zip(ypos, values, [None, *steps]):
        note = f"{v:,}"
        if r is not None and r["removed"]:
            note += "  (−" + ", ".join(f"{n:,} {k}" for k, n in r["removed"].items()) + ")"
        ax.text(v + top * 0.01, y, note, va="center", fontsize=8)
    ax.set_yticks(ypos, labels, fontsize=8)
    ax.set_xlim(0, top * 1.45)
    ax.set_xlabel("documents remaining after the step")
    ax.set_title("Funnel (steps that remove documents)")
    return _png(fig)


def plot_groups(by: str, rows: list[dict[str, Any]], reasons: list[str]) -> str:
    fig = _figure(8, 0.32 * len(rows) + 1.4)
    ax = fig.add_subplot()
    ypos = np.arange(len(rows))[::-1]
    left = np.zeros(len(rows))
    for i, reason in enumerate([*reasons, "unreadable"]):
        vals = np.array(
            [
                100.0
                * (r["unreadable"] if reason == "unreadable" else r["removed"].get(reason, 0))
                / r["read"]
                if r["read"]
                else 0.0
                for r in rows
            ]
        )
        if vals.any():
            ax.barh(ypos, vals, left=left, label=reason, color=REASON_COLORS[i % len(REASON_COLORS)])
            left += vals
    ax.set_yticks(ypos, [_short(r["group"], 40) for r in rows], fontsize=8)
    ax.set_xlabel("% of documents removed")
    ax.set_title(f"Removal by {by}")
    if left.any():
        ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def plot_histogram(h: Histogram) -> str:
    fig = _figure(5.6, 3.0, layout=None)  # a fixed layout: half the time of a constrained one
    fig.subplots_adjust(left=0.12, right=0.98, top=0.91, bottom=0.17)
    ax = fig.add_subplot()
    # Stacked: removed on top of kept. One step artist per series (bars would be one patch per bin).
    total = (h.kept + h.rejected).astype(np.float64)
    ax.stairs(total, h.edges, fill=True, baseline=0.5, color=COLORS["removed"], label="removed")
    ax.stairs(h.kept.astype(np.float64), h.edges, fill=True, baseline=0.5, color=COLORS["kept"], label="kept")
    peak = (h.kept + h.rejected).max(initial=0)
    if peak > 0:
        ax.set_yscale("log")
        ax.set_ylim(0.5, peak * 2.5)  # a bin of one document stays visible
    # Integer bins are centred on the values: draw the threshold on the boundary it decides.
    unit_bins = len(h.edges) > 1 and bool(np.allclose(np.diff(h.edges), 1.0)) and h.edges[0] % 1 == 0.5
    for i, t in enumerate(h.thresholds):
        style = ("--", ":", "-.")[i % 3]
        x = t.value
        if unit_bins and float(t.value).is_integer():
            x += {">=": -0.5, "<": -0.5, ">": 0.5, "<=": 0.5}.get(t.op, 0.0)
        ax.axvline(
            x, color="#222222", linestyle=style, linewidth=1.3, label=f"{t.block}: {t.op} {_num(t.value)}"
        )
    ax.set_title(h.column, fontsize=10)
    if h.overflow_from is not None:
        ax.set_xlabel(
            f"values above {_num(round(h.overflow_from, 4))} are counted in the last bin", fontsize=8
        )
    ax.set_ylabel("documents (log)", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, loc="upper right", framealpha=0.9)
    return _png(fig)


def plot_shares(series: dict[str, list[float]], categories: list[str], unit: str, title: str) -> str:
    fig = _figure(8, 0.5 * len(categories) * max(1, len(series)) / 2 + 1.4)
    ax = fig.add_subplot()
    k = len(series)
    ypos = np.arange(len(categories))[::-1].astype(float)
    height = 0.8 / k
    palette = {"before": "#8C8C8C", "after": "#4C72B0", "treatment": "#DD8452", "control": "#4C72B0"}
    for i, (name, vals) in enumerate(series.items()):
        y = ypos + 0.4 - height * (i + 0.5)
        ax.barh(y, vals, height=height, label=name, color=palette.get(name, REASON_COLORS[i % 8]))
        for yy, v in zip(y, vals):
            ax.text(v, yy, f" {v:.2f}%", va="center", fontsize=7)
    ax.set_yticks(ypos, [_short(c, 40) for c in categories], fontsize=8)
    ax.set_xlabel(f"share of {unit} (%)")
    ax.set_xlim(0, max([max(v, default=0) for v in series.values()] + [1]) * 1.25)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def _short(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


# -- rendering -------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:24px 32px 64px;background:#fff}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:2px solid #e5e5e5;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2} td.n{text-align:right;font-variant-numeric:tabular-nums}
code{background:#f2f2f2;padding:1px 4px;border-radius:3px;font-size:.92em}
img{max-width:100%;height:auto;display:block;margin:.6em 0}
.meta td:first-child{font-weight:600;white-space:nowrap}
.ok{color:#1a7f37;font-weight:600} .bad{color:#cf222e;font-weight:600}
.note{color:#555;font-size:.9em}
nav ul{columns:2;font-size:.92em}
.sample{border:1px solid #ddd;border-radius:6px;margin:.7em 0;padding:.5em .8em;background:#fcfcfc}
.sample .head{font-size:.82em;color:#444;margin-bottom:.3em;overflow-wrap:anywhere}
.sample pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:.85em;margin:0;max-height:14em;overflow:auto}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:8px 16px}
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] | None = None) -> str:
    numeric = numeric or [False] * len(head)
    out = ["<table><thead><tr>", *(f"<th>{esc(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>")
        for v, isnum in zip(r, numeric):
            cell = f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
            out.append(f'<td class="n">{esc(cell)}</td>' if isnum else f"<td>{esc(cell)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _md_table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        s = f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{esc(alt)}">'


def _removed_cell(removed: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(removed.items())) or "-"


@dataclass
class _Doc:
    """The report being written: HTML parts, Markdown parts, section titles."""

    html: list[str] = field(default_factory=list)
    md: list[str] = field(default_factory=list)
    toc: list[tuple[str, str]] = field(default_factory=list)

    def section(self, anchor: str, title: str) -> None:
        self.toc.append((anchor, title))
        self.html.append(f'<h2 id="{anchor}">{esc(title)}</h2>')
        self.md.append(f"\n## {title}\n")


def _arm_summary(out: Output) -> dict[str, Any]:
    acc = out.manifest["accounting"]
    return {"acc": acc, "shares": token_shares(out), "recipe": out.manifest["recipe"]}


def report(output: str | Path, *, out_dir: str | Path | None = None, samples: int = 8) -> ReportResult:
    """Write ``report.html`` and ``report.md`` for the output folder ``output`` (into ``out_dir``,
    default the folder itself); ``samples`` documents are shown per reason and per threshold. A
    file that cannot be read is one error naming the output (``verify`` says which file and why)."""
    try:
        return _report(output, out_dir=out_dir, samples=samples)
    except (pl.exceptions.PolarsError, pa.ArrowException) as e:
        raise ReportError(
            f"{output}: cannot read its files ({first_line(e)}); `corpusfilter verify {output}` names "
            "what is wrong"
        ) from None


def _make_folder(dest: Path) -> None:
    """Create the report's folder, before any work; a file in its place (or an unwritable parent)
    is one error naming the path rather than a traceback."""
    if dest.exists() and not dest.is_dir():
        raise ReportError(f"report folder {dest} is a file, not a folder; choose a folder (--out)")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"report folder {dest}: cannot create it ({e.strerror or first_line(e)})") from None


def _report(output: str | Path, *, out_dir: str | Path | None, samples: int) -> ReportResult:
    t0 = time.perf_counter()
    if samples < 0:
        raise ReportError(f"--samples must be >= 0 (got {samples})")
    out = load_output(output)
    m = out.manifest
    dest = Path(out_dir) if out_dir is not None else out.path
    _make_folder(dest)
    acc = m["accounting"]
    ths = thresholds(m)
    doc = _Doc()
    title = f"corpusfilter report: {out.path.name}"
    desc = m["recipe"]["resolved"].get("description") or ""

    # Overview
    doc.section("overview", "Overview")
    ok = acc["ok"]
    meta = [
        ("output", str(out.path.resolve())),
        ("recipe", f"{m['recipe']['source']} (sha256 {m['recipe']['sha256'][:12]}…)"),
        ("description", desc),
        ("stage", m["stage"]),
        ("input", m.get("input_folder", "")),
        ("corpusfilter", f"{m['corpusfilter']['version']} (git {m['corpusfilter']['git_commit'] or '-'})"),
        (
            "run",
            f"{m['started_at']} → {m['finished_at']} ({m['elapsed_s']} s, {m['executor']['tasks']} tasks)",
        ),
        ("seed", m["seed"]),
    ]
    doc.html.append('<table class="meta"><tbody>')
    doc.html += [f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in meta]
    doc.html.append("</tbody></table>")
    read, unreadable = documents_in(m)
    counts = [
        ("documents read", read),
        ("kept", acc["kept"]),
        *([("of which added copies (upsample, backfill)", acc["added"])] if acc.get("added") else []),
        *((f"removed: {k}", v) for k, v in sorted(acc["rejected"].items())),
        ("unreadable", unreadable),
    ]
    doc.html.append(
        _table(
            ["", "documents", "share of read"],
            [(k, v, _pct(v, read)) for k, v in counts],
            [False, True, True],
        )
    )
    identity = (
        "read + added = kept + removed + unreadable"
        if acc.get("added")
        else "read = kept + removed + unreadable"
    )
    verdict = f"ok ({identity})" if ok else "FAILED: " + "; ".join(acc.get("problems", []))
    doc.html.append(f'<p>Accounting: <span class="{"ok" if ok else "bad"}">{esc(verdict)}</span></p>')
    doc.md += ["\n".join(f"- **{k}**: {v}" for k, v in meta if v != ""), ""]
    doc.md.append(_md_table(["", "documents", "share of read"], [(k, v, _pct(v, read)) for k, v in counts]))
    doc.md.append(f"\nAccounting: {verdict}")
    if outside := upstream_unreadable_outside(m):  # decide --limit: part of the scored rows read
        note = (
            f"The score pass set aside {outside:,} unreadable input row(s) in "
            f"{m['scores']['path'].rstrip('/')}/unreadable/; this --limit read covers only part of "
            "its rows, so they are not counted above."
        )
        doc.html.append(f'<p class="note">{esc(note)}</p>')
        doc.md.append(f"\n{note}")

    # Funnel
    rows = funnel(m)
    doc.section("funnel", "Funnel per block")
    doc.html.append(
        '<p class="note">Documents into and out of each step, from the block statistics in the manifest. '
        "Detectors add score columns and remove nothing; decisions drop, keep or tag.</p>"
    )
    frows = [
        (r["step"], r["type"], r["condition"], r["in"], r["out"], _removed_cell(r["removed"])) for r in rows
    ]
    head = ["step", "block", "condition", "in", "out", "removed"]
    doc.html.append(_table(head, frows, [False, False, False, True, True, False]))
    doc.html.append(_img(plot_funnel(rows), "funnel: documents remaining after each step"))
    doc.md.append(_md_table(head, frows))

    # Removal by source
    by, grows, reasons = removal_by_group(out)
    doc.section("sources", f"Removal by {by}")
    ghead = [by, "read", "kept", "removed", "removed %", *reasons, "unreadable"]
    gtab = [
        (
            g["group"],
            g["read"],
            g["kept"],
            sum(g["removed"].values()),
            _pct(sum(g["removed"].values()), g["read"]),
            *(g["removed"].get(r, 0) for r in reasons),
            g["unreadable"],
        )
        for g in grows
    ]
    doc.html.append(_table(ghead, gtab, [False] + [True] * (len(ghead) - 1)))
    if grows:
        doc.html.append(_img(plot_groups(by, grows, reasons), f"share removed per {by}"))
    doc.md.append(_md_table(ghead, gtab))

    # Score histograms
    hists = histograms(out, ths)
    doc.section("scores", "Score histograms")
    doc.html.append(
        '<p class="note">Kept and removed documents per score bin (log scale), over every readable document. '
        "Dashed lines: thresholds parsed from the decisions' conditions "
        "(simple comparisons only; anything else in a condition is not drawn).</p>"
    )
    if ths:
        doc.html.append(
            _table(
                ["block", "decision", "threshold", "full condition"],
                [(t.block, f"{t.kind} {t.name}", t.text, t.where) for t in ths],
            )
        )
    if not hists:
        doc.html.append("<p>No numeric score columns.</p>")
    shead = ["column", "min", "median", "mean", "max", "null (not scored)", "thresholds"]
    srows = [
        (
            h.column,
            *(_num(round(v, 4)) if v is not None else "-" for v in h.stats.values()),
            h.nulls,
            ", ".join(f"{t.text} ({t.block})" for t in h.thresholds) or "-",
        )
        for h in hists
    ]
    if hists:
        doc.html.append(_table(shead, srows, [False, True, True, True, True, True, False]))
    doc.html.append('<div class="grid">')
    for h in hists:
        doc.html.append(f"<div>{_img(plot_histogram(h), f'histogram of {h.column}')}</div>")
    doc.html.append("</div>")
    doc.md.append(_md_table(shead, srows) if hists else "No numeric score columns.")

    # Token shares
    shares = token_shares(out)
    doc.section("shares", "Token shares per category")
    doc.html.append(
        f'<p class="note">Share of all {esc(shares.unit)} in each category, before the decisions (every readable '
        "document) and after (kept documents). Categories are the tag labels and the reject reasons; "
        "removed categories are 0 after by construction.</p>"
    )
    thead = [
        "category",
        "kind",
        f"{shares.unit} before",
        "share before",
        f"{shares.unit} after",
        "share after",
        "docs before",
        "docs after",
    ]
    trows = [
        (
            r["category"],
            r["kind"],
            r["before"],
            _pct(r["before"], shares.before_total),
            r["after"],
            _pct(r["after"], shares.after_total),
            r["docs_before"],
            r["docs_after"],
        )
        for r in shares.rows
    ]
    trows.append(
        (
            "(all)",
            "",
            shares.before_total,
            "100%",
            shares.after_total,
            "100%",
            acc["read"] - acc["unreadable"],
            acc["kept"],
        )
    )
    doc.html.append(_table(thead, trows, [False, False, True, True, True, True, True, True]))
    if shares.rows:
        cats = [r["category"] for r in shares.rows]
        series = {
            "before": [
                100.0 * r["before"] / shares.before_total if shares.before_total else 0.0 for r in shares.rows
            ],
            "after": [
                100.0 * r["after"] / shares.after_total if shares.after_total else 0.0 for r in shares.rows
            ],
        }
        doc.html.append(
            _img(
                plot_shares(series, cats, shares.unit, "Share per category, before and after"), "token shares"
            )
        )
    doc.md.append(_md_table(thead, trows))

    # Treatment vs control
    exp = m.get("experiment")
    if isinstance(exp, dict):
        _experiment_section(doc, out, exp, shares)

    # Samples
    removed = removed_samples(out, samples)
    border = borderline_samples(out, ths, samples)
    block_cols = _condition_columns(m)
    show_common = [c for c in (out.id_column, "source", "labels", SHARD_COLUMN, ROW_COLUMN) if c]
    fill_samples(
        out,
        "rejected",
        [s for ss in removed.values() for s in ss],
        [*show_common, REASON_COLUMN, BLOCK_COLUMN, *sorted({c for cs in block_cols.values() for c in cs})],
    )
    fill_samples(
        out,
        "data",
        [s for ss in border.values() for s in ss],
        [*show_common, *sorted({c for t in border for c in _columns_of(t)})],
    )
    doc.section("removed", "Samples of removed documents")
    doc.html.append(
        f'<p class="note">Up to {samples} per reason, chosen by a stable hash of the document id and the seed '
        f"({m['seed']}); the first {SNIPPET_CHARS} characters of each.</p>"
    )
    if not removed:
        doc.html.append("<p>No documents were removed.</p>")
    for reason, ss in removed.items():
        doc.html.append(f"<h3>{esc(reason)} ({acc['rejected'].get(reason, 0):,} removed)</h3>")
        for s in ss:
            cols = block_cols.get(str(s.values.get(BLOCK_COLUMN)), [])
            doc.html.append(_sample_html(out, s, cols))
    doc.md.append(f"Samples of {sum(map(len, removed.values()))} removed documents are in report.html.")
    doc.section("borderline", "Samples of borderline-kept documents")
    doc.html.append(
        '<p class="note">Kept documents nearest to each threshold of a drop or keep decision. For a drop with '
        "an AND condition: rows where the other parts hold and this comparison alone fails, nearest first "
        "(ties by stable hash).</p>"
    )
    if not border:
        doc.html.append("<p>No thresholds of drop or keep decisions to show kept documents near.</p>")
    for t, ss in border.items():
        side = "just inside" if t.kind == "keep" else "just short of"
        doc.html.append(
            f"<h3>{esc(t.block)} ({esc(t.kind)}, {esc(t.name)}): kept, {side} <code>{esc(t.text)}</code></h3>"
        )
        doc.html.append(f'<p class="note">condition: <code>{esc(t.where)}</code></p>')
        for s in ss:
            doc.html.append(_sample_html(out, s, _columns_of(t)))
    doc.md.append(
        f"Samples of {sum(map(len, border.values()))} borderline-kept documents are in report.html."
    )

    elapsed = time.perf_counter() - t0
    toc = "".join(f'<li><a href="#{a}">{esc(t)}</a></li>' for a, t in doc.toc)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>{esc(title)}</h1><p>{esc(desc)}</p><nav><ul>{toc}</ul></nav>"
        + "\n".join(doc.html)
        + f'<p class="note">Written by corpusfilter {esc(__version__)} (report). '
        "Document text is shown escaped; this page loads no scripts and no external files.</p>"
        "</main></body></html>\n"
    )
    head_md = [
        f"# {title}\n",
        *([f"{desc}\n"] if desc else []),
        "Contents: " + ", ".join(t for _, t in doc.toc) + ".",
    ]
    html_path, md_path = dest / "report.html", dest / "report.md"
    for path, text in ((html_path, page), (md_path, "\n".join(head_md + doc.md).strip() + "\n")):
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as e:  # a folder in the file's place, a read-only or full disk
            raise ReportError(f"cannot write {path} ({e.strerror or first_line(e)})") from None
    return ReportResult(html_path, md_path, elapsed, [t for _, t in doc.toc])


def _condition_columns(manifest: dict[str, Any]) -> dict[str, list[str]]:
    """Per decision block label, the columns its condition reads."""
    from corpusfilter.expr import Condition

    res: dict[str, list[str]] = {}
    for b in manifest["blocks"]:
        where = (b["config"].get("params") or {}).get("where")
        if b["kind"] == "decision" and isinstance(where, str):
            try:
                res[b["label"]] = Condition(where).columns
            except CorpusfilterError:
                res[b["label"]] = []
    return res


def _columns_of(t: Threshold) -> list[str]:
    cols = [t.column]
    for o in t.others or ():
        cmp = parse_comparison(o)
        if cmp:
            cols.append(cmp[0])
    return list(dict.fromkeys(cols))


def _sample_html(out: Output, s: Sample, score_cols: Sequence[str]) -> str:
    v = s.values
    ident = v.get(out.id_column) if out.id_column else f"{v.get(SHARD_COLUMN)}:{v.get(ROW_COLUMN)}"
    parts = [f"<b>{esc(ident)}</b>"]
    if "source" in v:
        parts.append(f"source {esc(v['source'])}")
    if v.get(REASON_COLUMN):
        parts.append(f"removed by {esc(v.get(BLOCK_COLUMN))} ({esc(v[REASON_COLUMN])})")
    parts += [f"{esc(c)} = {esc(_fmt(v.get(c)))}" for c in score_cols if c in v]
    if v.get("labels"):
        parts.append("labels " + esc(", ".join(map(str, v["labels"]))))
    parts.append(f"input {esc(v.get(SHARD_COLUMN))} row {esc(v.get(ROW_COLUMN))}")
    if s.distance is not None:
        parts.append(f"{esc(_num(round(s.distance, 4)))} from the threshold")
    parts.append(f"{s.length:,} chars")
    more = "…" if s.length > len(s.text) else ""
    return (
        f'<div class="sample"><div class="head">{" · ".join(parts)}</div><pre>{esc(s.text)}{more}</pre></div>'
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return _num(round(v, 4))
    return str(v)


def _experiment_section(doc: _Doc, out: Output, exp: dict[str, Any], shares: Shares) -> None:
    doc.section("experiment", "Treatment vs control")
    arm = str(exp.get("arm"))
    rel = str(exp.get("counterpart") or "")
    extra = {k: v for k, v in exp.items() if k not in ("arm", "counterpart")}
    doc.html.append(f"<p>This output is the <b>{esc(arm)}</b> arm.</p>")
    if extra:
        doc.html.append(
            _table(
                ["experiment", "value"], [(k, json.dumps(v, ensure_ascii=False)) for k, v in extra.items()]
            )
        )
    other_path = (out.path / rel) if rel else None
    other: Output | None = None
    problem = ""
    if other_path is None:
        problem = "the manifest names no counterpart"
    elif not other_path.is_dir():
        problem = f"counterpart {rel} not found (looked in {other_path})"
    else:
        try:
            other = load_output(other_path)
        except ReportError as e:
            problem = f"counterpart {rel} cannot be read: {e}"
        else:
            want = "control" if arm == "treatment" else "treatment"
            got = (other.manifest.get("experiment") or {}).get("arm")
            if other.path.resolve() == out.path.resolve() or got != want:  # e.g. folders renamed
                problem = f"counterpart {rel} is not the {want} arm (its manifest says {got!r})"
                other = None
    if other is None:
        doc.html.append(f'<p class="bad">{esc(problem)}</p>')
        doc.md.append(f"This output is the {arm} arm; {problem}.")
        return
    arms = {
        arm: (out, shares),
        ("control" if arm == "treatment" else "treatment"): (other, token_shares(other)),
    }
    order = [a for a in ("treatment", "control") if a in arms]
    reasons = sorted(set().union(*(o.manifest["accounting"]["rejected"] for o, _ in arms.values())))
    rows: list[list[Any]] = []

    def add(name: str, f: Any) -> None:
        rows.append([name, *(f(*arms[a]) for a in order)])

    add("output folder", lambda o, s: o.path.name)
    add("recipe", lambda o, s: o.manifest["recipe"]["source"])
    add("recipe sha256", lambda o, s: o.manifest["recipe"]["sha256"][:12] + "…")
    add("documents read", lambda o, s: documents_in(o.manifest)[0])
    add("kept", lambda o, s: o.manifest["accounting"]["kept"])
    add("kept %", lambda o, s: _pct(o.manifest["accounting"]["kept"], documents_in(o.manifest)[0]))
    add("unreadable", lambda o, s: documents_in(o.manifest)[1])
    for r in reasons:
        add(f"removed: {r}", lambda o, s, r=r: o.manifest["accounting"]["rejected"].get(r, 0))
    add(
        "control's picks also picked by the treatment",
        lambda o, s: ", ".join(f"{w} {v}" for w, v in control_overlap(o.manifest).items()) or "-",
    )
    add(f"{shares.unit} read", lambda o, s: s.before_total)
    add(f"{shares.unit} kept", lambda o, s: s.after_total)
    for r in reasons:
        add(
            f"share of read {shares.unit} removed: {r}",
            lambda o, s, r=r: _share(s, "removed", r, "before", s.before_total),
        )
    # Tag labels are what the arms are compared on: their share of the kept corpus.
    cats = sorted({r["category"] for _, s in arms.values() for r in s.rows if r["kind"] == "tag"})
    for c in cats:
        add(
            f"share of kept {shares.unit}: {c}", lambda o, s, c=c: _share(s, "tag", c, "after", s.after_total)
        )
    head = ["", *order]
    doc.html.append(_table(head, rows, [False] + [True] * len(order)))
    doc.md.append(_md_table(head, rows))
    if cats:
        series: dict[str, list[float]] = {
            a: [_pct_of(arms[a][1], "tag", c, "after", arms[a][1].after_total) for c in cats] for a in order
        }
        title = "Share per category in the kept corpus, by arm"
        doc.html.append(_img(plot_shares(series, cats, shares.unit, title), "category shares by arm"))


def _pct_of(s: Shares, kind: str, category: str, when: str, total: int) -> float:
    """A category's share, found by kind and name: a tag's label may name a drop's reason too."""
    value = next((r[when] for r in s.rows if r["kind"] == kind and r["category"] == category), 0)
    return 100.0 * value / total if total else 0.0


def _share(s: Shares, kind: str, category: str, when: str, total: int) -> str:
    """The category's share as a percentage, or "-" where this arm has no such category."""
    if not any(r["kind"] == kind and r["category"] == category for r in s.rows) or not total:
        return "-"
    return f"{_pct_of(s, kind, category, when, total):.2f}%"
