"""Probe: do the per-kind goodness detectors carry to held-out datasets better on MiniLM (the
transformer) than on the static model?

    CORPUSFILTER_EMB_CACHE=~/.cache/cf python scripts/probe_kinds_minilm.py --data-root DATA

`care`, `fairness` and `honesty` are heads over the static (model2vec) MiniLM embeddings. Held out
a whole dataset at a time they recall 0.01-0.44 for fairness (ETHICS justice scenarios, rules of
thumb, quotations and stories are phrased so differently that none predicts another through static
embeddings). For `goodness`, the same head on the transformer's embeddings (`goodness_minilm`)
raised the worst held-out dataset from 0.72 to 0.867. This asks the same of the three kinds.

Rule, written down before the first result (2026-11-25):
- Variant: each shipped per-kind config with its head on MiniLM (`model: minilm`) reading the
  first 2 chunks of 256 tokens (as `goodness_minilm`); every other setting unchanged (its features,
  hidden units, epochs, lr, l2, batch, seed, sources, split).
- Measured for the shipped config (retrained, as the baseline) and the variant: leave one positive
  dataset out (eval_detectors.py's `loso`, "positive" groups), each held-out positive source's
  recall at the document threshold and at the strict one, and each held-out model's never-seen
  neutral FPR at the document threshold; the full model's test AUROC, test recall at the strict
  threshold, never-seen neutral FPR at the document threshold.
- A kind's variant is adopted (shipped as `<kind>_minilm` beside the static detector, which stays
  the fast default) only if: the mean held-out positive recall at the document threshold rises by
  at least 0.05; the full model's never-seen neutral FPR at the document threshold is <= 1% and no
  held-out model's exceeds 2%; and test AUROC falls by no more than 0.002.

Prints JSON per kind and variant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from eval_detectors import (
    FPR_TARGET,
    ROOT,
    UNSEEN_NEUTRAL,
    Scorer,
    auroc,
    examples_for,
    load_config,
    load_set,
    load_sidecar,
    loso,
    rate,
    threshold_for_fpr,
)

from corpusfilter.train import data_root, train

KINDS = ("care", "fairness", "honesty")


def full_model(cfg: Any, root: Path, folder: Path) -> dict[str, Any]:
    """Train on the config's train split; test AUROC and recall, never-seen neutral FPR."""
    with tempfile.TemporaryDirectory() as tmp:
        r = train(cfg, root=root, out_dir=Path(tmp), write_card=False, config_dir=folder)
        sc = Scorer(*load_sidecar(r.model), True)
        ex = examples_for(cfg, root, config_dir=folder)
        va, te = ex.where(split="validation"), ex.where(split="test")
        s_va, s_te = sc.examples(va), sc.examples(te)
        un = np.concatenate([sc.texts(load_set(u, root, cfg.seed).texts) for u in UNSEEN_NEUTRAL])
    y_va = np.asarray([lb == cfg.positive for lb in va.labels])
    y_te = np.asarray([lb == cfg.positive for lb in te.labels])
    thr = threshold_for_fpr(s_va[~y_va], FPR_TARGET)
    docneg = ~y_va & np.asarray([x.startswith("bg_") for x in va.sources])
    thr_doc = threshold_for_fpr(s_va[docneg], FPR_TARGET)
    return {
        "test_auroc": round(auroc(y_te, s_te), 4),
        "test_recall_strict": rate(s_te[y_te], thr),
        "test_fpr_strict": rate(s_te[~y_te], thr),
        "test_recall_at_document_threshold": rate(s_te[y_te], thr_doc),
        "unseen_fpr_at_document_threshold": rate(un, thr_doc),
        "unseen_fpr_strict": rate(un, thr),
    }


def summarize(lo: dict[str, Any]) -> dict[str, Any]:
    rec = {
        name: (s["recall_at_document_threshold"], s["recall"], s["docs"])
        for g in lo.values()
        for name, s in g["sources"].items()
        if s["label"] == "positive"
    }
    return {
        "held_out_recall_document_threshold": {k: v[0] for k, v in rec.items()},
        "held_out_recall_strict": {k: v[1] for k, v in rec.items()},
        "mean_held_out_recall_document_threshold": round(float(np.mean([v[0] for v in rec.values()])), 4),
        "mean_held_out_recall_strict": round(float(np.mean([v[1] for v in rec.values()])), 4),
        "max_held_out_unseen_fpr_at_document_threshold": max(
            g["unseen_neutral_fpr_at_document_threshold"] for g in lo.values()
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root")
    ap.add_argument("--kinds", default=",".join(KINDS))
    args = ap.parse_args()
    root = data_root(args.data_root)
    out: dict[str, Any] = {}
    for kind in args.kinds.split(","):
        folder = ROOT / "classifiers" / kind
        base = load_config(folder / "train.yaml")
        variant = dataclasses.replace(base, head=dataclasses.replace(base.head, model="minilm", max_chunks=2))
        out[kind] = {}
        for name, cfg in (("static", base), ("minilm", variant)):
            t0 = time.perf_counter()
            full = full_model(cfg, root, folder)
            lo = loso(cfg, root, folder, "positive", cached=True)
            out[kind][name] = {**full, **summarize(lo), "seconds": round(time.perf_counter() - t0, 1)}
            print(json.dumps({kind: {name: out[kind][name]}}), flush=True)
        s, m = out[kind]["static"], out[kind]["minilm"]
        out[kind]["adopt"] = bool(
            m["mean_held_out_recall_document_threshold"] - s["mean_held_out_recall_document_threshold"]
            >= 0.05
            and m["unseen_fpr_at_document_threshold"] <= 0.01
            and m["max_held_out_unseen_fpr_at_document_threshold"] <= 0.02
            and s["test_auroc"] - m["test_auroc"] <= 0.002
        )
    out["command"] = f"python scripts/probe_kinds_minilm.py --kinds {args.kinds}"
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
