"""Helpers shared by the benchmark scripts: corpora, timing, results. Not a benchmark itself.

Run a script as ``python benchmarks/NAME.py``: Python puts this folder first on ``sys.path``, so the
scripts import this module as ``_common``; no script here is named after a stdlib module (the
keyword benchmark is ``keyword_filter.py``: a ``keyword.py`` would shadow the stdlib's ``keyword``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CORPUSFILTER_SHARED", REPO.parent / "shared"))
WORK = REPO / "benchmarks" / "_work"

#: datatrove's ParquetReader → ParquetWriter with no filter: the floor the issue compares against.
NOFILTER_JOB = r"""
import sys
from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import ParquetWriter
corpus, out = sys.argv[1:3]
LocalPipelineExecutor([ParquetReader(corpus, text_key="text", id_key="id"), ParquetWriter(out)],
    tasks=1, workers=1, logging_dir=out + "_logs").run()
"""


def build_corpus(work: Path, mb: float, shards: int, *, seed: int = 0, mix: float = 0.05) -> Path:
    """A cached corpus from ../shared/tools/make_bench_corpus.py (columns id, text, source)."""
    out = work / (f"corpus_{mb:g}mb_{shards}" + (f"_seed{seed}" if seed else ""))
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
                str(mix),
                "--seed",
                str(seed),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return out


def corpus_parser(*, mb: float, shards: int, repeats: int | None = None) -> argparse.ArgumentParser:
    """The options every corpus benchmark takes: --mb, --shards, [--repeats], --work."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=mb)
    ap.add_argument("--shards", type=int, default=shards)
    if repeats is not None:
        ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--work", default=str(WORK))
    return ap


def work_corpus(a: argparse.Namespace) -> tuple[Path, Path]:
    """The work folder (made) and the cached bench corpus for ``corpus_parser``'s options."""
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    return work, build_corpus(work, a.mb, a.shards)


def text_mb(corpus: Path) -> float:
    total = 0
    for f in sorted(corpus.glob("*.parquet")):
        arr = pq.read_table(f, columns=["text"]).column("text").combine_chunks()
        total += int(arr.buffers()[2].size) if arr.buffers()[2] is not None else 0
    return total / 1e6


def timed(cmd: list[str]) -> float:
    """Wall seconds of a command run to completion (its output discarded; failure raises)."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def ids_in(folder: Path) -> set[str]:
    ids: set[str] = set()
    for f in sorted(folder.glob("**/*.parquet")):
        ids.update(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    return ids


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def save_result(name: str, result: dict[str, Any]) -> None:
    """Print the result and keep it in benchmarks/results/<name>.json."""
    text = json.dumps(result, indent=2)
    print(text)
    (REPO / "benchmarks" / "results").mkdir(exist_ok=True)
    (REPO / "benchmarks" / "results" / f"{name}.json").write_text(text + "\n")
