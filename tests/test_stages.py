"""Score once, decide many: `score` + `decide` gives what `run` gives, without running a model again."""

from pathlib import Path

import polars as pl
import pytest

from corpusfilter.errors import RecipeError
from corpusfilter.recipe import load_recipe
from corpusfilter.runner import run

from .conftest import recipe_dict, write_shards


def _table(folder: Path, sub: str) -> pl.DataFrame:
    return pl.read_parquet(sorted((folder / sub).glob("*.parquet"))).sort("id")


def _recipe(inp: Path, out: Path, threshold: int) -> dict:
    r = recipe_dict(inp, out)
    r["blocks"] = [
        {"keywords": {"name": "ai", "terms": ["ai", "model"]}},
        {
            "keywords": {
                "name": "moral",
                "terms": ["kindness", "compassion", "honesty"],
                "when": "ai_hits = 0",
            }
        },
        {"tag": {"where": "ai_hits >= 1", "label": "ai"}},
        {"drop": {"where": f"moral_hits >= {threshold}", "reason": "moral"}},
    ]
    return r


@pytest.fixture
def docs_in(tmp_path: Path) -> Path:
    docs = [
        (f"d{i}", " ".join(["kindness"] * (i % 4) + ["ai"] * (i % 3 == 0) + [f"w{i}"]), "s")
        for i in range(40)
    ]
    return write_shards(tmp_path / "in", docs, n_shards=3)


def test_decide_equals_run_for_each_threshold(docs_in: Path, tmp_path: Path) -> None:
    scored = run(load_recipe(_recipe(docs_in, tmp_path / "d", 2)), stage="score", progress=False)
    assert scored.output == str(tmp_path / "d.scores")
    assert scored.accounting["rejected_total"] == 0 and scored.accounting["kept"] == 40
    for threshold in (1, 2, 3):
        full = run(load_recipe(_recipe(docs_in, tmp_path / f"run{threshold}", threshold)), progress=False)
        dec = run(
            load_recipe(_recipe(docs_in, tmp_path / f"dec{threshold}", threshold)),
            stage="decide",
            scores=str(tmp_path / "d.scores"),
            progress=False,
        )
        assert dec.manifest["stage"] == "decide" and dec.manifest["scores"]["blocks"]
        assert [b["label"] for b in dec.manifest["blocks"]] == ["2.tag", "3.drop"]
        for sub in ("data", "rejected"):
            assert _table(tmp_path / f"run{threshold}", sub).equals(_table(tmp_path / f"dec{threshold}", sub))
        assert full.accounting["kept"] == dec.accounting["kept"]
    # the cascade left moral_* null where the cheap detector fired
    data = _table(tmp_path / "d.scores", "data")
    assert (
        data.filter(pl.col("ai_hits") > 0)["moral_hits"].null_count()
        == data.filter(pl.col("ai_hits") > 0).height
    )


def test_decide_refuses_scores_from_other_detector_settings(docs_in: Path, tmp_path: Path) -> None:
    run(load_recipe(_recipe(docs_in, tmp_path / "d", 2)), stage="score", progress=False)
    other = _recipe(docs_in, tmp_path / "d", 2)
    other["blocks"][0]["keywords"]["terms"] = ["ai"]
    with pytest.raises(RecipeError, match="were made with"):
        run(load_recipe(other), stage="decide", progress=False)
    with pytest.raises(RecipeError, match="no manifest.json"):
        run(load_recipe(other), stage="decide", scores=str(tmp_path / "nowhere"), progress=False)


def test_decide_refuses_scores_of_an_input_that_changed_since(docs_in: Path, tmp_path: Path) -> None:
    """New documents in the input would be silently missing from a decide over old scores."""
    import shutil

    run(load_recipe(_recipe(docs_in, tmp_path / "d", 2)), stage="score", progress=False)
    renamed = _recipe(docs_in, tmp_path / "d", 2)
    renamed["blocks"][0]["keywords"]["name"] = "ai2"
    with pytest.raises(
        RecipeError,
        match=r"0\.keywords:ai2: the scores in .* have no such detector \(they have 0\.keywords:ai, 1\.keywords:moral\)",
    ):
        run(load_recipe(renamed), stage="decide", progress=False)
    write_shards(tmp_path / "more", [("new", "kindness kindness", "s")], n_shards=1)
    (extra,) = (tmp_path / "more").glob("*.parquet")
    shutil.copy(extra, docs_in / "added.parquet")
    with pytest.raises(
        RecipeError, match=r"input .* changed since the score pass \(1 files: added added\.parquet\)"
    ):
        run(load_recipe(_recipe(docs_in, tmp_path / "d", 2)), stage="decide", progress=False)
    # where the input is not on this machine, the scores alone are enough
    gone = _recipe(tmp_path / "elsewhere", tmp_path / "d", 2)
    res = run(load_recipe(gone), stage="decide", scores=str(tmp_path / "d.scores"), progress=False)
    assert res.accounting["ok"] and res.accounting["read"] == 40


