"""Evaluate the shipped detectors and write classifiers/<name>/metrics.json (and refresh MODEL_CARD.md).

    python scripts/eval_detectors.py                      # every detector
    python scripts/eval_detectors.py goodness care --no-loso
    python scripts/eval_detectors.py --speed-only          # re-time only (run on a quiet machine)
    python scripts/eval_detectors.py goodness_ft --merge-from OTHER/classifiers/goodness_ft/metrics.json
    CORPUSFILTER_EMB_CACHE=~/.cache/cf python scripts/eval_detectors.py goodness_minilm --cached
    CORPUSFILTER_DATA=/path/to/shared/data python scripts/eval_detectors.py

Every number in the metrics comes from here. The operating threshold of a detector is chosen on its
*validation* split (1% false positives on the validation negatives); the test split and the sources
never used in training are only scored at that threshold, never used to choose anything.

- test: AUROC, and recall / false-positive rate per source on the test split.
- unseen neutral: false-positive rate on neutral sources no model saw (python docs, Debian, GNU).
- leave-one-source-out (LOSO): for each source, train without it (same config), choose the
  threshold on the remaining sources' validation split, score every document of the held-out source.
- threshold transfer: a threshold for 1% FPR on one set of neutral sources, measured on the others.
- hard cases: share flagged among scripture, aphorisms, speeches, fiction, AI discussion, ...
- speed: documents and MB per second through the detector block on this machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from corpusfilter.embed import resolve_device  # noqa: E402
from corpusfilter.evaluate import (  # noqa: E402
    auroc,
    detector_for,
    from_cache,
    load_sidecar,
    score_by_source,
    score_texts,
    threshold_for_fpr,
)
from corpusfilter.finetune import trains_in_bf16  # noqa: E402
from corpusfilter.params import build_params  # noqa: E402
from corpusfilter.train import (  # noqa: E402
    Checkpointing,
    Examples,
    SourceSpec,
    SplitSpec,
    build_examples,
    config_to_dict,
    data_root,
    load_config,
    load_source,
    model_card,
    parse_config,
    split_overlap,
    train,
)

FPR_TARGET = 0.01
TRANSFER_NOTE = "; threshold transfer re-measured: "
BG = "background/background.parquet"


def bg(name: str, source: str, limit: int | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "path": BG,
        "label": "x",
        "id": "id",
        "where": f"source = '{source}'",
        "limit": limit,
        **kw,
    }


UNSEEN_NEUTRAL = [
    bg("python_docs", "python3.11-doc"),
    bg("debian_reference", "debian-reference-en"),
    bg("gnu_standards", "gnu-standards"),
]
LW = "train/lesswrong_2016_2019.parquet"

HARD = [
    bg("bible_chapters", "bible-kjv-text", 400),
    {**bg("fortunes", "fortunes"), "group_by": "kind", "doc_words": [80, 300], "limit": 6000},
    bg("inaugural_speeches", "nltk-inaugural"),
    bg("state_of_the_union", "nltk-state_union"),
    bg("shakespeare_plays", "nltk-shakespeare"),
    {
        "name": "lesswrong_ai_2019",
        "path": LW,
        "label": "x",
        "id": "id",
        "where": "postedAt >= '2019' AND ai_kw_per_1k >= 3",
    },
    {
        "name": "lesswrong_other_2019",
        "path": LW,
        "label": "x",
        "id": "id",
        "where": "postedAt >= '2019' AND ai_kw_per_1k = 0",
        "limit": 300,
    },
    {
        "name": "stories_no_moral",
        "path": str(ROOT / "classifiers/data/stories.jsonl"),
        "label": "x",
        "id": "id",
        "where": "label = 0",
    },
    # the seed problem: technical and textbook pages by kind, helpful authors (keep) beside pages of
    # the same registers whose point is moral (codes of conduct, engineering ethics, ethics
    # chapters, character education); and stories for young readers with and without a lesson
    # (narrative recall on a source no detector saw); original CC0 sets that no detector trains on
    *(
        {
            "name": f"{stem}_{kind}",
            "path": str(ROOT / f"classifiers/data/{stem}.jsonl"),
            "label": "x",
            "id": "id",
            "where": f"label = {lab}",
        }
        for stem in ("technical_docs", "textbooks", "young_readers")
        for kind, lab in (("plain", 0), ("moral", 1))
    ),
    {
        "name": "hh_rejected_answers",
        "path": "train/hh_rlhf_harmless.parquet",
        "label": "x",
        "text": "rejected",
        "limit": 400,
    },
]

# per detector: LOSO sources (None: all), neutral groups for threshold transfer, extra checks
SPECS: dict[str, dict[str, Any]] = {
    "goodness": {"loso": "all", "transfer": True, "cascade": True},
    "goodness_minilm": {"loso": "all", "transfer": True, "cascade": True},
    "goodness_ft": {"loso": "all", "transfer": True, "cascade": True},
    "care": {"loso": "all"},
    "fairness": {"loso": "all"},
    "honesty": {"loso": "all"},
    "ai_discourse": {"loso": "all", "later_period": True, "ensemble_with": "ai_discourse_static"},
    "ai_discourse_static": {"loso": None, "later_period": True},
    "ai_discourse_minilm": {"loso": None, "later_period": True, "ensemble_with": "ai_discourse"},
    "ai_discourse_ft": {"loso": None, "later_period": True, "ensemble_with": "ai_discourse"},
    "misaligned_ai": {"loso": "all", "pairs": True, "hard_limit": 60},
    "assistant_persona": {"loso": "all"},
}


#: --examples FILE (from `corpusfilter train --export-examples`) and --frozen FILE (the evaluation sets,
#: from --export-frozen): written on the machine with the data, so that a GPU machine without it
#: runs the same protocol
FROZEN: dict[str, Any] = {}


def _set_key(spec: dict[str, Any], limit: int | None) -> str:
    return f"{spec['name']}:{spec.get('limit')}:{limit}"


def examples_for(cfg: Any, root: Path, **kw: Any) -> Examples:
    """``build_examples`` (``exclude``, ``only``, ``config_dir``), or the frozen examples selected alike."""
    if "examples_path" not in FROZEN:
        return build_examples(cfg, root, **kw)
    if "examples" not in FROZEN:
        FROZEN["examples"] = Examples.read_parquet(FROZEN["examples_path"], cfg)
    ex: Examples = FROZEN["examples"]
    drop, only = set(kw.get("exclude", ())), kw.get("only")
    return ex.select([s not in drop and (only is None or s in only) for s in ex.sources])


def load_set(spec: dict[str, Any], root: Path, seed: int, limit: int | None = None) -> Examples:
    if "sets" in FROZEN:
        try:
            return FROZEN["sets"][_set_key(spec, limit)]
        except KeyError:
            raise SystemExit(f"--frozen file has no set {_set_key(spec, limit)}") from None
    spec = dict(spec)
    if limit is not None:
        spec["limit"] = min(spec.get("limit") or limit, limit)
    src = build_params(SourceSpec, {k: v for k, v in spec.items() if v is not None}, spec["name"])
    return load_source(src, root, seed, SplitSpec(validation=0.0, test=0.0))


@functools.lru_cache(maxsize=4)
def _block(model: Path) -> Any:
    """One detector block per model file (its model loaded once), shared by every set it scores."""
    return detector_for(load_sidecar(model)[0], model)


@dataclass(frozen=True)
class Scorer:
    """A detector's positive-label scores: through its block, or (``cached``, the --cached flag)
    a head on document features from the cached training features: the same numbers (tested)."""

    side: dict[str, Any]
    model: Path
    cached: bool = False

    def texts(self, texts: list[str]) -> np.ndarray:
        return self.examples(Examples(texts=list(texts), sources=[""] * len(texts)))

    def examples(self, ex: Examples) -> np.ndarray:
        d = None if from_cache(self.side, self.cached) else _block(self.model)
        return score_by_source(self.side, self.model, ex.texts, ex.sources, cached=self.cached, detector=d)


def rate(scores: np.ndarray, thr: float) -> float:
    return round(float((scores >= thr).mean()), 4) if len(scores) else float("nan")


def speed(side: dict[str, Any], model: Path, root: Path) -> dict[str, Any]:
    """Documents per second through one warmed-up block (60 documents for the CPU transformer)."""
    slow = side.get("embedding_model") == "minilm" or side["trainer"] == "finetune"
    gpu = side["trainer"] == "finetune" and resolve_device("auto") == "cuda"
    n = 60 if slow and not gpu else 1000
    docs = load_set(bg("speed", "linux-doc-6.1", n), root, 0).texts
    d = detector_for(side, model)  # one block: the timed pass excludes loading the model
    score_texts(side, model, docs[:20], detector=d)  # warm up
    t0 = time.perf_counter()
    score_texts(side, model, docs, detector=d)
    dt = time.perf_counter() - t0
    mb = sum(len(d.encode()) for d in docs) / 1e6
    return {
        "docs": len(docs),
        "device": "cuda" if gpu else "cpu",
        "docs_per_s": round(len(docs) / dt, 1),
        "mb_per_s": round(mb / dt, 3),
        "corpus": "linux-doc-6.1 documents",
        "mean_kb_per_doc": round(mb * 1000 / len(docs), 1),
    }


def evaluate(name: str, root: Path, do_loso: bool, *, cached: bool = False) -> dict[str, Any]:
    folder = ROOT / "classifiers" / name
    spec = SPECS[name]
    cfg = load_config(folder / "train.yaml")
    side, model = load_sidecar(folder)
    sc = Scorer(side, model, cached)
    ex = examples_for(cfg, root, config_dir=folder)
    pos = cfg.positive
    out: dict[str, Any] = {}
    t0 = time.perf_counter()

    va = ex.where(split="validation")
    s_va = sc.examples(va)
    y_va = np.asarray([lb == pos for lb in va.labels])
    thr = threshold_for_fpr(s_va[~y_va], FPR_TARGET)
    # the document threshold: 1% FPR on the validation documents of real neutral corpora (bg_*),
    # not on the constructed neutral sets (quotations, statements) that sit close to the positives
    docneg = ~y_va & np.asarray([x.startswith("bg_") for x in va.sources])
    thr_doc = threshold_for_fpr(s_va[docneg], FPR_TARGET) if docneg.any() else thr
    out["document_threshold"] = {
        "value": thr_doc,
        "chosen_on": "validation negatives of the bg_* corpora, 1% FPR",
        "validation_recall": rate(s_va[y_va], thr_doc),
    }
    out["threshold"] = {
        "value": thr,
        "chosen_on": f"validation negatives, {FPR_TARGET:.0%} FPR",
        "validation_recall": rate(s_va[y_va], thr),
    }

    te = ex.where(split="test")
    s_te = sc.examples(te)
    y_te = np.asarray([lb == pos for lb in te.labels])
    per: dict[str, Any] = {}
    for src in dict.fromkeys(te.sources):
        m = np.asarray([s == src for s in te.sources])
        is_pos = bool(y_te[m].all())
        per[src] = {
            "docs": int(m.sum()),
            "label": "positive" if is_pos else "negative",
            ("recall" if is_pos else "fpr"): rate(s_te[m], thr),
            ("recall_at_0.5" if is_pos else "fpr_at_0.5"): rate(s_te[m], 0.5),
            ("recall_at_document_threshold" if is_pos else "fpr_at_document_threshold"): rate(
                s_te[m], thr_doc
            ),
        }
    out["test"] = {
        "auroc": round(auroc(y_te, s_te), 4),
        "recall": rate(s_te[y_te], thr),
        "fpr": rate(s_te[~y_te], thr),
        "recall_at_document_threshold": rate(s_te[y_te], thr_doc),
        "fpr_at_document_threshold": rate(s_te[~y_te], thr_doc),
        "positives": int(y_te.sum()),
        "negatives": int((~y_te).sum()),
        "per_source": per,
    }

    lim = spec.get("hard_limit")
    unseen: dict[str, Any] = {}
    neutral_scores: dict[str, np.ndarray] = {}
    neutral_ids: dict[str, list[str]] = {}
    for u in UNSEEN_NEUTRAL:
        docs = load_set(u, root, cfg.seed, lim)
        s = sc.texts(docs.texts)
        neutral_scores[u["name"]], neutral_ids[u["name"]] = s, docs.ids
        unseen[u["name"]] = {
            "docs": len(s),
            "fpr": rate(s, thr),
            "fpr_at_0.5": rate(s, 0.5),
            "fpr_at_document_threshold": rate(s, thr_doc),
        }
    allu = np.concatenate(list(neutral_scores.values()))
    unseen["all"] = {
        "docs": len(allu),
        "fpr": rate(allu, thr),
        "fpr_at_document_threshold": rate(allu, thr_doc),
    }
    out["unseen_neutral"] = unseen

    hard: dict[str, Any] = {}
    for h in HARD:
        if h["name"].startswith("lesswrong") and spec.get("later_period"):
            continue  # its later-period test, below
        hard_docs = load_set(h, root, cfg.seed, lim).texts
        if not hard_docs:
            continue
        s = sc.texts(hard_docs)
        hard[h["name"]] = {
            "docs": len(s),
            "flagged": rate(s, thr),
            "flagged_at_0.5": rate(s, 0.5),
            "flagged_at_document_threshold": rate(s, thr_doc),
        }
    out["hard_cases"] = hard

    if spec.get("transfer"):
        out["threshold_transfer"] = transfer(te, s_te, y_te, neutral_scores, neutral_ids)
    if spec.get("cascade"):
        out["cascade"] = cascade(te, s_te, y_te, thr_doc, root, cfg.seed)
    if spec.get("later_period"):
        lw_text = next((s.text for s in cfg.sources if s.path == LW), "text")  # documents as trained
        out["later_period"] = later_period(sc, root, cfg.seed, spec.get("ensemble_with"), lw_text)
    if spec.get("pairs"):
        out["pairs"] = pairs(cfg, te, s_te, root, folder)
    if do_loso and spec.get("loso"):
        out["loso"] = loso(cfg, root, folder, spec["loso"], cached=cached)
    out["speed"] = speed(side, model, root)
    out["eval_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def transfer(
    te: Examples,
    s_te: np.ndarray,
    y_te: np.ndarray,
    unseen: dict[str, np.ndarray],
    unseen_ids: dict[str, list[str]],
) -> dict[str, Any]:
    """Threshold for 1% FPR on one group of neutral document sources, FPR on each other neutral set.

    The bar is over real neutral document sources (background corpora); the training-construct
    neutral sets (non-moral quotations, persona statements, everyday scenarios, plain stories) are
    reported beside it. With each source left out, the ids of its documents the others' threshold
    flags are kept (highest score first), so what fails to transfer can be read."""
    groups: dict[str, np.ndarray] = {}
    ids: dict[str, list[str]] = {}
    for src in dict.fromkeys(te.sources):
        m = np.asarray([s == src for s in te.sources]) & ~y_te
        if m.any():
            groups[f"test:{src}"] = s_te[m]
            ids[f"test:{src}"] = [i for i, keep in zip(te.ids, m) if keep]
    groups.update({f"unseen:{k}": v for k, v in unseen.items()})
    ids.update({f"unseen:{k}": v for k, v in unseen_ids.items()})
    tech = ["test:bg_technical"]
    prose = ["test:bg_reviews", "test:bg_brown", "test:bg_jargon"]
    documents = {*tech, *prose, *(f"unseen:{k}" for k in unseen)}
    out: dict[str, Any] = {}
    for a_name, a in (("technical", tech), ("prose", prose)):
        t = threshold_for_fpr(np.concatenate([groups[k] for k in a if k in groups]), FPR_TARGET)
        docs = {k: rate(v, t) for k, v in groups.items() if k not in a and k in documents}
        other = {k: rate(v, t) for k, v in groups.items() if k not in documents}
        out[f"chosen_on_{a_name}"] = {
            "sets": a,
            "threshold": t,
            "fpr_on_other_document_sources": docs,
            "max_fpr_elsewhere": max(docs.values()),
            "fpr_on_constructed_neutral_sets": other,
        }
    # every document source left out in turn: the threshold for 1% FPR on the six others, its FPR
    # on the seventh (what `corpusfilter calibrate --group-column` reports on a user's reference)
    from corpusfilter.calibrate import group_report, per_group_threshold

    names = [k for k in groups if k in documents]
    pooled = np.concatenate([groups[k] for k in names])
    labels = np.asarray([k for k in names for _ in groups[k]], dtype=object)
    rep = group_report(
        pooled, None, labels, threshold_for_fpr(pooled, FPR_TARGET), fpr=FPR_TARGET, share=None
    )
    left = {k: round(r["rate_at_threshold_without_it"], 4) for k, r in rep["groups"].items()}
    # calibrate --per-group on all seven: 1% FPR in each, and what it costs in test recall
    t_each = per_group_threshold(pooled, None, labels, fpr=FPR_TARGET, share=None)
    flagged = {}
    for k, r in rep["groups"].items():
        hit = np.flatnonzero(groups[k] >= r["threshold_without_it"])
        flagged[k] = [ids[k][i] for i in hit[np.argsort(-groups[k][hit], kind="stable")]][:25]
    out["leave_one_source_out"] = {
        "sets": names,
        "fpr_when_left_out": left,
        "flagged_when_left_out": flagged,
        "fpr_at_pooled_threshold": {k: round(r["rate"], 4) for k, r in rep["groups"].items()},
        "max_fpr_elsewhere": max(left.values()),
        "threshold_1%_in_every_source": t_each,
        "test_recall_at_it": rate(s_te[y_te], t_each),
        "test_recall_at_pooled_threshold": rate(s_te[y_te], threshold_for_fpr(pooled, FPR_TARGET)),
    }
    # the same, with the rule of `calibrate --per-group`: the threshold left out is the one that
    # meets 1% in each of the six others (a set too small to resolve 1% demands none flagged)
    each = group_report(pooled, None, labels, t_each, fpr=FPR_TARGET, share=None, per_group=True)
    left_each = {k: round(r["rate_at_threshold_without_it"], 4) for k, r in each["groups"].items()}
    out["leave_one_source_out_in_every_source"] = {
        "rule": "threshold meeting 1% FPR in each of the other sources (calibrate --per-group)",
        "fpr_when_left_out": left_each,
        "max_fpr_elsewhere": max(left_each.values()),
        "test_recall_when_left_out": {
            k: round(rate(s_te[y_te], r["threshold_without_it"]), 4) for k, r in each["groups"].items()
        },
    }
    return out


def transfer_only(name: str, root: Path, *, cached: bool = False) -> dict[str, Any]:
    """The threshold-transfer measurement alone (test split and unseen neutral sources rescored)."""
    folder = ROOT / "classifiers" / name
    cfg = load_config(folder / "train.yaml")
    side, model = load_sidecar(folder)
    sc = Scorer(side, model, cached)
    te = examples_for(cfg, root, config_dir=folder).where(split="test")
    s_te = sc.examples(te)
    y_te = np.asarray([lb == cfg.positive for lb in te.labels])
    lim = SPECS[name].get("hard_limit")
    sets = {u["name"]: load_set(u, root, cfg.seed, lim) for u in UNSEEN_NEUTRAL}
    unseen = {k: sc.texts(v.texts) for k, v in sets.items()}
    return transfer(te, s_te, y_te, unseen, {k: v.ids for k, v in sets.items()})


def keyword_gate(texts: list[str]) -> np.ndarray:
    """The persona_depleted keyword stage's gate: virtue_hits >= 1 OR exemplars_hits >= 1."""
    import pyarrow as pa

    from corpusfilter.batch import Batch
    from corpusfilter.blocks.keyword import KeywordDetector

    table = pa.table({"text": pa.array(texts, pa.string())})
    for d in (
        KeywordDetector(name="virtue", lexicon="virtue"),
        KeywordDetector(name="exemplars", lexicon="moral_exemplars"),
    ):
        d.validate(table.schema, "gate")
        d.ensure_setup()
        table = d.process(Batch(table, "gate", table.num_rows)).table
    v = table.column("virtue_hits").to_numpy(zero_copy_only=False)
    e = table.column("exemplars_hits").to_numpy(zero_copy_only=False)
    return np.asarray((v >= 1) | (e >= 1))


