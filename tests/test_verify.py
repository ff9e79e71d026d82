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


def _file_entry(m: dict, kind: str, path: Path) -> dict:
    return next(e for e in m["outputs"][kind] if e["path"] == f"{kind}/{path.name}")


def _forge_deleted_row(output: Path, m: dict, *, limit: int | None = None, input_rows: bool = False) -> str:
    """Delete one kept row from its file and make every manifest figure agree (file hash, rows, bytes,
    kept and read in total and per shard); returns the shard it came from."""
    import hashlib

    # a shard's first row (not its last: a last row gone with read lowered leaves rows 0 to read-1)
    data, t = next(
        (f, t)
        for f in sorted((output / "data").glob("*.parquet"))
        if 0 in (t := pq.read_table(f)).column("cf_row").to_pylist()
    )
    first = t.column("cf_row").to_pylist().index(0)
    shard = t.column("cf_shard")[first].as_py()
    pq.write_table(pa.concat_tables([t.slice(0, first), t.slice(first + 1)]), data)
    entry = _file_entry(m, "data", data)
    entry.update(
        sha256=hashlib.sha256(data.read_bytes()).hexdigest(), rows=t.num_rows - 1, bytes=data.stat().st_size
    )
    for c in (m["accounting"], m["accounting"]["per_shard"][shard]):
        c["kept"] -= 1
        c["read"] -= 1
    if input_rows:
        next(e for e in m["inputs"] if e["path"] == shard)["rows"] -= 1
    if limit is not None:
        m["executor"]["limit"] = limit
    (output / "manifest.json").write_text(json.dumps(m))
    return shard


def test_a_rejected_row_without_a_reason_is_a_problem(output: Path) -> None:
    """A null reject_reason (its file's hash and the accounting edited to count it as "None") had
    passed: it was counted under the reason "None"."""
    import hashlib

    m = json.loads((output / "manifest.json").read_text())
    rej = next(f for f in sorted((output / "rejected").glob("*.parquet")) if pq.read_metadata(f).num_rows)
    t = pq.read_table(rej)
    reason = t.column("reject_reason")[0].as_py()
    shard = t.column("cf_shard")[0].as_py()
    i = t.schema.get_field_index("reject_reason")
    nulled = pa.array([None, *t.column(i).to_pylist()[1:]], t.schema.field(i).type)
    pq.write_table(t.set_column(i, t.schema.field(i), nulled), rej)
    _file_entry(m, "rejected", rej).update(
        sha256=hashlib.sha256(rej.read_bytes()).hexdigest(), bytes=rej.stat().st_size
    )
    for c in (m["accounting"]["rejected"], m["accounting"]["per_shard"][shard]["rejected"]):
        c[reason] -= 1
        c["None"] = 1
    (output / "manifest.json").write_text(json.dumps(m))
    assert f"rejected/{rej.name}: 1 rejected row(s) without a reject_reason" in verify(str(output)).problems


@pytest.mark.parametrize("forgery", ["input_rows", "limit", "no_inputs"])
def test_a_document_deleted_with_every_count_forged_to_match_is_caught(output: Path, forgery: str) -> None:
    """A kept row deleted from its file, the file's hash and every count edited to agree: the input
    rows each file holds (cf_shard/cf_row) must be rows 0 to read-1 of each shard, once each; the
    inputs' own row counts are re-read; a --limit must explain a short read. Each had passed."""
    m = json.loads((output / "manifest.json").read_text())
    shard = _forge_deleted_row(
        output, m, input_rows=forgery == "input_rows", limit=1_000_000 if forgery == "limit" else None
    )
    v = verify(str(output), inputs=forgery != "no_inputs")
    assert any(p.startswith(f"{shard}: the files hold") and "each once" in p for p in v.problems), v.problems
    if forgery == "input_rows":
        assert f"input {shard}: 4 rows, but the manifest says 3" in v.problems
    else:
        how = "with --limit 1000000 over 2 task(s) " if forgery == "limit" else ""
        assert f"{shard}: read 3 of its 4 rows, but {how}the reader reads 4" in v.problems
    # the coverage alone, with the inputs' row counts forged too and not re-read
    if forgery == "no_inputs":
        m = json.loads((output / "manifest.json").read_text())
        next(e for e in m["inputs"] if e["path"] == shard)["rows"] = 3
        (output / "manifest.json").write_text(json.dumps(m))
        assert verify(str(output), inputs=False).problems == [
            f"{shard}: the files hold 3 of its rows (3 distinct, 1 to 3), but it read rows 0 to 2: each once"
        ]


