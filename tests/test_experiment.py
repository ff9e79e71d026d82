"""Experiment arms end to end: target token shares, matched controls, backfill, token reports."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpusfilter.cli import main
from corpusfilter.errors import OutputError, RecipeError
from corpusfilter.recipe import load_recipe
from corpusfilter.runner import format_summary, run
from corpusfilter.verify import verify

from .conftest import tokens

VOCAB = "the of and a to in is was for on that with as by at from it this be are".split()
SOURCES = ["docs", "fiction", "news"]


def make_corpus(folder: Path, n: int = 12_000, shards: int = 3) -> Path:
    """Documents of 10-400 words from three sources; every 10th mentions kindness, every 7th (offset)
    a takeover. Deterministic."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    lengths = rng.integers(10, 400, size=n)
    rows = []
    for i in range(n):
        words = [VOCAB[(i * 7 + j) % len(VOCAB)] for j in range(int(lengths[i]))]
        if i % 10 == 0:
            words[len(words) // 2] = "kindness"
        if i % 7 == 3:
            words[0] = "takeover"
        rows.append((f"doc{i:06d}", " ".join(words), SOURCES[i % 3]))
    for s in range(shards):
        part = rows[s::shards]
        pq.write_table(
            pa.table(
                {"id": [r[0] for r in part], "text": [r[1] for r in part], "source": [r[2] for r in part]}
            ),
            folder / f"part-{s}.parquet",
        )
    return folder


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("exp") / "in")


def _recipe(inp: Path, out: Path, blocks: list, **extra: object) -> dict:
    return {"input": {"path": str(inp)}, "output": {"path": str(out)}, "seed": 3, "blocks": blocks, **extra}


DETECT = [
    {"tokens": {}},
    {"keywords": {"name": "moral", "terms": ["kindness"]}},
    {"keywords": {"name": "ai", "terms": ["takeover"]}},
    {"tag": {"where": "ai_hits >= 1", "label": "ai"}},
]


def _with_control(inp: Path, tmp_path: Path) -> Path:
    """tmp_path/r.yaml: DETECT, drop the moral documents into tmp_path/out, a control matched by source."""
    recipe = _recipe(
        inp, tmp_path / "out", [*DETECT, {"drop": {"where": "moral_hits >= 1", "reason": "moral"}}]
    )
    recipe["control"] = {"type": "matched", "by": ["source"]}
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps(recipe))
    return path


def _frame(out: Path, sub: str) -> pl.DataFrame:
    return pl.read_parquet(sorted((out / sub).glob("*.parquet")))


@pytest.mark.slow
def test_target_share_is_reached_and_accounted(big: Path, tmp_path: Path) -> None:
    out = tmp_path / "enriched"
    blocks = [*DETECT, {"upsample": {"where": "ai_hits >= 1", "target_share": 0.3, "label": "target"}}]
    res = run(load_recipe(_recipe(big, out, blocks)), progress=False)
    sol = next(b for b in res.manifest["blocks"] if b["label"].endswith("upsample"))["provenance"]["solution"]
    data = _frame(out, "data")
    achieved = tokens(data.filter(pl.col("ai_hits") >= 1)) / tokens(data)
    assert abs(achieved - 0.3) <= 0.005  # the issue's bar: ±0.5 percentage points
    assert sol["expected_share"] == pytest.approx(achieved, abs=1e-6)  # the allocation is fixed
    assert sol["achieved_share"] == pytest.approx(achieved, abs=1e-6)
    acc = res.accounting
    assert acc["read"] + acc["added"] == acc["kept"] + acc["rejected_total"] + acc["unreadable"]
    assert acc["added"] == data.filter(pl.col("copy_index") > 0).height > 0
    assert data["id"].n_unique() == data.height
    # lineage: every copy points at an original that is in the output
    originals = set(data.filter(pl.col("copy_index") == 0)["id"])
    assert set(data.filter(pl.col("copy_index") > 0)["original_id"]) <= originals
    tok = res.manifest["tokens"]
    assert tok["categories"]["target"]["share_out"] == pytest.approx(achieved, abs=1e-5)
    assert tok["out"]["tokens"] == tok["in"]["tokens"] - tok["removed"]["tokens"] + tok["added"]["tokens"]
    assert verify(str(out)).ok


