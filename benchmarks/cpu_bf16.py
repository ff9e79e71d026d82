"""bfloat16 on the CPU (the detectors' opt-in ``cpu_bf16``) against fp32, in one run.

    python benchmarks/cpu_bf16.py [--docs 120] [--work benchmarks/_work]

On --docs documents spread over a bench corpus (../shared/tools/make_bench_corpus.py, cached), for
the shipped transformer detectors `goodness_ft` (fine-tuned MiniLM) and `goodness_minilm` (MLP head on
MiniLM embeddings): docs/s through the detector block in fp32 and in bf16 (model load and warm-up
excluded, fp32 and bf16 timed alternately, best of --repeats), the ratio, and how far bf16 moves the
scores (max |difference|, and decisions flipped at the detector's document and strict thresholds
from its metrics.json). Then fine-tuning (the `goodness_ft` recipe's `finetune` settings, one
epoch over the first --train-docs documents, placeholder labels): documents trained per second in
fp32 and with `finetune.cpu_bf16` (bf16 autocast), timed alternately, best of --repeats, and the
ratio. The ratio depends on the CPU: bf16 is fast only with AMX / AVX512-BF16
(reported as `native_bf16`); without them expect a ratio below 1.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _common import REPO, build_corpus, machine, save_result


def sample(corpus: Path, n: int) -> list[str]:
    table = pa.concat_tables(pq.read_table(f, columns=["text"]) for f in sorted(corpus.glob("*.parquet")))
    idx = np.unique(np.linspace(0, table.num_rows - 1, min(n, table.num_rows)).round().astype(np.int64))
    return table.take(pa.array(idx)).column("text").to_pylist()


def bench(name: str, texts: list[str], repeats: int) -> dict[str, object]:
    from corpusfilter.evaluate import detector_for, load_sidecar, score_texts

    folder = REPO / "classifiers" / name
    side, model = load_sidecar(folder)
    dets = {k: detector_for(side, model, device="cpu", cpu_bf16=k == "bf16") for k in ("fp32", "bf16")}
    best: dict[str, float] = {}
    scores: dict[str, np.ndarray] = {}
    for d in dets.values():
        score_texts(side, model, texts[:8], detector=d)  # load and warm up
    for _ in range(repeats):
        for k, d in dets.items():
            t0 = time.perf_counter()
            scores[k] = score_texts(side, model, texts, detector=d)
            best[k] = max(best.get(k, 0.0), len(texts) / (time.perf_counter() - t0))
    g = json.loads((folder / "metrics.json").read_text())["generalization"]
    a, b = scores["fp32"], scores["bf16"]
    flips = {
        f"{which}_threshold_flips": int(((a >= t) != (b >= t)).sum())
        for which, t in (("document", g["document_threshold"]["value"]), ("strict", g["threshold"]["value"]))
    }
    return {
        "docs_per_s_fp32": round(best["fp32"], 2),
        "docs_per_s_bf16": round(best["bf16"], 2),
        "ratio_bf16_over_fp32": round(best["bf16"] / best["fp32"], 2),
        "max_abs_score_diff": round(float(np.abs(a - b).max()), 5),
        **flips,
    }


def bench_training(texts: list[str], repeats: int) -> dict[str, object]:
    import dataclasses
    import tempfile

    from corpusfilter.finetune import train_classifier
    from corpusfilter.train import load_config

    base = load_config(REPO / "classifiers" / "goodness_ft" / "train.yaml").finetune
    y = np.arange(len(texts), dtype=np.float32) % 2  # labels only give the loss a shape here
    w = np.ones(len(texts))
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for k in ("fp32", "bf16"):
                spec = dataclasses.replace(base, epochs=1, device="cpu", cpu_bf16=k == "bf16")
                t0 = time.perf_counter()  # includes loading MiniLM (well under a second)
                train_classifier(texts, y, w, spec=spec, seed=0, out_path=Path(tmp) / k, metadata={})
                best[k] = max(best.get(k, 0.0), len(texts) / (time.perf_counter() - t0))
    return {
        "docs": len(texts),
        "max_tokens": base.max_tokens,
        "batch": base.batch,
        "docs_per_s_fp32": round(best["fp32"], 2),
        "docs_per_s_bf16": round(best["bf16"], 2),
        "ratio_bf16_over_fp32": round(best["bf16"] / best["fp32"], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--train-docs", type=int, default=64)
    ap.add_argument("--work", default=str(REPO / "benchmarks" / "_work"))
    a = ap.parse_args()
    from corpusfilter.embed import cpu_bf16_native

    texts = sample(build_corpus(Path(a.work), 20, 2), a.docs)
    result = {
        "command": "python benchmarks/cpu_bf16.py "
        + f"--docs {a.docs} --repeats {a.repeats} --train-docs {a.train_docs}",
        "machine": machine(),
        "native_bf16": cpu_bf16_native(),
        "docs": len(texts),
        "mean_kb_per_doc": round(sum(len(t.encode()) for t in texts) / len(texts) / 1000, 1),
        "detectors": {n: bench(n, texts, a.repeats) for n in ("goodness_ft", "goodness_minilm")},
        "finetune_training": bench_training(texts[: a.train_docs], a.repeats),
    }
    save_result("cpu_bf16", result)


if __name__ == "__main__":
    main()
