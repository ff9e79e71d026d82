"""Cascade throughput: the embedding model on every document vs only on what a cheap blocklist flags.

    python benchmarks/cascade.py [--mb 2.5] [--shards 2] [--hits 1] [--quantile Q | --threshold T]
                                 [--work benchmarks/_work]

The Deep Ignorance pattern: a keyword blocklist runs first and the expensive model scores only the
documents it flags. Builds (once, cached) a corpus with ../shared/tools/make_bench_corpus.py (real
background text plus a 5% minority of Moral Stories / ETHICS / LessWrong AI-risk documents), then
runs, each through the real CLI (`corpusfilter run --tasks 1`) as its own process:

  calibrate  the embedding detector alone on every document (untimed for the comparison); the drop
             threshold T is read off its scores, once, before the timed runs
  full       (A) embedding (minilm, prototype mode) on every document → drop margin > T
  cascade    (B) keywords (shipped `virtue` lexicon) → embedding `when: virtue_hits >= H` → drop margin > T

T and H are not tuned for the cascade. By default T is the quantile of the calibration run's
`moral_margin_chunkmax` at 1 - (minority share of the corpus), so that the full run flags about as
many documents as the corpus has minority documents; `--quantile` sets another quantile and
`--threshold` a fixed T (no calibration run). H defaults to 1 (any blocklist hit).

Prints JSON (and saves benchmarks/results/cascade.json): wall time and docs/s of both runs, the
throughput ratio cascade/full, documents the model scored in each (manifest `blocks[i].stats.scored`),
the full run's positives and the share of them the cascade loses, and the minority documents each
run removes, per source.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from _common import REPO, SHARED, build_corpus, save_result

EMB = "moral"  # embedding detector name: columns moral_<metric>_chunk<agg>
KW = "virtue"  # keyword detector name: columns virtue_hits, ...
MARGIN = f"{EMB}_margin_chunkmax"

# Prototype exemplars, written for this benchmark (not taken from the corpus or its sources).
POSITIVES = [
    "It is wrong to lie to your friends, even when the truth is uncomfortable.",
    "A virtuous person is honest, generous and kind to those in need.",
    "She felt a moral duty to return the wallet she found to its owner.",
    "We ought to treat others with fairness, compassion and respect.",
    "Is it ever ethical to break a promise in order to prevent harm?",
    "He was ashamed of having cheated and apologized to everyone he had wronged.",
    "Courage, temperance, justice and wisdom are the cardinal virtues.",
    "Helping a stranger without expecting anything in return is the right thing to do.",
]
NEGATIVES = [
    "The function returns a pointer to the allocated buffer or NULL on failure.",
    "Run make install to copy the compiled binaries into /usr/local/bin.",
    "The query planner chooses a hash join when both inputs are large.",
    "Set the environment variable PYTHONPATH before importing the module.",
    "The kernel driver registers an interrupt handler for the device.",
    "Each row of the table stores a timestamp, a user id and a status code.",
    "Use the --verbose flag to print debugging output to standard error.",
    "The configuration file is parsed once at startup and cached in memory.",
]
EMBEDDING_PARAMS: dict[str, Any] = {
    "name": EMB,
    "model": "minilm",
    "positives": POSITIVES,
    "negatives": NEGATIVES,
    "chunk_tokens": 256,
    "max_chunks": 4,
    "aggregate": ["max"],
    "device": "cpu",
}


def background_sources() -> set[str]:
    """Sources of the background text; every other source in the corpus is the minority."""
    path = SHARED / "data" / "background" / "background.parquet"
    return set(pq.read_table(path, columns=["source"]).column("source").unique().to_pylist())


def write_recipe(path: Path, corpus: Path, output: Path, blocks: list[dict[str, Any]]) -> Path:
    # JSON is YAML: no quoting surprises in the exemplar sentences or the conditions.
    recipe = {"input": {"path": str(corpus)}, "output": {"path": str(output)}, "blocks": blocks}
    path.write_text(json.dumps(recipe, indent=2) + "\n")
    return path


def run_cli(recipe: Path) -> dict[str, Any]:
    """`corpusfilter run RECIPE` as a subprocess; wall clock, its JSON summary and the manifest."""
    cmd = [sys.executable, "-m", "corpusfilter.cli", "run", str(recipe)]
    cmd += ["--tasks", "1", "--no-progress", "--json", "--overwrite"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    summary = json.loads(proc.stdout)
    manifest = json.loads((Path(summary["output"]) / "manifest.json").read_text())
    return {"wall_s": wall, "summary": summary, "manifest": manifest, "output": Path(summary["output"])}


def rows(output: Path, columns: list[str]) -> pl.DataFrame:
    """Kept and rejected rows of a run (``rejected`` = reject_reason or null)."""
    frames = []
    for sub in ("data", "rejected"):
        files = sorted((output / sub).glob("*.parquet"))
        if not files:
            continue
        extra = ["reject_reason"] if sub == "rejected" else []
        df = pl.read_parquet(files, columns=columns + extra)
        if sub == "data":
            df = df.with_columns(pl.lit(None, dtype=pl.String).alias("reject_reason"))
        frames.append(df)
    return pl.concat(frames)


def block_stats(manifest: dict[str, Any], block_type: str) -> dict[str, Any]:
    for b in manifest["blocks"]:
        if b["config"]["type"].split("@")[0] == block_type:
            return dict(b["stats"])
    raise KeyError(block_type)


def per_source(df: pl.DataFrame, minority: list[str]) -> dict[str, int]:
    counts = dict(df.group_by("source").len().iter_rows())
    return {s: int(counts.get(s, 0)) for s in minority}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=2.5, help="MB of text in the corpus")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--hits", type=int, default=1, help="H: the cascade embeds documents with >= H hits")
    g = ap.add_mutually_exclusive_group()
    g.add_argument(
        "--quantile",
        type=float,
        help="T = this quantile of the calibration run's margins (default: 1 - the corpus's minority share)",
    )
    g.add_argument("--threshold", type=float, help="a fixed T (skips the calibration run)")
    ap.add_argument("--work", default=str(REPO / "benchmarks" / "_work"))
    a = ap.parse_args()

    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(work, a.mb, a.shards)
    corpus_df = pl.read_parquet(sorted(corpus.glob("*.parquet")), columns=["id", "source", "text"])
    n_docs = corpus_df.height
    text_mb = float(corpus_df["text"].str.len_bytes().sum()) / 1e6
    background = background_sources()
    minority = sorted(set(corpus_df["source"].unique().to_list()) - background)
    minority_ids = set(corpus_df.filter(pl.col("source").is_in(minority))["id"].to_list())
    minority_share = len(minority_ids) / n_docs
    source_of = corpus_df.select("id", "source")
    del corpus_df

    emb_block = {"embedding": EMBEDDING_PARAMS}
    kw_block = {"keywords": {"name": KW, "lexicon": "virtue"}}
    when = f"{KW}_hits >= {a.hits}"

    # -- T, chosen once from the model's scores on every document --------------------------------------
    calibration: dict[str, Any] | None = None
    if a.threshold is not None:
        threshold = a.threshold
        how = "fixed with --threshold"
    else:
        q = a.quantile if a.quantile is not None else 1.0 - minority_share
        cal = run_cli(
            write_recipe(work / "cascade_calibrate.yaml", corpus, work / "out_cascade_calibrate", [emb_block])
        )
        cal_scores = rows(cal["output"], ["id", MARGIN])
        threshold = float(np.quantile(cal_scores[MARGIN].to_numpy(), q))
        how = (
            f"quantile {q:.4f} of {MARGIN} over all {cal_scores.height} documents in a calibration run "
            "(embedding detector alone, before the timed runs); "
            + ("set with --quantile" if a.quantile is not None else "q = 1 - minority share of the corpus")
        )
        calibration = {"wall_s": round(cal["wall_s"], 2), "quantile": round(q, 4)}

    drop = {"drop": {"where": f"{MARGIN} > {threshold!r}", "reason": "model"}}

    # -- the two timed runs ---------------------------------------------------------------------------
    full = run_cli(
        write_recipe(work / "cascade_full.yaml", corpus, work / "out_cascade_full", [emb_block, drop])
    )
    casc_emb = {"embedding": {**EMBEDDING_PARAMS, "when": when}}
    cascade = run_cli(
        write_recipe(
            work / "cascade_cascade.yaml", corpus, work / "out_cascade_cascade", [kw_block, casc_emb, drop]
        )
    )

    # -- what each removed --------------------------------------------------------------------------------
    full_rows = rows(full["output"], ["id", MARGIN]).join(source_of, on="id", how="left")
    casc_rows = rows(cascade["output"], ["id", f"{KW}_hits", MARGIN]).join(source_of, on="id", how="left")
    pos_full = set(full_rows.filter(pl.col("reject_reason") == "model")["id"].to_list())
    pos_casc = set(casc_rows.filter(pl.col("reject_reason") == "model")["id"].to_list())
    lost = pos_full - pos_casc
    gated = casc_rows.filter(pl.col(f"{KW}_hits") >= a.hits)

    # Scores of the documents both runs embedded: the same text, in other batches (padding differs).
    both = full_rows.select("id", pl.col(MARGIN).alias("a")).join(
        casc_rows.filter(pl.col(MARGIN).is_not_null()).select("id", pl.col(MARGIN).alias("b")), on="id"
    )
    max_diff = (
        float(both.select((pl.col("a") - pl.col("b")).abs().max()).item() or 0.0) if both.height else 0.0
    )

    def summary(run: dict[str, Any], rows_df: pl.DataFrame, positives: set[str]) -> dict[str, Any]:
        emb = block_stats(run["manifest"], "embedding")
        removed = rows_df.filter(pl.col("id").is_in(list(positives)))
        out = {
            "wall_s": round(run["wall_s"], 2),
            "docs_per_s": round(n_docs / run["wall_s"], 1),
            "mb_per_s": round(text_mb / run["wall_s"], 3),
            "elapsed_s_manifest": run["manifest"]["elapsed_s"],
            "model_scored": emb["scored"],
            "model_seconds": round(emb["seconds"], 2),
            "removed_by_model": len(positives),
            "minority_removed": len(positives & minority_ids),
            "minority_removed_by_source": per_source(removed, minority),
            "kept": run["summary"]["kept"],
            "accounting_ok": run["manifest"]["accounting"]["ok"],
        }
        return out

    res_full = summary(full, full_rows, pos_full)
    res_casc = summary(cascade, casc_rows, pos_casc)
    kw_stats = block_stats(cascade["manifest"], "keywords")
    res_casc["keyword_seconds"] = round(kw_stats["seconds"], 2)
    res_casc["gate"] = {
        "condition": when,
        "passed": gated.height,
        "minority_passed": int(gated["id"].is_in(list(minority_ids)).sum()),
        "minority_passed_by_source": per_source(gated, minority),
    }

    command = f"python benchmarks/cascade.py --mb {a.mb:g} --shards {a.shards} --hits {a.hits}"
    if a.threshold is not None:
        command += f" --threshold {a.threshold:g}"
    elif a.quantile is not None:
        command += f" --quantile {a.quantile:g}"
    result = {
        "benchmark": "cascade",
        "command": command,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "corpus": {
            "docs": n_docs,
            "text_mb": round(text_mb, 2),
            "shards": a.shards,
            "minority_docs": len(minority_ids),
            "minority_share": round(minority_share, 4),
            "minority_by_source": per_source(
                source_of.filter(pl.col("id").is_in(list(minority_ids))), minority
            ),
        },
        "model": {
            k: EMBEDDING_PARAMS[k] for k in ("model", "chunk_tokens", "max_chunks", "aggregate", "device")
        }
        | {"positives": len(POSITIVES), "negatives": len(NEGATIVES)},
        "threshold": {"column": MARGIN, "T": round(threshold, 6), "how": how, "calibration": calibration},
        "hits": {"H": a.hits, "how": "--hits (default 1: any hit of the shipped virtue lexicon)"},
        "full": res_full,
        "cascade": res_casc,
        "throughput_ratio_cascade_over_full": round(full["wall_s"] / cascade["wall_s"], 2),
        "throughput_ratio_manifest_elapsed": round(
            full["manifest"]["elapsed_s"] / cascade["manifest"]["elapsed_s"], 2
        ),
        "model_scored_share_cascade": round(res_casc["model_scored"] / max(res_full["model_scored"], 1), 4),
        "full_positives": len(pos_full),
        "cascade_loses": len(lost),
        "cascade_loses_share": round(len(lost) / len(pos_full), 4) if pos_full else None,
        "cascade_adds": len(pos_casc - pos_full),
        "lost_by_source": dict(
            Counter(full_rows.filter(pl.col("id").is_in(list(lost)))["source"].to_list()).most_common()
        ),
        "max_abs_margin_diff_same_doc": max_diff,
    }
    save_result("cascade", result)


if __name__ == "__main__":
    main()
