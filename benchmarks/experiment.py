"""Experiment arms on a 200 MB corpus: does a target token share land within ±0.5 percentage points,
do matched controls and backfill match the treatment's tokens within 1%, and what do the extra passes
cost compared with a plain one-pass run of the same detectors?

    python benchmarks/experiment.py [--mb 200] [--shards 8] [--share 0.05]

Builds a corpus with ../shared/tools/make_bench_corpus.py (background text with a 5% minority of
moral and AI-risk documents), then runs, each with the `tokens` detector and the shipped lexicons:
  baseline    one pass: detectors + a drop (no corpus totals needed)
  enriched    upsample misaligned-AI documents to --share of output tokens, with a matched control
              (score → solve → decide → control)
  depleted    drop goodness-dense documents, with a matched control
  replaced    the same drop with backfill by source
Prints JSON (also benchmarks/results/experiment.json): achieved shares, token matches, wall times and
their ratios to the baseline in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from _common import WORK, build_corpus, machine, save_result, text_mb, timed

HEAD = """\
input: {corpus}
output: {out}
seed: 0
{control}
blocks:
  - tokens: {{}}
  - keywords: {{name: virtue, lexicon: virtue}}
  - keywords: {{name: misaligned, lexicon: ai_misalignment}}
  - tag: {{where: "misaligned_hits >= 2", label: misaligned_ai}}
"""
TAILS = {
    "baseline": '  - drop: {where: "virtue_score >= 4 AND virtue_per_1k_words >= 5", reason: goodness}\n',
    "enriched": '  - upsample: {where: "misaligned_hits >= 2", target_share: {share}, max_copies: 50}\n',
    "depleted": '  - drop: {where: "virtue_score >= 4 AND virtue_per_1k_words >= 5", reason: goodness}\n',
    "replaced": '  - drop: {where: "virtue_score >= 4 AND virtue_per_1k_words >= 5", reason: goodness}\n'
    "  - backfill: {by: [source]}\n",
}
CONTROL = "control: {type: matched, by: [source]}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=200)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--share", type=float, default=0.05)
    args = ap.parse_args()
    work = WORK / "experiment"
    work.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(WORK, args.mb, args.shards)
    cf = [sys.executable, "-m", "corpusfilter.cli"]
    res: dict = {
        "command": f"python benchmarks/experiment.py --mb {args.mb:g} --shards {args.shards} --share {args.share}",
        "machine": machine(),
        "corpus_mb": round(text_mb(corpus), 1),
    }
    manifests = {}
    for name, tail in TAILS.items():
        out = work / name
        for p in (out, Path(f"{out}.scores"), Path(f"{out}.control")):
            shutil.rmtree(p, ignore_errors=True)
        control = CONTROL if name in ("enriched", "depleted") else ""
        recipe = work / f"{name}.yaml"
        recipe.write_text(
            HEAD.format(corpus=corpus, out=out, control=control) + tail.replace("{share}", str(args.share))
        )
        res[f"{name}_s"] = round(timed([*cf, "run", str(recipe), "--no-progress", "--tasks", "2"]), 2)
        manifests[name] = json.loads((out / "manifest.json").read_text())
        if control:
            manifests[name + ".control"] = json.loads(Path(f"{out}.control/manifest.json").read_text())
    for name in ("enriched", "depleted", "replaced"):
        res[f"{name}_vs_baseline"] = round(res[f"{name}_s"] / res["baseline_s"], 2)
    up = next(b for b in manifests["enriched"]["blocks"] if b["label"].endswith("upsample"))
    sol = up["provenance"]["solution"]
    res["target_share"] = args.share
    res["share_before"] = sol["share_before"]
    res["solved_weight"] = sol["weight"]
    res["achieved_share"] = sol["achieved_share"]
    res["achieved_minus_target_pp"] = round(100 * (sol["achieved_share"] - args.share), 3)
    t, c = manifests["enriched"]["tokens"], manifests["enriched.control"]["tokens"]
    res["enriched_added_tokens"] = {"treatment": t["added"]["tokens"], "control": c["added"]["tokens"]}
    res["enriched_control_rel_diff"] = round(c["added"]["tokens"] / t["added"]["tokens"] - 1, 5)
    t, c = manifests["depleted"]["tokens"], manifests["depleted.control"]["tokens"]
    res["depleted_removed_tokens"] = {"treatment": t["removed"]["tokens"], "control": c["removed"]["tokens"]}
    res["depleted_control_rel_diff"] = round(c["removed"]["tokens"] / t["removed"]["tokens"] - 1, 5)
    # share of each control's removed / added tokens that the treatment also removed / copied
    res["control_overlap"] = {
        arm: manifests[f"{arm}.control"]["experiment"]["overlap"] for arm in ("enriched", "depleted")
    }
    r = manifests["replaced"]["tokens"]
    res["replaced_tokens"] = {
        "in": r["in"]["tokens"],
        "removed": r["removed"]["tokens"],
        "out": r["out"]["tokens"],
    }
    res["replaced_out_vs_in_rel_diff"] = round(r["out"]["tokens"] / r["in"]["tokens"] - 1, 5)
    save_result("experiment", res)


if __name__ == "__main__":
    main()
