"""`corpusfilter verify`: every file, hash and count is re-derived; tampering is caught."""

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpusfilter.errors import CorpusfilterError
from corpusfilter.recipe import load_recipe
from corpusfilter.runner import format_summary, run
from corpusfilter.verify import verify

from .conftest import DOCS, recipe_dict, write_shards


@pytest.fixture
def output(corpus: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    run(load_recipe(recipe_dict(corpus, out)), tasks=2, progress=False)
    return out


def test_a_fresh_output_verifies_and_rebuilds_identically(output: Path) -> None:
    v = verify(str(output), rebuild=True)
    assert v.ok, v.problems
    assert any("rebuild" in c for c in v.checked) and any("input file" in c for c in v.checked)
    assert any(c.startswith("ids: 8 id values") for c in v.checked)
    assert json.loads((output / "manifest.json").read_text())["accounting"]["repeated_ids"] == 0


def test_tampered_files_are_caught(output: Path) -> None:
    data = sorted((output / "data").glob("*.parquet"))[0]
    table = pq.read_table(data)
    pq.write_table(table.slice(1), data)  # one row silently removed
    (output / "data" / "extra.parquet").write_bytes(b"x")
    next((output / "rejected").glob("*.parquet")).unlink()
    problems = verify(str(output)).problems
    assert any(data.name in p and "sha256" in p for p in problems)
    assert any("extra.parquet: not in the manifest" in p for p in problems)
    assert any("listed in the manifest but missing" in p for p in problems)


def test_accounting_and_schema_edits_are_caught(output: Path) -> None:
    m = json.loads((output / "manifest.json").read_text())
    m["accounting"]["kept"] += 1
    (output / "manifest.json").write_text(json.dumps(m))
    assert any("per-shard kept adds up to" in p for p in verify(str(output)).problems)
    del m["inputs"]
    (output / "manifest.json").write_text(json.dumps(m))
    assert any("'inputs' is a required property" in p for p in verify(str(output)).problems)


def test_changed_inputs_fail_the_input_check_and_the_rebuild(output: Path, corpus: Path) -> None:
    shard = corpus / "shard-000.parquet"
    t = pq.read_table(shard)
    pq.write_table(t.set_column(1, "text", pa.array(["kindness compassion honesty"] * t.num_rows)), shard)
    v = verify(str(output), rebuild=True)
    assert any("input shard-000.parquet: sha256 changed" in p for p in v.problems)
    assert any(
        p.startswith("rebuild: data/ differs") or p.startswith("rebuild: rejected/ differs")
        for p in v.problems
    )


def test_not_an_output(tmp_path: Path) -> None:
    with pytest.raises(CorpusfilterError, match="no manifest.json"):
        verify(str(tmp_path))


def test_repeated_input_ids_are_named_with_their_files_and_rows(tmp_path: Path) -> None:
    # d3 (shard 1, kept) gets d0's id (shard 0, rejected): the run cannot see it across shards
    docs = [("d0" if d[0] == "d3" else d[0], d[1], d[2]) for d in DOCS]
    out = tmp_path / "out"
    res = run(load_recipe(recipe_dict(write_shards(tmp_path / "in", docs), out)), tasks=2, progress=False)
    assert res.manifest["accounting"]["repeated_ids"] == 1 and res.manifest["accounting"]["ok"]
    assert re.search(r"\nrepeated ids +1 \(verify names them\)\n", format_summary(res))
    problems = verify(str(out)).problems
    assert len(problems) == 1, problems
    assert problems[0].startswith("1 id value(s) occur more than once in data/ and rejected/ (2 rows)")
    assert "'d0' at " in problems[0] and "rejected/" in problems[0] and "data/" in problems[0]


def test_adjacent_input_rows_sharing_an_id_are_two_originals_under_an_upsample(tmp_path: Path) -> None:
    """An upsample numbered runs of equal ids: the second of two adjacent rows with one id became a
    copy (x#1, copy_index 1) that nothing made, so the run said ok and verify failed; with a batch
    boundary between them it did not. Both stay originals, counted as a repeated id, in any batch."""
    docs = [("a", "one doc", "x"), ("x", "two doc", "x"), ("x", "three doc", "x"), ("b", "four doc", "x")]
    inp = write_shards(tmp_path / "in", docs, n_shards=1)
    for batch in (1000, 2):
        out = tmp_path / f"out{batch}"
        recipe = recipe_dict(inp, out, blocks=[
            {"keywords": {"name": "kw", "terms": ["zebra"]}},
            {"upsample": {"where": "kw_hits >= 1", "weight": "2"}},
        ])  # fmt: skip
        recipe["input"]["batch_size"] = batch
        res = run(load_recipe(recipe), progress=False)
        acc = res.manifest["accounting"]
        assert acc["ok"] and acc["repeated_ids"] == 1 and acc["added"] == 0
        rows = pq.read_table(out / "data").sort_by("id")
        assert rows.column("id").to_pylist() == ["a", "b", "x", "x"]
        assert rows.column("copy_index").to_pylist() == [0, 0, 0, 0]
        problems = verify(str(out)).problems  # named, and nothing else: copies agree with `added`
        assert len(problems) == 1 and problems[0].startswith("1 id value(s) occur more than once"), problems


def _edit(output: Path, change: object) -> None:
    m = json.loads((output / "manifest.json").read_text())
    change(m)  # type: ignore[operator]
    (output / "manifest.json").write_text(json.dumps(m))


def test_claims_the_files_contradict_are_caught(output: Path) -> None:
    """The manifest's reasons, per-shard counts, recipe and inputs are checked against the files and
    each other, not only summed: a forged manifest whose totals still add up fails."""
    m = json.loads((output / "manifest.json").read_text())
    (reason, n), shards = (
        next(iter(m["accounting"]["rejected"].items())),
        sorted(m["accounting"]["per_shard"]),
    )
    assert n >= 1 and len(shards) >= 2

    def rename_reason(m: dict) -> None:  # the same totals under a reason the recipe never gave
        m["accounting"]["rejected"] = {"forged": n}
        for c in m["accounting"]["per_shard"].values():
            c["rejected"] = {"forged": c["rejected"].get(reason, 0)}

    _edit(output, rename_reason)
    assert any(p.startswith("rejected/: reasons {'moral':") for p in verify(str(output)).problems)
    (output / "manifest.json").write_text(json.dumps(m))

    def move_kept(m: dict) -> None:  # one kept row moved between shards: every total still adds up
        a, b = (m["accounting"]["per_shard"][s] for s in shards[:2])
        a["kept"], a["read"], b["kept"], b["read"] = (
            a["kept"] - 1,
            a["read"] - 1,
            b["kept"] + 1,
            b["read"] + 1,
        )

    _edit(output, move_kept)
    problems = verify(str(output)).problems
    assert any(p.startswith(f"{shards[0]}: the files hold kept/rejected/unreadable") for p in problems)
    (output / "manifest.json").write_text(json.dumps(m))
    _edit(output, lambda m: m["recipe"]["resolved"]["blocks"][1]["drop"].update(where="moral_hits >= 9"))
    assert any(p.startswith("recipe: the recorded recipe hashes to") for p in verify(str(output)).problems)
    (output / "manifest.json").write_text(json.dumps(m))
    _edit(output, lambda m: m["inputs"].pop())
    assert any(
        "in the accounting but not among the manifest's inputs" in p for p in verify(str(output)).problems
    )
    (output / "manifest.json").write_text(json.dumps(m))
    assert verify(str(output)).ok


def test_stray_and_truncated_files_are_problems_not_tracebacks(output: Path) -> None:
    data = sorted((output / "data").glob("*.parquet"))[0]
    (output / "data" / f"{data.name}.bak").write_bytes(data.read_bytes())  # a reader would take it in
    data.write_bytes(data.read_bytes()[:50])  # truncated: its sha fails, so it is not read further
    problems = verify(str(output)).problems
    assert any(p.endswith(".parquet.bak: not in the manifest") for p in problems)
    assert any(data.name in p and "sha256" in p for p in problems)


def test_a_score_pass_that_names_itself_is_a_problem_not_a_recursion(output: Path) -> None:
    _edit(
        output,
        lambda m: m.update(
            stage="decide",
            scores={"path": str(output), "recipe_sha256": "0" * 64, "finished_at": m["finished_at"],
                    "outputs_sha256": "0" * 64, "blocks": []},
        ),
    )  # fmt: skip
    problems = verify(str(output)).problems
    assert any("is this output or one that names it (a loop)" in p for p in problems)


def test_token_figures_are_recomputed_from_the_files(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "tok"
    r = recipe_dict(corpus, out)
    r["blocks"] = [{"tokens": {}}, *r["blocks"], {"tag": {"where": "moral_hits >= 1", "label": "moral"}}]
    run(load_recipe(r), progress=False)
    v = verify(str(out))
    assert v.ok and any(c.startswith("tokens: in, removed, added, out") for c in v.checked), v.problems
    _edit(out, lambda m: m["tokens"]["out"].update(tokens=m["tokens"]["out"]["tokens"] + 1))
    assert any(p.startswith("tokens: the files give out") for p in verify(str(out)).problems)
