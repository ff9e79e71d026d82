"""fastText detector throughput: corpusfilter vs datatrove's FastTextClassifierFilter, same model and data.

    python benchmarks/fasttext_detector.py [--mb 100] [--shards 4] [--work benchmarks/_work]

Builds (once, cached) a corpus with ../shared/tools/make_bench_corpus.py (--mix 0.05) and trains a
binary fastText model (minority: moral / AI-risk sources; background: the rest) on a second corpus
built with another seed. Then times, each as its own process on one datatrove task:
  corpusfilter   `corpusfilter run`: fasttext detector (every label's probability) → drop minority > 0.5
  datatrove      ParquetReader → FastTextClassifierFilter(remove_labels=[("minority", 0.5)],
                 newline_replacement=" ") → ParquetWriter
  no_filter      ParquetReader → ParquetWriter (the floor)
and checks both filters kept the same documents. Prints JSON (also benchmarks/results/fasttext.json).
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

import pyarrow.parquet as pq  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CORPUSFILTER_SHARED", REPO.parent / "shared"))
MINORITY_PREFIXES = ("moral-stories", "ethics-virtue", "lesswrong-ai")


def build_corpus(work: Path, mb: float, shards: int, seed: int) -> Path:
    out = work / f"corpus_{int(mb)}mb_{shards}_seed{seed}"
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
                "--seed",
                str(seed),
            ],
            check=True,
        )
    return out


def train_model(work: Path) -> Path:
    """Train (once) and return the model. Its file name carries its sha256: datatrove's filter caches
    models by path string and would otherwise keep serving a stale copy after retraining."""
    import hashlib

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
    # thread=10: fastText 0.9.x initializes only thread/10 of the input matrix (see tests/blocks/test_fasttext.py)
    model = fasttext.train_supervised(
        str(data), epoch=5, wordNgrams=2, dim=32, bucket=200_000, thread=10, verbose=0
    )
    tmp = work / "fasttext_minority.tmp.bin"
    model.save_model(str(tmp))
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()[:12]
    path = work / f"fasttext_minority_{sha}.bin"
    tmp.rename(path)
    return path


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


def ids_in(folder: Path) -> set[str]:
    ids: set[str] = set()
    for f in sorted(folder.glob("**/*.parquet")):
        ids.update(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    return ids


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=100)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--work", default=str(REPO / "benchmarks" / "_work"))
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(work, a.mb, a.shards, seed=0)
    model = train_model(work)
    text_mb = (
        sum(
            pq.read_table(f, columns=["text"]).column("text").combine_chunks().buffers()[2].size
            for f in sorted(corpus.glob("*.parquet"))
        )
        / 1e6
    )
    for d in ("ft_cf", "ft_dt", "ft_dt_logs", "ft_none", "ft_none_logs"):
        shutil.rmtree(work / d, ignore_errors=True)
    recipe = work / "fasttext_bench.yaml"
    recipe.write_text(
        f"input: {corpus}\noutput: {work / 'ft_cf'}\nblocks:\n"
        f"  - fasttext: {{name: ft, model: {model}}}\n"
        f"  - drop: {{where: 'ft_minority > 0.5', reason: minority}}\n"
    )
    t_cf = timed(
        [sys.executable, "-m", "corpusfilter.cli", "run", str(recipe), "--tasks", "1", "--no-progress"]
    )
    t_dt = timed([sys.executable, "-c", DATATROVE_JOB, str(corpus), str(work / "ft_dt"), str(model)])
    t_none = timed([sys.executable, "-c", NOFILTER_JOB, str(corpus), str(work / "ft_none")])
    kept_cf, kept_dt = ids_in(work / "ft_cf" / "data"), ids_in(work / "ft_dt")
    manifest = json.loads((work / "ft_cf" / "manifest.json").read_text())
    result = {
        "benchmark": "fasttext",
        "command": f"python benchmarks/fasttext_detector.py --mb {a.mb:g} --shards {a.shards}",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "corpus": {"docs": manifest["accounting"]["read"], "text_mb": round(text_mb, 1), "shards": a.shards},
        "model": {"path": model.name, "bytes": model.stat().st_size, "labels": ["background", "minority"]},
        "seconds": {
            "corpusfilter": round(t_cf, 2),
            "datatrove_fasttext_filter": round(t_dt, 2),
            "datatrove_no_filter": round(t_none, 2),
        },
        "mb_per_s": {
            "corpusfilter": round(text_mb / t_cf, 1),
            "datatrove_fasttext_filter": round(text_mb / t_dt, 1),
            "datatrove_no_filter": round(text_mb / t_none, 1),
        },
        "speedup_vs_datatrove_fasttext": round(t_dt / t_cf, 2),
        "target": 1.5,
        "kept": {"corpusfilter": len(kept_cf), "datatrove_fasttext_filter": len(kept_dt)},
        "same_documents_kept": kept_cf == kept_dt,
        "kept_differences": len(kept_cf ^ kept_dt),
    }
    text = json.dumps(result, indent=2)
    print(text)
    (REPO / "benchmarks" / "results").mkdir(exist_ok=True)
    (REPO / "benchmarks" / "results" / "fasttext.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
