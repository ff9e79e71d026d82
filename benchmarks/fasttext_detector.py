"""fastText detector throughput: corpusfilter vs datatrove's FastTextClassifierFilter, same model and data.

    python benchmarks/fasttext_detector.py [--mb 100] [--shards 4] [--repeats 3]

Builds (once, cached) a corpus with ../shared/tools/make_bench_corpus.py (--mix 0.05) and trains a
binary fastText model (minority: moral / AI-risk sources; background: the rest) on a second corpus
built with another seed. Then times, each its own process on one datatrove task, ``--repeats``
times in turn (medians reported):
  corpusfilter   `corpusfilter run`: fasttext detector (every label's probability) → drop minority > 0.5
  datatrove      ParquetReader → FastTextClassifierFilter(remove_labels=[("minority", 0.5)],
                 newline_replacement=" ") → ParquetWriter
  no_filter      ParquetReader → ParquetWriter (the floor)
and checks both filters kept the same documents. Prints JSON (also benchmarks/results/fasttext.json).
"""

from __future__ import annotations

import hashlib
import shutil
import statistics
import sys
from pathlib import Path

import pyarrow.parquet as pq
from _common import (
    NOFILTER_JOB,
    build_corpus,
    corpus_parser,
    ids_in,
    machine,
    save_result,
    text_mb,
    timed,
    work_corpus,
)

MINORITY_PREFIXES = ("moral-stories", "ethics-virtue", "lesswrong-ai")

DATATROVE_JOB = r"""
import sys
from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.filters import FastTextClassifierFilter
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import ParquetWriter
corpus, out, model = sys.argv[1:4]
LocalPipelineExecutor([
    ParquetReader(corpus, text_key="text", id_key="id"),
    FastTextClassifierFilter(model, remove_labels=[("minority", 0.5)], newline_replacement=" "),
    ParquetWriter(out),
], tasks=1, workers=1, logging_dir=out + "_logs").run()
"""


def train_model(work: Path) -> Path:
    """Train (once) and return the model. Its file name carries its sha256: datatrove's filter caches
    models by path string and would otherwise keep serving a stale copy after retraining."""
    import fasttext

    existing = sorted(work.glob("fasttext_minority_*.bin"))
    if existing:
        return existing[0]
    corpus = build_corpus(work, 20, 1, seed=1)
    table = pq.read_table(sorted(corpus.glob("*.parquet"))[0], columns=["text", "source"]).to_pylist()
    lines = []
    for row in table:
        label = "minority" if row["source"].startswith(MINORITY_PREFIXES) else "background"
        lines.append(f"__label__{label} " + " ".join(row["text"][:3000].split()))
    data = work / "fasttext_train.txt"
    data.write_text("\n".join(lines) + "\n")
    # thread=10: fastText 0.9.x initializes only thread/10 of the input matrix (tests/blocks/test_fasttext.py)
    model = fasttext.train_supervised(
        str(data), epoch=5, wordNgrams=2, dim=32, bucket=200_000, thread=10, verbose=0
    )
    tmp = work / "fasttext_minority.tmp.bin"
    model.save_model(str(tmp))
    path = work / f"fasttext_minority_{hashlib.sha256(tmp.read_bytes()).hexdigest()[:12]}.bin"
    tmp.rename(path)
    return path


def main() -> None:
    a = corpus_parser(mb=100, shards=4, repeats=3).parse_args()
    work, corpus = work_corpus(a)
    model = train_model(work)
    mb = text_mb(corpus)
    recipe = work / "fasttext_bench.yaml"
    recipe.write_text(
        f"input: {corpus}\noutput: {work / 'ft_cf'}\nblocks:\n"
        f"  - fasttext: {{name: ft, model: {model}}}\n"
        f"  - drop: {{where: 'ft_minority > 0.5', reason: minority}}\n"
    )
    times: dict[str, list[float]] = {
        "corpusfilter": [],
        "datatrove_fasttext_filter": [],
        "datatrove_no_filter": [],
    }
    for _ in range(a.repeats):
        for d in ("ft_cf", "ft_dt", "ft_dt_logs", "ft_none", "ft_none_logs"):
            shutil.rmtree(work / d, ignore_errors=True)
        cli = [sys.executable, "-m", "corpusfilter.cli", "run", str(recipe), "--tasks", "1", "--no-progress"]
        times["corpusfilter"].append(timed(cli))
        times["datatrove_fasttext_filter"].append(
            timed([sys.executable, "-c", DATATROVE_JOB, str(corpus), str(work / "ft_dt"), str(model)])
        )
        times["datatrove_no_filter"].append(
            timed([sys.executable, "-c", NOFILTER_JOB, str(corpus), str(work / "ft_none")])
        )
    med = {k: statistics.median(v) for k, v in times.items()}
    kept_cf, kept_dt = ids_in(work / "ft_cf" / "data"), ids_in(work / "ft_dt")
    save_result(
        "fasttext",
        {
            "benchmark": "fasttext",
            "command": f"python benchmarks/fasttext_detector.py --mb {a.mb:g} --shards {a.shards} --repeats {a.repeats}",
            "machine": machine(),
            "corpus": {"text_mb": round(mb, 1), "shards": a.shards},
            "model": {
                "file": model.name,
                "bytes": model.stat().st_size,
                "labels": ["background", "minority"],
            },
            "seconds_median": {k: round(v, 2) for k, v in med.items()},
            "seconds_all": {k: [round(x, 2) for x in v] for k, v in times.items()},
            "mb_per_s": {k: round(mb / v, 1) for k, v in med.items()},
            "speedup_vs_datatrove_fasttext": round(med["datatrove_fasttext_filter"] / med["corpusfilter"], 2),
            "target": 1.5,
            "kept": {"corpusfilter": len(kept_cf), "datatrove_fasttext_filter": len(kept_dt)},
            "same_documents_kept": kept_cf == kept_dt,
            "kept_differences": len(kept_cf ^ kept_dt),
        },
    )


if __name__ == "__main__":
    main()