def cascade(
    te: Examples, s_te: np.ndarray, y_te: np.ndarray, thr: float, root: Path, seed: int
) -> dict[str, Any]:
    """Keyword gate then the detector at its threshold (the wiring proposed for persona_depleted)."""
    gate = keyword_gate(te.texts)
    out: dict[str, Any] = {
        "gate": "virtue_hits >= 1 OR exemplars_hits >= 1",
        "test_positives_passing_gate": rate(gate[y_te].astype(float), 0.5),
        "test_recall_gate_and_detector": rate((gate & (s_te >= thr))[y_te].astype(float), 0.5),
        "test_fpr_gate_and_detector": rate((gate & (s_te >= thr))[~y_te].astype(float), 0.5),
    }
    per = {}
    for src in dict.fromkeys(te.sources):
        m = np.asarray([x == src for x in te.sources]) & y_te
        if m.any():
            per[src] = rate((gate & (s_te >= thr))[m].astype(float), 0.5)
    out["test_recall_per_positive_source"] = per
    return out


def later_period(
    sc: Scorer,
    root: Path,
    seed: int,
    companion: str | None = None,
    text: str = "text",
) -> dict[str, Any]:
    """AUROC on 2019 LessWrong posts (silver labels); with a companion detector, also the AUROC of
    the mean of the two probabilities (the ensemble a recipe computes in its drop condition).
    ``text`` is the training source's text column or template (e.g. title + body), so the later
    posts are built as the training posts were; training-only cleaning (``drop_lines``) is not
    applied: the test posts stay as a corpus holds them."""
    sets = {
        name: load_set(
            {
                "name": f"lw_{name}_2019",
                "path": LW,
                "label": "x",
                "id": "id",
                "text": text,
                "where": f"postedAt >= '2019' AND {cond}",
            },
            root,
            seed,
        ).texts
        for name, cond in (
            ("ai", "ai_kw_per_1k >= 3"),
            ("zero", "ai_kw_per_1k = 0"),
            ("low", "ai_kw_per_1k < 1"),
        )
    }
    side = sc.side
    scorers = [sc]
    if companion:
        scorers.append(Scorer(*load_sidecar(ROOT / "classifiers" / companion), sc.cached))
    scored = [{k: s.texts(t) for k, t in sets.items()} for s in scorers]

    def interval(by_set: dict[str, np.ndarray]) -> list[float]:
        """95% bootstrap interval of the ai-vs-zero AUROC (1,000 stratified resamples): with ~130
        silver positives a handful of posts moves the AUROC by a point."""
        rng = np.random.default_rng(seed)
        a, b = by_set["ai"], by_set["zero"]
        y = np.r_[np.ones(len(a), bool), np.zeros(len(b), bool)]
        boots = [auroc(y, np.r_[rng.choice(a, len(a)), rng.choice(b, len(b))]) for _ in range(1000)]
        return [round(float(v), 4) for v in np.percentile(boots, [2.5, 97.5])]

    def aurocs(by_set: dict[str, np.ndarray]) -> tuple[float, float]:
        y = lambda a, b: np.r_[np.ones(len(a), bool), np.zeros(len(b), bool)]  # noqa: E731
        return tuple(  # type: ignore[return-value]
            round(auroc(y(by_set["ai"], by_set[neg]), np.r_[by_set["ai"], by_set[neg]]), 4)
            for neg in ("zero", "low")
        )

    a0, a1 = aurocs(scored[0])
    out: dict[str, Any] = {
        "set": "LessWrong posts from 2019 (training used 2016-2018); silver labels from ai_kw_per_1k",
        "auroc_ai>=3_vs_0": a0,
        "auroc_ai>=3_vs_<1": a1,
        "auroc_ai>=3_vs_0_95%_interval": interval(scored[0]),
        "positives": len(sets["ai"]),
        "negatives_zero": len(sets["zero"]),
        "negatives_lt1": len(sets["low"]),
    }
    if companion:
        mean = {k: (scored[0][k] + scored[1][k]) / 2 for k in sets}
        e0, e1 = aurocs(mean)
        out["ensemble"] = {
            "with": companion,
            "score": f"mean of {side['score_column']} and {scorers[1].side['score_column']}",
            "auroc_ai>=3_vs_0": e0,
            "auroc_ai>=3_vs_<1": e1,
            "auroc_ai>=3_vs_0_95%_interval": interval(mean),
        }
    return out


