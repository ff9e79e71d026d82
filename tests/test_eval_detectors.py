"""scripts/eval_detectors.py's threshold-transfer measurement (the goodness bar), on tiny scores."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from corpusfilter.train import Examples

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "eval_detectors.py"


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("eval_detectors", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("eval_detectors", mod)  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_transfer_reports_both_directions_and_leave_one_source_out() -> None:
    E = _script()
    # test negatives of four corpora (technical scores low, Brown high) and 20 positives
    tech, jargon = np.linspace(0, 0.1, 200), np.linspace(0, 0.12, 100)
    reviews, brown = np.linspace(0, 0.15, 100), np.linspace(0.05, 0.5, 100)
    parts = [("bg_technical", tech), ("bg_jargon", jargon), ("bg_reviews", reviews), ("bg_brown", brown)]
    srcs = [n for n, v in parts for _ in v] + ["moral"] * 20
    s_te = np.concatenate([v for _, v in parts] + [np.full(20, 0.9)])
    y_te = np.asarray([x == "moral" for x in srcs])
    te = Examples(texts=[""] * len(srcs), sources=srcs, ids=[f"{x}:{i}" for i, x in enumerate(srcs)])
    unseen = {"gnu_standards": np.linspace(0, 0.11, 100)}
    out = E.transfer(te, s_te, y_te, unseen, {"gnu_standards": [f"gnu:{i}" for i in range(100)]})
    tech_t = out["chosen_on_technical"]["threshold"]
    assert (tech >= tech_t).sum() == 2  # 1% of 200
    assert out["chosen_on_technical"]["fpr_on_other_document_sources"]["test:bg_brown"] == round(
        float((brown >= tech_t).mean()), 4
    )
    lo = out["leave_one_source_out"]
    assert set(lo["sets"]) == {"test:bg_technical", "test:bg_jargon", "test:bg_reviews", "test:bg_brown",
                               "unseen:gnu_standards"}  # fmt: skip
    # Brown left out: the threshold is chosen on the other 500 documents (5 above it)
    rest = np.r_[tech, jargon, reviews, unseen["gnu_standards"]]
    t = np.sort(rest)[::-1][5]
    assert lo["fpr_when_left_out"]["test:bg_brown"] == round(float((brown > t).mean()), 4) > 0.5
    assert lo["max_fpr_elsewhere"] == lo["fpr_when_left_out"]["test:bg_brown"]
    # the Brown documents that threshold flags, highest score first (at most 25), by id
    assert lo["flagged_when_left_out"]["test:bg_brown"] == [f"bg_brown:{500 - k}" for k in range(1, 26)]
    # 1% in every source is Brown's own threshold; positives all score above it
    assert (brown >= lo["threshold_1%_in_every_source"]).sum() == 1 and lo["test_recall_at_it"] == 1.0
    bar = E.bars({"threshold_transfer": out, "test": {"recall": 1.0, "recall_at_document_threshold": 1.0},
                  "unseen_neutral": {"all": {"fpr": 0.0, "fpr_at_document_threshold": 0.0}}})  # fmt: skip
    worst = bar["threshold_transfer_fpr<=0.02"]["max_fpr_elsewhere"]
    assert (
        worst["leave_one_source_out"] == lo["max_fpr_elsewhere"]
        and not bar["threshold_transfer_fpr<=0.02"]["met"]
    )


def test_loso_only_merges_each_finished_group_into_the_stored_evaluation(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """--loso-only saves after every held-out group (a run stopped by a time limit keeps them): the
    new groups replace their old entries, the rest of the evaluation stays, the command is added once."""
    import argparse

    E = _script()
    saved: list[dict] = []
    monkeypatch.setattr(E, "save", lambda name, metrics, root: saved.append(json.loads(json.dumps(metrics))))
    grp = {
        "sources": {"bg_x": {"label": "negative", "docs": 4, "fpr": 0.25, "fpr_at_document_threshold": 0.5}}
    }
    old: dict[str, Any] = {
        "loso": {"a": grp, "b": grp},
        "test": {"recall": 1.0},
        "command": "python scripts/eval_detectors.py d",
    }
    metrics = {"model_sha256": "abc", "generalization": old}
    args = argparse.Namespace(cached=False, loso_only=True, loso_groups="b,c", frozen=None, examples=None,
                              cpu_bf16=True, transfer_only=False)  # fmt: skip
    new_b = {**grp, "seconds": 1.0}
    keep = functools.partial(E._save_loso, "d", metrics, old, args, Path("."))
    keep({"b": new_b})  # the first group finished
    keep({"b": new_b, "c": grp})  # then the second
    g1, g2 = (s["generalization"] for s in saved)
    assert set(g1["loso"]) == {"a", "b"} and g1["loso"]["b"]["seconds"] == 1.0
    assert set(g2["loso"]) == {"a", "b", "c"} and g2["test"] == {"recall": 1.0}
    run = "python scripts/eval_detectors.py d --loso-only --loso-groups b,c --cpu-bf16"
    assert g2["command"] == f"python scripts/eval_detectors.py d; then {run}" and g2["model_sha256"] == "abc"
    assert g2["bars"]["size<=50MB"]["met"] and old["loso"]["b"] is grp  # the stored one is not mutated


def test_the_held_out_neutral_corpora_bar_is_met_only_once_every_corpus_is_measured() -> None:
    E = _script()
    loso = {"bg_technical": {"sources": {"bg_technical": {"label": "negative", "fpr": 0.0, "fpr_at_document_threshold": 0.003}}},
            "stories": {"sources": {"stories_moral": {"label": "positive", "recall": 0.9, "recall_at_document_threshold": 1.0}}}}  # fmt: skip
    rest = {"test": {"recall": 1.0, "recall_at_document_threshold": 1.0},
            "unseen_neutral": {"all": {"fpr": 0.0, "fpr_at_document_threshold": 0.0}},
            "threshold_transfer": {"leave_one_source_out": {"max_fpr_elsewhere": 0.01}}}  # fmt: skip
    partial = E.bars({"loso": loso, **rest}, ["bg_technical", "bg_brown"])["loso_neutral_corpora_fpr<=0.01"]
    assert (
        partial["met"] is None and partial["not_measured"] == ["bg_brown"] and partial["met_where_measured"]
    )
    whole = E.bars({"loso": loso, **rest}, ["bg_technical"])[
        "loso_neutral_corpora_fpr<=0.01_at_document_threshold"
    ]
    assert whole["met"] is True and "not_measured" not in whole
    # one measured corpus over the bar fails it, whatever is still unmeasured
    loso["bg_brown"] = {
        "sources": {"bg_brown": {"label": "negative", "fpr": 0.19, "fpr_at_document_threshold": 0.68}}
    }
    failed = E.bars({"loso": loso, **rest}, ["bg_technical", "bg_brown", "bg_jargon"])[
        "loso_neutral_corpora_fpr<=0.01"
    ]
    assert failed["met"] is False and failed["not_measured"] == ["bg_jargon"]


def test_a_transfer_re_measurement_keeps_the_runs_recorded_after_the_last_one(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import argparse

    E = _script()
    saved: list[dict] = []
    monkeypatch.setattr(E, "save", lambda name, metrics, root: saved.append(json.loads(json.dumps(metrics))))
    base = "python scripts/eval_detectors.py d"
    loso = f"{base} --loso-only --loso-groups b --cpu-bf16"
    old = {"command": f"{base}{E.TRANSFER_NOTE}{base} --transfer-only; then {loso}"}
    args = argparse.Namespace(cached=False, loso_only=False, transfer_only=True)
    E._finish("d", {"model_sha256": "abc"}, {"test": {}}, old, args, Path("."))
    assert saved[0]["generalization"]["command"] == old["command"]  # re-run: said once, the LOSO run kept
    E._finish("d", {"model_sha256": "abc"}, {"test": {}}, {"command": base}, args, Path("."))
    assert saved[1]["generalization"]["command"] == f"{base}{E.TRANSFER_NOTE}{base} --transfer-only"


def test_markdown_lists_each_held_out_group_and_the_auroc_within_groups_holding_out_both_labels() -> None:
    E = _script()
    src = lambda label, key, v: {"label": label, "docs": 4, key: v}  # noqa: E731
    m: dict[str, Any] = {
        "threshold": {"value": 0.5},
        "test": {"auroc": 0.9, "recall": 0.8, "fpr": 0.01},
        "unseen_neutral": {"all": {"fpr": 0.0, "docs": 10}},
        "speed": {"docs_per_s": 100.0, "mb_per_s": 1.0},
        "hard_cases": {},
        "bars": {"size<=50MB": {"met": True}},
        "loso": {
            "pairs": {"sources": {"p": src("positive", "recall", 0.25), "n": src("negative", "fpr", 0.5)},
                      "auroc_held_out": 0.6374},
            "bg": {"sources": {"bg": src("negative", "fpr", 0.0)}},
        },
    }  # fmt: skip
    text = E.markdown("d", m)
    assert (
        "| pairs | p | positive | 4 | recall 0.25 |" in text
        and "| bg | bg | negative | 4 | FPR 0.0 |" in text
    )
    assert "AUROC within a held-out dataset: pairs 0.6374\n" in text  # the one group with both labels
    del m["loso"]["pairs"]["auroc_held_out"]
    assert "AUROC within" not in E.markdown("d", m)


def test_loso_gives_each_held_out_group_its_own_checkpoint_folder(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """--checkpoint DIR: each held-out fine-tune saves in DIR/<group>, so groups never resume each
    other's state (the checkpoint itself is tested with a real fine-tune in test_finetune.py)."""
    E = _script()
    seen: list[tuple[list[str], Path | None]] = []

    class Stop(Exception):
        pass

    def fake_train(cfg, **kw):  # type: ignore[no-untyped-def]
        seen.append((kw["exclude"], kw["checkpoint"].folder if kw["checkpoint"] else None))
        raise Stop

    src = [type("S", (), {"name": n, "label": "negative"})() for n in ("bg_a", "bg_b")]
    monkeypatch.setattr(E, "train", fake_train)
    monkeypatch.setattr(E, "load_set", lambda *a, **k: Examples())
    monkeypatch.setattr(E, "loso_groups", lambda cfg, which: {"bg_a": src[:1], "bg_b": src[1:]})
    cfg = type("C", (), {"seed": 0})()
    for only, ck in ((["bg_b"], tmp_path / "ck"), (["bg_a"], tmp_path / "ck"), (["bg_a"], None)):
        with pytest.raises(Stop):
            E.loso(cfg, tmp_path, tmp_path, "all", only=only, checkpoint=ck)
    assert seen == [
        (["bg_b"], tmp_path / "ck" / "bg_b"),
        (["bg_a"], tmp_path / "ck" / "bg_a"),
        (["bg_a"], None),
    ]


