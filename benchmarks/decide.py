"""Score once, decide many: time re-deciding a scored corpus with a new threshold, and check that it
gives exactly what a full run with that threshold gives.

    python benchmarks/decide.py [--mb 200] [--shards 8]

Builds a corpus with ../shared/tools/make_bench_corpus.py, runs `corpusfilter score` once (keyword
detectors with the shipped virtue and moral_exemplars lexicons), then `corpusfilter decide` at two
thresholds, and a full `corpusfilter run` at the second threshold, comparing every row and column.
Prints JSON (also benchmarks/results/decide.json).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import polars as pl
from _common import corpus_parser, machine, save_result, timed, work_corpus

RECIPE = """\
input: {corpus}
output: {out}
blocks:
  - keywords: {{name: virtue, lexicon: virtue}}
  - keywords: {{name: exemplars, lexicon: moral_exemplars}}
  - tag: {{where: "exemplars_hits >= 1", label: exemplar}}
  - drop: {{where: "virtue_score >= {threshold}", reason: virtue}}
"""


def cli(*args: str) -> float:
    return timed([sys.executable, "-m", "corpusfilter.cli", *args, "--no-progress"])


def table(folder: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted(folder.glob("*.parquet"))).sort("id")


def main() -> None:
    a = corpus_parser(mb=200, shards=8).parse_args()
    work, corpus = work_corpus(a)
    out = work / "decide_out"
    for d in ("decide_out", "decide_out.scores", "decide_run"):
        shutil.rmtree(work / d, ignore_errors=True)
    recipes = {}
    for thr in (3, 5):
        recipes[thr] = work / f"decide_{thr}.yaml"
        recipes[thr].write_text(RECIPE.format(corpus=corpus, out=out, threshold=thr))
    t_score = cli("score", str(recipes[3]))
    t_decide = {thr: cli("decide", str(recipes[thr]), "--overwrite") for thr in (3, 5)}
    decided = {sub: table(out / sub) for sub in ("data", "rejected")}
    t_run = cli("run", str(recipes[5]), "--output", str(work / "decide_run"))
    same = all(decided[sub].equals(table(work / "decide_run" / sub)) for sub in ("data", "rejected"))
    scores_mb = sum(f.stat().st_size for f in (work / "decide_out.scores" / "data").glob("*.parquet")) / 1e6
    save_result(
        "decide",
        {
            "benchmark": "decide",
            "command": f"python benchmarks/decide.py --mb {a.mb:g} --shards {a.shards}",
            "machine": machine(),
            "corpus_text_mb": a.mb,
            "scored_parquet_mb": round(scores_mb, 1),
            "seconds": {
                "score_once": round(t_score, 2),
                "decide_threshold_3": round(t_decide[3], 2),
                "decide_threshold_5": round(t_decide[5], 2),
                "full_run_threshold_5": round(t_run, 2),
            },
            "kept_at_threshold_5": decided["data"].height,
            "rejected_at_threshold_5": decided["rejected"].height,
            "decide_equals_full_run": same,
        },
    )


if __name__ == "__main__":
    main()
