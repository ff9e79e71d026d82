"""Probe (measurement, nothing shipped): does a goodness head's threshold transfer when every
neutral document is a test document?

    CORPUSFILTER_EMB_CACHE=~/.cache/cf python scripts/probe_crossfit_transfer.py goodness --data-root DATA

The threshold-transfer bar is read on the test split: 78 Brown pages, 187 Jargon entries, 30
Debian-reference pages. There one flagged Brown page is 1.3% and two fail the 2% bar, so the
shipped measurement cannot tell a detector that flags 1.5% of fiction-heavy prose from one that
flags 4%. Cross-fitting (K-fold out-of-fold scoring) makes every document of every source a test
document for a head that never saw it, so Brown is read on its 500 pages.

Rule, written down before the first result (2026-11-25):
- All documents of the detector's training config (train, validation and test splits) are put in
  K = 5 folds by a hash of (seed, document id); the never-seen neutral sets (Python docs, Debian
  reference, GNU standards) likewise. For each fold a head is fitted with the shipped settings
  (same features, hidden units, epochs, lr, l2, batch, seed and the trainer's class-balanced
  per-document weights, computed over the four other folds) and scores its own fold.
- On these out-of-fold scores: the transfer measurement of eval_detectors.py (chosen on technical
  docs; chosen on prose; each real neutral source left out, pooled and per-group rules), each
  held-out rate with its Wilson 95% interval, and bar 1's figures (recall over all positives and
  never-seen neutral FPR at the 1% FPR threshold of the real neutral corpora).
- This measures the training recipe (a head fitted on 80% of the documents), not the shipped file.
  It adopts nothing; its result is reported beside the shipped file's test-split figures.
- Check: on the shipped test split alone, the out-of-fold scores' AUROC and leave-one-source-out
  rates beside the shipped head's (both held-out scores of the same documents).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from typing import Any

import numpy as np
from eval_detectors import FPR_TARGET, ROOT, Scorer, auroc, load_sidecar, rate, threshold_for_fpr, transfer
from probe_group_dro import forward, load_goodness

from corpusfilter.train import Examples, data_root, fit_mlp, one_blas_thread

K = 5


def fold_of(doc_id: str, seed: int) -> int:
    """The document's fold: a hash of the seed and its id (no RNG state)."""
    h = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") % K


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """Wilson score interval for k of n."""
    if n == 0:
        return [0.0, 1.0]
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, c - h), 4), round(min(1.0, c + h), 4)]


