"""upsample / backfill blocks: deterministic hash draws, copy lineage, caps, validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from corpusfilter.batch import ROW_COLUMN, SHARD_COLUMN, Batch
from corpusfilter.blocks.resample import (
    BackfillParams,
    MatchedControlParams,
    Upsample,
    UpsampleParams,
    repeat_rows,
    unit_draws,
)
from corpusfilter.errors import RecipeError
from corpusfilter.params import describe_params
from corpusfilter.recipe import load_recipe, plan

from ..conftest import recipe_dict


def _table(n: int, scores: list[float]) -> pa.Table:
    return pa.table(
        {
            "id": [f"doc{i}" for i in range(n)],
            "text": ["x"] * n,
            "s": pa.array(scores, pa.float64()),
            SHARD_COLUMN: ["a.parquet"] * n,
            ROW_COLUMN: pa.array(range(n), pa.int64()),
        }
    )


def _upsample(**params: object) -> Upsample:
    b = Upsample(**params)
    b.label, b.seed = "0.upsample", 7
    return b


def test_unit_draws_are_deterministic_seeded_and_uniform() -> None:
    ids = [f"d{i}" for i in range(20_000)]
    a = unit_draws(ids, [0] * len(ids), seed=1, salt="x")
    assert np.array_equal(a, unit_draws(ids, [0] * len(ids), seed=1, salt="x"))
    assert not np.array_equal(a, unit_draws(ids, [0] * len(ids), seed=2, salt="x"))
    assert not np.array_equal(a, unit_draws(ids, [0] * len(ids), seed=1, salt="y"))
    assert ((a >= 0) & (a < 1)).all()
    # 20,000 uniform draws: each decile holds 10% ± 1% (about 5 standard deviations)
    counts = np.histogram(a, bins=10, range=(0, 1))[0] / len(a)
    assert np.abs(counts - 0.1).max() < 0.01


def test_weight_gives_whole_copies_plus_a_fractional_draw() -> None:
    n = 4000
    scores = [float(i % 2) for i in range(n)]  # odd rows weigh 1 + 2.5 = 3.5, even rows 1
    b = _upsample(weight="1 + 2.5 * s")
    out = b.process(Batch(_table(n, scores), "a.parquet", n)).table
    orig = out.column("original_id").to_pylist()
    counts: dict[str, int] = {}
    for o in orig:
        counts[o] = counts.get(o, 0) + 1
    even = [counts[f"doc{i}"] for i in range(0, n, 2)]
    odd = [counts[f"doc{i}"] for i in range(1, n, 2)]
    assert set(even) == {1}
    assert set(odd) == {3, 4}
    assert abs(np.mean(odd) - 3.5) < 0.05  # 2,000 Bernoulli(0.5) draws: sd of the mean 0.011
    ids = out.column("id").to_pylist()
    assert len(ids) == len(set(ids))
    idx = out.column("copy_index").to_pylist()
    for i, o, c in zip(ids, orig, idx):
        assert (i == o) if c == 0 else (i == f"{o}#{c}")


def test_copies_do_not_depend_on_how_rows_are_batched() -> None:
    n = 600
    scores = [(i % 7) / 3 for i in range(n)]
    table = _table(n, scores)
    whole = _upsample(weight="1 + s").process(Batch(table, "a", n)).table
    parts = [
        _upsample(weight="1 + s").process(Batch(table.slice(o, 100), "a", 100)).table
        for o in range(0, n, 100)
    ]
    assert whole.column("id").to_pylist() == pa.concat_tables(parts).column("id").to_pylist()


def test_cap_where_and_chained_blocks_keep_ids_unique() -> None:
    n = 50
    t = _table(n, [100.0] * n)
    out = _upsample(weight="s", max_copies=5, where="s > 1").process(Batch(t, "a", n))
    assert out.table.num_rows == 5 * n and out.added == 4 * n
    again = _upsample(name="second", weight="2", max_copies=3).process(out)
    ids = again.table.column("id").to_pylist()
    assert again.table.num_rows == 10 * n and len(set(ids)) == len(ids)
    assert set(again.table.column("original_id").to_pylist()) == {f"doc{i}" for i in range(n)}
    assert again.added == 9 * n


def test_repeat_rows_with_count_one_changes_nothing_but_adds_lineage() -> None:
    t = _table(3, [0.0, 1.0, 2.0])
    out = repeat_rows(t, np.ones(3, dtype=np.int64), id_column="id")
    assert out.column("id").to_pylist() == ["doc0", "doc1", "doc2"]
    assert out.column("copy_index").to_pylist() == [0, 0, 0]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"weight": "2", "target_share": 0.1, "where": "moral_hits > 0"},
            "exactly one of weight and target_share",
        ),
        ({"target_share": 0.1}, "needs `where`"),
        ({"target_share": 5, "where": "moral_hits > 0"}, "between 0 and 1"),
        ({"weight": "text"}, "not a number"),
        ({"weight": "nope + 1"}, "unknown column 'nope'"),
        ({"target_share": 0.1, "where": "moral_hits > 0"}, "no integer column 'tokens_count'"),
    ],
)
def test_recipe_errors_name_the_block(corpus: Path, tmp_path: Path, params: dict, message: str) -> None:
    r = recipe_dict(corpus, tmp_path / "out")
    r["blocks"].append({"upsample": params})
    with pytest.raises(RecipeError, match=message):
        plan(load_recipe(r))


def test_drops_must_come_before_solved_blocks(corpus: Path, tmp_path: Path) -> None:
    r = recipe_dict(corpus, tmp_path / "out")
    r["blocks"] = [
        {"tokens": {}},
        {"keywords": {"name": "moral", "terms": ["kindness"]}},
        {"backfill": {}},
        {"drop": {"where": "moral_hits >= 1", "reason": "moral"}},
    ]
    with pytest.raises(RecipeError, match="drop/keep blocks must come before 2.backfill"):
        load_recipe(r)


def test_upsample_round_trips_its_config() -> None:
    from corpusfilter.registry import from_config

    b = Upsample(name="p", where="a > 1", target_share=0.2, max_copies=4, label="x")
    assert from_config(b.to_config()).to_config() == b.to_config()


@pytest.mark.parametrize(
    ("control", "message"),
    [
        ({"type": "matched", "by": ["nope"]}, "control.by: unknown column 'nope'"),
        ({"type": "matched", "by": ["source"], "tokens": "moral_hits2"}, "control.tokens: no integer column"),
        ({"type": "random"}, "control.type"),
        ({"type": "matched", "length_buckets": [10, 5]}, "length_buckets"),
        ({"type": "matched", "strata": ["x"]}, "strata"),
    ],
)
def test_control_is_checked_before_anything_runs(
    corpus: Path, tmp_path: Path, control: dict, message: str
) -> None:
    r = recipe_dict(corpus, tmp_path / "out", control=control)
    with pytest.raises(RecipeError, match=message):
        plan(load_recipe(r))
    assert not (tmp_path / "out").exists()


def test_weight_and_max_copies_count_the_original_added_counts_the_copies() -> None:
    """What the parameter help (`corpusfilter blocks`) and the README say: `weight` and `max_copies`
    are occurrences, the original included; `added` and copy_index count only the extra rows."""
    n = 20
    t = _table(n, [1.0] * n)
    three = _upsample(weight="3", max_copies=10).process(Batch(t, "a", n))
    assert three.table.num_rows == 3 * n and three.added == 2 * n
    assert sorted(set(three.table.column("copy_index").to_pylist())) == [0, 1, 2]
    capped = _upsample(weight="3", max_copies=2).process(Batch(t, "a", n))
    assert capped.table.num_rows == 2 * n and capped.added == n
    up = {p["name"]: p["help"] for p in describe_params(UpsampleParams)}
    back = {p["name"]: p["help"] for p in describe_params(BackfillParams)}
    assert "the original included (3 = the original and 2 copies)" in up["weight"]
    assert "the original included (2 = at most one copy)" in up["max_copies"]
    assert back["max_copies"] == up["max_copies"]


def test_blocks_listing_marks_the_control_block_as_not_a_recipe_block(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`corpusfilter blocks` lists matched_control (registered for manifests and rebuilds) with
    described parameters and a note that a recipe's `control:` section makes it, as the recipe
    loader requires."""
    from corpusfilter.cli import main

    assert all(p["help"] for p in describe_params(MatchedControlParams))
    assert main(["blocks", "--json"]) == 0
    infos = {b["type"]: b for b in json.loads(capsys.readouterr().out)}
    ctl = infos.pop("matched_control@1")
    assert ctl["recipe_block"] is False and "adds from a `control:` section" in ctl["note"]
    assert all(p["help"].startswith(f"control.{p['name']}: ") for p in ctl["params"])
    assert all(b["recipe_block"] and "note" not in b for b in infos.values())
    assert main(["blocks"]) == 0
    lines = capsys.readouterr().out.split("matched_control@1", 1)[1].splitlines()
    assert lines[1] == (
        "    note: not a recipe block: the control arm's block, which the runner adds from a "
        "`control:` section (it solves the control's selection from the treatment); write `control: {}`"
    )
    r = recipe_dict(corpus, tmp_path / "out")
    r["blocks"].append({"matched_control": {}})
    with pytest.raises(RecipeError, match="control arm's block.*`control:` section"):
        load_recipe(r)
