"""Probe (not shipped): does removing register information from the features make a goodness
threshold transfer?

    CORPUSFILTER_EMB_CACHE=~/.cache/cf python scripts/probe_register_nullspace.py --data-root DATA

Thresholds fail to transfer because the neutral registers' score tails sit in different places:
plain fiction near the boundary, technical text far below it. If the head cannot tell the
registers apart, it cannot score them differently except through what they say. This removes the
linear directions that tell the negative training sources apart from the head's input features
(the three static-MiniLM views, concatenated), then refits the shipped head on what is left:

- ``means``: the span of the negative sources' mean differences (rank = sources - 1), one shot.
- ``inlp``: iterative nullspace projection (Ravfogel et al. 2020, "Null It Out"): fit a multinomial
  logistic regression from the features to the negative source, project its weight rows out,
  repeat on the projected features; 5 rounds.

Rule, written down before the first result (2026-11-25):
- Register labels are the `source` of the training split's negatives (every negative source of the
  config); the directions are learned on training rows only and applied to every split and to the
  never-seen documentation sets. The logistic regression: scikit-learn, lbfgs, C = 1, 1000
  iterations, inputs standardized with training-negative statistics. Every head setting as shipped
  (same features, 64 units, 20 epochs, lr 1e-3, l2 1e-4, batch 256, seed 0, per-document weights).
- Adopted (a projection option in `corpusfilter train`, `goodness` retrained with it) only if one
  variant meets all of: threshold transfer <= 2% chosen on technical docs and leaving one source
  out (the pooled rule); test recall >= 0.95 at the document threshold with unseen FPR <= 1% there;
  test AUROC no more than 0.005 below the shipped head's. Both variants reported, no choosing.
- The baseline refit (no projection) must reproduce the shipped head's scores.

Measured after the first result (so not under the rule, and disclosed as such): both variants with
the directions learned from the real neutral corpora alone (``*_bg_only``: technical docs, Jargon,
reviews, Brown), since removing every negative source's register also removed what told the
positives from their constructed counterparts.

Prints JSON: for the shipped head, the refit and each variant, the summary of
probe_local_calibration.py plus the per-source rule's leave-one-source-out (``in_every_source``),
the dimensions removed, and how well the negative source can still be predicted from the
projected validation features (accuracy of a fresh logistic regression; chance is the largest
source's share).
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from eval_detectors import (
    transfer,
)
from probe_group_dro import forward, probe_start
from probe_local_calibration import summary

from corpusfilter.train import fit_mlp, one_blas_thread


def _logreg(x: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=1000).fit(x, y)


def _basis(rows: np.ndarray) -> np.ndarray:
    """An orthonormal basis (columns) of the rows' span."""
    u, s, _ = np.linalg.svd(rows.T, full_matrices=False)
    return u[:, s > s.max() * 1e-6]


def register_accuracy(x_tr: np.ndarray, g_tr: np.ndarray, x_va: np.ndarray, g_va: np.ndarray) -> float:
    """Held-out accuracy of predicting the negative source from (projected) features."""
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    clf = _logreg((x_tr - mu) / sd, g_tr)
    return round(float((clf.predict((x_va - mu) / sd) == g_va).mean()), 4)


def nullspace(x: np.ndarray, g: np.ndarray, variant: str, rounds: int = 5) -> np.ndarray:
    """The projection P (x -> x @ P) removing the register directions learned from rows x, sources g.
    Directions are found in standardized space and mapped back, so P acts on the raw features."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    removed = np.zeros((x.shape[1], 0))
    if variant == "means":
        means = np.stack([z[g == k].mean(0) for k in np.unique(g)])
        removed = _basis(means - means.mean(0))
    else:
        for _ in range(rounds):
            p = np.eye(z.shape[1]) - removed @ removed.T
            w = _logreg(z @ p, g).coef_ @ p
            removed = _basis(np.concatenate([removed.T, w]))
    # z P_z = (x - mu) / sd P_z; as a map on raw x (the offset is a constant the head's bias absorbs)
    d = np.diag(1.0 / sd)
    out: np.ndarray = d @ (np.eye(x.shape[1]) - removed @ removed.T) @ np.diag(sd)
    return out


def main() -> None:
    _, d, shipped, t0 = probe_start(__doc__)
    cfg, tr, va, te, sets, ids = d.cfg, d.tr, d.va, d.te, d.sets, d.ids
    x_tr, x_va, x_te, x_un = d.x_tr, d.x_va, d.x_te, d.x_un
    y_tr, y_va, y_te, docneg, wd = d.y_tr, d.y_va, d.y_te, d.docneg, d.wd
    neg_tr, neg_va = y_tr == 0, ~y_va
    src_tr, src_va = np.asarray(tr.sources), np.asarray(va.sources)
    kw = d.mlp

    def report(s_va: np.ndarray, s_te: np.ndarray, un: dict[str, np.ndarray]) -> dict[str, Any]:
        each = transfer(te, s_te, y_te, un, ids)["leave_one_source_out_in_every_source"]
        return {
            **summary(s_va, s_te, un, y_va, y_te, docneg, te, ids),
            "in_every_source": {
                k: each[k]
                for k in ("fpr_when_left_out", "max_fpr_elsewhere", "test_recall_when_left_out")
                if k in each
            },
        }

    out: dict[str, Any] = {
        "shipped": report(
            shipped.examples(va), shipped.examples(te), {k: shipped.examples(v) for k, v in sets.items()}
        )
    }

    def fit_and_report(p: np.ndarray | None) -> dict[str, Any]:
        f = (lambda a: a) if p is None else (lambda a: (a @ p).astype(np.float32))
        params = fit_mlp(f(x_tr), y_tr, wd, seed=cfg.seed, **kw)
        s_te = forward(params, f(x_te))
        res = report(forward(params, f(x_va)), s_te, {k: forward(params, f(v)) for k, v in x_un.items()})
        res["register_accuracy_validation"] = register_accuracy(
            f(x_tr)[neg_tr], src_tr[neg_tr], f(x_va)[neg_va], src_va[neg_va]
        )
        res["_s_te"] = s_te
        return res

    with one_blas_thread():
        base = fit_and_report(None)
        base["max_abs_diff_from_shipped_test_scores"] = float(
            np.abs(base.pop("_s_te") - shipped.examples(te)).max()
        )
        out["baseline_refit"] = base
        # measured after the first result (disclosed, not part of the rule): the directions of the
        # real neutral corpora alone (bg_*), leaving the constructed negatives' registers visible
        bg_tr = neg_tr & np.char.startswith(src_tr.astype(str), "bg_")
        for variant, rows in (
            ("means", neg_tr),
            ("inlp", neg_tr),
            ("means_bg_only", bg_tr),
            ("inlp_bg_only", bg_tr),
        ):
            p = nullspace(x_tr[rows], src_tr[rows], variant.removesuffix("_bg_only"))
            res = fit_and_report(p)
            res.pop("_s_te")
            res["dimensions_removed"] = round(float(x_tr.shape[1] - np.trace(p)))
            out[variant] = res
    counts = np.unique(src_va[neg_va], return_counts=True)[1]
    out["register_chance_validation"] = round(float(counts.max() / counts.sum()), 4)
    out["feature_dimensions"] = int(x_tr.shape[1])
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["command"] = "python scripts/probe_register_nullspace.py"
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
