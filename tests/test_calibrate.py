"""corpusfilter calibrate: thresholds for a target FPR or share, written into a copy of a recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from corpusfilter.calibrate import pick_threshold
from corpusfilter.errors import CorpusfilterError
from corpusfilter.evaluate import threshold_for_fpr
from tests.test_train import MORAL, TECH, config, sentences, write_data


def test_pick_threshold_for_fpr_and_share() -> None:
    s = np.arange(200) / 200
    y = np.r_[np.zeros(100, bool), np.ones(100, bool)]
    r = pick_threshold(s, y, fpr=0.02, share=None)  # negatives are 0.000 .. 0.495
    assert r["fpr"] <= 0.02 and (s[~y] >= r["threshold"]).sum() == 2 and r["recall"] == 1.0
    r = pick_threshold(s, None, fpr=None, share=0.05)
    assert (s >= r["threshold"]).sum() == 10 and r["flagged_share"] == 0.05
    with pytest.raises(CorpusfilterError):
        pick_threshold(s, None, fpr=0.1, share=0.1)
    assert "warning" not in r  # 200 documents resolve 5%
    few = pick_threshold(s[:5], None, fpr=0.01, share=None)  # one document is 20% of five
    assert few["warning"].startswith("5 reference documents cannot resolve a target of 0.01")
    assert few["warning"].endswith("use at least 100")
    zero = pick_threshold(s, y, fpr=0.0, share=None)
    assert (s[~y] >= zero["threshold"]).sum() == 0 and zero["warning"].startswith("a target of 0 sets")
    # with labels an FPR counts the negatives: the warning and the denominator say so
    lab = pick_threshold(s[:60], np.arange(60) >= 10, fpr=0.01, share=None)
    assert lab["counted_documents"] == 10 and lab["reference_documents"] == 60
    assert lab["warning"].startswith("10 negative reference documents cannot resolve a target of 0.01")


def test_group_report_leave_one_group_out_and_per_group() -> None:
    # two registers of neutral documents: "tech" scores low, "prose" high, and 10 positives
    tech = np.linspace(0.0, 0.2, 100)
    prose = np.linspace(0.1, 0.6, 50)
    s = np.r_[tech, prose, np.full(10, 0.9)]
    y = np.r_[np.zeros(150, bool), np.ones(10, bool)]
    g = np.asarray(["tech"] * 100 + ["prose"] * 50 + ["pos"] * 10, dtype=object)
    r = pick_threshold(s, y, fpr=0.02, share=None, groups=g)
    rep = r["group_report"]
    assert set(rep["groups"]) == {"tech", "prose"}  # an FPR counts negatives only
    assert rep["groups"]["tech"]["documents"] == 100 and rep["groups"]["prose"]["documents"] == 50
    # pooled: 3 of 150 negatives flagged, all from prose
    assert (s[~y] >= r["threshold"]).sum() == 3 and rep["groups"]["tech"]["rate"] == 0.0
    assert rep["groups"]["prose"]["rate"] == 3 / 50
    # chosen on tech alone (2 of 100 above it), the threshold flags most of prose
    t_tech = rep["groups"]["prose"]["threshold_without_it"]
    assert (tech >= t_tech).sum() == 2
    assert rep["groups"]["prose"]["rate_at_threshold_without_it"] == (prose >= t_tech).mean() > 0.6
    assert rep["groups"]["tech"]["rate_at_threshold_without_it"] == 0.0  # prose's threshold is above
    assert rep["worst_left_out"] == "prose" and rep["transfers"] is False
    assert rep["groups"]["prose"]["too_small"] is False  # 50 * 0.02 = 1 document
    # per group: the target holds in every group (prose's own threshold is the binding one)
    pg = pick_threshold(s, y, fpr=0.02, share=None, groups=g, per_group=True)
    for name, row in pg["group_report"]["groups"].items():
        assert row["rate"] <= 0.02, name
    assert (prose >= pg["threshold"]).sum() == 1 and pg["threshold"] > r["threshold"]
    # ... and its leave-one-group-out check uses that rule on the other groups, not the pooled one:
    # with a third register left out, prose's own 2% threshold is the binding one of the other two
    mid = np.linspace(0.3, 0.65, 50)
    s3, g3 = np.r_[tech, prose, mid], np.asarray(["tech"] * 100 + ["prose"] * 50 + ["mid"] * 50, dtype=object)
    pooled3 = pick_threshold(s3, None, fpr=0.02, share=None, groups=g3)["group_report"]
    each3 = pick_threshold(s3, None, fpr=0.02, share=None, groups=g3, per_group=True)["group_report"]
    assert pooled3["rule"] == "pooled" and each3["rule"] == "in every group"
    t_each = each3["groups"]["mid"]["threshold_without_it"]  # 2% in tech and in prose: prose's
    assert t_each == max(threshold_for_fpr(tech, 0.02), threshold_for_fpr(prose, 0.02))
    assert pooled3["groups"]["mid"]["threshold_without_it"] == threshold_for_fpr(np.r_[tech, prose], 0.02)
    assert t_each > pooled3["groups"]["mid"]["threshold_without_it"]
    assert each3["groups"]["mid"]["rate_at_threshold_without_it"] == (mid >= t_each).mean()
    assert (
        each3["groups"]["mid"]["rate_at_threshold_without_it"]
        < pooled3["groups"]["mid"]["rate_at_threshold_without_it"]
    )
    # a share target counts every row, positives included
    sh = pick_threshold(s, y, fpr=None, share=0.1, groups=g)
    assert set(sh["group_report"]["groups"]) == {"tech", "prose", "pos"}
    assert sh["group_report"]["rate"] == "share"
    # registers scored alike transfer
    same = np.r_[tech, tech[::2]]
    gs = np.asarray([1] * 100 + [2] * 50)  # numbers name groups too
    alike = pick_threshold(same, None, fpr=0.02, share=None, groups=gs)["group_report"]
    assert alike["transfers"] and set(alike["groups"]) == {"1", "2"}
    with pytest.raises(CorpusfilterError, match="--group-column"):
        pick_threshold(s, y, fpr=0.02, share=None, per_group=True)


RECIPE = """\
# my recipe: comments must survive calibration
input: corpus
output: out
blocks:
  - fasttext: {{name: good, model: {model}}}
  # drop the goodness-dense ones
  - drop: {{where: "good_good >= 0.5", reason: good}}  # threshold set by calibrate
