"""Probe (not shipped): does group DRO over the training sources make a goodness threshold transfer?

    CORPUSFILTER_EMB_CACHE=~/.cache/cf python scripts/probe_group_dro.py --data-root DATA

Thresholds fail to transfer because neutral registers differ in where their score tail sits: plain
fiction sits near the boundary, technical text far below it. Group DRO (Sagawa et al. 2020,
"Distributionally Robust Neural Networks", Algorithm 1) trains for the worst group instead of the
average: each training source is a group, the loss is sum_g q_g * L_g with L_g the group's
(class-balanced) mean logistic loss in the minibatch, and after each minibatch
q_g <- q_g * exp(eta * L_g), renormalized. Sources whose negatives the head scores high (fiction)
get more weight until their loss is no worse than the others'.

Rule, written down before the first result (2026-11-24):
- groups = the config's source names; eta = 0.01 (the paper's step size); every other setting as
  the shipped `goodness` head (same features, 64 units, 20 epochs, lr 1e-3, l2 1e-4, batch 256,
  seed 0, the same per-document weights). eta = 0.1 is reported as a sensitivity check, not used to
  choose.
- Adopted (a `group_dro` option in `corpusfilter train` and `goodness` retrained with it) only if the
  eta = 0.01 head meets all of: threshold transfer <= 2% chosen on technical docs and leaving one
  source out; test recall >= 0.95 at the document threshold with unseen FPR <= 1% there; test AUROC
  no more than 0.005 below the shipped head's.
- The baseline refit (no DRO) must reproduce the shipped head's scores: max |difference| printed.

Prints JSON: for the shipped head, the baseline refit and each eta, the summary of
probe_local_calibration.py (AUROC, recall and unseen FPR at both thresholds, transfer), and the
final group weights q (largest first).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from eval_detectors import ROOT, UNSEEN_NEUTRAL, Scorer, examples_for, load_config, load_set, load_sidecar
from probe_local_calibration import features, summary

from corpusfilter.blocks.embedding import Head
from corpusfilter.train import data_root, fit_mlp, one_blas_thread


def forward(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The fitted MLP's scores, as the embedding detector's head computes them."""
    h = Head(params["weight"], params["bias"], ("goodness",), params["hidden_weight"], params["hidden_bias"])
    return h(x)[:, 0]


