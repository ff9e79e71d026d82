"""Keyword filter throughput: corpusfilter vs a plain datatrove pipeline, in one run, one task each.

    python benchmarks/keyword_filter.py [--mb 500] [--shards 8] [--terms 500] [--repeats 3]

Builds (once, cached) a corpus with ../shared/tools/make_bench_corpus.py, then times three jobs,
each its own process on one datatrove task, ``--repeats`` times in turn (the median is reported,
the machine being shared):
  corpusfilter   `corpusfilter run` on a recipe: keywords (the term list, full hit counts) → drop hits >= 3
  ahocorasick    datatrove ParquetReader → BaseFilter counting whole-word hits with pyahocorasick
                 → ParquetWriter (drops documents with >= 3 hits)
  no_filter      datatrove ParquetReader → ParquetWriter
for two term lists of 500 single words: the shipped lexicons' single words topped up with corpus
words from frequency rank 1000 on ("dense": common words, many hits) or from rank 5000 on
("lexicon": rarer words, closer to a topical lexicon). Prints JSON with the speed ratios and
whether both filters kept the same ids (also benchmarks/results/keyword.json).
"""

from __future__ import annotations

import re
import shutil
import statistics
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
from _common import NOFILTER_JOB, corpus_parser, ids_in, machine, save_result, text_mb, timed, work_corpus


def build_terms(corpus: Path, n: int, work: Path, start_rank: int) -> Path:
    """n single-word terms: the shipped lexicons' single words, then corpus words from ``start_rank`` on."""
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


def clean(work: Path, *names: str) -> None:
    for d in names:
        shutil.rmtree(work / d, ignore_errors=True)


def main() -> None:
    ap = corpus_parser(mb=500, shards=8, repeats=3)
    ap.add_argument("--terms", type=int, default=500)
    ap.add_argument("--workload", choices=["dense", "lexicon", "both"], default="both")
    a = ap.parse_args()
    work, corpus = work_corpus(a)
    mb = text_mb(corpus)
    workloads = {w: r for w, r in (("dense", 1000), ("lexicon", 5000)) if a.workload in ("both", w)}
    terms = {w: build_terms(corpus, a.terms, work, r) for w, r in workloads.items()}
    recipes = {}
    for w, t in terms.items():
        recipes[w] = work / f"keyword_bench_{w}.yaml"
        recipes[w].write_text(
            f"input: {corpus}\noutput: {work / ('out_cf_' + w)}\nblocks:\n"
            f"  - keywords: {{name: kw, lexicon: {t}}}\n"
            f"  - drop: {{where: 'kw_hits >= 3', reason: keywords}}\n"
        )
    times: dict[str, list[float]] = {"no_filter": []}
    for w in workloads:
        times[f"cf_{w}"], times[f"aho_{w}"] = [], []
    for _ in range(a.repeats):  # interleaved, so drifting load hits every job alike
        clean(work, "out_none", "out_none_logs")
        times["no_filter"].append(
            timed([sys.executable, "-c", NOFILTER_JOB, str(corpus), str(work / "out_none")])
        )
        for w in workloads:
            clean(work, f"out_cf_{w}", f"out_aho_{w}", f"out_aho_{w}_logs")
            cli = [
                sys.executable,
                "-m",
                "corpusfilter.cli",
                "run",
                str(recipes[w]),
                "--tasks",
                "1",
                "--no-progress",
            ]
            times[f"cf_{w}"].append(timed(cli))
            aho_job = [sys.executable, "-c", AHO_JOB, str(corpus), str(work / f"out_aho_{w}"), str(terms[w])]
            times[f"aho_{w}"].append(timed(aho_job))
    med = {k: statistics.median(v) for k, v in times.items()}
    runs = {}
    for w in workloads:
        kept_cf, kept_aho = ids_in(work / f"out_cf_{w}" / "data"), ids_in(work / f"out_aho_{w}")
        hits = sum(
            int(pq.read_table(f, columns=["kw_hits"]).column("kw_hits").to_numpy().sum())
            for sub in ("data", "rejected")
            for f in sorted((work / f"out_cf_{w}" / sub).glob("*.parquet"))
        )
        cf, aho, none = med[f"cf_{w}"], med[f"aho_{w}"], med["no_filter"]
        runs[w] = {
            "terms_file": terms[w].name,
            "terms": sum(1 for _ in open(terms[w])),
            "hits_per_mb": round(hits / mb, 1),
            "seconds_median": {
                "corpusfilter": round(cf, 2),
                "datatrove_ahocorasick": round(aho, 2),
                "datatrove_no_filter": round(none, 2),
            },
            "seconds_all": {
                "corpusfilter": [round(x, 2) for x in times[f"cf_{w}"]],
                "datatrove_ahocorasick": [round(x, 2) for x in times[f"aho_{w}"]],
            },
            "mb_per_s": {
                "corpusfilter": round(mb / cf, 1),
                "datatrove_ahocorasick": round(mb / aho, 1),
                "datatrove_no_filter": round(mb / none, 1),
            },
            "speedup_vs_ahocorasick": round(aho / cf, 2),
            "speedup_vs_no_filter": round(none / cf, 2),
            "kept": {"corpusfilter": len(kept_cf), "datatrove_ahocorasick": len(kept_aho)},
            "same_documents_kept": kept_cf == kept_aho,
            "kept_differences": len(kept_cf ^ kept_aho),
        }
    save_result(
        "keyword",
        {
            "benchmark": "keyword",
            "command": f"python benchmarks/keyword_filter.py --mb {a.mb:g} --shards {a.shards} --terms {a.terms} "
            f"--repeats {a.repeats}",
            "machine": machine(),
            "corpus": {"text_mb": round(mb, 1), "shards": a.shards},
            "no_filter_seconds_all": [round(x, 2) for x in times["no_filter"]],
            "targets": {"speedup_vs_ahocorasick": 3.0, "speedup_vs_no_filter": 2.0},
            "workloads": runs,
        },
    )


if __name__ == "__main__":
    main()
