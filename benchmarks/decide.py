"""Score once, decide many: time re-deciding a scored corpus with a new threshold, and check that it
gives exactly what a full run with that threshold gives.

    python benchmarks/decide.py [--mb 200] [--shards 8] [--work benchmarks/_work]

Builds a corpus with ../shared/tools/make_bench_corpus.py, runs `corpusfilter score` once (keyword
detectors with the shipped virtue and moral_exemplars lexicons), then `corpusfilter decide` at two
thresholds, and a full `corpusfilter run` at the second threshold. Prints JSON (also saved to
benchmarks/results/decide.json).
"""

from __future__ import annotations

import os
import sys

# benchmarks/keyword.py would shadow the stdlib's `keyword` module: keep this folder off the path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import polars as pl  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CORPUSFILTER_SHARED", REPO.parent / "shared"))

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
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "corpusfilter.cli", *args, "--no-progress"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def table(folder: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted(folder.glob("*.parquet"))).sort("id")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=200)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--work", default=str(REPO / "benchmarks" / "_work"))
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"corpus_{int(a.mb)}mb_{a.shards}"
    if not (corpus / "shard-00000.parquet").exists():
        subprocess.run(
            [
                sys.executable,
                str(SHARED / "tools" / "make_bench_corpus.py"),
                str(corpus),
                "--mb",
                str(a.mb),
                "--shards",
                str(a.shards),
            ],
            check=True,
        )
    out = work / "decide_out"
    for d in ("decide_out", "decide_out.scores", "decide_run"):
        shutil.rmtree(work / d, ignore_errors=True)
    recipes = {}
    for thr in (3, 5):
        r = work / f"decide_{thr}.yaml"
        r.write_text(RECIPE.format(corpus=corpus, out=out, threshold=thr))
        recipes[thr] = r
    t_score = cli("score", str(recipes[3]))
    t_decide = {thr: cli("decide", str(recipes[thr]), "--overwrite") for thr in (3, 5)}
    decided = {sub: table(out / sub) for sub in ("data", "rejected")}
    t_run = cli("run", str(recipes[5]), "--output", str(work / "decide_run"))
    same = all(decided[sub].equals(table(work / "decide_run" / sub)) for sub in ("data", "rejected"))
    scores_mb = sum(f.stat().st_size for f in (work / "decide_out.scores" / "data").glob("*.parquet")) / 1e6
    result = {
        "benchmark": "decide",
        "command": f"python benchmarks/decide.py --mb {a.mb:g} --shards {a.shards}",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
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
    }
    text = json.dumps(result, indent=2)
    print(text)
    (REPO / "benchmarks" / "results").mkdir(exist_ok=True)
    (REPO / "benchmarks" / "results" / "decide.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
