"""Cost of the document-level MLP heads against a per-chunk logistic head, same encoder, same data.

    python benchmarks/heads.py [--mb 20] [--docs 3000] [--repeats 3]

Builds (once, cached) a corpus with ../shared/tools/make_bench_corpus.py (--mix 0.05) and takes
--docs documents evenly across it. Each variant is the `embedding` detector on the shipped
static-minilm model (256-token chunks, at most 8 a document), scoring the same documents in batches
of 1,000 through `score()` (model load and a warm-up batch excluded), --repeats times in turn
(medians reported):
  chunk_logistic   a logistic head per chunk, mean over chunks (the shape of the per-kind detectors;
                   its weights are random: the cost does not depend on them)
  goodness_doc     the shipped goodness head: document, last-paragraph and sentence (top-3 pool)
                   views, 64-unit MLP
  misaligned_doc   the shipped misaligned_ai head: document + last-paragraph views, 256-unit MLP
The document heads embed each document's last paragraph as well (and goodness each sentence), so
the ratio to chunk_logistic is their extra cost. Prints JSON (also benchmarks/results/heads.json).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _common import REPO, WORK, build_corpus, machine, save_result

from corpusfilter.blocks.embedding import EmbeddingDetector

BATCH = 1000


def sample_docs(corpus: Path, n: int) -> list[str]:
    texts: list[str] = []
    for f in sorted(corpus.glob("*.parquet")):
        texts.extend(pq.read_table(f, columns=["text"]).column("text").to_pylist())
    step = max(1, len(texts) // n)
    return texts[::step][:n]


def detector(head: Path) -> EmbeddingDetector:
    d = EmbeddingDetector(
        name="h", model="static-minilm", head=str(head), chunk_tokens=256, max_chunks=8, aggregate=["mean"]
    )
    d.validate(pa.schema([("text", pa.string())]), "bench")
    d.ensure_setup()
    return d


def seconds(d: EmbeddingDetector, docs: list[str]) -> float:
    t0 = time.perf_counter()
    for s in range(0, len(docs), BATCH):
        d.score(pa.array(docs[s : s + BATCH], pa.string()))
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=20)
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    docs = sample_docs(build_corpus(WORK, args.mb, 2), args.docs)
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        logistic = Path(tmp) / "logistic.npz"
        np.savez(
            logistic,
            weight=rng.normal(size=(1, 256)).astype(np.float32),
            bias=np.zeros(1, np.float32),
            labels=np.asarray(["x"]),
        )
        variants = {
            "chunk_logistic": detector(logistic),
            "goodness_doc": detector(REPO / "classifiers" / "goodness" / "head.npz"),
            "misaligned_doc": detector(REPO / "classifiers" / "misaligned_ai" / "head.npz"),
        }
        for d in variants.values():  # warm-up
            d.score(pa.array(docs[:200], pa.string()))
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.repeats):
            for name, d in variants.items():
                times[name].append(seconds(d, docs))
    med = {k: statistics.median(v) for k, v in times.items()}
    mb = sum(len(t.encode()) for t in docs) / 1e6
    save_result(
        "heads",
        {
            "command": "python benchmarks/heads.py " + " ".join(sys.argv[1:]),
            "machine": machine(),
            "docs": len(docs),
            "text_mb": round(mb, 2),
            "repeats": args.repeats,
            "seconds_median": {k: round(v, 3) for k, v in med.items()},
            "seconds_all": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "docs_per_s": {k: round(len(docs) / v, 1) for k, v in med.items()},
            "time_ratio_to_chunk_logistic": {k: round(v / med["chunk_logistic"], 3) for k, v in med.items()},
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