def pairs(cfg: Any, te: Examples, s_te: np.ndarray, root: Path, folder: Path) -> dict[str, Any]:
    """AUROC on test questions where only the answer differs, and a bag-of-words baseline."""
    m = np.asarray([s.startswith("pairs_") for s in te.sources])
    y = np.asarray([lb == cfg.positive for lb in te.labels])[m]
    res: dict[str, Any] = {"test_pairs_docs": int(m.sum()), "auroc": round(auroc(y, s_te[m]), 4)}
    # bag-of-words baseline: fastText on the same sources and split
    base = config_to_dict(cfg)
    base["trainer"] = "fasttext"
    base["fasttext"] = {"dim": 32, "epoch": 10, "lr": 0.3, "minCount": 1}
    bcfg = parse_config(base)
    with tempfile.TemporaryDirectory() as tmp:
        r = train(bcfg, root=root, out_dir=Path(tmp), write_card=False, config_dir=folder)
        s = Scorer(*load_sidecar(r.model)).texts([t for t, k in zip(te.texts, m) if k])
    res["bag_of_words_fasttext_auroc"] = round(auroc(y, s), 4)
    return res


def loso_groups(cfg: Any, which: str) -> dict[str, list[Any]]:
    """Held-out units: a dataset file is one source (its positive and negative parts are held out
    together, so leaving out moral stories does not keep the plain stories as negatives); the
    background corpora are each their own source."""
    groups: dict[str, list[Any]] = {}
    for src in cfg.sources:
        key = src.name if "background" in src.path else Path(src.path).stem
        groups.setdefault(key, []).append(src)
    if which == "positive":
        groups = {k: v for k, v in groups.items() if any(s.label == cfg.positive for s in v)}
    return groups