def with_intervals(rates: dict[str, float], sizes: dict[str, int]) -> dict[str, Any]:
    """Each held-out rate with its count and Wilson 95% interval."""
    out = {}
    for k, r in rates.items():
        n = sizes[k]
        hit = round(r * n)
        out[k] = {"rate": r, "flagged": hit, "docs": n, "wilson95": wilson(hit, n)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("detector", help="a shipped goodness head: goodness or goodness_minilm")
    ap.add_argument("--data-root")
    args = ap.parse_args()
    t0 = time.perf_counter()
    d = load_goodness(data_root(args.data_root), args.detector)
    shipped = Scorer(*load_sidecar(ROOT / "classifiers" / args.detector), True)
    seed = d.cfg.seed
    # every document of the config, in one order: train, validation, test
    ex = Examples(
        ids=[*d.tr.ids, *d.va.ids, *d.te.ids],
        texts=[*d.tr.texts, *d.va.texts, *d.te.texts],
        labels=[*d.tr.labels, *d.va.labels, *d.te.labels],
        weights=[*d.tr.weights, *d.va.weights, *d.te.weights],
        splits=[*d.tr.splits, *d.va.splits, *d.te.splits],
        sources=[*d.tr.sources, *d.va.sources, *d.te.sources],
    )
    x = np.concatenate([d.x_tr, d.x_va, d.x_te])
    y = np.concatenate([d.y_tr, d.y_va, d.y_te]).astype(np.float64)
    w0 = np.asarray(ex.weights, dtype=np.float64)
    folds = np.asarray([fold_of(i, seed) for i in ex.ids])
    un_folds = {k: np.asarray([fold_of(i, seed) for i in v]) for k, v in d.ids.items()}
    oof = np.full(len(ex), np.nan)
    un = {k: np.full(len(v), np.nan) for k, v in d.x_un.items()}
    te0 = len(d.tr) + len(d.va)  # the shipped test split's rows in ``ex``
    with one_blas_thread():
        for f in range(K):
            fit = folds != f
            yf, wf = y[fit], w0[fit]
            if d.cfg.head.balance:  # the trainer's class balance, over this fold's training documents
                wf = np.where(yf == 1, wf / (wf * yf).sum(), wf / (wf * (1 - yf)).sum())
            params = fit_mlp(x[fit], yf, wf, seed=seed, **d.mlp)
            oof[~fit] = forward(params, x[~fit])
            for k, v in d.x_un.items():
                m = un_folds[k] == f
                un[k][m] = forward(params, v[m])
    assert not np.isnan(oof).any() and not any(np.isnan(v).any() for v in un.values())
    yb = y.astype(bool)
    tr = transfer(ex, oof, yb, un, d.ids)
    src = np.asarray(ex.sources).astype(str)
    sizes = {f"test:{s}": int(((src == s) & ~yb).sum()) for s in set(src.tolist())}
    sizes.update({f"unseen:{k}": len(v) for k, v in un.items()})
    docneg = ~yb & np.char.startswith(src, "bg_")
    thr_doc = threshold_for_fpr(oof[docneg], FPR_TARGET)
    allu = np.concatenate(list(un.values()))
    # the check: the shipped file and the fold heads on the shipped test split
    s_ship = shipped.examples(d.te)
    out: dict[str, Any] = {
        "detector": args.detector,
        "folds": K,
        "documents": len(ex),
        "neutral_documents_per_source": {
            k: v for k, v in sorted(sizes.items()) if k in tr["leave_one_source_out"]["sets"]
        },
        "out_of_fold": {
            "auroc": round(auroc(yb, oof), 4),
            "document_threshold": thr_doc,
            "recall_at_document_threshold": rate(oof[yb], thr_doc),
            "unseen_fpr_at_document_threshold": rate(allu, thr_doc),
            "recall_per_positive_source": {
                s: rate(oof[(src == s) & yb], thr_doc) for s in dict.fromkeys(src[yb].tolist())
            },
            "chosen_on_technical": with_intervals(
                tr["chosen_on_technical"]["fpr_on_other_document_sources"], sizes
            ),
            "chosen_on_technical_max": tr["chosen_on_technical"]["max_fpr_elsewhere"],
            "chosen_on_prose": with_intervals(tr["chosen_on_prose"]["fpr_on_other_document_sources"], sizes),
            "chosen_on_prose_max": tr["chosen_on_prose"]["max_fpr_elsewhere"],
            "leave_one_source_out": with_intervals(tr["leave_one_source_out"]["fpr_when_left_out"], sizes),
            "leave_one_source_out_max": tr["leave_one_source_out"]["max_fpr_elsewhere"],
            "leave_one_source_out_in_every_source": with_intervals(
                tr["leave_one_source_out_in_every_source"]["fpr_when_left_out"], sizes
            ),
            "leave_one_source_out_in_every_source_max": tr["leave_one_source_out_in_every_source"][
                "max_fpr_elsewhere"
            ],
            "recall_in_every_source_rule": tr["leave_one_source_out"]["test_recall_at_it"],
            "flagged_when_left_out": tr["leave_one_source_out"]["flagged_when_left_out"],
        },
        "check_on_shipped_test_split": {
            "shipped_auroc": round(auroc(d.y_te, s_ship), 4),
            "out_of_fold_auroc": round(auroc(d.y_te, oof[te0:]), 4),
            "shipped_leave_one_source_out": transfer(
                d.te, s_ship, d.y_te, {k: shipped.examples(v) for k, v in d.sets.items()}, d.ids
            )["leave_one_source_out"]["fpr_when_left_out"],
            "out_of_fold_leave_one_source_out": transfer(d.te, oof[te0:], d.y_te, un, d.ids)[
                "leave_one_source_out"
            ]["fpr_when_left_out"],
            "note": "the same test documents, scored by the shipped head and by the fold heads that never saw them",
        },
    }
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["command"] = f"python scripts/probe_crossfit_transfer.py {args.detector}"
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