def _evaluation(loso: dict[str, Any], command: str, note: str) -> dict[str, Any]:
    g = {"test": {"recall": 1.0}, "loso": loso, "command": command, "loso_note": note, "bars": {}}
    return {"model_sha256": "abc", "generalization": g}


def test_merge_from_adds_another_checkouts_held_out_groups_and_refuses_another_evaluation() -> None:
    """A long --loso-only run made in another checkout is merged group by group: its new groups and
    commands come in, the not-run list is recomputed, and anything else that differs is refused."""
    E = _script()
    grp = lambda fpr: {"sources": {"bg_x": {"label": "negative", "docs": 4, "fpr": fpr}}}  # noqa: E731
    base = "python scripts/eval_detectors.py d"
    run_b = f"{base} --loso-only --loso-groups b --cpu-bf16"
    run_c = f"{base} --loso-only --loso-groups c --cpu-bf16"
    stored = _evaluation(
        {"a": grp(0.0), "b": grp(0.1)}, f"{base}; then {run_b}", "a first. Not run: c, d (negative only)."
    )
    # the other checkout was made before b was merged here: it holds a and c, and ran only c
    other = _evaluation({"a": grp(0.0), "c": grp(0.2)}, f"{base}; then {run_c}", "a first. Not run: b, c, d.")
    merged, new = E.merge_loso(stored, other, ["a", "b", "c", "d"])
    g = merged["generalization"]
    assert new == ["c"] and list(g["loso"]) == ["a", "b", "c"] and g["loso"]["c"] == grp(0.2)
    assert g["command"] == f"{base}; then {run_b}; then {run_c}"
    assert (
        g["loso_note"]
        == f"a first. c run in another checkout (`{run_c}`), merged with --merge-from. Not run: d."
    )
    assert stored["generalization"]["loso"].keys() == {"a", "b"}  # the stored metrics are not mutated
    # merging the same file again: nothing new
    with pytest.raises(ValueError, match="no held-out group"):
        E.merge_loso(merged, other, ["a", "b", "c", "d"])
    # another model, another test result, or a group both hold with other numbers: refused, named
    for field, changed in (
        ("model_sha256", {**other, "model_sha256": "def"}),
        ("generalization.test", {**other, "generalization": {**other["generalization"], "test": {"recall": 0.5}}}),
        ("generalization.loso.a", _evaluation({"a": grp(0.3), "c": grp(0.2)}, run_c, "")),
    ):  # fmt: skip
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            E.merge_loso(stored, changed, ["a", "b", "c", "d"])