"""


def test_calibrate_cli_model_and_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("fasttext")
    from corpusfilter.cli import main
    from corpusfilter.train import parse_config, train

    root = write_data(tmp_path / "data")
    res = train(parse_config(config()), root=root, out_dir=tmp_path / "m", write_card=False)
    texts = [" ".join(sentences(MORAL, 3, 3000 + i)) for i in range(10)] + [
        " ".join(sentences(TECH, 3, 4000 + i)) for i in range(90)
    ]
    ref = tmp_path / "ref.parquet"
    pq.write_table(pa.table({"text": texts}), ref)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(model=res.model))
    (tmp_path / "corpus").mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": ["x"]}), tmp_path / "corpus" / "a.parquet")
    out = tmp_path / "r.cal.yaml"
    assert main(["calibrate", str(res.model), "--reference", str(ref), "--target-share", "0.1",
                 "--recipe", str(recipe), "--block", "1", "--write", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "good_good >= " in printed and "flagged_share 0.1" in printed
    text = out.read_text()
    assert "# drop the goodness-dense ones" in text and "# threshold set by calibrate" in text
    # in another folder, the recipe's relative paths (input: corpus) would name other files
    (tmp_path / "elsewhere").mkdir()
    moved = tmp_path / "elsewhere" / "r.cal.yaml"
    assert main(["calibrate", str(res.model), "--reference", str(ref), "--target-share", "0.1",
                 "--recipe", str(recipe), "--block", "1", "--write", str(moved)]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert f"{moved}: not written: in another folder the copy's relative paths name other files" in err
    assert f"input.path: {tmp_path / 'corpus'} -> {tmp_path / 'elsewhere' / 'corpus'}" in err
    assert not moved.exists() and not list((tmp_path / "elsewhere").iterdir())
    where = yaml.safe_load(text)["blocks"][1]["drop"]["where"]
    thr = float(where.split(">=")[1])
    from corpusfilter.evaluate import load_sidecar, score_texts

    side, model = load_sidecar(res.model)
    scores = score_texts(side, model, texts)
    assert (scores >= thr).sum() <= 10
    # the recipe route (detectors run from the recipe) gives the same threshold
    assert (
        main(["calibrate", str(recipe), "--reference", str(ref), "--target-share", "0.1", "--block", "1"])
        == 0
    )
    assert f">= {thr!r}" in capsys.readouterr().out
    assert (
        main(["calibrate", str(recipe), "--reference", str(ref), "--target-fpr", "0.1", "--block", "0"]) == 1
    )
    assert "no `where`" in capsys.readouterr().err
    # labelled reference rows: the model's positive label is the data's (as in eval), not only "1"
    pq.write_table(pa.table({"text": texts, "label": ["good"] * 10 + ["other"] * 90}), ref)
    assert main(["calibrate", str(res.model), "--reference", str(ref), "--target-fpr", "0.1"]) == 0
    out_text = capsys.readouterr()
    assert "positive 'good' 10; negative 'other' 90" in out_text.err and "recall" in out_text.out
    assert "(FPR <= 0.1 on the 90 negative of 100 reference documents)" in out_text.out
    fpr = float(out_text.out.split("fpr ")[1].split(",")[0])
    thr = float(out_text.out.split(">= ")[1].split()[0])
    assert fpr == pytest.approx(float((scores[10:] >= thr).mean()), abs=1e-4)  # over the 90 negatives
    assert main(["calibrate", str(res.model), "--reference", str(ref), "--target-fpr", "0.1",
                 "--label-column", "lbl"]) == 1  # fmt: skip
    assert "no column 'lbl' (has text, label)" in capsys.readouterr().err
    # a file that is not Parquet: one line naming it
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    assert main(["calibrate", str(res.model), "--reference", str(bad), "--target-fpr", "0.1"]) == 1
    assert "bad.parquet: not a readable Parquet file" in capsys.readouterr().err


def test_calibrate_cli_groups(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--group-column: per-group rates and the leave-one-group-out table, with a real fastText model."""
    pytest.importorskip("fasttext")
    from corpusfilter.cli import main
    from corpusfilter.evaluate import load_sidecar, score_texts
    from corpusfilter.train import parse_config, train

    root = write_data(tmp_path / "data")
    res = train(parse_config(config()), root=root, out_dir=tmp_path / "m", write_card=False)
    texts = [" ".join(sentences(TECH, 3, 5000 + i)) for i in range(60)] + [
        " ".join(sentences(MORAL, 1, 6000 + i) + sentences(TECH, 2, 7000 + i)) for i in range(40)
    ]
    groups = ["docs"] * 60 + ["mixed"] * 40
    ref = tmp_path / "ref.parquet"
    pq.write_table(pa.table({"text": texts, "source": groups}), ref)
    out = tmp_path / "cal.json"
    args = ["calibrate", str(res.model), "--reference", str(ref), "--target-fpr", "0.05"]
    assert main([*args, "--group-column", "source", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "chosen without it" in printed and "leave-one-group-out" in printed
    rep = json.loads(out.read_text())["group_report"]
    side, model = load_sidecar(res.model)
    s = score_texts(side, model, texts)
    t_docs = rep["groups"]["mixed"]["threshold_without_it"]  # chosen on the docs group alone
    assert rep["groups"]["mixed"]["rate_at_threshold_without_it"] == pytest.approx((s[60:] >= t_docs).mean())
    assert (s[:60] >= t_docs).mean() <= 0.05
    assert rep["transfers"] == (max(r["rate_at_threshold_without_it"] for r in rep["groups"].values()) <= 0.1)
    assert main([*args, "--group-column", "source", "--per-group", "--json", str(out)]) == 0
    capsys.readouterr()
    for row in json.loads(out.read_text())["group_report"]["groups"].values():
        assert row["rate"] <= 0.05
    # bad input names the file and the row, no traceback
    assert main([*args, "--group-column", "nope"]) == 1
    assert "no column 'nope'" in capsys.readouterr().err
    pq.write_table(pa.table({"text": texts, "source": [*groups[:7], None, *groups[8:]]}), ref)
    assert main([*args, "--group-column", "source"]) == 1
    err = capsys.readouterr().err
    assert "ref.parquet: row 7: source is null" in err
    assert main([*args, "--per-group"]) == 1
    assert "--per-group needs --group-column" in capsys.readouterr().err
    # a target out of range is refused before the model is loaded or the reference read
    assert (
        main(
            [
                "calibrate",
                str(tmp_path / "no-model"),
                "--reference",
                str(tmp_path / "no-ref.parquet"),
                "--target-share",
                "1.5",
            ]
        )
        == 1
    )
    assert "--target-share 1.5: a share between 0 and 1" in capsys.readouterr().err


def test_write_recipe_changes_one_number_and_says_when_the_operator_changes(tmp_path: Path) -> None:
    from corpusfilter.calibrate import write_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "input: corpus\noutput: out\nblocks:\n  - keywords: {name: m, terms: [kindness]}\n"
        '  - drop: {where: "m_score > 1.5 and m_hits >= 1", reason: m}  # keep me\n'
    )
    out = tmp_path / "r.cal.yaml"
    note = write_recipe(recipe, 1, "m_score", 2.25, out)
    assert "m_score > a number; the copy uses >=" in note
    text = out.read_text()
    assert '"m_score >= 2.25 and m_hits >= 1"' in text and "# keep me" in text
    assert write_recipe(out, 1, "m_score", 3.0, tmp_path / "again.yaml") == ""  # already >=
    # an existing file, the recipe itself included, is replaced only with overwrite
    before = recipe.read_text()
    with pytest.raises(CorpusfilterError, match=r"r\.yaml: exists; pass --overwrite"):
        write_recipe(recipe, 1, "m_score", 9.0, recipe)
    assert recipe.read_text() == before
    assert "was the recipe itself: replaced" in write_recipe(
        recipe, 1, "m_score", 9.0, recipe, overwrite=True
    )
    assert '"m_score >= 9.0 and m_hits >= 1"' in recipe.read_text() and "# keep me" in recipe.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "again.yaml",
        "r.cal.yaml",
        "r.yaml",
    ]  # no temp left