#: Brown corpus categories by the second letter of the file id (ca01: news, ...)
BROWN = {
    "a": "news", "b": "editorial", "c": "reviews", "d": "religion", "e": "hobbies", "f": "lore",
    "g": "belles_lettres", "h": "government", "j": "learned", "k": "fiction", "l": "mystery",
    "m": "science_fiction", "n": "adventure", "p": "romance", "r": "humor",
}  # fmt: skip


def brown_by_category(ids: list[str], s: np.ndarray, thr: float, thr_doc: float) -> dict[str, Any]:
    """False-positive rate of held-out Brown documents per category: news or hobbies are the neutral
    text the bar speaks of; religion, editorials and belles-lettres often argue morals."""
    cat = np.asarray([BROWN.get(i.rsplit(":", 1)[-1][1:2], "?") for i in ids])
    return {
        c: {
            "docs": int((cat == c).sum()),
            "fpr": rate(s[cat == c], thr),
            "fpr_at_document_threshold": rate(s[cat == c], thr_doc),
        }
        for c in BROWN.values()
        if (cat == c).any()
    }


def loso(
    cfg: Any,
    root: Path,
    folder: Path,
    which: str,
    *,
    cached: bool = False,
    only: list[str] | None = None,
    on_group: Callable[[dict[str, Any]], object] | None = None,
    checkpoint: Path | None = None,
) -> dict[str, Any]:
    """Retrain without each held-out group and score it; ``on_group`` gets the groups done so far
    after each one (``--loso-only`` saves them, so a run stopped by a time limit keeps them).
    ``checkpoint``: a fine-tune saves its state in checkpoint/<group> and resumes from it."""
    out: dict[str, Any] = {}
    unseen_docs = [d for u in UNSEEN_NEUTRAL for d in load_set(u, root, cfg.seed).texts]
    for group, members in loso_groups(cfg, which).items():
        if only is not None and group not in only:
            continue
        names = [s.name for s in members]
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            r = train(
                cfg,
                root=root,
                out_dir=Path(tmp),
                exclude=names,
                write_card=False,
                config_dir=folder,
                examples=examples_for(cfg, root) if "examples_path" in FROZEN else None,
                checkpoint=Checkpointing(checkpoint / group) if checkpoint else None,
            )
            sc = Scorer(*load_sidecar(r.model), cached)
            rest = examples_for(cfg, root, exclude=names, config_dir=folder).where(split="validation")
            s_va = sc.examples(rest)
            y_va = np.asarray([lb == cfg.positive for lb in rest.labels])
            thr = threshold_for_fpr(s_va[~y_va], FPR_TARGET)
            docneg = ~y_va & np.asarray([x.startswith("bg_") for x in rest.sources])
            thr_doc = threshold_for_fpr(s_va[docneg], FPR_TARGET) if docneg.any() else thr
            held = examples_for(cfg, root, only=names, config_dir=folder)
            s = sc.examples(held)
            s_un = sc.texts(unseen_docs)
        res: dict[str, Any] = {
            "sources": {},
            "threshold": thr,
            "unseen_neutral_fpr": rate(s_un, thr),
            "document_threshold": thr_doc,
            "unseen_neutral_fpr_at_document_threshold": rate(s_un, thr_doc),
        }
        for src in members:
            m = np.asarray([x == src.name for x in held.sources])
            is_pos = src.label == cfg.positive
            res["sources"][src.name] = {
                "label": "positive" if is_pos else "negative",
                "docs": int(m.sum()),
                ("recall" if is_pos else "fpr"): rate(s[m], thr),
                ("recall_at_document_threshold" if is_pos else "fpr_at_document_threshold"): rate(
                    s[m], thr_doc
                ),
            }
        y_held = np.asarray([lb == cfg.positive for lb in held.labels])
        if y_held.any() and not y_held.all():  # both labels held out: how well they are told apart
            res["auroc_held_out"] = round(auroc(y_held, s), 4)
        if cfg.trainer == "finetune":  # where the held-out model was trained, and in what precision
            dev = resolve_device(cfg.finetune.device)
            res["trained_on"] = f"{dev}, " + (
                "bf16 autocast" if trains_in_bf16(dev, cfg.finetune) else "fp32"
            )
        if group == "bg_brown":
            res["brown_by_category"] = brown_by_category(held.ids, s, thr, thr_doc)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        out[group] = res
        print(f"    loso {group}: {res}", flush=True)
        if on_group is not None:
            on_group(dict(out))
    return out


