"""Keyword filter throughput: corpusfilter vs a plain datatrove pipeline, in one run, one task each.

    python benchmarks/keyword.py [--mb 500] [--shards 8] [--terms 500] [--work benchmarks/_work]

Builds (once, cached) a corpus with ../shared/tools/make_bench_corpus.py, then times three jobs,
each as its own process on one task:
  corpusfilter   `corpusfilter run` on a recipe: keywords (the term list, full hit counts) → drop hits >= 3
  ahocorasick    datatrove ParquetReader → BaseFilter counting whole-word hits with pyahocorasick
                 → ParquetWriter (drops documents with >= 3 hits)
  no_filter      datatrove ParquetReader → ParquetWriter
Prints JSON with wall times, MB/s, the speed ratios, and whether both filters kept the same ids.
"""

from __future__ import annotations

import sys

# This file is named like the stdlib's `keyword` module; keep its folder off the import path.
if sys.path and sys.path[0] == __import__("os").path.dirname(__import__("os").path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import os
import platform
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CORPUSFILTER_SHARED", REPO.parent / "shared"))


def build_corpus(work: Path, mb: float, shards: int) -> Path:
    out = work / f"corpus_{int(mb)}mb_{shards}"
    if not (out / "shard-00000.parquet").exists():
        subprocess.run(
            [
                sys.executable,
                str(SHARED / "tools" / "make_bench_corpus.py"),
                str(out),
                "--mb",
                str(mb),
                "--shards",
                str(shards),
                "--mix",
                "0.05",
            ],
            check=True,
        )
    return out


def build_terms(corpus: Path, n: int, work: Path, start_rank: int) -> Path:
    """n single-word terms: the shipped lexicons' single words, topped up with corpus words taken in
    frequency order from ``start_rank`` on (1000: common content words, a dense workload; 5000: rare
    words, closer to a topical lexicon)."""
    from corpusfilter.lexicon import load_lexicon, shipped_lexicons

    words: list[str] = []
    for name in shipped_lexicons():
        for t in load_lexicon(name).terms:
            if re.fullmatch(r"[A-Za-z]+", t) and t.lower() not in words:
                words.append(t.lower())
    first = (
        pq.read_table(sorted(corpus.glob("*.parquet"))[0], columns=["text"]).column("text").to_pylist()[:3000]
    )
    freq = Counter(w for t in first for w in re.findall(r"[a-z]{4,}", t.lower()))
    for w, _ in freq.most_common()[start_rank:]:
        if len(words) >= n:
            break
        if w not in words:
            words.append(w)
    path = work / f"terms_{n}_from{start_rank}.txt"
    path.write_text("\n".join(words[:n]) + "\n")
    return path


AHO_JOB = r"""
import sys, ahocorasick
from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import ParquetWriter
from datatrove.pipeline.filters.base_filter import BaseFilter

corpus, out, terms_file = sys.argv[1:4]
TERMS = [t.strip().lower() for t in open(terms_file) if t.strip()]

class AhoFilter(BaseFilter):
    name = "aho"
    def __init__(self):
        super().__init__()
        self.A = ahocorasick.Automaton()
        for t in TERMS:
            self.A.add_word(t, t)
        self.A.make_automaton()
    def filter(self, doc):
        text = doc.text.lower()
        n = len(text)
        hits = 0
        for end, term in self.A.iter(text):
            start = end - len(term) + 1
            if (start == 0 or not (text[start - 1].isalnum() or text[start - 1] == "_")) and (
                end + 1 == n or not (text[end + 1].isalnum() or text[end + 1] == "_")):
                hits += 1
        doc.metadata["hits"] = hits
        return (hits < 3, "keywords")

LocalPipelineExecutor([ParquetReader(corpus, text_key="text", id_key="id"), AhoFilter(),
    ParquetWriter(out)], tasks=1, workers=1, logging_dir=out + "_logs").run()
"""

NOFILTER_JOB = r"""
import sys
from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import ParquetWriter
corpus, out = sys.argv[1:3]
LocalPipelineExecutor([ParquetReader(corpus, text_key="text", id_key="id"), ParquetWriter(out)],
    tasks=1, workers=1, logging_dir=out + "_logs").run()
"""


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def kept_ids(folder: Path) -> set[str]:
    ids: set[str] = set()
    for f in sorted(folder.glob("**/*.parquet")):
        ids.update(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    return ids


def run_workload(work: Path, corpus: Path, text_mb: float, terms: Path) -> dict[str, object]:
    import shutil

    recipe = work / "keyword_bench.yaml"
    recipe.write_text(
        f"input: {corpus}\noutput: {work / 'out_corpusfilter'}\nblocks:\n"
        f"  - keywords: {{name: kw, lexicon: {terms}}}\n"
        f"  - drop: {{where: 'kw_hits >= 3', reason: keywords}}\n"
    )
    for d in ("out_corpusfilter", "out_aho", "out_aho_logs", "out_none", "out_none_logs"):
        shutil.rmtree(work / d, ignore_errors=True)
    cli = [sys.executable, "-m", "corpusfilter.cli", "run", str(recipe), "--tasks", "1", "--no-progress"]
    t_cf = timed(cli)
    t_aho = timed([sys.executable, "-c", AHO_JOB, str(corpus), str(work / "out_aho"), str(terms)])
    t_none = timed([sys.executable, "-c", NOFILTER_JOB, str(corpus), str(work / "out_none")])
    ids_cf = kept_ids(work / "out_corpusfilter" / "data")
    ids_aho = kept_ids(work / "out_aho")
    manifest = json.loads((work / "out_corpusfilter" / "manifest.json").read_text())
    hits = sum(
        pq.read_table(f, columns=["kw_hits"]).column("kw_hits").to_numpy().sum()
        for sub in ("data", "rejected")
        for f in sorted((work / "out_corpusfilter" / sub).glob("*.parquet"))
    )
    return {
        "terms_file": terms.name,
        "terms": sum(1 for _ in open(terms)),
        "docs": manifest["accounting"]["read"],
        "hits_per_mb": round(float(hits) / text_mb, 1),
        "seconds": {
            "corpusfilter": round(t_cf, 2),
            "datatrove_ahocorasick": round(t_aho, 2),
            "datatrove_no_filter": round(t_none, 2),
        },
        "mb_per_s": {
            "corpusfilter": round(text_mb / t_cf, 1),
            "datatrove_ahocorasick": round(text_mb / t_aho, 1),
            "datatrove_no_filter": round(text_mb / t_none, 1),
        },
        "speedup_vs_ahocorasick": round(t_aho / t_cf, 2),
        "speedup_vs_no_filter": round(t_none / t_cf, 2),
        "kept": {"corpusfilter": len(ids_cf), "datatrove_ahocorasick": len(ids_aho)},
        "same_documents_kept": ids_cf == ids_aho,
        "kept_differences": len(ids_cf ^ ids_aho),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=500)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--terms", type=int, default=500)
    ap.add_argument("--work", default=str(REPO / "benchmarks" / "_work"))
    ap.add_argument("--workload", choices=["dense", "lexicon", "both"], default="both")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(work, a.mb, a.shards)
    text_mb = (
        sum(
            pq.read_table(f, columns=["text"]).column("text").combine_chunks().buffers()[2].size
            for f in sorted(corpus.glob("*.parquet"))
        )
        / 1e6
    )
    runs = {}
    for workload, rank in (("dense", 1000), ("lexicon", 5000)):
        if a.workload not in ("both", workload):
            continue
        runs[workload] = run_workload(work, corpus, text_mb, build_terms(corpus, a.terms, work, rank))
    result = {
        "benchmark": "keyword",
        "command": f"python benchmarks/keyword.py --mb {a.mb:g} --shards {a.shards} --terms {a.terms}",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "corpus": {"docs": runs[next(iter(runs))]["docs"], "text_mb": round(text_mb, 1), "shards": a.shards},
        "targets": {"speedup_vs_ahocorasick": 3.0, "speedup_vs_no_filter": 2.0},
        "workloads": runs,
    }
    text = json.dumps(result, indent=2)
    print(text)
    (REPO / "benchmarks" / "results").mkdir(exist_ok=True)
    (REPO / "benchmarks" / "results" / "keyword.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