def test_merge_from_on_the_command_line_recomputes_the_bars_of_a_shipped_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The --merge-from option end to end on goodness_ft's real train.yaml (tiny metrics): the held-out
    neutral corpora bar, unmeasured before, is decided once the merged group measures the last corpus."""
    import shutil

    E = _script()
    for name in ("goodness", "goodness_ft"):  # goodness_ft's config extends goodness's
        (tmp_path / "classifiers" / name).mkdir(parents=True)
        shutil.copy(E.ROOT / "classifiers" / name / "train.yaml", tmp_path / "classifiers" / name)
    folder = tmp_path / "classifiers" / "goodness_ft"
    corpora = [s.name for s in E.load_config(folder / "train.yaml").sources if s.name.startswith("bg_")]

    def neg(n: str, fpr: float) -> dict[str, Any]:
        return {
            "sources": {n: {"label": "negative", "docs": 4, "fpr": fpr, "fpr_at_document_threshold": fpr}}
        }

    pos = {
        "sources": {"p": {"label": "positive", "docs": 4, "recall": 1.0, "recall_at_document_threshold": 1.0}}
    }
    rest = {"unseen_neutral": {"all": {"fpr": 0.0, "fpr_at_document_threshold": 0.0}},
            "threshold_transfer": {"x": {"max_fpr_elsewhere": 0.01}}}  # fmt: skip
    stored = _evaluation({"stories": pos, **{c: neg(c, 0.0) for c in corpora[:-1]}}, "cmd", "")
    stored["generalization"] |= rest
    stored["generalization"]["test"] = {"recall": 1.0, "recall_at_document_threshold": 1.0}
    other = json.loads(json.dumps(stored))
    other["generalization"]["loso"][corpora[-1]] = neg(corpora[-1], 0.005)
    (folder / "metrics.json").write_text(json.dumps(stored))
    (tmp_path / "other.json").write_text(json.dumps(other))
    saved: list[dict] = []
    monkeypatch.setattr(E, "ROOT", tmp_path)
    monkeypatch.setattr(E, "save", lambda name, metrics, root: saved.append(metrics))
    bar = "loso_neutral_corpora_fpr<=0.01"
    assert E._bars("goodness_ft", stored["generalization"])[bar]["met"] is None  # one corpus not measured
    argv = [
        "eval_detectors.py",
        "goodness_ft",
        "--merge-from",
        str(tmp_path / "other.json"),
        "--data-root",
        str(tmp_path),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    assert E.main() == 0
    g = saved[0]["generalization"]
    assert g["bars"][bar]["met"] is True and g["bars"][bar]["fpr"][corpora[-1]] == 0.005
    assert "Not run:" in g["loso_note"] and f"{corpora[-1]} run in another checkout, merged" in g["loso_note"]
    monkeypatch.setattr(sys, "argv", [*argv[:2], "goodness", *argv[2:]])
    with pytest.raises(SystemExit, match="one detector"):
        E.main()
    monkeypatch.setattr(sys, "argv", [*argv[:3], str(tmp_path / "missing.json"), *argv[4:]])
    with pytest.raises(SystemExit, match=r"goodness_ft: cannot merge .*missing\.json"):
        E.main()


def test_frozen_sets_are_read_back_as_examples_per_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--frozen: the file --export-frozen writes (one row per document, its set named) becomes one
    Examples per set, rows in file order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    E = _script()
    monkeypatch.setattr(E, "FROZEN", {})
    cols: dict[str, list[Any]] = {"set": ["x", "y", "x"]}
    cols |= {c: [f"{c}{i}" for i in range(3)] for c in Examples.columns()} | {"weights": [1.0, 2.0, 3.0]}
    pq.write_table(pa.table(cols), tmp_path / "sets.parquet")
    E.read_frozen(tmp_path / "sets.parquet")
    x, y = E.FROZEN["sets"]["x"], E.FROZEN["sets"]["y"]
    assert x.texts == ["texts0", "texts2"] and x.weights == [1.0, 3.0] and x.ids == ["ids0", "ids2"]
    assert y.sources == ["sources1"] and len(y) == 1 and set(E.FROZEN["sets"]) == {"x", "y"}