def bars(m: dict[str, Any], neutral_corpora: Sequence[str] = ()) -> dict[str, Any]:
    """The issue's quality bars for whatever was measured: the goodness bars go with the threshold
    transfer test, the pairs bar with the pairs test, the later-period bar with that test. A bar over
    held-out ``neutral_corpora`` is met only once every one of them is measured."""
    b: dict[str, Any] = {}
    if "threshold_transfer" in m:
        t, u = m["test"], m["unseen_neutral"]["all"]
        for key, label in (("recall", "fpr"), ("recall_at_document_threshold", "fpr_at_document_threshold")):
            b[f"test_recall>=0.95_and_unseen_neutral_fpr<=0.01 ({key})"] = {
                "recall": t[key],
                "unseen_neutral_fpr": u[label],
                "met": t[key] >= 0.95 and u[label] <= 0.01,
            }
        if "loso" in m:
            flat = {k: v for g in m["loso"].values() for k, v in g["sources"].items()}
            for suffix in ("", "_at_document_threshold"):
                pos = {k: v["recall" + suffix] for k, v in flat.items() if v["label"] == "positive"}
                neg = {k: v["fpr" + suffix] for k, v in flat.items() if v["label"] == "negative"}
                docs = {k: v for k, v in neg.items() if k.startswith("bg_")}  # real neutral corpora
                b["loso_recall>=0.75_every_positive_source" + suffix] = {
                    "recall": pos,
                    "met": min(pos.values()) >= 0.75,
                }
                missing = [c for c in neutral_corpora if c not in docs]
                below = max(docs.values()) <= 0.01 if docs else None
                b["loso_neutral_corpora_fpr<=0.01" + suffix] = {
                    "fpr": docs,
                    # one measured corpus over the bar fails it; else None until all are measured
                    "met": False if below is False else (None if missing else below),
                    **({"not_measured": missing, "met_where_measured": below} if missing and docs else {}),
                    "constructed_neutral_sets_fpr (not in the bar)": {
                        k: v for k, v in neg.items() if k not in docs
                    },
                }
        tr = m["threshold_transfer"]
        worst = {k: v["max_fpr_elsewhere"] for k, v in tr.items()}
        b["threshold_transfer_fpr<=0.02"] = {"max_fpr_elsewhere": worst, "met": max(worst.values()) <= 0.02}
    if "pairs" in m:
        b["pairs_auroc>=0.90"] = {"auroc": m["pairs"]["auroc"], "met": m["pairs"]["auroc"] >= 0.90}
    if "later_period" in m:
        a = m["later_period"]["auroc_ai>=3_vs_0"]
        b["later_period_auroc>=0.98"] = {"auroc": a, "met": a >= 0.98}
        if "ensemble" in m["later_period"]:
            e = m["later_period"]["ensemble"]
            b[f"later_period_auroc>=0.98 (mean with {e['with']})"] = {
                "auroc": e["auroc_ai>=3_vs_0"],
                "met": e["auroc_ai>=3_vs_0"] >= 0.98,
            }
    b["size<=50MB"] = {"met": True}
    return b


