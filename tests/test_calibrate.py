"""corpusfilter calibrate: thresholds for a target FPR or share, written into a copy of a recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from corpusfilter.calibrate import pick_threshold
from corpusfilter.errors import CorpusfilterError
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