@pytest.mark.slow
def test_matched_control_removes_the_same_tokens_per_stratum(big: Path, tmp_path: Path) -> None:
    out = tmp_path / "depleted"
    blocks = [*DETECT, {"drop": {"where": "moral_hits >= 1", "reason": "moral"}}]
    recipe = _recipe(big, out, blocks, control={"type": "matched", "by": ["source"]})
    res = run(load_recipe(recipe), progress=False)
    assert res.control is not None
    t, c = res.manifest, res.control.manifest
    removed_t, removed_c = t["tokens"]["removed"]["tokens"], c["tokens"]["removed"]["tokens"]
    assert removed_t > 0 and abs(removed_c - removed_t) / removed_t <= 0.01
    # stratified: per source and length bucket, the control removed about what the treatment did
    strata = c["experiment"]["strata"]
    assert {k.split("/")[0] for k in strata} == set(SOURCES)
    for s in strata.values():
        assert (
            abs(s["control_removed_tokens"] - s["treatment_removed_tokens"]) <= 400
        )  # at most ~one document
    # the control's removed documents have the treatment's length distribution
    rt = _frame(out, "rejected")["tokens_count"].to_numpy()
    rc = _frame(Path(res.control.output), "rejected")["tokens_count"].to_numpy()
    assert abs(np.median(rt) - np.median(rc)) / np.median(rt) < 0.1
    # the control removes at random: most of what it removes is not what the treatment removed
    assert (_frame(Path(res.control.output), "rejected")["moral_hits"].to_numpy() >= 1).mean() < 0.3
    # ... and its manifest says how much of it the treatment removed too
    rej_t, rej_c = _frame(out, "rejected"), _frame(Path(res.control.output), "rejected")
    both = rej_c.filter(pl.col("id").is_in(rej_t["id"].to_list()))
    share = tokens(both) / tokens(rej_c)
    assert 0 < share < 0.3
    assert c["experiment"]["overlap"] == {
        "removed_tokens_also_treated": pytest.approx(share, abs=1e-4),
        "added_tokens_also_treated": None,
    }
    (line,) = [x for x in format_summary(res).splitlines() if x.startswith("control removed, also in")]
    assert line.endswith(f"{100 * share:.1f}% of tokens")
    # exclude_treated: the control draws only among documents the treatment left alone
    ctl = {"type": "matched", "by": ["source"], "exclude_treated": True}
    ex = run(load_recipe(_recipe(big, tmp_path / "ex", blocks, control=ctl)), progress=False)
    assert ex.control is not None
    cm = ex.control.manifest
    assert cm["experiment"]["overlap"]["removed_tokens_also_treated"] == 0.0
    assert abs(cm["tokens"]["removed"]["tokens"] - removed_t) / removed_t <= 0.01
    ex_rej = _frame(Path(ex.control.output), "rejected")
    assert not set(ex_rej["id"].to_list()) & set(rej_t["id"].to_list())
    assert verify(ex.control.output, rebuild=True).ok
    # manifests point at each other
    assert (out / t["experiment"]["counterpart"]).resolve() == Path(res.control.output).resolve()
    assert (Path(res.control.output) / c["experiment"]["counterpart"]).resolve() == out.resolve()
    assert c["experiment"]["arm"] == "control" and t["experiment"]["arm"] == "treatment"
    assert c["accounting"]["ok"] and c["accounting"]["rejected"] == {
        "control_random": c["accounting"]["rejected_total"]
    }
    v = verify(res.control.output, rebuild=True)
    assert v.ok, v.problems


@pytest.mark.slow
def test_upsample_control_adds_the_same_tokens_and_runs_are_deterministic(big: Path, tmp_path: Path) -> None:
    blocks = [*DETECT, {"upsample": {"where": "ai_hits >= 1", "weight": "2.5"}}]
    ctrl = {"type": "matched", "by": ["source"]}
    a = run(load_recipe(_recipe(big, tmp_path / "a", blocks, control=ctrl)), progress=False)
    b = run(
        load_recipe(_recipe(big, tmp_path / "b", blocks, control=ctrl)), tasks=2, workers=2, progress=False
    )
    assert a.control is not None and b.control is not None
    added_t = a.manifest["tokens"]["added"]["tokens"]
    added_c = a.control.manifest["tokens"]["added"]["tokens"]
    assert added_t > 0 and abs(added_c - added_t) / added_t <= 0.01
    for x, y in ((a, b), (a.control, b.control)):
        ids_x = sorted(_frame(Path(x.output), "data")["id"].to_list())
        ids_y = sorted(_frame(Path(y.output), "data")["id"].to_list())
        assert ids_x == ids_y  # same copies on 1 or 2 tasks


@pytest.mark.slow
def test_backfill_keeps_total_tokens_per_source(big: Path, tmp_path: Path) -> None:
    out = tmp_path / "replaced"
    blocks = [
        *DETECT,
        {"drop": {"where": "moral_hits >= 1", "reason": "moral"}},
        {"backfill": {"by": ["source"]}},
    ]
    res = run(load_recipe(_recipe(big, out, blocks)), progress=False)
    tok = res.manifest["tokens"]
    assert tok["removed"]["tokens"] > 0
    assert abs(tok["out"]["tokens"] - tok["in"]["tokens"]) / tok["in"]["tokens"] <= 0.01
    data, rej = _frame(out, "data"), _frame(out, "rejected")
    copies = data.filter(pl.col("copy_index") > 0)
    for src in SOURCES:
        removed = tokens(rej.filter(pl.col("source") == src))
        added = tokens(copies.filter(pl.col("source") == src))
        assert abs(added - removed) <= 400, src
    assert (copies["moral_hits"] == 0).all()  # donors are kept documents only
    assert verify(str(out)).ok


