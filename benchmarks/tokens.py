"""The `tokens` detector's memory: tokenizing a batch a few MB at a time (the block's default) against
one tokenizer call per batch (what it did before), same corpus, same counts.

    python benchmarks/tokens.py [--mb 200] [--shards 8] [--repeats 2]

A Hugging Face tokenizer's encodings take ~25x their text in memory, and a batch is 10,000 documents.
Each arm runs `corpusfilter run` with only the `tokens` detector on one task and one worker (so the
block runs in that process), its own process each time, alternating; reported: wall seconds and the
process's peak RSS (medians), and the corpus's token total, which must be the same. Prints JSON
(also benchmarks/results/tokens.json).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time

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


def main() -> None:
    a = corpus_parser(mb=200, shards=8, repeats=2).parse_args()
    work, corpus = work_corpus(a)
    out = work / "tokens_out"
    recipe = work / "tokens.yaml"
    recipe.write_text(RECIPE.format(corpus=corpus, out=out))
    from corpusfilter.blocks.tokens import TOKENIZE_BYTES

    arms = {"one_call_per_batch": 1 << 62, "cut": TOKENIZE_BYTES}
    seen: dict[str, dict[str, list[float]]] = {k: {"seconds": [], "peak_rss_mb": []} for k in arms}
    totals: dict[str, int] = {}
    for _ in range(a.repeats):
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
    save_result(
        "tokens",
        {
            "benchmark": "tokens",
            "command": f"python benchmarks/tokens.py --mb {a.mb:g} --shards {a.shards} --repeats {a.repeats}",
            "machine": machine(),
            "corpus_text_mb": a.mb,
            "cut_bytes": TOKENIZE_BYTES,
            "runs": seen,
            "median": med,
            "tokens": totals,
            "same_tokens": len(set(totals.values())) == 1,
            "peak_rss_cut_over_one_call": round(
                med["cut"]["peak_rss_mb"] / med["one_call_per_batch"]["peak_rss_mb"], 3
            ),
            "seconds_cut_over_one_call": round(
                med["cut"]["seconds"] / med["one_call_per_batch"]["seconds"], 3
            ),
        },
    )


if __name__ == "__main__":
    main()