class GroupDro:
    """``fit_mlp``'s ``reweight`` for group DRO: per minibatch, each group's weighted mean logistic
    loss L_g, then q_g <- q_g * exp(eta * L_g) renormalized; an example's weight is q of its group
    (renormalized over the batch's groups) times its share of the group's weight in the batch."""

    def __init__(self, groups: np.ndarray, eta: float) -> None:
        self.groups, self.eta = groups, eta
        self.n = int(groups.max()) + 1
        self.q = np.full(self.n, 1.0 / self.n)

    def __call__(self, idx: np.ndarray, p: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
        gb = self.groups[idx]
        wsum = np.bincount(gb, weights=w, minlength=self.n)
        loss = -(y * np.log(np.clip(p, 1e-7, 1)) + (1 - y) * np.log(np.clip(1 - p, 1e-7, 1)))
        lg = np.bincount(gb, weights=w * loss, minlength=self.n) / np.maximum(wsum, 1e-12)
        present = wsum > 0
        self.q[present] *= np.exp(self.eta * lg[present])
        self.q /= self.q.sum()
        qb = self.q * present / (self.q * present).sum()
        out: np.ndarray = qb[gb] * w / wsum[gb]
        return out


@dataclasses.dataclass
class GoodnessData:
    """The shipped `goodness` head's config, splits, never-seen neutral sets, feature rows, labels,
    the document negatives (validation rows of the real neutral corpora) and the trainer's
    per-document weights: what the head probes refit and measure with."""

    cfg: Any
    tr: Any
    va: Any
    te: Any
    sets: dict[str, Any]
    ids: dict[str, list[str]]
    x_tr: np.ndarray
    x_va: np.ndarray
    x_te: np.ndarray
    x_un: dict[str, np.ndarray]
    y_tr: np.ndarray
    y_va: np.ndarray
    y_te: np.ndarray
    docneg: np.ndarray
    wd: np.ndarray

    @property
    def mlp(self) -> dict[str, Any]:
        """``fit_mlp``'s settings as shipped."""
        h = self.cfg.head
        return {"hidden": h.hidden, "epochs": h.epochs, "lr": h.lr, "l2": h.l2, "batch": h.batch}


def load_goodness(root: Path, name: str = "goodness") -> GoodnessData:
    """The data of the shipped head detector ``name`` (a goodness head: `goodness`, `goodness_minilm`)."""
    folder = ROOT / "classifiers" / name
    cfg = load_config(folder / "train.yaml")
    spec = cfg.head
    ex = examples_for(cfg, root, config_dir=folder)
    tr, va, te = ex.where(split="train"), ex.where(split="validation"), ex.where(split="test")
    sets = {u["name"]: load_set(u, root, cfg.seed, None) for u in UNSEEN_NEUTRAL}
    y_tr = np.asarray([lb == cfg.positive for lb in tr.labels], dtype=np.float64)
    y_va = np.asarray([lb == cfg.positive for lb in va.labels])
    # the trainer's per-document weights: the examples' weights, class-balanced
    wd = np.asarray(tr.weights, dtype=np.float64)
    if spec.balance:
        wd = np.where(y_tr == 1, wd / (wd * y_tr).sum(), wd / (wd * (1 - y_tr)).sum())
    return GoodnessData(
        cfg=cfg,
        tr=tr,
        va=va,
        te=te,
        sets=sets,
        ids={k: v.ids for k, v in sets.items()},
        x_tr=features(tr, spec),
        x_va=features(va, spec),
        x_te=features(te, spec),
        x_un={k: features(v, spec) for k, v in sets.items()},
        y_tr=y_tr,
        y_va=y_va,
        y_te=np.asarray([lb == cfg.positive for lb in te.labels]),
        docneg=~y_va & np.char.startswith(np.asarray(va.sources).astype(str), "bg_"),
        wd=wd,
    )


def probe_start(doc: str | None, **options: str) -> tuple[argparse.Namespace, GoodnessData, Scorer, float]:
    """A goodness head probe's start: its arguments (``--data-root`` and ``--NAME`` per option, with
    the given default), the loaded data, the shipped head's scorer and the start time."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root")
    for name, default in options.items():
        ap.add_argument(f"--{name}", default=default)
    args = ap.parse_args()
    t0 = time.perf_counter()
    d = load_goodness(data_root(args.data_root))
    return args, d, Scorer(*load_sidecar(ROOT / "classifiers" / "goodness"), True), t0


def main() -> None:
    args, d, shipped, t0 = probe_start(__doc__, etas="0.01,0.1")
    cfg, tr, va, te, sets, ids = d.cfg, d.tr, d.va, d.te, d.sets, d.ids
    x_tr, x_va, x_te, x_un = d.x_tr, d.x_va, d.x_te, d.x_un
    y_tr, y_va, y_te, docneg, wd = d.y_tr, d.y_va, d.y_te, d.docneg, d.wd
    names = list(dict.fromkeys(tr.sources))
    groups = np.asarray([names.index(s) for s in tr.sources], dtype=np.int64)
    kw = d.mlp

    s_ship = {"va": shipped.examples(va), "te": shipped.examples(te)}
    un_ship = {k: shipped.examples(v) for k, v in sets.items()}
    out: dict[str, Any] = {
        "shipped": summary(s_ship["va"], s_ship["te"], un_ship, y_va, y_te, docneg, te, ids)
    }

    def report(params: dict[str, np.ndarray]) -> dict[str, Any]:
        s_va, s_te = forward(params, x_va), forward(params, x_te)
        un = {k: forward(params, v) for k, v in x_un.items()}
        return summary(s_va, s_te, un, y_va, y_te, docneg, te, ids)

    with one_blas_thread():
        base = fit_mlp(x_tr, y_tr, wd, seed=cfg.seed, **kw)
        diff = float(np.abs(forward(base, x_te) - s_ship["te"]).max())
        out["baseline_refit"] = {"max_abs_diff_from_shipped_test_scores": diff, **report(base)}
        for eta in (float(e) for e in args.etas.split(",")):
            dro = GroupDro(groups, eta)
            params = fit_mlp(x_tr, y_tr, wd, seed=cfg.seed, reweight=dro, **kw)
            top = sorted(zip(names, dro.q), key=lambda t: -t[1])
            out[f"dro_eta_{eta}"] = {**report(params), "q": {n: round(float(v), 4) for n, v in top}}
    out["train_docs"] = len(tr)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["command"] = f"python scripts/probe_group_dro.py --etas {args.etas}"
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
