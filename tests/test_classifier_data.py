"""classifiers/data: the original training documents keep the schema and fixed test split that the
detector configs and classifiers/data/README.md rely on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "classifiers" / "data"
FILES = sorted(DATA.glob("*.jsonl"))
VIRTUES = {
    "care", "fairness", "honesty", "courage", "generosity", "patience", "humility", "loyalty",
    "gratitude", "responsibility",
}  # fmt: skip
BASE = ["id", "text", "label", "kind"]


def test_every_data_file_is_listed_in_the_readme() -> None:
    readme = (DATA / "README.md").read_text()
    assert FILES and all(f"`{f.name}`" in readme for f in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_rows_follow_the_documented_schema(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids), "duplicate ids"
    texts = [r["text"] for r in rows]
    assert len(set(texts)) == len(texts), "duplicate texts"
    moral = "virtue" in rows[0]
    for r in rows:
        where = f"{path.name}: {r['id']}"
        assert list(r)[:4] == BASE and r["license"] == "CC0-1.0", where
        assert r["label"] in (0, 1) and r["text"].strip(), where
        # the fixed test split (ids ending in a number divisible by 5) needs a numeric suffix
        kind = r["kind"].replace("_", "-")
        assert re.fullmatch(rf"[a-z]+-{re.escape(kind)}-\d{{4}}", r["id"]), where
        if moral:  # goodness data: a virtue exactly on the label-1 rows
            assert (r["virtue"] in VIRTUES) if r["label"] == 1 else r["virtue"] is None, where
            assert r["explicit_moral"] in ((True, False) if r["label"] == 1 else (False,)), where


#: evaluation-only sets (scored as hard cases by scripts/eval_detectors.py): no detector trains on them
HELD_OUT = ("technical_docs.jsonl", "textbooks.jsonl", "young_readers.jsonl")


def test_held_out_sets_are_in_no_training_config() -> None:
    from corpusfilter.train import load_config

    configs = sorted(DATA.parent.glob("*/train.yaml"))
    assert configs
    for path in configs:
        used = {Path(s.path).name for s in load_config(path).sources}
        assert not used & set(HELD_OUT), f"{path} trains on a held-out set"
    assert all((DATA / f).is_file() for f in HELD_OUT)