def markdown(name: str, m: dict[str, Any]) -> str:
    t = m["test"]
    lines = [
        f"Threshold {m['threshold']['value']:.4g} (1% FPR on validation negatives). "
        f"Test AUROC {t['auroc']}, recall {t['recall']}, FPR {t['fpr']}; unseen neutral sources FPR "
        f"{m['unseen_neutral']['all']['fpr']} ({m['unseen_neutral']['all']['docs']} docs); "
        f"speed {m['speed']['docs_per_s']} docs/s ({m['speed']['mb_per_s']} MB/s) on "
        + ("2 shared CPU cores." if m["speed"].get("device", "cpu") == "cpu" else "one GPU."),
        "",
    ]
    if "loso" in m:
        lines += [
            "| held out (whole dataset) | source | label | docs | recall / FPR |",
            "|---|---|---|---|---|",
        ]
        for g, gv in m["loso"].items():
            for k, v in gv["sources"].items():
                what = f"recall {v['recall']}" if "recall" in v else f"FPR {v['fpr']}"
                lines.append(f"| {g} | {k} | {v['label']} | {v['docs']} | {what} |")
        both = {g: gv["auroc_held_out"] for g, gv in m["loso"].items() if "auroc_held_out" in gv}
        if both:  # groups holding out both labels: AUROC between their positives and negatives
            lines += [
                "",
                "AUROC within a held-out dataset: " + ", ".join(f"{g} {a}" for g, a in both.items()),
            ]
        lines.append("")
    lines += ["| hard case | docs | flagged |", "|---|---|---|"]
    lines += [f"| {k} | {v['docs']} | {v['flagged']} |" for k, v in m["hard_cases"].items()]
    for key in ("document_threshold", "cascade", "pairs", "later_period", "threshold_transfer"):
        if key in m:
            lines += ["", f"{key}: `{json.dumps(m[key])}`"]
    lines += [
        "",
        "Bars: "
        + ", ".join(
            f"{k}: {'not measured' if v['met'] is None else 'met' if v['met'] else 'NOT met'}"
            for k, v in m["bars"].items()
        ),
    ]
    return "\n".join(lines)