def test_summary_prints_both_arms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = make_corpus(tmp_path / "in", n=300, shards=1)
    assert main(["run", str(_with_control(inp, tmp_path)), "--no-progress"]) == 0
    text = capsys.readouterr().out
    head = text.splitlines()[0].split()
    assert head == ["treatment", "control"]
    for row in (
        "documents read",
        "rejected: moral",
        "rejected: control_random",
        "tokens removed",
        "share: ai",
    ):
        assert row in text
    m = json.loads((tmp_path / "out.control" / "manifest.json").read_text())
    assert m["experiment"]["counterpart"] == "../out"


def test_solving_adds_nothing_to_block_stats(tmp_path: Path) -> None:
    inp = make_corpus(tmp_path / "in", n=300, shards=1)
    blocks = [*DETECT, {"drop": {"where": "moral_hits >= 1", "reason": "moral"}}, {"backfill": {}}]
    res = run(load_recipe(_recipe(inp, tmp_path / "out", blocks)), progress=False)
    drop = next(b for b in res.manifest["blocks"] if b["label"].endswith("drop"))
    assert drop["stats"]["dropped"] == {"moral": res.accounting["rejected"]["moral"]} == {"moral": 30}


def test_an_empty_corpus_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    empty = pa.table(
        {
            "id": pa.array([], pa.string()),
            "text": pa.array([], pa.string()),
            "source": pa.array([], pa.string()),
        }
    )
    pq.write_table(empty, inp / "a.parquet")
    blocks = [*DETECT, {"upsample": {"where": "ai_hits >= 1", "target_share": 0.5}}]
    with pytest.raises(
        RecipeError, match=r"no readable rows to decide on \(read 0, unreadable 0\): the input holds no rows$"
    ):
        run(load_recipe(_recipe(inp, tmp_path / "out", blocks)), progress=False)  # (no unreadable/ to see)


def test_solving_reads_no_text_unless_a_condition_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from corpusfilter import experiment
    from corpusfilter.recipe import plan

    inp = make_corpus(tmp_path / "in", n=300, shards=1)
    blocks = [*DETECT, {"drop": {"where": "moral_hits >= 1", "reason": "moral"}}, {"backfill": {}}]
    recipe = load_recipe(_recipe(inp, tmp_path / "out", blocks))
    run(recipe, stage="score", progress=False)
    seen: list[list[str] | None] = []
    original = experiment._scored_batches

    def spy(the_plan: object, columns: list[str] | None = None) -> object:
        seen.append(columns)
        return original(the_plan, columns)  # type: ignore[arg-type]

    monkeypatch.setattr(experiment, "_scored_batches", spy)
    experiment.solve(plan(recipe, stage="decide"))
    assert seen and seen[0] is not None and "text" not in seen[0] and "moral_hits" in seen[0]