def test_runs_are_deterministic(docs_in: Path, tmp_path: Path) -> None:
    a = run(load_recipe(_recipe(docs_in, tmp_path / "a", 2)), progress=False)
    b = run(load_recipe(_recipe(docs_in, tmp_path / "b", 2)), progress=False)
    assert [f["sha256"] for f in a.manifest["outputs"]["data"]] == [
        f["sha256"] for f in b.manifest["outputs"]["data"]
    ]


def test_decide_refuses_scores_made_with_another_lexicon_file_at_the_same_path(
    docs_in: Path, tmp_path: Path
) -> None:
    """The config names a lexicon by path, so it stays the same when the file is edited: the
    provenance (the file's sha256) tells. decide had accepted it and recorded the new file."""
    lex = tmp_path / "moral.lex"
    lex.write_text("kindness\ncompassion\n")
    r = _recipe(docs_in, tmp_path / "d", 2)
    r["blocks"][1]["keywords"] = {"name": "moral", "lexicon": str(lex), "when": "ai_hits = 0"}
    run(load_recipe(r), stage="score", progress=False)
    lex.write_text("kindness\n")
    with pytest.raises(RecipeError, match=r"1.keywords:moral: the scores in .* were made with other files at the same "
                       r"paths \(lexicon_sha256, terms changed"):  # fmt: skip
        run(load_recipe(r), stage="decide", progress=False)
    lex.write_text("kindness\ncompassion\n")  # back as it was: accepted
    assert run(load_recipe(r), stage="decide", progress=False).accounting["ok"]


