"""corpusfilter eval: metrics by hand on small arrays, and a real trained model scored through its detector."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpusfilter.errors import RecipeError
from corpusfilter.evaluate import (
    auroc,
    binary_metrics,
    calibration,
    format_metrics,
    load_sidecar,
    per_group_metrics,
    score_texts,
    short_threshold,
    threshold_for_fpr,
    threshold_for_recall,
)
from tests.test_train import MORAL, TECH, config, sentences, write_data


def test_auroc_with_ties_and_thresholds() -> None:
    y = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    s = np.array([0.9, 0.5, 0.5, 0.1, 0.8, 0.3])
    # pairs (pos, neg): 9 in all; 0.5 vs 0.5 is a tie (half), every other pair is ordered right
    assert auroc(y, s) == pytest.approx(8.5 / 9)
    assert auroc(np.array([True, False]), np.array([0.2, 0.8])) == 0.0
    neg = np.arange(100) / 100  # 0.00 .. 0.99
    t = threshold_for_fpr(neg, 0.05)
    assert (neg >= t).sum() == 5 and (neg >= np.nextafter(t, -1)).sum() == 6
    assert threshold_for_recall(np.array([0.9, 0.8, 0.7, 0.6]), 0.75) == 0.7
    ece, table = calibration(np.array([1, 0, 1, 0], dtype=bool), np.array([0.95, 0.05, 0.95, 0.05]))
    assert ece == pytest.approx(0.05) and [r["n"] for r in table] == [2, 2]


def test_metrics_at_targets() -> None:
    y = np.array([1] * 10 + [0] * 10, dtype=bool)
    s = np.r_[np.linspace(0.55, 1.0, 10), np.linspace(0.0, 0.6, 10)]
    m = binary_metrics(y, s, target_fpr=0.1, target_recall=1.0)
    assert m["at_target_fpr"]["fpr"] <= 0.1 and m["at_target_recall"]["recall"] == 1.0
    assert m["precision"] == pytest.approx(10 / 12)  # negatives 0.533 and 0.6 pass 0.5 and m["recall"] == 1.0


def test_chosen_thresholds_give_the_rates_printed_beside_them() -> None:
    """A threshold as reported (JSON) and as printed, applied to the scores, gives the reported rates:
    it flags the same rows as the exact one (rounding it had moved it past a score)."""
    neg = np.array([0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02, 0.01])
    pos = np.array([0.12345678, 0.6, 0.7, 0.8])
    y, s = np.r_[np.zeros(10, bool), np.ones(4, bool)], np.r_[neg, pos]
    rng = np.random.default_rng(0)  # and scores crowded within 1e-7 of each other
    y2 = rng.random(400) < 0.3
    s2 = 0.3 + rng.random(400) * 1e-7 + y2 * 2e-8
    for yy, ss in ((y, s), (y2, s2)):
        for kw in ({"target_fpr": 0.1}, {"target_recall": 1.0}, {"target_recall": 0.9}, {"target_fpr": 0.0}):
            key = f"at_{next(iter(kw))}"
            m = binary_metrics(yy, ss, **kw)
            got = m[key]
            exact = (threshold_for_fpr(ss[~yy], kw["target_fpr"]) if "target_fpr" in kw
                     else threshold_for_recall(ss[yy], kw["target_recall"]))  # fmt: skip
            assert np.array_equal(ss >= got["threshold"], ss >= exact)  # the same operating point
            printed = next(
                ln for ln in format_metrics(m).splitlines() if ln.startswith(("FPR <=", "recall >="))
            )
            t = float(printed.split()[3])
            assert t == got["threshold"]
            assert float((ss[yy] >= t).mean()) == pytest.approx(got["recall"], abs=1e-6)
            assert float((ss[~yy] >= t).mean()) == pytest.approx(got["fpr"], abs=1e-6)
    m = binary_metrics(y, s, target_fpr=0.1, target_recall=1.0)
    assert m["at_target_fpr"]["threshold"] == 0.5 and m["at_target_recall"]["threshold"] == 0.11


def test_short_threshold_keeps_the_rows() -> None:
    s = np.array([0.1, 0.123456, 0.2, -np.inf])
    assert short_threshold(0.123456, s) == 0.11  # the shortest decimal above 0.1 flagging the same
    assert short_threshold(float(np.nextafter(-np.inf, 1)), s) == 0.1  # every scored row: no overflow
    assert short_threshold(float(np.nextafter(0.2, 1)), s) == 0.21  # none flagged
    assert np.isnan(short_threshold(float("nan"), s))


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real fastText detector trained on the tiny moral/technical data (folder with its sidecar)."""
    pytest.importorskip("fasttext")
    from corpusfilter.train import parse_config, train

    tmp = tmp_path_factory.mktemp("eval")
    train(parse_config(config()), root=write_data(tmp / "data"), out_dir=tmp / "m", write_card=False)
    return tmp / "m"