def test_unreadable_rows_of_the_score_pass_are_counted_in_both_arms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recipe with a control runs score → decide: the rows the score pass cannot read stay in its
    unreadable/, and both arms' summaries, reports and verification count them."""
    from corpusfilter.hub import dataset_card
    from corpusfilter.report import report

    inp = make_corpus(tmp_path / "in", n=300, shards=1)
    shard = inp / "part-0.parquet"
    t = pq.read_table(shard)
    ids = [None if i % 30 == 0 else v for i, v in enumerate(t.column("id").to_pylist())]
    texts = [None if i % 50 == 7 else v for i, v in enumerate(t.column("text").to_pylist())]
    pq.write_table(t.set_column(0, "id", pa.array(ids)).set_column(1, "text", pa.array(texts)), shard)
    bad = 10 + 6
    assert main(["run", str(_with_control(inp, tmp_path)), "--no-progress"]) == 0
    cells = [re.split(r"\s{2,}", line.strip()) for line in capsys.readouterr().out.splitlines()[1:]]
    rows = {c[0]: c[1:] for c in cells}
    scores = tmp_path / "out.scores"
    assert rows["documents read"] == ["300", "300"]
    assert rows["unreadable"] == [str(bad), str(bad)]
    assert rows["unreadable rows in"] == [f"{scores}/unreadable/"] * 2
    assert pl.read_parquet(scores / "unreadable").height == bad
    for arm in ("out", "out.control"):
        m = json.loads((tmp_path / arm / "manifest.json").read_text())
        assert m["scores"]["accounting"] == {"read": 300, "unreadable": bad}
        assert m["accounting"]["read"] == 300 - bad
        v = verify(str(tmp_path / arm))
        assert v.ok, v.problems
        assert any(c.startswith(f"score pass: verified, unchanged, {bad} unreadable") for c in v.checked)
        md = report(tmp_path / arm).markdown.read_text()
        assert "| documents read | 300 |" in md and f"| unreadable | {bad} |" in md
        card = dataset_card(m, repo_id="me/arm", configs=[], uploads=[])  # the Hub card counts them too
        assert "| read | 300 |" in card and f"| unreadable | {bad} |" in card
    # a trial decide reads part of the scored rows: the score pass's unreadable rows are named
    # beside its count, not added to it
    trial = tmp_path / "trial"
    args = ["decide", str(tmp_path / "r.yaml"), "--scores", str(scores), "--output", str(trial)]
    # (with its control arm, a partial decide would not match the arm solved from every row)
    assert main([*args, "--limit", "50", "--no-progress"]) == 1
    assert "decide --limit 50: this recipe is solved from every scored row" in capsys.readouterr().err
    args += ["--set", "control=null"]
    assert main([*args, "--limit", "50", "--no-progress"]) == 0
    cells = [re.split(r"\s{2,}", line.strip()) for line in capsys.readouterr().out.splitlines()]  # one arm
    rows = {c[0]: c[1:] for c in cells}
    assert rows["documents read"][0] == "50" and rows["unreadable"][0] == "0"
    assert (
        rows["score pass unreadable"][0]
        == f"{bad} in {scores}/unreadable/ (not counted in this --limit read)"
    )
    assert "unreadable rows in" not in rows
    md = report(trial).markdown.read_text()
    assert "| documents read | 50 |" in md and f"set aside {bad} unreadable input row(s)" in md
    assert verify(str(trial)).ok
    # --json says what the table says: input-level totals and the score pass's counts
    for extra, read, unread, outside in ((["--limit", "50"], 50, 0, bad), ([], 300, bad, 0)):
        assert main([*args, *extra, "--overwrite", "--no-progress", "--json"]) == 0
        j = json.loads(capsys.readouterr().out)
        assert (j["documents_read"], j["documents_unreadable"]) == (read, unread)
        assert j["read"] == read - unread and j["unreadable"] == 0  # this output's own accounting
        assert j["score_pass"] == {
            "path": str(scores),
            "read": 300,
            "unreadable": bad,
            "unreadable_not_counted": outside,
        }
    # folders moved together: the score pass is found beside the output
    moved = tmp_path / "moved"
    moved.mkdir()
    for arm in ("out", "out.scores", "out.control"):
        (tmp_path / arm).rename(moved / arm)
    v = verify(str(moved / "out.control"))
    assert v.ok and any(c.startswith("score pass: verified") for c in v.checked), v.problems
    # the score pass's unreadable rows are part of what verify checks
    next((moved / "out.scores" / "unreadable").glob("*.parquet")).unlink()
    problems = verify(str(moved / "out")).problems
    assert any(p.startswith(f"score pass {moved / 'out.scores'}") and "missing" in p for p in problems)
    shutil.rmtree(moved / "out.scores")  # gone: those rows are nowhere, and the output counts them
    problems = verify(str(moved / "out")).problems
    assert any(f"unreadable/ holds {bad} input row(s) counted here" in p for p in problems), problems


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (None, "control.by: unknown column 'source'"),
        (pa.array([["docs"]] * 30), "control.by: column 'source' holds list<"),
        (pa.array([{"s": "docs"}] * 30), "control.by: column 'source' holds struct<s: string> values"),
    ],
)
def test_a_control_that_cannot_group_fails_before_the_score_pass(
    tmp_path: Path, source: pa.Array | None, message: str
) -> None:
    t = pq.read_table(make_corpus(tmp_path / "in", n=30, shards=1) / "part-0.parquet")
    t = t.drop_columns(["source"]) if source is None else t.set_column(2, "source", source)
    pq.write_table(t, tmp_path / "in" / "part-0.parquet")
    with pytest.raises(RecipeError, match=re.escape(message)):
        run(load_recipe(_with_control(tmp_path / "in", tmp_path)), progress=False)
    assert not (tmp_path / "out.scores").exists()  # nothing scored, nothing left behind


def test_a_trial_limit_applies_to_both_arms(tmp_path: Path) -> None:
    """run --limit limits the score pass; the decide pass and the control then read every row it
    scored (what the solution is of), however the scored files split among tasks."""
    inp = make_corpus(tmp_path / "in", n=300, shards=2)
    recipe = json.loads(_with_control(inp, tmp_path).read_text())
    recipe["output"]["rows_per_file"] = 30
    res = run(load_recipe(recipe), limit=50, tasks=2, progress=False)
    assert res.control is not None
    scored = json.loads((tmp_path / "out.scores" / "manifest.json").read_text())
    assert scored["executor"]["limit"] == 50 and scored["accounting"]["read"] == 100
    for m in (res.manifest, res.control.manifest):
        assert m["executor"]["limit"] == -1 and m["accounting"]["read"] == 100
    assert verify(str(tmp_path / "out")).ok and verify(str(tmp_path / "out.control")).ok