def test_the_manifest_cannot_switch_checks_off(corpus: Path, tmp_path: Path) -> None:
    """The checks that read a column decide from `schemas` whether it is there, and the token check
    from the recorded blocks: editing either no longer skips a check (both had passed a forgery)."""
    out = tmp_path / "tok"
    r = recipe_dict(corpus, out)
    r["blocks"] = [{"tokens": {}}, *r["blocks"]]
    run(load_recipe(r), progress=False)
    m = json.loads((out / "manifest.json").read_text())

    def no_token_column(m: dict) -> None:
        m["tokens"]["column"] = None
        m["tokens"]["out"]["tokens"] += 5

    _edit(out, no_token_column)
    assert any(
        p.startswith("tokens.column: None, but the recorded blocks count tokens into 'tokens_count'")
        for p in verify(str(out)).problems
    )
    for col in ("reject_reason", "cf_shard", "copy_index"):
        (out / "manifest.json").write_text(json.dumps(m))
        _edit(
            out,
            lambda m, col=col: m["schemas"].update(
                rejected=[c for c in m["schemas"]["rejected"] if c["name"] != col]
            ),
        )
        problems = verify(str(out)).problems
        if col == "copy_index":
            assert not problems  # not a column of these files: nothing to take out
        else:
            assert any(
                "its columns are not the ones schemas.rejected records" in p and col in p for p in problems
            )
    (out / "manifest.json").write_text(json.dumps(m))
    _edit(out, lambda m: m["blocks"][-1]["config"]["params"].update(where="moral_hits >= 99"))
    assert any(
        p.startswith("blocks: 2.drop is recorded as") and "moral_hits >= 2" in p
        for p in verify(str(out)).problems
    )
    (out / "manifest.json").write_text(json.dumps(m))
    _edit(out, lambda m: m["blocks"].pop(0))
    assert any(
        p == "blocks: 0.tokens:tokens of the recorded recipe is not recorded"
        for p in verify(str(out)).problems
    )
    (out / "manifest.json").write_text(json.dumps(m))
    assert verify(str(out)).ok


def test_rebuild_compares_every_derived_field(output: Path) -> None:
    """--rebuild compared only the files, accounting and tokens: block stats and provenance (the
    report's funnel) could be edited unnoticed. Every field the run derives is compared now."""
    m = json.loads((output / "manifest.json").read_text())
    _edit(output, lambda m: m["blocks"][1]["stats"].update(out=0))
    v = verify(str(output), rebuild=True)
    assert v.problems == [
        "rebuild: the blocks differs from the recorded one ([1].stats.out: recorded 0, rebuilt "
        f"{m['blocks'][1]['stats']['out']})"
    ]
    (output / "manifest.json").write_text(json.dumps(m))
    _edit(output, lambda m: m["blocks"][0]["provenance"].update(terms=99))
    assert [p.split(" (")[0] for p in verify(str(output), rebuild=True).problems] == [
        "rebuild: the blocks differs from the recorded one"
    ]


def test_rebuild_reads_only_the_recorded_inputs_and_follows_a_moved_input(
    output: Path, corpus: Path, tmp_path: Path
) -> None:
    """A file added to the input folder since the run made --rebuild read it too and fail on every
    count; a moved input could not be named. The rebuild now refuses other input, and --input says
    where the recorded one is now."""
    import shutil

    (corpus / "zz-new.parquet").write_bytes((corpus / "shard-000.parquet").read_bytes())
    v = verify(str(output), rebuild=True)
    assert [p for p in v.problems if p.startswith("rebuild")] == [
        f"rebuild: {corpus} now lists 3 Parquet file(s), the manifest 2 (new: zz-new.parquet); not rebuilt "
        "from other input"
    ]
    (corpus / "zz-new.parquet").unlink()
    moved = tmp_path / "moved"
    shutil.move(str(corpus), moved)
    v = verify(str(output), rebuild=True)
    assert not v.ok  # the recorded input is gone
    v = verify(str(output), rebuild=True, input_path=str(moved))
    assert v.ok and any(c.endswith("input file(s): sha256, rows") for c in v.checked), v.problems


def test_unreadable_manifest_and_output_files_are_problems_not_tracebacks(output: Path) -> None:
    import hashlib

    data = sorted((output / "data").glob("*.parquet"))[0]
    data.write_bytes(b"not parquet at all")
    _edit(
        output,
        lambda m: _file_entry(m, "data", data).update(sha256=hashlib.sha256(data.read_bytes()).hexdigest()),
    )
    problems = verify(str(output)).problems
    assert any(p.startswith(f"data/{data.name}: not a readable Parquet file") for p in problems), problems
    (output / "manifest.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(CorpusfilterError, match=r"manifest.json: not UTF-8 text"):
        verify(str(output))
