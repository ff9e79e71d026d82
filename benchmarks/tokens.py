"""The `tokens` detector's memory: tokenizing a batch a few MB at a time (the block's default) against
one tokenizer call per batch (what it did before), same corpus, same counts.

    python benchmarks/tokens.py [--mb 200] [--shards 8] [--repeats 2] [--long-mb 20]

A Hugging Face tokenizer's encodings take ~25x their text in memory, and a batch is 10,000 documents.
Each arm runs `corpusfilter run` with only the `tokens` detector on one task and one worker (so the
block runs in that process), its own process each time, alternating; reported: wall seconds and the
process's peak RSS (medians), and the corpus's token total, which must be the same. The same again on
one long document (--long-mb of the corpus's text joined with spaces), which the block cuts at
spaces. Prints JSON (also benchmarks/results/tokens.json).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from _common import corpus_parser, machine, save_result, work_corpus

RECIPE = """\
input: {{path: {corpus}}}
output: {{path: {out}}}
executor: {{tasks: 1, workers: 1}}
blocks:
  - tokens: {{}}
"""

# run the CLI with the block's cut set, in a child whose peak RSS this wrapper prints
CHILD = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)
RUN = (
    "import sys; import corpusfilter.blocks.tokens as T; T.TOKENIZE_BYTES = int(sys.argv[1]); "
    "from corpusfilter.cli import main; sys.exit(main(sys.argv[2:]))"
)


def long_document(corpus: Path, folder: Path, mb: float) -> Path:
    """One document of ``mb`` MB: the corpus's texts joined with spaces (real words and punctuation)."""
    folder.mkdir(parents=True, exist_ok=True)
    parts: list[str] = []
    size = 0
    for f in sorted(corpus.glob("*.parquet")):
        for t in pq.read_table(f, columns=["text"]).column("text").to_pylist():
            if size >= mb * 1e6:
                break
            parts.append(t)
            size += len(t.encode()) + 1
    pq.write_table(pa.table({"id": ["long"], "text": [" ".join(parts)]}), folder / "long.parquet")
    return folder


def compare(recipe: Path, out: Path, repeats: int) -> dict[str, Any]:
    """Both arms on one recipe, alternating: runs, medians, token totals and the ratios."""
    from corpusfilter.blocks.tokens import TOKENIZE_BYTES

    arms = {"one_call_per_batch": 1 << 62, "cut": TOKENIZE_BYTES}
    seen: dict[str, dict[str, list[float]]] = {k: {"seconds": [], "peak_rss_mb": []} for k in arms}
    totals: dict[str, int] = {}
    for _ in range(repeats):
        for name, cut in arms.items():
            shutil.rmtree(out, ignore_errors=True)
            cmd = [sys.executable, "-c", RUN, str(cut), "run", str(recipe), "--no-progress"]
            t0 = time.perf_counter()
            p = subprocess.run(
                [sys.executable, "-c", CHILD, *cmd], capture_output=True, text=True, check=True
            )
            seen[name]["seconds"].append(round(time.perf_counter() - t0, 2))
            seen[name]["peak_rss_mb"].append(round(int(p.stdout.split()[-1]) / 1024, 1))
            totals[name] = json.loads((out / "manifest.json").read_text())["tokens"]["in"]["tokens"]
    med = {k: {m: round(statistics.median(v), 2) for m, v in d.items()} for k, d in seen.items()}
    one, few = med["one_call_per_batch"], med["cut"]
    return {
        "runs": seen,
        "median": med,
        "tokens": totals,
        "same_tokens": len(set(totals.values())) == 1,
        "peak_rss_cut_over_one_call": round(few["peak_rss_mb"] / one["peak_rss_mb"], 3),
        "seconds_cut_over_one_call": round(few["seconds"] / one["seconds"], 3),
    }


def main() -> None:
    ap = corpus_parser(mb=200, shards=8, repeats=2)
    ap.add_argument("--long-mb", type=float, default=20)
    a = ap.parse_args()
    work, corpus = work_corpus(a)
    out = work / "tokens_out"
    recipe = work / "tokens.yaml"
    results = {}
    for name, inp in (
        ("corpus", corpus),
        ("long_document", long_document(corpus, work / "tokens_long", a.long_mb)),
    ):
        recipe.write_text(RECIPE.format(corpus=inp, out=out))
        results[name] = compare(recipe, out, a.repeats)
    from corpusfilter.blocks.tokens import TOKENIZE_BYTES

    save_result(
        "tokens",
        {
            "benchmark": "tokens",
            "command": f"python benchmarks/tokens.py --mb {a.mb:g} --shards {a.shards} --repeats {a.repeats} "
            f"--long-mb {a.long_mb:g}",
            "machine": machine(),
            "corpus_text_mb": a.mb,
            "long_document_mb": a.long_mb,
            "cut_bytes": TOKENIZE_BYTES,
            **results,
        },
    )


if __name__ == "__main__":
    main()
