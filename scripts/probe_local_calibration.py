"""Probe (not shipped): does scoring a document against its nearest neutral neighbours make a
goodness threshold transfer between registers?

    CORPUSFILTER_EMB_CACHE=~/.cache/cf python scripts/probe_local_calibration.py goodness --data-root DATA
    python scripts/probe_local_calibration.py goodness+goodness_minilm --k 100

A threshold set on technical docs fails on fiction because technical text scores near zero while
plain fiction sits close to the boundary. Here each score is replaced by its local z-score:

    z(x) = (logit s(x) - mean) / std  of logit s over the k nearest reference documents,

nearest by cosine on the static-MiniLM document embedding. Two references, both reported: the
validation negatives (``local_all``, the rule written before the first result) and only those of
the real neutral corpora (``local_documents``, bg_*). A reference document never counts itself. ``a+b`` scores with the
mean of two detectors. Prints JSON: for the raw and the local score, test AUROC, recall and unseen
FPR at the strict and the document threshold, and the threshold-transfer measurement of
eval_detectors.py; ``strict_reference`` repeats the leave-one-source-out read for each test corpus
with that corpus's validation documents also taken out of the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import time
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
    rate,
    threshold_for_fpr,
    transfer,
)

from corpusfilter.train import Examples, data_root, head_features

CORPORA = ("bg_technical", "bg_brown", "bg_reviews", "bg_jargon")


def logit(s: np.ndarray) -> np.ndarray:
    p = np.clip(s, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def features(ex: Examples, spec: Any) -> np.ndarray:
    """The head's feature rows, one per document, embedded source by source (the training cache's
    entries) and put back in the input order."""
    out: np.ndarray | None = None
    for src in dict.fromkeys(ex.sources):
        idx = [i for i, s in enumerate(ex.sources) if s == src]
        f = head_features([ex.texts[i] for i in idx], spec)[0]
        if out is None:
            out = np.zeros((len(ex), f.shape[1]), np.float32)
        out[idx] = f
    assert out is not None
    return out


def doc_view(texts: list[str], sources: list[str], spec: Any) -> np.ndarray:
    """Unit-length document embeddings (the head's first view)."""
    f = features(Examples(texts=list(texts), sources=list(sources)), spec)
    out = f[:, : f.shape[1] // (3 if spec.sentence_view else 2)]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def local_z(
    f: np.ndarray, s: np.ndarray, ref_f: np.ndarray, ref_l: np.ndarray, k: int, own: np.ndarray | None
) -> np.ndarray:
    """z-score of each logit among its k nearest reference documents; ``own[i]`` is row i's index in
    the reference (-1: not in it), so a reference document never counts itself."""
    sim = f @ ref_f.T
    if own is not None:
        rows = np.flatnonzero(own >= 0)
        sim[rows, own[rows]] = -np.inf
    nb = np.argpartition(-sim, k, axis=1)[:, :k]
    near = ref_l[nb]
    return (logit(s) - near.mean(1)) / (near.std(1) + 1e-3)


def summary(
    s_va: np.ndarray,
    s_te: np.ndarray,
    un: dict[str, np.ndarray],
    y_va: np.ndarray,
    y_te: np.ndarray,
    docneg: np.ndarray,
    te: Any,
    ids: dict[str, list[str]],
) -> dict[str, Any]:
    thr, thr_doc = threshold_for_fpr(s_va[~y_va], FPR_TARGET), threshold_for_fpr(s_va[docneg], FPR_TARGET)
    allu = np.concatenate(list(un.values()))
    tr = transfer(te, s_te, y_te, un, ids)
    at = {
        n: {"recall": rate(s_te[y_te], t), "unseen_fpr": rate(allu, t), "test_fpr": rate(s_te[~y_te], t)}
        for n, t in (("strict", thr), ("document", thr_doc))
    }
    return {
        "test_auroc": round(auroc(y_te, s_te), 4),
        **at,
        "chosen_on_technical": tr["chosen_on_technical"]["fpr_on_other_document_sources"],
        "chosen_on_technical_max": tr["chosen_on_technical"]["max_fpr_elsewhere"],
        "chosen_on_prose_max": tr["chosen_on_prose"]["max_fpr_elsewhere"],
        "leave_one_source_out": tr["leave_one_source_out"]["fpr_when_left_out"],
        "leave_one_source_out_max": tr["leave_one_source_out"]["max_fpr_elsewhere"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("detectors", help="a shipped goodness detector, or a+b for the mean of two")
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--data-root")
    args = ap.parse_args()
    t0 = time.perf_counter()
    root = data_root(args.data_root)
    names = args.detectors.split("+")
    cfg = load_config(ROOT / "classifiers" / names[0] / "train.yaml")
    ex = examples_for(cfg, root, config_dir=ROOT / "classifiers" / names[0])
    va, te = ex.where(split="validation"), ex.where(split="test")
    sets = {u["name"]: load_set(u, root, cfg.seed, None) for u in UNSEEN_NEUTRAL}
    ids = {k: v.ids for k, v in sets.items()}
    scorers = [Scorer(*load_sidecar(ROOT / "classifiers" / n), True) for n in names]

    def score(ex: Any) -> np.ndarray:  # the mean over the detectors
        return np.mean([sc.examples(ex) for sc in scorers], axis=0)

    y_va = np.asarray([lb == cfg.positive for lb in va.labels])
    y_te = np.asarray([lb == cfg.positive for lb in te.labels])
    src_va = np.asarray(va.sources)
    docneg = ~y_va & np.char.startswith(src_va.astype(str), "bg_")
    s_va, s_te = score(va), score(te)
    un = {k: score(v) for k, v in sets.items()}
    f_va, f_te = doc_view(va.texts, va.sources, cfg.head), doc_view(te.texts, te.sources, cfg.head)
    f_un = {k: doc_view(v.texts, v.sources, cfg.head) for k, v in sets.items()}

    def local(ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        idx = np.flatnonzero(ref)
        own = np.full(len(s_va), -1)
        own[idx] = np.arange(len(idx))
        rf, rl = f_va[idx], logit(s_va[idx])
        z_va = local_z(f_va, s_va, rf, rl, args.k, own)
        z_te = local_z(f_te, s_te, rf, rl, args.k, None)
        return z_va, z_te, {k: local_z(f_un[k], un[k], rf, rl, args.k, None) for k in un}

    out: dict[str, Any] = {
        "detectors": names,
        "k": args.k,
        "raw": summary(s_va, s_te, un, y_va, y_te, docneg, te, ids),
    }
    for name, ref in (("all", ~y_va), ("documents", docneg)):
        z_va, z_te, z_un = local(ref)
        strict = {}
        for src in CORPORA:  # the target corpus out of the reference as well as out of the threshold
            _, zt, zu = local(ref & (src_va != src))
            strict[src] = transfer(te, zt, y_te, zu, ids)["leave_one_source_out"]["fpr_when_left_out"][
                f"test:{src}"
            ]
        out[f"local_{name}"] = {
            "reference_docs": int(ref.sum()),
            **summary(z_va, z_te, z_un, y_va, y_te, docneg, te, ids),
            "strict_reference": strict,
        }
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["command"] = f"python scripts/probe_local_calibration.py {args.detectors} --k {args.k}"
    out["cache"] = bool(os.environ.get("CORPUSFILTER_EMB_CACHE"))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