def test_write_recipe_leaves_out_untouched_when_the_copy_is_invalid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy that does not load as a recipe is never written: ``out`` keeps its content and no
    temporary file is left. (Only the threshold changes, so a real recipe cannot produce an
    invalid copy; the loader is made to refuse every file but the source to reach the branch.)"""
    import corpusfilter.recipe as recipe_mod
    from corpusfilter.calibrate import write_recipe
    from corpusfilter.errors import RecipeError

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "input: corpus\noutput: out\nblocks:\n  - keywords: {name: m, terms: [kindness]}\n"
        '  - drop: {where: "m_score >= 1.5", reason: m}\n'
    )
    real = recipe_mod.load_recipe

    def refuse_copies(path: Path) -> object:
        if Path(path) != recipe:
            raise RecipeError("blocks[1]: broken")
        return real(path)

    monkeypatch.setattr(recipe_mod, "load_recipe", refuse_copies)
    out = tmp_path / "out.yaml"
    out.write_text("old\n")
    with pytest.raises(
        CorpusfilterError, match=r"out\.yaml: not written, the copy would not be a valid recipe"
    ):
        write_recipe(recipe, 1, "m_score", 2.0, out, overwrite=True)
    assert out.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.yaml", "r.yaml"]
    with pytest.raises(CorpusfilterError, match="not a finite number"):
        write_recipe(recipe, 1, "m_score", float("nan"), tmp_path / "n.yaml")


def test_rounded_threshold_keeps_every_row_and_shortfalls_are_said() -> None:
    # the shorter threshold flags the same rows, positives too (it had lost three of ten)
    neg = [0.01, 0.02, 0.05, 0.08, 0.1, 0.11, 0.12, 0.13, 0.3, 0.9]
    pos = [0.131, 0.132, 0.135, 0.5, 0.6, 0.7, 0.8, 0.95, 0.97, 0.99]
    s, y = np.r_[neg, pos], np.r_[np.zeros(10, bool), np.ones(10, bool)]
    r = pick_threshold(s, y, fpr=0.2, share=None)
    assert r["fpr"] == 0.2 and r["recall"] == 1.0 and 0.13 < r["threshold"] <= 0.131
    # a cascade scored 2 of 10 rows (the rest -inf): "flag 50%" flags both and says why it is short
    casc = np.r_[[0.7, 0.2], np.full(8, -np.inf)]
    r = pick_threshold(casc, None, fpr=None, share=0.5)
    assert r["threshold"] == 0.2 and r["flagged_share"] == 0.2
    assert r["warning"].startswith(
        "only 2 of 10 reference documents can be flagged (a cascade's `when` skips the rest"
    )
    # ties: ten equal scores are all flagged or none; "the most moral 5%" flags none, and says so
    tied = np.r_[np.full(10, 3.0), np.zeros(90)]
    r = pick_threshold(tied, None, fpr=None, share=0.05)
    assert r["flagged_share"] == 0.0
    assert r["warning"] == (
        "ties: 10 reference documents share the next score (3); the threshold flags 0.0000 "
        "(target 0.05), and including them would flag 0.1000"
    )
    assert "warning" not in pick_threshold(tied, None, fpr=None, share=0.1)


def test_calibrate_write_sets_one_comparison_and_reads_the_recipes_positive_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("fasttext")
    from corpusfilter.cli import main
    from corpusfilter.train import parse_config, train

    res = train(
        parse_config(config()), root=write_data(tmp_path / "data"), out_dir=tmp_path / "m", write_card=False
    )
    texts = [" ".join(sentences(MORAL, 3, 3000 + i)) for i in range(10)] + [
        " ".join(sentences(TECH, 3, 4000 + i)) for i in range(40)
    ]
    ref = tmp_path / "ref.parquet"
    pq.write_table(pa.table({"text": texts, "label": ["good"] * 10 + ["other"] * 40}), ref)
    (tmp_path / "corpus").mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": ["x"]}), tmp_path / "corpus" / "a.parquet")
    renamed = tmp_path / "r2.yaml"  # the detector is named myft: the condition compares myft_good
    renamed.write_text(
        RECIPE.format(model=res.model).replace("name: good", "name: myft").replace("good_good", "myft_good")
    )
    out = tmp_path / "r2.cal.yaml"
    argv = ["calibrate", str(res.model), "--reference", str(ref), "--target-share", "0.2", "--recipe", str(renamed),
            "--block", "1", "--write", str(out)]  # fmt: skip
    assert main(argv) == 1  # it had written an unchanged copy and said it set good_good
    err = capsys.readouterr().err
    assert (
        "has no `good_good >= number` comparison; --write sets exactly one (name the compared column" in err
    )
    assert not out.exists()
    assert main([*argv, "--column", "myft_good"]) == 0
    assert "myft_good >= " in yaml.safe_load(out.read_text())["blocks"][1]["drop"]["where"]
    # a share chosen on the model alone says it is not the share the recipe's block removes
    assert f"calibrate the recipe: corpusfilter calibrate {renamed} --block 1" in capsys.readouterr().err
    twice = tmp_path / "r3.yaml"  # two comparisons of the column: which one is meant?
    twice.write_text(
        RECIPE.format(model=res.model).replace('"good_good >= 0.5"', '"good_good >= 0.3 OR good_good >= 0.9"')
    )
    assert (
        main([*argv[:6], "--recipe", str(twice), "--block", "1", "--write", str(tmp_path / "r3.cal.yaml")])
        == 1
    )
    assert "has 2 `good_good >= number` comparisons; --write sets exactly one" in capsys.readouterr().err
    # a labelled reference: the recipe route takes the compared column's label (good) as positive,
    # as the model route takes the model's, so both give one threshold over the 40 negatives
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(model=res.model))
    thresholds = []
    for first in ([str(res.model)], [str(recipe), "--block", "1"]):
        assert main(["calibrate", *first, "--reference", str(ref), "--target-fpr", "0.1"]) == 0
        got = capsys.readouterr()
        assert "positive 'good' 10; negative 'other' 40" in got.err
        assert "on the 40 negative of 50 reference documents" in got.out
        thresholds.append(got.out.split(">= ")[1].split()[0])
    assert thresholds[0] == thresholds[1]
    # labels none of which the column names (a register, or another name for the class): every row
    # counts as a negative, with a warning naming --positive; a share ignores labels
    pq.write_table(pa.table({"text": texts, "label": ["kind"] * 10 + ["other"] * 40}), ref)
    argv = ["calibrate", str(recipe), "--block", "1", "--reference", str(ref)]
    assert main([*argv, "--target-fpr", "0.1"]) == 0
    err = capsys.readouterr().err
    assert (
        "warning: 'label' holds 2 labels and none is the positive label named by column 'good_good' (nor true / 1): every row "
        in err
    )
    assert main([*argv, "--target-share", "0.1"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["calibrate", str(recipe), "--block", "1", "--reference", str(ref), "--target-fpr", "0.1",
                 "--positive", "kind"]) == 0  # fmt: skip


def _kindness_recipe(tmp_path: Path, corpus: Path, *decisions: dict) -> Path:
    """r.yaml: a `moral` keyword detector (the term kindness), then ``decisions``."""
    recipe = tmp_path / "r.yaml"
    blocks = [{"keywords": {"name": "moral", "terms": ["kindness"]}}, *decisions]
    recipe.write_text(
        yaml.safe_dump({"input": str(corpus), "output": str(tmp_path / "out"), "blocks": blocks})
    )
    return recipe


def test_a_share_target_on_a_recipe_block_is_what_the_block_removes_in_the_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The threshold had been chosen on the compared column over every reference row, ignoring the
    blocks before (which remove some of those rows) and the condition's other terms: "5% removed"
    removed 2.5%. The share printed is now what a run of the written recipe removes by that block."""
    from corpusfilter.cli import main
    from corpusfilter.recipe import load_recipe
    from corpusfilter.runner import run

    texts = [" ".join(["kindness"] * (i % 6) + ["word"] * (3 + i % 7)) for i in range(120)]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sources = ["a", "a", "b"] * 40  # an input column the recipe's conditions read
    pq.write_table(
        pa.table({"id": [f"d{i}" for i in range(120)], "text": texts, "source": sources}),
        corpus / "a.parquet",
    )
    recipe = _kindness_recipe(
        tmp_path,
        corpus,
        {"drop": {"where": "moral_hits >= 4 OR source = 'b'", "reason": "dense"}},
        {"drop": {"where": "moral_hits >= 1 AND moral_per_1k_words >= 150", "reason": "moral"}},
    )
    out = tmp_path / "r.cal.yaml"
    args = ["calibrate", str(recipe), "--reference", str(corpus / "a.parquet"), "--block", "2"]
    assert main([*args, "--column", "moral_hits", "--target-share", "0.2", "--write", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "(share removed by block 2, after the blocks before it, <= 0.2 on 120 reference documents)" in printed
    )
    share = float(printed.split("flagged_share ")[1].split(",")[0].split()[0])
    res = run(load_recipe(out), progress=False)
    removed = res.accounting["rejected"].get("moral", 0) / res.accounting["read"]
    assert share == pytest.approx(removed, abs=1e-4) and 0 < removed <= 0.2
    # on the column alone (the old way) the same threshold flags more than the block removes
    thr = float(yaml.safe_load(out.read_text())["blocks"][2]["drop"]["where"].split(">=")[1].split()[0])
    assert np.mean([t.split().count("kindness") >= thr for t in texts]) > removed


def test_a_share_target_on_a_tag_after_a_drop_counts_the_rows_the_run_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tag labels the rows an earlier drop removed too (where they carry its columns), so "tag the
    top 20%" had printed 20% of the rows reaching the tag and labelled far more in the run."""
    from corpusfilter.cli import main
    from corpusfilter.recipe import load_recipe
    from corpusfilter.runner import run

    texts = [" ".join(["kindness"] * (i % 6) + ["word"] * (3 + i % 7)) for i in range(120)]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(120)], "text": texts}), corpus / "a.parquet")
    recipe = _kindness_recipe(
        tmp_path,
        corpus,
        {"drop": {"where": "moral_hits >= 4", "reason": "dense"}},  # a third of the rows, all tagged
        {"tag": {"where": "moral_hits >= 1", "label": "kind"}},
    )
    out = tmp_path / "r.cal.yaml"
    args = ["calibrate", str(recipe), "--reference", str(corpus / "a.parquet"), "--block", "2"]
    assert main([*args, "--target-share", "0.5", "--write", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(share tagged by block 2, the rows earlier blocks removed included, <= 0.5" in printed
    share = float(printed.split("flagged_share ")[1].split(",")[0].split()[0])
    res = run(load_recipe(out), progress=False)
    frames = [pl.read_parquet(res.output + f"/{k}/*.parquet") for k in ("data", "rejected")]
    labelled = sum(int(f["labels"].list.contains("kind").sum()) for f in frames if "labels" in f.columns)
    assert share == pytest.approx(labelled / 120, abs=1e-9) and 0.3 < labelled / 120 <= 0.5


def test_calibrating_a_recipe_block_refuses_what_it_cannot_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Since the threshold acts as block N does, its condition is evaluated: a column the reference
    lacks had been a KeyError traceback, a NOT around the comparison a threshold of inf flagging
    everything; and rows the condition's other terms leave out were called unscored by a cascade."""
    from corpusfilter.cli import main

    texts = [" ".join(["kindness"] * (i % 5) + ["word"] * 5) for i in range(40)]
    ref = tmp_path / "ref.parquet"
    pq.write_table(pa.table({"text": texts}), ref)

    def calibrate(where: str, *extra: str) -> int:
        recipe = _kindness_recipe(tmp_path, tmp_path, {"drop": {"where": where, "reason": "moral"}})
        args = ["calibrate", str(recipe), "--reference", str(ref), "--block", "1", "--target-share", "0.3"]
        return main([*args, *extra])

    assert calibrate("moral_hits >= 3 AND source = 'fable'") == 1
    err = capsys.readouterr().err
    assert "unknown column 'source'" in err and "the reference must carry the input columns" in err
    assert "Traceback" not in err and "_cf_reference_row" not in err
    assert calibrate("NOT (moral_hits >= 3)") == 1
    assert "matches fewer rows as moral_hits's threshold falls (a NOT" in capsys.readouterr().err
    # a `<` comparison (a keep's natural form) is named as such, not as "no column compared"
    assert calibrate("moral_hits < 3") == 1
    err = capsys.readouterr().err
    assert "compares moral_hits with `<`; calibrate sets the threshold of a `column >= number`" in err
    recipe = _kindness_recipe(tmp_path, tmp_path, {"keep": {"where": "moral_hits < 3", "reason": "moral"}})
    args = ["calibrate", str(recipe), "--reference", str(ref), "--block", "1", "--target-share", "0.3"]
    assert main([*args, "--column", "moral_hits"]) == 1
    assert 'keeps what `drop: {where: "moral_hits >= t"}` keeps' in capsys.readouterr().err
    # a band sets its lower edge, as before the `<` check (the check had refused it)
    assert calibrate("moral_hits >= 1 AND moral_hits < 4", "--column", "moral_hits") == 0
    assert calibrate("moral_hits >= 1 AND moral_hits < 4") == 0
    capsys.readouterr()
    assert (
        calibrate("moral_hits >= 3 AND moral_per_1k_words > 500", "--column", "moral_hits") == 0
    )  # none pass
    captured = capsys.readouterr()
    assert (
        "only 0 of 40 reference documents can be flagged (the rest an earlier block removes" in captured.err
    )