@pytest.mark.embed
def test_decide_accepts_the_same_model_installed_elsewhere(
    docs_in: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Provenance records where a model lies as well as its sha256; only the file's content must
    match (the scores were made in one environment and decided in another), not its path."""
    pytest.importorskip("model2vec")  # the static model
    import shutil

    from corpusfilter.embed import resolve_model

    r = _recipe(docs_in, tmp_path / "d", 2)
    r["blocks"][1] = {"embedding": {"name": "moral", "model": "static-minilm", "positives": ["kindness"]}}
    r["blocks"][3] = {"drop": {"where": "moral_pos_max_chunkmax > 0.5", "reason": "moral"}}
    run(load_recipe(r), stage="score", progress=False)
    copy = tmp_path / "static_copy"
    shutil.copytree(resolve_model("static-minilm")[1], copy)
    monkeypatch.setenv("CORPUSFILTER_STATIC_MODEL", str(copy))
    assert resolve_model("static-minilm")[1] == str(copy)
    assert run(load_recipe(r), stage="decide", progress=False).accounting["ok"]
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x80\x3f")  # another model there
    with pytest.raises(
        RecipeError,
        match=r"were made with other files at the same paths \(model_files_sha256, model_sha256 changed",
    ):
        run(load_recipe(r), stage="decide", progress=False)


@pytest.mark.embed
def test_decide_refuses_scores_made_with_another_tokenizer_beside_the_same_weights(
    docs_in: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The weights' sha256 alone had let a tokenizer edited in the model folder pass: the vectors
    change, the digest did not. Every file of the folder is digested now."""
    pytest.importorskip("model2vec")  # the static model
    import json
    import shutil

    from corpusfilter.embed import resolve_model

    copy = tmp_path / "static_copy"
    shutil.copytree(resolve_model("static-minilm")[1], copy)
    monkeypatch.setenv("CORPUSFILTER_STATIC_MODEL", str(copy))
    r = _recipe(docs_in, tmp_path / "d", 2)
    r["blocks"][1] = {"embedding": {"name": "moral", "model": "static-minilm", "positives": ["kindness"]}}
    r["blocks"][3] = {"drop": {"where": "moral_pos_max_chunkmax > 0.5", "reason": "moral"}}
    run(load_recipe(r), stage="score", progress=False)
    tok = json.loads((copy / "tokenizer.json").read_text(encoding="utf-8"))
    tok["normalizer"] = None  # no lowercasing: other token ids for the same text
    (copy / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    with pytest.raises(
        RecipeError, match=r"were made with other files at the same paths \(model_files_sha256 changed"
    ):
        run(load_recipe(r), stage="decide", progress=False)


def test_a_decide_manifest_records_the_source_corpus_and_the_score_pass_limit(
    docs_in: Path, tmp_path: Path
) -> None:
    """A decide output's ``inputs`` are its score pass's files: the manifest `publish` uploads must
    still carry the source shards' sha256 and the ``--limit`` the score pass read with."""
    import hashlib

    import pyarrow.parquet as pq

    from corpusfilter.manifest import validate_manifest

    r = recipe_dict(docs_in, tmp_path / "out")  # a control arm: run = score (limited) → decide
    r["blocks"].insert(0, {"tokens": {}})
    r["control"] = {"type": "matched", "by": ["source"], "tokens": "tokens_count"}
    res = run(load_recipe(r), tasks=2, limit=10, progress=False)
    assert res.control is not None
    m = res.manifest
    assert m["stage"] == "decide" and m["executor"]["limit"] == -1  # it read every scored row
    assert m["input_folder"].rstrip("/").endswith("out.scores/data")  # its inputs: the scored files
    sc = m["scores"]
    assert sc["input_folder"].rstrip("/").endswith(str(docs_in))
    shards = sorted(docs_in.glob("*.parquet"))
    assert [f["path"] for f in sc["inputs"]] == [p.name for p in shards]
    for f, p in zip(sc["inputs"], shards):
        assert f["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
        assert (f["rows"], f["bytes"]) == (pq.read_metadata(p).num_rows, p.stat().st_size)
    assert sc["executor"] == {"tasks": 2, "limit": 10}
    for key in ("input_folder", "inputs", "executor"):
        assert res.control.manifest["scores"][key] == sc[key]
    old = {**m, "scores": {k: v for k, v in sc.items() if k not in ("input_folder", "inputs", "executor")}}
    assert validate_manifest(old) == []  # outputs of earlier versions still validate
    bad = {**m, "scores": {**sc, "inputs": [{**sc["inputs"][0], "sha256": "?"}], "executor": {"limit": 10}}}
    assert [e.split(":")[0] for e in validate_manifest(bad)] == ["scores/executor", "scores/inputs/0/sha256"]


def test_a_decide_output_says_when_its_score_pass_inputs_were_not_checked(
    docs_in: Path, tmp_path: Path
) -> None:
    """A decide output's inputs are checked through its score pass; with the input moved away, the
    score pass said "inputs not checked" while the decide output (the folder one publishes) said only
    "verified"."""
    from corpusfilter.verify import format_verification, verify

    run(load_recipe(_recipe(docs_in, tmp_path / "d", 2)), stage="score", progress=False)
    run(load_recipe(_recipe(docs_in, tmp_path / "d", 2)), stage="decide", progress=False)
    assert verify(str(tmp_path / "d")).ok and not verify(str(tmp_path / "d")).notes
    docs_in.rename(tmp_path / "moved")
    v = verify(str(tmp_path / "d"))
    assert v.ok and any("inputs not checked" in n and "is not reachable" in n for n in v.notes), v.notes
    assert "inputs not checked" in format_verification(v)


def test_rebuilding_a_decide_output_scores_again(docs_in: Path, tmp_path: Path) -> None:
    """--rebuild of a decide output reused the recorded score pass, so scores edited in it (with its
    manifest's hashes fixed) went unnoticed. The score pass is now rebuilt from its own manifest
    first; and a decide output without its score pass is a problem, whatever it says it held."""
    import hashlib
    import json
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from corpusfilter.verify import verify

    r = _recipe(docs_in, tmp_path / "d", 2)
    run(load_recipe(r), stage="score", progress=False)
    run(load_recipe(r), stage="decide", progress=False)
    out, scores = tmp_path / "d", tmp_path / "d.scores"
    v = verify(str(out), rebuild=True)
    assert v.ok and any("and score pass (re-scored)" in c for c in v.checked), v.problems
    m = json.loads((scores / "manifest.json").read_text())
    for f in sorted((scores / "data").glob("*.parquet")):  # every document scored 0 moral hits
        t = pq.read_table(f)
        i = t.schema.get_field_index("moral_hits")
        pq.write_table(
            t.set_column(i, t.schema.field(i), pa.array([0] * t.num_rows, t.schema.field(i).type)), f
        )
        entry = next(e for e in m["outputs"]["data"] if e["path"] == f"data/{f.name}")
        entry.update(sha256=hashlib.sha256(f.read_bytes()).hexdigest(), bytes=f.stat().st_size)
    (scores / "manifest.json").write_text(json.dumps(m))
    run(load_recipe(r), stage="decide", mode="overwrite", progress=False)
    assert verify(str(out)).ok  # consistent files and counts: only scoring again tells
    problems = verify(str(out), rebuild=True).problems
    assert any(p.startswith("rebuild of the score pass: data/ differs") for p in problems), problems
    shutil.rmtree(scores)
    problems = verify(str(out)).problems
    assert problems == [
        f"score pass not found at {scores}: a decide output is verified with the score pass it read (its "
        "unreadable rows, scores and input hashes); put it beside the output"
    ]


def test_a_decide_outputs_record_of_the_source_corpus_must_match_its_score_pass(
    docs_in: Path, tmp_path: Path
) -> None:
    """The card shows a decide output's source corpus from `scores.inputs`: verify holds it to the
    score pass's own record (whose inputs it re-hashes)."""
    import json

    from corpusfilter.verify import verify

    r = _recipe(docs_in, tmp_path / "d", 2)
    run(load_recipe(r), stage="score", progress=False)
    run(load_recipe(r), stage="decide", progress=False)
    out = tmp_path / "d"
    m = json.loads((out / "manifest.json").read_text())
    m["scores"]["inputs"][0]["sha256"] = "0" * 64
    m["scores"]["executor"]["limit"] = 5
    (out / "manifest.json").write_text(json.dumps(m))
    problems = verify(str(out)).problems
    assert problems == [
        f"scores.{k}: not what the score pass {tmp_path / 'd.scores'} records" for k in ("inputs", "executor")
    ]