def _regrouped(tmp_path: Path, n: int = 600) -> pl.DataFrame:
    """make_corpus's rows with grouping columns that defeat naive keys: a float column a quarter
    NaN, and a string column mixing null, the string "None" and values holding "/"."""
    t = pl.read_parquet(make_corpus(tmp_path / "raw", n=n, shards=1) / "part-0.parquet")
    i = np.arange(t.height)
    return t.with_columns(
        pl.Series("q", np.where(i % 4 == 0, np.nan, 1.0)),
        pl.Series("grp", [None if k % 3 == 0 else ("None" if k % 3 == 1 else "a/b") for k in i]),
    )


def test_backfill_groups_nan_null_and_lookalike_values_apart(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    _regrouped(tmp_path).write_parquet(inp / "part-0.parquet")
    drop = {"drop": {"where": "moral_hits >= 1", "reason": "moral"}}
    names = {}
    for by in (["q"], ["grp"], ["grp", "source"]):
        out = tmp_path / f"out_{'_'.join(by)}"
        res = run(load_recipe(_recipe(inp, out, [*DETECT, drop, {"backfill": {"by": by}}])), progress=False)
        sol = next(b for b in res.manifest["blocks"] if b["label"].endswith("backfill"))["provenance"]
        data, rej = _frame(out, "data"), _frame(out, "rejected")
        copies = data.filter(pl.col("copy_index") > 0)
        # every group that lost tokens got copies back, the NaN and null groups included
        for key, frame in rej.group_by(by):
            lost = tokens(frame)
            got = tokens(copies.filter(pl.all_horizontal(pl.col(c).eq_missing(v) for c, v in zip(by, key))))
            assert lost > 0 and abs(got - lost) <= 400, (by, key, lost, got)
        assert sol["added_tokens"] == tokens(copies)  # the solution's total is of what was written
        assert len(sol["groups"]) == rej.select(by).unique().height
        names[tuple(by)] = set(sol["groups"])
    assert names[("q",)] == {"NaN", "1.0"}
    assert names[("grp",)] == {"[null]", '["None"]', "a/b"}  # null and "None" would both print None
    # names that do not clash stay plain (here grp and source vary together)
    assert names[("grp", "source")] == {"None/docs", "None/fiction", "a/b/news"}


def test_control_copies_as_often_as_the_treatment_may(tmp_path: Path) -> None:
    """A target confined to a small stratum needs more copies of each document than the default cap:
    the control's stratum holds the same few documents and must copy them as often."""
    inp = tmp_path / "in"
    inp.mkdir()
    t = _regrouped(tmp_path, n=900)
    rare = t["text"].str.contains("takeover") & (pl.Series(np.arange(t.height)) < 150)
    t.with_columns(source=pl.when(rare).then(pl.lit("rare")).otherwise(pl.col("source"))).write_parquet(
        inp / "part-0.parquet"
    )
    up = {"upsample": {"where": "source = 'rare'", "target_share": 0.5, "max_copies": 20}}
    ctrl = {"type": "matched", "by": ["source"]}
    res = run(load_recipe(_recipe(inp, tmp_path / "out", [*DETECT, up], control=ctrl)), progress=False)
    assert res.control is not None
    sol = next(b for b in res.manifest["blocks"] if b["label"].endswith("upsample"))["provenance"]["solution"]
    assert sol["weight"] > 10  # beyond the old fixed cap of 10 copies per document
    added_t = res.manifest["tokens"]["added"]["tokens"]
    added_c = res.control.manifest["tokens"]["added"]["tokens"]
    assert added_t > 0 and abs(added_c - added_t) / added_t <= 0.02


@pytest.mark.parametrize("where", ["out", "out.scores", "out/ctl", "."])
def test_a_control_folder_that_would_overwrite_an_arm_is_refused(tmp_path: Path, where: str) -> None:
    """control.output equal to output.path was accepted: the control arm replaced the treatment
    (with --overwrite) and verified as the only arm there."""
    r = _recipe(tmp_path / "in", tmp_path / "out", DETECT, control={"type": "matched", "by": ["source"]})
    r["control"]["output"] = str(tmp_path / where)
    what = "score pass's" if where == "out.scores" else "treatment's"
    with pytest.raises(
        RecipeError, match=re.escape(f"control.output: {tmp_path / where} is or shares the {what}")
    ):
        load_recipe(r)
    r["control"]["output"] = str(tmp_path / "out.ctl")  # beside it: fine
    assert load_recipe(r).control_path == str(tmp_path / "out.ctl")
    # a file:// URL of the same folder, and remote folders inside one another, are clashes too
    r["control"]["output"] = f"file://{tmp_path / 'out'}"
    with pytest.raises(RecipeError, match="is or shares the treatment's"):
        load_recipe(r)
    r["output"]["path"], r["control"]["output"] = "s3://bucket/x", "s3://bucket/x/ctl"
    with pytest.raises(RecipeError, match="control.output: s3://bucket/x/ctl is or shares the treatment's"):
        load_recipe(r)


def test_the_control_arm_carries_every_tag_column_and_tags_its_own_copies(tmp_path: Path) -> None:
    """A tag with its own column was missing from the control's files (the writer dropped it), and
    a tag of copies (`copy_index > 0`) ended the control arm in a KeyError: it ran before the
    control's block made any copies. Now each tag's column is in both arms and a tag of copies
    labels the control's copies."""
    inp = make_corpus(tmp_path / "in", n=300, shards=2)
    blocks = [
        *DETECT,
        {"tag": {"where": "moral_hits >= 1", "label": "moral", "column": "topics"}},
        {"upsample": {"name": "up", "where": "ai_hits >= 1", "weight": "2"}},
        {"tag": {"where": "copy_index > 0", "label": "copy"}},
        {"tag": {"where": "array_contains(labels, 'copy')", "label": "copy_again"}},  # reads the tag's label
    ]
    res = run(
        load_recipe(_recipe(inp, tmp_path / "out", blocks, control={"type": "matched", "by": ["source"]})),
        progress=False,
    )
    assert res.control is not None
    for arm in (res, res.control):
        data = _frame(Path(arm.output), "data")
        assert "topics" in data.columns and data["topics"].list.contains("moral").sum() > 0
        copies = data.filter(pl.col("copy_index") > 0)
        assert copies.height > 0
        assert (
            copies["labels"].list.contains("copy").all()
            and copies["labels"].list.contains("copy_again").all()
        )
        assert not data.filter(pl.col("copy_index") == 0)["labels"].list.contains("copy").any()
        assert verify(arm.output, rebuild=True).ok
        # the tag in its own column is a category of the token report too (it had been left out)
        moral = arm.manifest["tokens"]["categories"]["topics: moral"]
        in_topics = data.filter(pl.col("topics").list.contains("moral"))
        assert moral["tokens_out"] == tokens(in_topics) > 0
        assert moral["share_out"] == round(tokens(in_topics) / tokens(data), 6)
        assert "share: topics: moral" in format_summary(arm)
    # an output made before such columns were counted (its categories of `labels` only) still verifies
    path = Path(res.output) / "manifest.json"
    m = json.loads(path.read_text())
    del m["tokens"]["categories"]["topics: moral"]
    path.write_text(json.dumps(m))
    v = verify(res.output)
    assert v.ok and any(n.startswith("tokens.categories: of `labels` only") for n in v.notes), v.problems
    m["tokens"]["categories"]["copy"]["tokens_out"] += 1  # a wrong number is still one
    path.write_text(json.dumps(m))
    assert any(p.startswith("tokens: the files give categories") for p in verify(res.output).problems)


def test_a_category_tagged_after_a_drop_counts_the_dropped_rows_in_its_share_before(tmp_path: Path) -> None:
    """A tag (or a labelled upsample) after a drop had labelled only the rows kept, so the
    treatment's share before was low (27% against the control's and the input's 44%)."""
    inp = make_corpus(tmp_path / "in", n=600, shards=2)
    blocks = [
        *DETECT[:3],
        {"drop": {"where": "moral_hits >= 1", "reason": "moral"}},
        {"tag": {"where": "moral_hits >= 1 OR tokens_count > 300", "label": "x"}},
        {"upsample": {"name": "up", "where": "ai_hits >= 1 OR moral_hits >= 1", "weight": "2", "label": "y"}},
    ]
    ctl = {"type": "matched", "by": ["source"]}
    res = run(load_recipe(_recipe(inp, tmp_path / "out", blocks, control=ctl)), progress=False)
    assert res.control is not None
    t, c = (arm.manifest["tokens"] for arm in (res, res.control))
    scored = pl.concat(
        [
            _frame(Path(res.output), "data").filter(pl.col("copy_index") == 0),
            _frame(Path(res.output), "rejected"),
        ],
        how="diagonal_relaxed",
    )
    tin = int(scored["tokens_count"].sum())
    x_true = int(
        scored.filter((pl.col("moral_hits") >= 1) | (pl.col("tokens_count") > 300))["tokens_count"].sum()
    )
    y_true = int(scored.filter((pl.col("ai_hits") >= 1) | (pl.col("moral_hits") >= 1))["tokens_count"].sum())
    for lab, true in (("x", x_true), ("y", y_true)):
        assert t["categories"][lab]["tokens_in"] == c["categories"][lab]["tokens_in"] == true, lab
        assert t["categories"][lab]["share_in"] == round(true / tin, 6)
    rej = _frame(Path(res.output), "rejected")
    assert rej["labels"].list.contains("x").all() and rej["labels"].list.contains("y").all()
    assert verify(res.output).ok


def test_plain_verify_recomputes_the_achieved_share_and_the_controls_overlap(tmp_path: Path) -> None:
    """An edited achieved_share or control overlap had verified without --rebuild."""
    inp = make_corpus(tmp_path / "in", n=600, shards=2)
    blocks = [*DETECT[:3], {"upsample": {"name": "up", "where": "ai_hits >= 1", "target_share": 0.3}}]
    res = run(
        load_recipe(_recipe(inp, tmp_path / "out", blocks, control={"type": "matched", "by": ["source"]})),
        progress=False,
    )
    assert res.control is not None
    v = verify(res.output)
    assert v.ok and "experiment: achieved shares recomputed" in v.checked
    assert (
        "experiment: the control's overlap from its strata recomputed" in verify(res.control.output).checked
    )
    tm, cm = (Path(o) / "manifest.json" for o in (res.output, res.control.output))
    m = json.loads(tm.read_text())
    (sol,) = [b["provenance"]["solution"] for b in m["blocks"] if "solution" in (b.get("provenance") or {})]
    real = sol["achieved_share"]
    sol["achieved_share"] = 0.3
    tm.write_text(json.dumps(m))
    assert (
        f"blocks: 3.upsample records achieved_share 0.3, the files give {real}" in verify(res.output).problems
    )
    m = json.loads(cm.read_text())
    m["experiment"]["overlap"] = {k: 0.0 for k in m["experiment"]["overlap"]}
    cm.write_text(json.dumps(m))
    assert any(p.startswith("experiment.overlap: ") for p in verify(res.control.output).problems)


def test_a_tag_of_copies_before_another_resampler_is_refused_with_a_control(tmp_path: Path) -> None:
    """The control makes every copy in one block: a tag of the first upsample's copies only had
    labelled all the control's copies (25% against 50% of tokens)."""
    blocks = [
        *DETECT,
        {"upsample": {"name": "u1", "where": "ai_hits >= 1", "weight": "2"}},
        {"tag": {"where": "copy_index > 0", "label": "copy"}},
        {"upsample": {"name": "u2", "where": "moral_hits >= 1", "weight": "2"}},
    ]
    r = _recipe(tmp_path / "in", tmp_path / "out", blocks, control={"type": "matched", "by": ["source"]})
    with pytest.raises(RecipeError, match=r"5\.tag: a tag of copies before 6\.upsample: the control arm"):
        load_recipe(r)
    del r["control"]
    assert load_recipe(r)  # without a control the order means what it says


def test_a_target_share_lands_on_the_target_on_a_small_corpus(tmp_path: Path) -> None:
    """Each matching document rounded its fractional copy on its own: 3 of 43 documents gave 18.4%,
    20.0% or 21.6% for a 20% target depending on the seed. One solved cut on the same draws picks
    the copies whose tokens come closest, and the solution states the share the output gets."""
    texts = [("zebra " if i < 3 else "") + "apple " * (499 if i < 3 else 500) for i in range(43)]
    (tmp_path / "in").mkdir()
    pq.write_table(
        pa.table({"id": [f"d{i}" for i in range(43)], "text": texts, "source": ["a"] * 43}),
        tmp_path / "in" / "p0.parquet",
    )
    blocks = [
        {"tokens": {}},
        {"keywords": {"name": "z", "terms": ["zebra"]}},
        {"upsample": {"name": "up", "where": "z_hits >= 1", "target_share": 0.2}},
    ]
    for seed in range(6):
        r = _recipe(tmp_path / "in", tmp_path / f"out{seed}", blocks)
        r["seed"] = seed
        res = run(load_recipe(r), progress=False)
        (sol,) = [
            b["provenance"]["solution"]
            for b in res.manifest["blocks"]
            if "solution" in (b.get("provenance") or {})
        ]
        assert "draw_cut" in sol and sol["achieved_share"] == round(sol["expected_share"], 6)
        assert abs(sol["achieved_share"] - 0.2) < 0.002, (seed, sol)
        assert verify(res.output).ok


def test_no_length_buckets_strata_by_the_by_columns_alone(tmp_path: Path) -> None:
    """`length_buckets: []` validated and then ended the run after the treatment was written (an
    IndexError, no control arm): it means strata by the `by` columns alone."""
    inp = make_corpus(tmp_path / "in", n=600, shards=2)
    blocks = [*DETECT, {"drop": {"where": "moral_hits >= 1", "reason": "moral"}}]
    ctl = {"type": "matched", "by": ["source"], "length_buckets": []}
    res = run(load_recipe(_recipe(inp, tmp_path / "out", blocks, control=ctl)), progress=False)
    assert res.control is not None
    strata = res.control.manifest["experiment"]["strata"]
    assert sorted(strata) == [f"{s}/all" for s in SOURCES]
    for s in strata.values():  # one stratum per source: within a document of the treatment there
        assert abs(s["control_removed_tokens"] - s["treatment_removed_tokens"]) <= 400
    assert verify(res.control.output, rebuild=True).ok


def test_a_target_share_out_of_reach_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreachable target (capped by max_copies, already exceeded, nothing matching) ran to exit 0
    with only a summary row to tell: a pessimal experiment would go on at the wrong share."""
    inp = make_corpus(tmp_path / "in", n=300, shards=1)

    def run_target(name: str, share: float, where: str = "ai_hits >= 1") -> str:
        up = {"upsample": {"where": where, "target_share": share, "max_copies": 3}}
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps(_recipe(inp, tmp_path / name, [*DETECT, up])))
        assert main(["run", str(path), "--no-progress"]) == 0
        return capsys.readouterr().err

    assert "warning" not in run_target("ok", 0.2)
    err = run_target("capped", 0.9)
    assert "warning: 4.upsample: target_share 90.00% not reached: capped by max_copies" in err
    assert "after)" in err and err.count("warning:") == 1
    assert "the share before upsampling already exceeds the target" in run_target("low", 0.01)
    assert "no tokens match `where`" in run_target("none", 0.2, where="ai_hits >= 99")


def test_an_occupied_output_is_refused_before_the_score_pass(tmp_path: Path) -> None:
    """A recipe solved from corpus totals scores every row first; a non-empty output (or control)
    folder had been refused only after that whole pass, which it wrote beside it."""
    inp = make_corpus(tmp_path / "in", n=60, shards=1)
    blocks = [*DETECT, {"drop": {"where": "moral_hits >= 1", "reason": "moral"}}]
    recipe = load_recipe(_recipe(inp, tmp_path / "out", blocks, control={"type": "matched"}))
    for folder in (tmp_path / "out", tmp_path / "out.control"):
        folder.mkdir()
        (folder / "notes.txt").write_text("mine")
        with pytest.raises(OutputError, match=rf"output folder {folder} is not empty"):
            run(recipe, progress=False)
        with pytest.raises(OutputError, match=r"--overwrite replaces only an earlier corpusfilter"):
            run(recipe, mode="overwrite", progress=False)
        with pytest.raises(OutputError, match=rf"cannot resume into {folder}: it has no run.json"):
            run(recipe, mode="resume", progress=False)
        assert not (tmp_path / "out.scores").exists()  # refused before any work
        assert (folder / "notes.txt").read_text() == "mine"
        (folder / "notes.txt").unlink()
        folder.rmdir()
    assert run(recipe, progress=False).accounting["ok"]
    # `decide` checks the control's folder before it writes the treatment; a file is no folder
    other = load_recipe(
        _recipe(inp, tmp_path / "d", blocks, control={"type": "matched", "output": str(tmp_path / "dc")})
    )
    run(other, stage="score", progress=False)
    (tmp_path / "dc").mkdir()
    (tmp_path / "dc" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=rf"output folder {tmp_path / 'dc'} is not empty"):
        run(other, stage="decide", progress=False)
    assert not (tmp_path / "d").exists()
    (tmp_path / "f").write_text("a file")
    filed = load_recipe(_recipe(inp, tmp_path / "f", blocks, control={"type": "matched"}))
    with pytest.raises(OutputError, match=rf"output {tmp_path / 'f'} is a file, not a folder"):
        run(filed, mode="resume", progress=False)
    assert not (tmp_path / "f.scores").exists()


def test_verify_says_when_an_arms_counterpart_is_missing(tmp_path: Path) -> None:
    """A treatment whose control was never finished (killed in the control pass) verified with no
    word about it; the experiment is the two arms."""
    inp = make_corpus(tmp_path / "in", n=60, shards=1)
    blocks = [*DETECT, {"drop": {"where": "moral_hits >= 1", "reason": "moral"}}]
    res = run(
        load_recipe(_recipe(inp, tmp_path / "out", blocks, control={"type": "matched"})), progress=False
    )
    assert res.control is not None
    assert not verify(res.output).notes and not verify(res.control.output).notes
    url = run(  # a control written to a URL: no note (it had been joined onto the treatment's path)
        load_recipe(
            _recipe(
                inp, tmp_path / "u", blocks, control={"type": "matched", "output": f"file://{tmp_path}/uc"}
            )
        ),
        progress=False,
    )
    assert not verify(url.output).notes
    (Path(res.control.output) / "manifest.json").unlink()  # as a control pass stopped before its end
    v = verify(res.output)
    assert v.ok and any(
        n.startswith(f"experiment: its control arm {res.control.output} has no manifest") for n in v.notes
    ), v.notes