def _moral_then_tech(n: int, k: int, seed: int) -> list[str]:
    """``n`` moral then ``n`` technical documents of ``k`` sentences (seeds from ``seed``)."""
    return [" ".join(sentences(MORAL, k, seed + i)) for i in range(n)] + [
        " ".join(sentences(TECH, k, seed + 1000 + i)) for i in range(n)
    ]


def test_eval_cli_scores_through_the_detector(
    trained_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from corpusfilter.cli import main

    texts = _moral_then_tech(30, 6, 1000)
    data = tmp_path / "eval.parquet"
    pq.write_table(pa.table({"doc": texts, "is_good": [True] * 30 + [False] * 30}), data)
    side, model = load_sidecar(trained_dir)
    scores = score_texts(side, model, texts)
    import fasttext

    ft = fasttext.load_model(str(model))  # the model's own predict agrees with the detector's score
    labels, probs = ft.predict(texts[0], k=-1)
    assert scores[0] == pytest.approx(dict(zip(labels, probs))["__label__good"], abs=1e-5)
    out = tmp_path / "m.json"
    png = tmp_path / "pr.png"
    argv = ["eval", str(model), "--data", str(data), "--text-column", "doc", "--label-column", "is_good"]
    assert main([*argv, "--target-fpr", "0.05", "--json", str(out), "--plot", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "AUROC" in printed and "FPR <= 0.05" in printed and "reliability" in printed
    m = json.loads(out.read_text())
    assert m["auroc"] > 0.95 and m["documents"] == 60 and m["at_target_fpr"]["fpr"] <= 0.05
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["eval", str(model), "--data", str(data)]) == 1  # default columns are missing
    assert "text" in capsys.readouterr().err


def test_per_group_metrics_by_hand() -> None:
    y = np.array([1, 1, 0, 0, 1, 0, 0, 0], dtype=bool)
    s = np.array([0.9, 0.4, 0.6, 0.1, 0.8, 0.2, 0.7, 0.3])
    g = np.array(["a", "a", "a", "a", "b", "b", "c", "c"])
    m = per_group_metrics(y, s, g, {"threshold": 0.5})
    assert m["a"] == {"documents": 4, "positives": 2, "negatives": 2, "auroc": 0.75,
                      "threshold": {"recall": 0.5, "fpr": 0.5}}  # fmt: skip
    assert m["b"]["auroc"] == 1.0 and m["b"]["threshold"] == {"recall": 1.0, "fpr": 0.0}
    assert m["c"]["auroc"] is None and m["c"]["threshold"] == {"recall": None, "fpr": 0.5}


def test_eval_cli_per_group(trained_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--group-column: per-source recall and FPR from a real fastText model, through the CLI."""
    from corpusfilter.cli import main

    texts = [" ".join(sentences(MORAL, 6, 1000 + i)) for i in range(20)] + [
        " ".join(sentences(TECH, 6, 2000 + i)) for i in range(20)
    ]
    src = ["essays"] * 10 + ["stories"] * 10 + ["docs"] * 12 + ["stories"] * 8
    data = tmp_path / "eval.parquet"
    pq.write_table(pa.table({"text": texts, "label": [1] * 20 + [0] * 20, "src": src}), data)
    out = tmp_path / "m.json"
    argv = ["eval", str(trained_dir), "--data", str(data), "--target-fpr", "0.1"]
    assert main([*argv, "--group-column", "src", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "per group:" in printed and "target_fpr recall" in printed
    m = json.loads(out.read_text())
    side, model = load_sidecar(trained_dir)
    s = score_texts(side, model, texts)
    st = m["per_group"]["stories"]
    assert (st["documents"], st["positives"], st["negatives"]) == (18, 10, 8)
    assert st["threshold"]["recall"] == pytest.approx((s[10:20] >= 0.5).mean(), abs=1e-6)
    assert st["threshold"]["fpr"] == pytest.approx((s[32:] >= 0.5).mean(), abs=1e-6)
    t = threshold_for_fpr(s[20:], 0.1)
    assert m["per_group"]["docs"]["target_fpr"]["fpr"] == pytest.approx((s[20:32] >= t).mean(), abs=1e-6)
    assert (
        m["per_group"]["essays"]["auroc"] is None and m["per_group"]["docs"]["target_fpr"]["recall"] is None
    )
    pq.write_table(pa.table({"text": texts, "label": [1] * 20 + [0] * 20, "src": [None, *src[1:]]}), data)
    assert main([*argv, "--group-column", "src"]) == 1
    assert "eval.parquet: row 0: src is null" in capsys.readouterr().err


def test_eval_names_null_labels_unexpected_labels_and_classes_the_model_lacks(
    trained_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from corpusfilter.cli import main

    texts = _moral_then_tech(6, 4, 500)
    data = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": texts, "label": ["good", None] + ["good"] * 4 + ["other"] * 6}), data)
    assert main(["eval", str(trained_dir), "--data", str(data)]) == 1
    assert "d.parquet: row 1: null label in column 'label'" in capsys.readouterr().err
    pq.write_table(pa.table({"text": texts, "label": [1.0, float("nan")] + [1.0] * 4 + [0.0] * 6}), data)
    assert main(["eval", str(trained_dir), "--data", str(data)]) == 1  # NaN is no class either
    assert "d.parquet: row 1: NaN label in column 'label'" in capsys.readouterr().err
    pq.write_table(pa.table({"text": texts, "label": ["good"] * 6 + ["other"] * 5 + ["weird"]}), data)
    assert main(["eval", str(trained_dir), "--data", str(data)]) == 0  # counted, and said
    assert "labels in 'label': positive 'good' 6; negative 'other' 5, 'weird' 1" in capsys.readouterr().err
    pq.write_table(pa.table({"text": texts, "label": [1] * 6 + [0] * 6}), data)
    assert main(["eval", str(trained_dir), "--data", str(data)]) == 0  # 1 is positive for any model
    assert main(["eval", str(trained_dir), "--data", str(data), "--positive", "1"]) == 1
    err = capsys.readouterr().err
    assert (
        "the model has no class '1' (it writes good_" in err
        and "good_other" in err
        and "Traceback" not in err
    )
    assert main(["eval", str(data), "--data", str(data)]) == 1
    assert "d.parquet: not a model file" in capsys.readouterr().err
    assert main(["eval", str(trained_dir), "--data", str(data), "--label-column", "lbl"]) == 1
    assert "d.parquet: no column 'lbl' (has text, label)" in capsys.readouterr().err


def test_eval_and_calibrate_refuse_bad_text_and_out_of_range_options(
    trained_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Invalid UTF-8 and empty text are errors naming their row (not a traceback); shares outside [0, 1] are refused;
    the operating-point row names the threshold asked for; an empty reference says it is empty."""
    from corpusfilter.cli import main

    texts = _moral_then_tech(6, 4, 700)
    raw = pa.array(
        [t.encode() for t in texts[:1]] + [b"bad \xff\xfe bytes"] + [t.encode() for t in texts[2:]]
    )
    data = tmp_path / "u.parquet"
    pq.write_table(pa.table({"text": raw.view(pa.string()), "label": [1] * 6 + [0] * 6}), data)
    assert main(["eval", str(trained_dir), "--data", str(data)]) == 1
    assert "u.parquet: row 1: text is not valid UTF-8" in capsys.readouterr().err
    assert main(["calibrate", str(trained_dir), "--reference", str(data), "--target-fpr", "0.1"]) == 1
    assert "u.parquet: row 1: text is not valid UTF-8" in capsys.readouterr().err
    # empty text has no score in a run (it is unreadable there), so it is not scored here either
    pq.write_table(pa.table({"text": [*texts[:3], "", *texts[4:]], "label": [1] * 6 + [0] * 6}), data)
    for cmd in (
        ["eval", str(trained_dir), "--data"],
        ["calibrate", str(trained_dir), "--target-fpr", "0.1", "--reference"],
    ):
        assert main([*cmd, str(data)]) == 1
        assert (
            "u.parquet: row 3: text is empty (a run sets empty text aside unscored" in capsys.readouterr().err
        )
    pq.write_table(pa.table({"text": texts, "label": [1] * 6 + [0] * 6}), data)
    for opt, value in (
        ("--target-fpr", "1.5"),
        ("--target-recall", "-1"),
        ("--threshold", "nan"),
        ("--threshold", "7"),
    ):
        assert main(["eval", str(trained_dir), "--data", str(data), opt, value]) == 1
        assert f"{opt} {float(value)}: a share between 0 and 1" in capsys.readouterr().err
    assert main(["eval", str(trained_dir), "--data", str(data), "--threshold", "0.3"]) == 0
    assert "threshold 0.3 " in capsys.readouterr().out
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    assert (
        main(
            [
                "calibrate",
                str(trained_dir),
                "--reference",
                str(tmp_path / "empty.parquet"),
                "--target-share",
                "0.1",
            ]
        )
        == 1
    )
    assert "empty.parquet: 0 rows: nothing to calibrate on" in capsys.readouterr().err


def test_files_that_are_not_models_are_clear_errors(tmp_path: Path) -> None:
    from corpusfilter.blocks.embedding import Head

    (tmp_path / "m.bin").write_text("hello")
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(
        RecipeError, match=r"m\.json: not a corpusfilter sidecar \(no name, trainer, positive\)"
    ):
        load_sidecar(tmp_path / "m.bin")
    np.savez(tmp_path / "h.npz", w=np.asarray([{"a": 1}], dtype=object))  # pickled objects: never loaded
    with pytest.raises(RecipeError, match=r"h\.npz: not a head file"):
        Head.load(str(tmp_path / "h.npz"))


def test_missing_sidecar_needs_positive(tmp_path: Path) -> None:
    (tmp_path / "h.npz").write_bytes(b"")
    with pytest.raises(RecipeError, match="sidecar"):
        load_sidecar(tmp_path / "h.npz")
    (tmp_path / "m.bin").write_bytes(b"")
    with pytest.raises(RecipeError, match="--positive"):
        load_sidecar(tmp_path / "m.bin")


def test_label_values_read_labels_as_training_does() -> None:
    """A row is positive when its label, as training reads it (str), is the positive label; true / 1
    stand in only where no row has that label, so a positive of "0" or "2" is never inverted."""
    from corpusfilter.errors import InputError
    from corpusfilter.evaluate import label_values

    def pos(raw: list[object], positive: str) -> list[bool]:
        return label_values(raw, positive, "d.parquet", "label")[0].tolist()

    assert pos([2, 1, 2], "2") == [True, False, True]  # was: 1 positive, 2 negative
    assert pos(["0", "1"], "0") == [True, False]  # was: every row positive
    assert pos([0.0, 1.0], "0") == [True, False]  # a number where no row is "0" itself
    assert pos([1, 1], "2") == [False, False]  # not the convenience: "2" is a number
    assert pos([0, 1], "good") == [False, True]  # a class name the data lacks: 1 is positive
    assert pos([True, False], "good") == [True, False]
    assert pos(["true", "false", "1"], "good") == [True, False, True]
    assert pos([True, False], "True") == [True, False]  # a bool column's label, as trained
    assert pos(["good", "other", "1"], "good") == [True, False, False]
    _, counts = label_values([2, 1, 1], "2", "d.parquet", "label")
    assert counts == "labels in 'label': positive '2' 1; negative '1' 2"
    for raw, what in (([1, ""], "empty"), ([1, " "], "empty"), ([None, 1], "null")):
        with pytest.raises(InputError, match=rf"^d\.parquet: row \d: {what} label in column 'label'$"):
            label_values(raw, "good", "d.parquet", "label")


def test_eval_and_calibrate_count_an_integer_positive_as_train_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model trained on int labels 2 (positive) and 1: eval and calibrate count the 2s as positive
    (they had counted the 1s, and eval reported AUROC 0)."""
    pytest.importorskip("fasttext")
    from corpusfilter.cli import main
    from corpusfilter.train import parse_config, train

    texts = _moral_then_tech(100, 6, 0)
    pq.write_table(pa.table({"text": texts, "label": [2] * 100 + [1] * 100}), tmp_path / "train.parquet")
    source = {"name": "rows", "path": "train.parquet", "label": "x", "label_column": "label"}
    cfg = config(positive="2", sources=[source])
    res = train(parse_config(cfg), root=tmp_path, out_dir=tmp_path / "m", write_card=False)
    data = tmp_path / "eval.parquet"
    pq.write_table(pa.table({"text": _moral_then_tech(30, 6, 5000), "label": [2] * 30 + [1] * 30}), data)
    out = tmp_path / "m.json"
    assert main(["eval", str(res.model), "--data", str(data), "--json", str(out)]) == 0
    assert "labels in 'label': positive '2' 30; negative '1' 30" in capsys.readouterr().err
    assert json.loads(out.read_text())["auroc"] > 0.95
    assert main(["calibrate", str(res.model), "--reference", str(data), "--target-fpr", "0.1"]) == 0
    got = capsys.readouterr()
    assert "labels in 'label': positive '2' 30; negative '1' 30" in got.err
    assert "on the 30 negative of 60 reference documents" in got.out


def test_data_that_names_the_class_otherwise_is_read_with_data_positive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model of `2` on data labelled moral/neutral: --positive names the model's class, so eval
    refused `--positive moral` and calibrate silently counted every row negative."""
    pytest.importorskip("fasttext")
    from corpusfilter.cli import main
    from corpusfilter.train import parse_config, train

    pq.write_table(
        pa.table({"text": _moral_then_tech(100, 6, 0), "label": [2] * 100 + [1] * 100}),
        tmp_path / "t.parquet",
    )
    cfg = config(
        positive="2", sources=[{"name": "rows", "path": "t.parquet", "label": "x", "label_column": "label"}]
    )
    res = train(parse_config(cfg), root=tmp_path, out_dir=tmp_path / "m", write_card=False)
    data = tmp_path / "named.parquet"
    pq.write_table(
        pa.table({"text": _moral_then_tech(30, 6, 5000), "label": ["moral"] * 30 + ["neutral"] * 30}), data
    )
    assert main(["eval", str(res.model), "--data", str(data)]) == 1
    assert "--data-positive names the data's label" in capsys.readouterr().err
    out = tmp_path / "e.json"
    assert (
        main(["eval", str(res.model), "--data", str(data), "--data-positive", "moral", "--json", str(out)])
        == 0
    )
    assert "positive 'moral' 30; negative 'neutral' 30" in capsys.readouterr().err
    assert json.loads(out.read_text())["auroc"] > 0.95
    assert main(["calibrate", str(res.model), "--reference", str(data), "--target-fpr", "0.1"]) == 0
    err = capsys.readouterr().err
    assert (
        "none is the model's '2' (nor true / 1): every row counts as a negative; pass --data-positive" in err
    )
    argv = [
        "calibrate",
        str(res.model),
        "--reference",
        str(data),
        "--target-fpr",
        "0.1",
        "--data-positive",
        "moral",
    ]
    assert main(argv) == 0
    assert "on the 30 negative of 60 reference documents" in capsys.readouterr().out
    # a named label no row has is an error, not true / 1 standing in for it
    for cmd in (
        ["eval", str(res.model), "--data"],
        ["calibrate", str(res.model), "--target-fpr", "0.1", "--reference"],
    ):
        assert main([*cmd, str(data), "--data-positive", "good"]) == 1
        assert (
            "no row of column 'label' has the label 'good' (labels: 'moral', 'neutral')"
            in capsys.readouterr().err
        )