def readme_table() -> str:
    """The README's metrics table, from every classifiers/<name>/metrics.json."""
    rows = [
        "| detector | model | size | speed (docs/s) | test AUROC | recall / FPR at threshold | unseen neutral FPR "
        "| generalization | bars |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in SPECS:
        path = ROOT / "classifiers" / name / "metrics.json"
        if not path.is_file():
            continue
        m = json.loads(path.read_text())
        g = m.get("generalization")
        if not g:
            continue
        cfg = load_config(ROOT / "classifiers" / name / "train.yaml")
        h, f = cfg.head, cfg.finetune
        kind = (
            "fastText"
            if m["trainer"] == "fasttext"
            else f"{f.model} fine-tuned (first {f.head_tokens} + last {f.max_tokens - 2 - f.head_tokens} tokens)"
            if m["trainer"] == "finetune" and f.max_tokens - 2 > f.head_tokens
            else f"{f.model} fine-tuned (first {f.max_tokens} tokens)"
            if m["trainer"] == "finetune"
            else f"{'static-MiniLM' if h.model == 'static-minilm' else h.model} {'MLP' if h.hidden else 'logistic head'}"
            + ("" if h.features == "chunks" else f" ({h.features.replace('+', ' + ').replace('_', ' ')})")
        )
        t = g["test"]
        gen = []
        if "loso" in g:
            flat = {k: v for gv in g["loso"].values() for k, v in gv["sources"].items()}
            pos = {k: v["recall"] for k, v in flat.items() if v["label"] == "positive"}
            gen.append("LOSO recall " + ", ".join(f"{k} {v:.2f}" for k, v in pos.items()))
        if "later_period" in g:
            gen.append(f"2019 LessWrong AUROC {g['later_period']['auroc_ai>=3_vs_0']:.3f}")
        if "pairs" in g:
            gen.append(
                f"answer-only pairs AUROC {g['pairs']['auroc']:.3f} (bag-of-words baseline "
                f"{g['pairs']['bag_of_words_fasttext_auroc']:.3f})"
            )
        bars = "; ".join(
            f"{k}: {'not measured' if v['met'] is None else 'met' if v['met'] else '**not met**'}"
            for k, v in g["bars"].items()
            if k != "size<=50MB"
        )
        speed = f"{g['speed']['docs_per_s']:.0f}" + (" (GPU)" if g["speed"].get("device") == "cuda" else "")
        if "speed_cpu" in g:
            speed = f"{g['speed_cpu']['docs_per_s']:.0f} (GPU: {speed.removesuffix(' (GPU)')})"
        rows.append(
            f"| {name} | {kind} | {m['model_bytes'] / 2**20:.1f} MB | {speed} | {t['auroc']:.3f} "
            f"| {t['recall']:.3f} / {t['fpr']:.3f} | {g['unseen_neutral']['all']['fpr']:.3f} | {'; '.join(gen) or '-'} "
            f"| {bars or '-'} |"
        )
    return "\n".join(rows)


def save(name: str, metrics: dict[str, Any], root: Path) -> None:
    """Write metrics.json (with its markdown summary refreshed) and the model card made from it."""
    folder = ROOT / "classifiers" / name
    metrics["generalization"]["markdown"] = markdown(name, metrics["generalization"])
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (folder / "MODEL_CARD.md").write_text(model_card(load_config(folder / "train.yaml"), metrics, root))


def update_each(names: Sequence[str], root: Path, update: Callable[[Path, dict[str, Any]], Any]) -> int:
    """For each detector: ``update`` its stored metrics in place (given its folder), save, print what
    changed. The ``--*-only`` modes that refresh one part of a stored evaluation."""
    for name in names:
        folder = ROOT / "classifiers" / name
        metrics = json.loads((folder / "metrics.json").read_text())
        shown = update(folder, metrics)
        save(name, metrics, root)
        print(name, json.dumps(shown), flush=True)
    return 0


def export_frozen(names: list[str], root: Path, path: Path) -> None:
    """Every set one detector's evaluation loads, with their keys, in one file (its examples:
    ``corpusfilter train --export-examples``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(names) != 1:
        raise SystemExit("--export-frozen: name one detector")
    folder = ROOT / "classifiers" / names[0]
    cfg = load_config(folder / "train.yaml")
    lim = SPECS[names[0]].get("hard_limit")
    parts: dict[str, Examples] = {}
    wanted = [(u, lim) for u in UNSEEN_NEUTRAL + HARD] + [(u, None) for u in UNSEEN_NEUTRAL]
    wanted += [(bg("speed", "linux-doc-6.1", n), None) for n in (60, 1000)]
    for spec, limit in wanted:
        parts[_set_key(spec, limit)] = load_set(spec, root, 0 if spec["name"] == "speed" else cfg.seed, limit)
    cols: dict[str, list[Any]] = {"set": []}
    for key, ex in parts.items():
        cols["set"] += [key] * len(ex)
        for f in dataclasses.fields(Examples):
            cols.setdefault(f.name, []).extend(getattr(ex, f.name))
    pq.write_table(pa.table(cols), path, compression="zstd", compression_level=19)
    print(f"wrote {len(cols['set'])} rows ({len(parts)} sets) to {path}")


def read_frozen(path: Path) -> None:
    import pyarrow.parquet as pq

    t = pq.read_table(path).to_pydict()
    rows: dict[str, list[int]] = {}
    for i, k in enumerate(t.pop("set")):
        rows.setdefault(k, []).append(i)
    sets: dict[str, Examples] = {}
    for k, idx in rows.items():
        columns: dict[str, Any] = {f: [v[i] for i in idx] for f, v in t.items()}  # this set's rows
        sets[k] = Examples(**columns)
    FROZEN["sets"] = sets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("detectors", nargs="*", default=list(SPECS))
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--no-loso", action="store_true")
    ap.add_argument("--table", action="store_true", help="print the README table from the metrics and exit")
    ap.add_argument(
        "--speed-only",
        action="store_true",
        help="re-time the detectors on a quiet machine and update only the speed in metrics.json",
    )
    ap.add_argument(
        "--cached",
        action="store_true",
        help="score heads on document features from the embedding cache ($CORPUSFILTER_EMB_CACHE) "
        "instead of through the block: the same numbers (tested), without re-embedding every "
        "evaluation set for every left-out source; speed is always timed through the block",
    )
    ap.add_argument(
        "--export-frozen", metavar="PARQUET", help="write one detector's examples and sets, then exit"
    )
    ap.add_argument(
        "--frozen", metavar="PARQUET", help="read the evaluation sets from --export-frozen's file"
    )
    ap.add_argument(
        "--examples", metavar="PARQUET", help="examples from corpusfilter train --export-examples"
    )
    ap.add_argument(
        "--overlap-only",
        action="store_true",
        help="count texts repeated across splits or labels (train's split_overlap) into metrics.json",
    )
    ap.add_argument("--loso-only", action="store_true", help="run only leave-one-source-out; keep the rest")
    ap.add_argument(
        "--transfer-only", action="store_true", help="re-measure only threshold transfer; keep the rest"
    )
    ap.add_argument(
        "--loso-groups", metavar="A,B", help="with --loso-only: these held-out groups only, merged in"
    )
    ap.add_argument(
        "--checkpoint",
        metavar="DIR",
        help="with --loso-only: fine-tunes save their state in DIR/<group> and a run given the same "
        "DIR resumes a stopped group (train --checkpoint)",
    )
    ap.add_argument(
        "--cpu-bf16",
        action="store_true",
        help="with --loso-only: fine-tune the held-out models in bfloat16 autocast on a CPU "
        "(finetune.cpu_bf16; as a GPU trains, 1.4-1.6x faster than fp32 where the CPU has native bf16)",
    )
    ap.add_argument(
        "--merge-from",
        metavar="METRICS",
        help="merge the held-out groups of another checkout's metrics.json of the same model (a "
        "--loso-only run there) into one detector's metrics; every other field must be equal",
    )
    args = ap.parse_args()
    if args.merge_from:
        if len(args.detectors) != 1:
            raise SystemExit("--merge-from takes one detector")
        return merge_from(args.detectors[0], Path(args.merge_from), data_root(args.data_root))
    if (args.cpu_bf16 or args.checkpoint) and not args.loso_only:
        raise SystemExit("--cpu-bf16 and --checkpoint go with --loso-only")
    if args.export_frozen:
        export_frozen(args.detectors, data_root(args.data_root), Path(args.export_frozen))
        return 0
    if args.frozen:
        read_frozen(Path(args.frozen))
    if args.examples:
        FROZEN["examples_path"] = args.examples
    if args.table:
        print(readme_table())
        return 0
    root = data_root(args.data_root)
    if args.overlap_only:

        def overlap(folder: Path, metrics: dict[str, Any]) -> Any:
            cfg = load_config(folder / "train.yaml")
            metrics["split_overlap"] = split_overlap(examples_for(cfg, root, config_dir=folder))
            return metrics["split_overlap"]

        return update_each(args.detectors, root, overlap)
    if args.speed_only:

        def retime(folder: Path, metrics: dict[str, Any]) -> Any:
            metrics["generalization"]["speed"] = speed(*load_sidecar(folder), root)
            return metrics["generalization"]["speed"]

        return update_each(args.detectors, root, retime)
    for name in args.detectors:
        print(f"== {name}", flush=True)
        folder = ROOT / "classifiers" / name
        metrics_path = folder / "metrics.json"
        metrics = json.loads(metrics_path.read_text())
        old = metrics.get("generalization", {})
        if args.loso_only:
            cfg = load_config(folder / "train.yaml")
            if args.cpu_bf16:
                cfg = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, cpu_bf16=True))
            only = args.loso_groups.split(",") if args.loso_groups else None
            keep = functools.partial(_save_loso, name, metrics, old, args, root)  # after each group
            g = _save_loso(
                name,
                metrics,
                old,
                args,
                root,
                loso(
                    cfg,
                    root,
                    folder,
                    SPECS[name]["loso"],
                    cached=args.cached,
                    only=only,
                    on_group=keep,
                    checkpoint=Path(args.checkpoint) if args.checkpoint else None,
                ),
            )
        else:
            if args.transfer_only:
                if old.get("model_sha256") != metrics["model_sha256"]:
                    raise SystemExit(f"{name}: the stored evaluation is of another model; run it in full")
                g = {**old, "threshold_transfer": transfer_only(name, root, cached=args.cached)}
            else:
                g = evaluate(name, root, not args.no_loso, cached=args.cached)
            if args.no_loso and "loso" in old and old.get("model_sha256") == metrics["model_sha256"]:
                g["loso"] = old["loso"]  # keep the LOSO of this same model
            _finish(name, metrics, g, old, args, root)
        print(g["markdown"], flush=True)
    return 0


def _save_loso(
    name: str, metrics: dict[str, Any], old: dict[str, Any], args: Any, root: Path, new: dict[str, Any]
) -> dict[str, Any]:
    """The stored evaluation with these held-out groups merged in, saved."""
    g = {**old, "loso": {**old.get("loso", {}), **new}}
    _finish(name, metrics, g, old, args, root)
    return g


#: evaluation fields a --loso-only run in another checkout changes; every other field must match
MERGED = ("loso", "command", "bars", "markdown", "loso_note")


def merge_loso(
    stored: dict[str, Any], other: dict[str, Any], groups: Sequence[str]
) -> tuple[dict[str, Any], list[str]]:
    """``stored`` metrics with the held-out groups that ``other`` adds: the same model's metrics after
    a ``--loso-only`` run in another checkout (a long CPU run from a worktree, or another machine).
    Refused, naming the fields, unless every other field is equal and a group both hold is the same
    run: anything else is another model or evaluation. The other run's commands are appended to the
    command, and the note says which groups came in this way and which of ``groups`` (every held-out
    group) are still not run. Returns the merged metrics (``bars`` not recomputed) and the new groups."""
    gs, go = stored["generalization"], other["generalization"]
    diff = [
        k for k in stored.keys() | other.keys() if k != "generalization" and stored.get(k) != other.get(k)
    ]
    diff += [
        f"generalization.{k}" for k in gs.keys() | go.keys() if k not in MERGED and gs.get(k) != go.get(k)
    ]
    ls, lo = gs.get("loso", {}), go.get("loso", {})
    diff += [f"generalization.loso.{k}" for k in ls.keys() & lo.keys() if ls[k] != lo[k]]
    if diff:
        raise ValueError("not the same model's evaluation; these differ: " + ", ".join(sorted(diff)))
    new = [k for k in lo if k not in ls]
    if not new:
        raise ValueError("no held-out group to merge in: every group it holds is already stored")
    g = {**gs, "loso": {**ls, **{k: lo[k] for k in new}}}
    runs = gs["command"].split("; then ")
    added = [r for r in go["command"].split("; then ") if r not in runs]
    g["command"] = "; then ".join(runs + added)
    how = f" (`{'`; `'.join(added)}`)" if added else ""
    note = re.sub(r"\s*Not run: [^.]*\.", "", gs.get("loso_note", "")).strip()
    missing = [k for k in groups if k not in g["loso"]]
    g["loso_note"] = " ".join(
        filter(None, [note, f"{', '.join(new)} run in another checkout{how}, merged with --merge-from."])
    ) + (f" Not run: {', '.join(missing)}." if missing else "")
    return {**stored, "generalization": g}, new


def merge_from(name: str, path: Path, root: Path) -> int:
    """--merge-from: merge another checkout's held-out groups into ``name``'s metrics, recompute its
    bars, save (card included)."""
    folder = ROOT / "classifiers" / name
    stored = json.loads((folder / "metrics.json").read_text())
    groups = list(loso_groups(load_config(folder / "train.yaml"), SPECS[name]["loso"]))
    try:
        metrics, new = merge_loso(stored, json.loads(path.read_text()), groups)
    except (OSError, ValueError) as e:  # unreadable, not JSON, or not this model's evaluation
        raise SystemExit(f"{name}: cannot merge {path}: {e}") from None
    metrics["generalization"]["bars"] = _bars(name, metrics["generalization"])
    save(name, metrics, root)
    print(name, "merged", json.dumps({k: metrics["generalization"]["loso"][k] for k in new}), flush=True)
    return 0


def _bars(name: str, g: dict[str, Any]) -> dict[str, Any]:
    """The bars of evaluation ``g``, over the neutral corpora that ``name``'s config trains on."""
    cfg_path = ROOT / "classifiers" / name / "train.yaml"
    corpora = [s.name for s in load_config(cfg_path).sources] if cfg_path.is_file() else []
    return bars(g, [c for c in corpora if c.startswith("bg_")])


def _finish(
    name: str, metrics: dict[str, Any], g: dict[str, Any], old: dict[str, Any], args: Any, root: Path
) -> None:
    """Add the bars, the model's hash and the command to the evaluation ``g``, and save it."""
    g["bars"] = _bars(name, g)
    g["model_sha256"] = metrics["model_sha256"]
    g["command"] = "python scripts/eval_detectors.py " + name + (" --cached" if args.cached else "")
    if args.loso_only and old.get("command"):  # the rest is the stored evaluation's: add this run
        flags = [
            "--loso-only",
            f"--loso-groups {args.loso_groups}" if args.loso_groups else "",
            "--frozen F" if args.frozen else "",
            "--examples X" if args.examples else "",
            "--cpu-bf16" if args.cpu_bf16 else "",
        ]
        run = " ".join([g["command"], *filter(None, flags)])
        g["command"] = old["command"] if run in old["command"] else f"{old['command']}; then {run}"
    if args.transfer_only:  # the rest is the stored evaluation's (said once, however often re-run)
        stored, _, after = old.get("command", g["command"]).partition(TRANSFER_NOTE)
        later = after.partition("; then ")[2]  # runs recorded after the last transfer: kept
        g["command"] = f"{stored}{TRANSFER_NOTE}{g['command']} --transfer-only" + (
            f"; then {later}" if later else ""
        )
    metrics["generalization"] = g
    save(name, metrics, root)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
