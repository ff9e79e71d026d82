"""End-to-end runs through datatrove's LocalPipelineExecutor on real Parquet shards."""

import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest

from corpusfilter.errors import CorpusfilterError, OutputError
from corpusfilter.manifest import validate_manifest
from corpusfilter.recipe import load_recipe
from corpusfilter.runner import check_accounting, run
from corpusfilter.verify import verify

from .conftest import DOCS, recipe_dict


def _ids(folder: Path, sub: str) -> list[str]:
    files = sorted((folder / sub).glob("*.parquet"))
    if not files:
        return []
    return sorted(pl.read_parquet(files).get_column("id").to_list())


def test_run_accounts_for_every_document(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run(load_recipe(recipe_dict(corpus, out)), progress=False)
    acc = res.accounting
    assert acc["ok"] and acc["read"] == len(DOCS)
    assert acc["read"] == acc["kept"] + acc["rejected_total"] + acc["unreadable"]
    # >= 2 hits: d0 (compassion, kindness, virtue), d2 (honesty x2, integrity), d4 (two AI phrases), d5
    assert _ids(out, "rejected") == ["d0", "d2", "d4", "d5"]
    assert _ids(out, "data") == ["d1", "d3", "d6", "d7"]
    rej = pl.read_parquet(sorted((out / "rejected").glob("*.parquet")))
    assert set(rej["reject_reason"]) == {"moral"} and set(rej["reject_block"]) == {"1.drop"}
    assert rej.schema["moral_hits"] == pl.Int32 and rej.schema["moral_score"] == pl.Float64
    assert rej.filter(pl.col("id") == "d5")["moral_hits"].item() == 4
    kept = pl.read_parquet(sorted((out / "data").glob("*.parquet")))
    assert kept.columns[:3] == ["id", "text", "source"] and "cf_shard" in kept.columns


def test_manifest_is_valid_and_hashes_are_true(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(load_recipe(recipe_dict(corpus, out)), progress=False)
    m = json.loads((out / "manifest.json").read_text())
    assert validate_manifest(m) == []
    assert m["accounting"]["ok"] is True
    for f in m["inputs"]:
        assert f["sha256"] == hashlib.sha256((corpus / f["path"]).read_bytes()).hexdigest()
    for kind in ("data", "rejected"):
        for f in m["outputs"][kind]:
            assert f["sha256"] == hashlib.sha256((out / f["path"]).read_bytes()).hexdigest()
            assert f["rows"] == pl.read_parquet(out / f["path"]).height
    kw = m["blocks"][0]
    assert kw["config"]["type"] == "keywords@1" and kw["stats"]["in"] == len(DOCS)
    assert len(kw["provenance"]["lexicon_sha256"]) == 64
    assert m["blocks"][1]["stats"]["dropped"] == {"moral": 4}
    assert m["recipe"]["resolved"]["input"]["path"] == str(corpus)
    assert m["environment"]["packages"]["datatrove"]


def test_task_count_does_not_change_the_result(tmp_path: Path) -> None:
    from .conftest import write_shards

    docs = [
        (f"id{i}", f"text {i} " + ("kindness compassion" if i % 3 == 0 else "plain"), "s") for i in range(60)
    ]
    inp = write_shards(tmp_path / "in", docs, n_shards=6)
    r1 = run(load_recipe(recipe_dict(inp, tmp_path / "o1")), tasks=1, progress=False)
    r4 = run(load_recipe(recipe_dict(inp, tmp_path / "o4")), tasks=4, workers=2, progress=False)
    assert r1.accounting["ok"] and r4.accounting["ok"]
    assert _ids(tmp_path / "o1", "data") == _ids(tmp_path / "o4", "data")
    assert _ids(tmp_path / "o1", "rejected") == _ids(tmp_path / "o4", "rejected")
    assert len(_ids(tmp_path / "o1", "rejected")) == 20


def test_non_empty_output_is_refused_unless_overwrite(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    recipe = load_recipe(recipe_dict(corpus, out))
    run(recipe, progress=False)
    with pytest.raises(
        OutputError, match=r"not empty; use --overwrite.*from Python: run\(..., mode=.overwrite.\)"
    ):
        run(recipe, progress=False)
    assert run(recipe, mode="overwrite", progress=False).accounting["ok"]


def test_an_output_that_keeps_nothing_still_has_a_data_file_with_the_schema(
    corpus: Path, tmp_path: Path
) -> None:
    """``scan_parquet("OUT/data/*.parquet")`` must work on every output, also when all is rejected."""
    from corpusfilter.verify import verify

    r = recipe_dict(corpus, tmp_path / "out", executor={"tasks": 2})
    r["blocks"][1]["drop"]["where"] = "moral_hits >= 0"
    res = run(load_recipe(r), progress=False)
    assert (
        res.accounting["ok"] and res.accounting["kept"] == 0 and res.accounting["rejected_total"] == len(DOCS)
    )
    (entry,) = res.manifest["outputs"]["data"]
    assert entry["rows"] == 0 and entry["path"] == "data/00000_00000.parquet"
    kept = pl.scan_parquet(str(tmp_path / "out" / "data" / "*.parquet")).collect()
    assert kept.height == 0 and kept.columns[:3] == ["id", "text", "source"] and "moral_hits" in kept.columns
    assert verify(str(tmp_path / "out")).ok


def test_overwrite_never_deletes_the_input_or_what_is_not_an_output(tmp_path: Path) -> None:
    from .conftest import write_shards

    inp = write_shards(tmp_path / "parent" / "in", [(f"d{i}", f"doc {i}", "s") for i in range(4)], n_shards=2)
    shards = sorted(p.read_bytes() for p in inp.glob("*.parquet"))
    for out in (inp, tmp_path / "parent"):  # the input folder itself, or a folder around it
        with pytest.raises(OutputError, match=f"holds the input {inp}"):
            run(load_recipe(recipe_dict(inp, out)), mode="overwrite", progress=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="replaces only an earlier corpusfilter output.*notes.txt"):
        run(load_recipe(recipe_dict(inp, mine)), mode="overwrite", progress=False)
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        run(load_recipe(recipe_dict(inp, recipe_file)), mode="overwrite", progress=False)
    # an output inside the input folder would be read as input by the next run (and a score pass's
    # by the decide pass of the same run): refused, nothing written
    for inside in (inp / "out", inp / "sub" / "_out"):
        with pytest.raises(OutputError, match=f"{inside} is inside the input folder {inp}"):
            run(load_recipe(recipe_dict(inp, inside)), progress=False)
        assert not inside.exists()
    # beside a single input file is fine: nothing else in its folder is read
    one = next(iter(sorted(inp.glob("*.parquet"))))
    rows = pq.ParquetFile(one).metadata.num_rows
    assert run(load_recipe(recipe_dict(one, inp / "out")), progress=False).accounting["read"] == rows
    shutil.rmtree(inp / "out")
    assert sorted(p.read_bytes() for p in inp.glob("*.parquet")) == shards
    assert (mine / "notes.txt").read_text() == "keep me" and recipe_file.read_text() == "x"


def test_resume_finishes_an_interrupted_run_without_duplicates(tmp_path: Path) -> None:
    from .conftest import write_shards

    docs = [(f"id{i}", "kindness compassion" if i % 3 == 0 else f"doc {i}", "s") for i in range(40)]
    inp = write_shards(tmp_path / "in", docs, n_shards=4)
    out = tmp_path / "out"
    recipe = load_recipe(recipe_dict(inp, out))
    full = run(recipe, tasks=2, progress=False)
    # simulate task 1 dying mid-write: no completion marker, a partial file left behind
    (out / "logs" / "completions" / "00001").unlink()
    (out / "accounting" / "00001.json").unlink()
    victim = next((out / "data").glob("00001_*.parquet"))
    victim.rename(out / "data" / ".tmp-00001_00000.parquet")
    resumed = run(recipe, tasks=2, mode="resume", progress=False)
    assert resumed.accounting["ok"]
    assert resumed.accounting["kept"] == full.accounting["kept"] == 26
    # every document over this call's time would be a speed the run never had
    from corpusfilter.runner import format_summary

    summary = format_summary(resumed)
    assert "- (resumed: tasks finished earlier are counted, not timed)" in summary
    assert "docs/s" not in summary and "docs/s" in format_summary(full)
    ids = _ids(out, "data")
    assert len(ids) == len(set(ids)) == 26
    assert not list((out / "data").glob(".tmp-*"))
    with pytest.raises(OutputError, match="started with 2 tasks, not 3; use --tasks 2 or --overwrite"):
        run(recipe, tasks=3, mode="resume", progress=False)
    other = load_recipe(recipe_dict(inp, out), overrides=["blocks.1.drop.where=moral_hits >= 3"])
    with pytest.raises(OutputError, match="started with another recipe"):
        run(other, tasks=2, mode="resume", progress=False)
    with pytest.raises(OutputError, match="started with no --limit, not --limit 5; use the same --limit"):
        run(recipe, tasks=2, limit=5, mode="resume", progress=False)
    shutil.copy(inp / "shard-000.parquet", inp / "shard-009.parquet")
    with pytest.raises(
        OutputError, match=r"the input changed since it was started \(1 files: added shard-009"
    ):
        run(recipe, tasks=2, mode="resume", progress=False)
    assert _ids(out, "data") == ids  # refused before anything was touched


def test_a_task_still_writing_from_a_killed_run_is_waited_for_not_raced(tmp_path: Path) -> None:
    """`kill -9` of a run leaves its local workers writing into the output; an immediate --resume or
    --overwrite ran the same tasks beside them (both wrote .tmp-<rank> files: a corrupt data file,
    completion markers from the old workers, a folder no --resume could finish). Each task marks
    itself running (pid, machine) until its accounting is written; a new run waits for live ones."""
    import socket
    import subprocess

    from .conftest import write_shards

    docs = [(f"id{i}", "kindness compassion" if i % 3 == 0 else f"doc {i}", "s") for i in range(40)]
    inp = write_shards(tmp_path / "in", docs, n_shards=4)
    out = tmp_path / "out"
    recipe = load_recipe(recipe_dict(inp, out))
    full = run(recipe, tasks=2, progress=False)
    assert not list((out / "logs" / "running").iterdir())  # each task's marker went with its end
    (out / "logs" / "completions" / "00001").unlink()  # task 1 "still running"
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mark = out / "logs" / "running" / "00001.json"
        mark.write_text(json.dumps({"pid": worker.pid, "host": socket.gethostname()}))
        before = _ids(out, "data")
        for mode in ("resume", "overwrite"):
            with pytest.raises(
                OutputError, match=rf"still writing there \(task 00001 \(pid {worker.pid}\) on this machine"
            ):
                run(recipe, tasks=2, mode=mode, progress=False)
        assert _ids(out, "data") == before and (out / "accounting" / "00001.json").exists()  # untouched
        # the pid of another process now (its start time differs): not the task, not waited for
        mark.write_text(json.dumps({"pid": worker.pid, "host": socket.gethostname(), "start": "1"}))
        assert run(recipe, tasks=2, mode="resume", progress=False).accounting["kept"] == 26
        (out / "logs" / "completions" / "00001").unlink()
        mark.write_text(json.dumps({"pid": worker.pid, "host": "another-machine"}))  # not checkable here
        assert run(recipe, tasks=2, mode="resume", progress=False).accounting["kept"] == 26
    finally:
        worker.kill()
        worker.wait()
    (out / "logs" / "completions" / "00001").unlink()
    mark.write_text(json.dumps({"pid": worker.pid, "host": socket.gethostname()}))  # dead: stale
    resumed = run(recipe, tasks=2, mode="resume", progress=False)
    assert resumed.accounting["kept"] == full.accounting["kept"] and verify(str(out)).ok
    # a file damaged under a finished task (what the race left): one line, not an ArrowInvalid traceback
    data = next((out / "data").glob("00000_*.parquet"))
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(
        OutputError, match=r"an output file cannot be read back \(ArrowInvalid: .*--overwrite"
    ):
        run(recipe, tasks=2, mode="resume", progress=False)


def test_a_task_that_fails_in_this_process_leaves_no_running_mark(tmp_path: Path) -> None:
    """One task runs inside the calling process: a run() that failed (or was interrupted) in a
    notebook had left that live process marked as writing, and every other run was refused."""
    import pyarrow as pa

    from corpusfilter import Detector, register
    from corpusfilter.blocks.base import NoParams

    @register("test_boom", version=1)
    class Boom(Detector):
        Params = NoParams
        fields = {"x": pa.int64()}  # noqa: RUF012

        @property
        def prefix(self) -> str:
            return "boom"

        def score(self, texts: pa.StringArray) -> dict[str, Any]:
            if any(t == "boom" for t in texts.to_pylist()):
                raise RuntimeError("boom")
            return {"x": [1] * len(texts)}

    from .conftest import write_shards

    inp = write_shards(tmp_path / "in", [("a", "fine", "s"), ("b", "boom", "s")], n_shards=1)
    out = tmp_path / "out"
    data = recipe_dict(inp, out)
    data["blocks"] = [{"test_boom": {}}]
    data["input"]["batch_size"] = 1
    with pytest.raises(CorpusfilterError, match="boom"):
        run(load_recipe(data), progress=False)
    assert (out / "logs" / "running").is_dir() and not list((out / "logs" / "running").iterdir())


@pytest.mark.slow
def test_sigterm_stops_the_workers_and_resume_finishes(tmp_path: Path) -> None:
    """SIGTERM (kill, a scheduler) ended only the main process: datatrove's pool workers wrote on.
    It is Ctrl-C now: the pool is terminated, nothing of the run is left running, --resume finishes."""
    import os
    import signal
    import subprocess
    import time

    from .conftest import write_shards

    words = "kindness compassion honesty the of and model data".split()
    docs = [(f"id{i}", " ".join(words[(i + j) % 8] for j in range(60)), "s") for i in range(120_000)]
    inp = write_shards(tmp_path / "in", docs, n_shards=4)
    out = tmp_path / "out"
    (tmp_path / "r.yaml").write_text(json.dumps(recipe_dict(inp, out)))
    cmd = [sys.executable, "-m", "corpusfilter.cli", "run", str(tmp_path / "r.yaml"), "--tasks", "2"]
    proc = subprocess.Popen(
        [*cmd, "--workers", "2", "--no-progress"], start_new_session=True, stderr=subprocess.PIPE, text=True
    )
    running = out / "logs" / "running"
    deadline = time.monotonic() + 120
    while not (running.is_dir() and len(list(running.iterdir())) == 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted (finish later with --resume)" in err
    left: list[str] = []
    for _ in range(100):  # the pool's helper processes (forkserver, resource tracker) exit on their own
        time.sleep(0.1)
        ps = subprocess.run(
            ["ps", "-o", "pid=,stat=,args=", "-g", str(proc.pid)], capture_output=True, text=True
        )
        left = [line for line in ps.stdout.splitlines() if line.split()[1][0] != "Z"]  # zombies are gone
        if not left:
            break
    assert not left, f"processes of the stopped run still alive: {left}"
    assert not (out / "manifest.json").exists()
    subprocess.run([*cmd, "--workers", "2", "--no-progress", "--resume"], check=True, capture_output=True)
    res = verify(str(out))
    assert res.ok, res.problems
    assert json.loads((out / "manifest.json").read_text())["accounting"]["read"] == 120_000
    del os


def test_resume_refuses_a_lexicon_edited_at_the_same_path(tmp_path: Path) -> None:
    """The resolved recipe names the lexicon by path: a resume after the file changed had mixed
    shards filtered with the old terms and the new, and recorded only the new."""
    from .conftest import write_shards

    docs = [(f"id{i}", "kindness compassion" if i % 3 == 0 else f"doc {i}", "s") for i in range(40)]
    inp = write_shards(tmp_path / "in", docs, n_shards=4)
    lex = tmp_path / "moral.lex"
    lex.write_text("kindness\ncompassion\n")
    out = tmp_path / "out"
    r = recipe_dict(inp, out)
    r["blocks"][0]["keywords"] = {"name": "moral", "lexicon": str(lex)}
    run(load_recipe(r), tasks=2, progress=False)
    (out / "logs" / "completions" / "00001").unlink()  # task 1 died
    lex.write_text("kindness\n")
    with pytest.raises(OutputError, match=r"cannot resume into .*: 0.keywords:moral reads other files than when it "
                       r"was started \(a lexicon, model or tokenizer at the same path changed\)"):  # fmt: skip
        run(load_recipe(r), tasks=2, mode="resume", progress=False)
    lex.write_text("kindness\ncompassion\n")
    assert run(load_recipe(r), tasks=2, mode="resume", progress=False).accounting["ok"]


def test_accounting_mismatches_are_reported() -> None:
    good = {"read": 3, "kept": 1, "rejected": {"x": 1}, "unreadable": 1, "text_bytes": 9}
    bad = {"read": 3, "kept": 1, "rejected": {}, "unreadable": 1, "text_bytes": 9}
    _, problems = check_accounting(
        [{"shards": {"a": good}}, {"shards": {"b": bad}}], {"a": 3, "b": 3, "c": 1}, -1
    )
    assert any("b: read 3 + added 0 != kept 1 + rejected 0 + unreadable 1" in p for p in problems)
    assert any("c: never reached the writer" in p for p in problems)
    _, problems = check_accounting([{"shards": {"a": good}}, {"shards": {"a": good}}], {"a": 3}, -1)
    assert any("more than one task" in p for p in problems)


def test_unreadable_rows_are_written_aside_and_counted(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(
        pa.table({"id": ["a", "b", "c"], "text": ["kindness compassion", None, ""]}), inp / "x.parquet"
    )
    out = tmp_path / "out"
    res = run(load_recipe(recipe_dict(inp, out)), progress=False)
    assert res.accounting["unreadable"] == 2 and res.accounting["rejected_total"] == 1
    bad = pl.read_parquet(sorted((out / "unreadable").glob("*.parquet")))
    assert sorted(bad["error"].to_list()) == ["empty text", "null text"]


def test_the_executor_backend_is_checked_and_a_local_recipe_keeps_its_hash(
    corpus: Path, tmp_path: Path
) -> None:
    """The Ray fields are recorded only for a Ray run (a local recipe hashes as before they existed);
    Ray's resources on a local run, or an unknown backend, are errors naming the key."""
    plain = load_recipe(recipe_dict(corpus, tmp_path / "o"))
    local = load_recipe(recipe_dict(corpus, tmp_path / "o", executor={"backend": "local", "tasks": 1}))
    assert plain.sha256 == local.sha256 and plain.data["executor"] == {"tasks": 1, "workers": -1}
    ray = load_recipe(recipe_dict(corpus, tmp_path / "o", executor={"backend": "ray", "cpus_per_task": 2}))
    assert ray.data["executor"] == {
        "backend": "ray",
        "tasks": 1,
        "workers": -1,
        "cpus_per_task": 2,
        "mem_per_cpu_gb": 2.0,
    }
    assert ray.sha256 != plain.sha256
    from corpusfilter.errors import RecipeError

    for bad, msg in (
        ({"cpus_per_task": 2}, "go with backend: ray or slurm"),
        ({"backend": "sge"}, "executor.backend"),
        ({"partition": "cpu"}, r"executor.partition: goes with backend: slurm"),
        (
            {"backend": "ray", "sbatch_args": {"account": "x"}},
            "executor.sbatch_args: goes with backend: slurm",
        ),
        ({"backend": "slurm"}, "executor.partition: backend: slurm needs the partition"),
        (
            {"backend": "slurm", "partition": "p", "sbatch_args": {"array": "0-3"}},
            "sbatch_args.array: set by",
        ),
    ):
        with pytest.raises(RecipeError, match=msg):
            load_recipe(recipe_dict(corpus, tmp_path / "o", executor=bad))
    slurm = load_recipe(recipe_dict(corpus, tmp_path / "o", executor={"backend": "slurm", "partition": "p"}))
    assert slurm.data["executor"] == {
        "backend": "slurm",
        "tasks": 1,
        "workers": -1,
        "cpus_per_task": 1,
        "mem_per_cpu_gb": 2.0,
        "partition": "p",
        "time": "24:00:00",
        "qos": None,
        "sbatch_args": {},
        "setup": None,
    }


def test_a_slurm_recipe_without_slurm_is_a_one_line_error(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from corpusfilter.errors import RecipeError

    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # no sbatch on it
    spec = {"backend": "slurm", "partition": "p"}
    with pytest.raises(RecipeError, match="slurm needs Slurm's sbatch and squeue on the PATH"):
        run(load_recipe(recipe_dict(corpus, tmp_path / "o", executor=spec)), progress=False)
    assert not (tmp_path / "o").exists()


def test_a_ray_recipe_without_ray_installed_is_a_one_line_error(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from corpusfilter.errors import RecipeError

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as without the extra
    with pytest.raises(RecipeError, match=r"ray needs the ray extra \(pip install 'corpusfilter\[ray\]'\)"):
        run(load_recipe(recipe_dict(corpus, tmp_path / "o", executor={"backend": "ray"})), progress=False)
    assert not (tmp_path / "o").exists()  # nothing written


@pytest.mark.ray
def test_a_ray_run_writes_what_a_local_run_writes(corpus: Path, tmp_path: Path) -> None:
    """backend: ray runs the tasks through datatrove's RayPipelineExecutor on a real (local) Ray
    cluster: the same documents kept and rejected as the local executor, every one accounted for,
    and `verify --rebuild` reproduces the output."""
    ray = pytest.importorskip("ray")
    local = run(load_recipe(recipe_dict(corpus, tmp_path / "local", executor={"tasks": 2})), progress=False)
    try:
        res = run(
            load_recipe(
                recipe_dict(
                    corpus, tmp_path / "ray", executor={"backend": "ray", "tasks": 2, "mem_per_cpu_gb": 0.5}
                )
            ),
            progress=False,
        )
        checked = verify(str(tmp_path / "ray"), rebuild=True)  # the rebuild runs through Ray too
    finally:
        ray.shutdown()
    assert checked.ok, checked.problems
    assert res.accounting["ok"] and res.accounting["read"] == len(DOCS)
    for sub in ("data", "rejected"):
        assert _ids(tmp_path / "ray", sub) == _ids(tmp_path / "local", sub) != []
    m = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert validate_manifest(m) == [] and m["executor"]["type"] == "datatrove.RayPipelineExecutor"
    assert (tmp_path / "ray" / "logs" / "logs" / "task_00001.log").is_file()  # the task logs came back
    assert local.accounting["kept"] == res.accounting["kept"]


@pytest.mark.ray
def test_a_failing_ray_task_names_its_cause_as_a_local_run_does(tmp_path: Path) -> None:
    """datatrove's Ray executor logs a task's exception and returns, so the run had said only that
    the shard "never reached the writer": the cause now comes from the task's log."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ray = pytest.importorskip("ray")
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("a", "b"):
        texts = [f"document {i} of {name} with kindness" for i in range(3000)]
        pq.write_table(pa.table({"id": [f"{name}{i}" for i in range(3000)], "text": texts}), inp / f"{name}.parquet",
                       row_group_size=500)  # fmt: skip
    md = pq.ParquetFile(inp / "b.parquet").metadata
    off = md.row_group(3).column(1).data_page_offset  # garble a page in the middle of b.parquet
    raw = bytearray((inp / "b.parquet").read_bytes())
    raw[off + 40 : off + 200] = bytes(x ^ 0x5A for x in raw[off + 40 : off + 200])
    (inp / "b.parquet").write_bytes(bytes(raw))
    recipe = recipe_dict(
        inp, tmp_path / "out", executor={"backend": "ray", "tasks": 2, "mem_per_cpu_gb": 0.5}
    )
    try:
        with pytest.raises(CorpusfilterError) as err:
            run(load_recipe(recipe), progress=False)
    finally:
        ray.shutdown()
    msg = str(err.value)
    assert msg.startswith(f"{inp / 'b.parquet'}: cannot read rows from ") and "never reached" not in msg
    assert f"1 Ray task(s) did not complete: 1; task logs: {tmp_path / 'out'}/logs/logs/)" in msg


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    from . import slurm_cluster

    why = slurm_cluster.missing()
    if why:
        pytest.skip(why)
    with slurm_cluster.cluster(tmp_path_factory.mktemp("slurm")) as env:
        yield env


@pytest.fixture
def on_slurm(slurm_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """The test cluster's config in this process's environment (sbatch and squeue read it; jobs get
    the submitter's environment, with the repository importable for the test's own block)."""
    import corpusfilter.runner as runner

    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    monkeypatch.setattr(runner, "SLURM_POLL_SECONDS", 0.5)
    from .slurm_cluster import PARTITION

    return PARTITION


def _slurm(partition: str, **extra: Any) -> dict[str, Any]:
    """The executor section of the Slurm tests' recipes: two tasks, small reservations."""
    return {
        "backend": "slurm",
        "tasks": 2,
        "partition": partition,
        "time": "00:10:00",
        "mem_per_cpu_gb": 0.5,
        **extra,
    }


@pytest.mark.slurm
def test_a_slurm_run_writes_what_a_local_run_writes(corpus: Path, tmp_path: Path, on_slurm: str) -> None:
    """backend: slurm submits a job array with sbatch to a real (one-node) Slurm cluster, waits for
    it, and then checks and records the run as a local one: the same documents kept and rejected,
    and `verify --rebuild` (which submits again) reproduces the output."""
    local = run(load_recipe(recipe_dict(corpus, tmp_path / "local", executor={"tasks": 2})), progress=False)
    spec = _slurm(on_slurm)
    res = run(load_recipe(recipe_dict(corpus, tmp_path / "slurm", executor=spec)), progress=False)
    assert res.accounting["ok"] and res.accounting["read"] == len(DOCS)
    for sub in ("data", "rejected"):
        assert _ids(tmp_path / "slurm", sub) == _ids(tmp_path / "local", sub) != []
    assert local.accounting["kept"] == res.accounting["kept"]
    m = json.loads((tmp_path / "slurm" / "manifest.json").read_text())
    assert validate_manifest(m) == [] and m["executor"]["type"] == "datatrove.SlurmPipelineExecutor"
    assert m["recipe"]["resolved"]["executor"]["partition"] == on_slurm
    assert len(m["executor"]["slurm_jobs"]) == 1 and m["executor"]["slurm_jobs"][0].isdigit()
    script = (tmp_path / "slurm" / "logs" / "launch_script.slurm").read_text()
    assert "#SBATCH --mem-per-cpu=512M" in script and "#SBATCH --time=00:10:00" in script
    assert len(list((tmp_path / "slurm" / "logs" / "slurm_logs").glob("*.out"))) == 2  # one per task
    checked = verify(str(tmp_path / "slurm"), rebuild=True)
    assert checked.ok, checked.problems


@pytest.mark.slurm
def test_a_failed_slurm_task_is_named_and_resume_finishes_it(
    corpus: Path, tmp_path: Path, on_slurm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task that fails in its job leaves the array; the run says which task failed, where its logs
    are and that --resume finishes it; the resumed run runs only that task and is complete."""
    from corpusfilter.errors import CorpusfilterError

    # the recipe's setup runs first in each job: it passes the submitter's CF_TEST_SETUP on to the
    # variable that makes one task fail (the job sees CF_TEST_FAIL only through it)
    spec = _slurm(on_slurm, setup='export CF_TEST_FAIL="$CF_TEST_SETUP"')
    data = recipe_dict(corpus, tmp_path / "out", executor=spec)
    data["blocks"].insert(0, {"test_fails_in_job": {}})
    monkeypatch.delenv("CF_TEST_FAIL", raising=False)
    monkeypatch.setenv("CF_TEST_SETUP", "1")
    with pytest.raises(
        CorpusfilterError, match=r"ended with 1 task\(s\) not completed \(0; Slurm logs: .*--resume"
    ):
        run(load_recipe(data), progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert (tmp_path / "out" / "logs" / "completions" / "00001").exists()
    monkeypatch.delenv("CF_TEST_SETUP")
    done = run(load_recipe(data), progress=False, mode="resume")
    assert done.accounting["ok"] and done.accounting["read"] == len(DOCS)
    assert pl.read_parquet(tmp_path / "out" / "data")["test_fails_in_job_seen"].all()
    launches = json.loads((tmp_path / "out" / "logs" / "ranks_to_run.json").read_text())
    assert launches == [0]  # the resumed submission ran only the failed task


@pytest.mark.slurm
def test_interrupting_a_slurm_run_cancels_its_jobs(
    corpus: Path, tmp_path: Path, on_slurm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the run waits cancels the job array (scancel), so a later --resume cannot run a
    task twice at once; the tasks, sleeping in their jobs, never complete."""
    import subprocess
    import time

    import corpusfilter.runner as runner

    spec = _slurm(on_slurm)
    data = recipe_dict(corpus, tmp_path / "out", executor=spec)
    data["blocks"].insert(0, {"test_fails_in_job": {}})
    monkeypatch.setenv("CF_TEST_SLEEP", "60")
    submitted: list[str] = []
    real, real_sleep = runner.wait_for_slurm, time.sleep

    def interrupted(executor: Any, out: Any, tasks: int) -> None:
        submitted.extend(executor.submitted)

        def ctrl_c(_: float) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(runner.time, "sleep", ctrl_c)  # the first pause in the wait
        try:
            real(executor, out, tasks)
        finally:
            monkeypatch.setattr(runner.time, "sleep", real_sleep)

    monkeypatch.setattr(runner, "wait_for_slurm", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(load_recipe(data), progress=False)
    assert submitted
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        queue = subprocess.run(
            ["squeue", "--noheader", "--jobs", ",".join(submitted)], capture_output=True, text=True
        )
        if not queue.stdout.strip():
            break
        time.sleep(0.5)
    assert not queue.stdout.strip(), queue.stdout
    assert not list((tmp_path / "out" / "logs" / "completions").glob("*"))  # cancelled, not finished


@pytest.mark.slurm
def test_a_job_array_sbatch_refuses_is_a_one_line_error(corpus: Path, tmp_path: Path, on_slurm: str) -> None:
    from corpusfilter.errors import CorpusfilterError

    spec = {"backend": "slurm", "partition": "no_such_partition"}
    with pytest.raises(CorpusfilterError, match=r"sbatch refused the job array \(exit status 1; its message"):
        run(load_recipe(recipe_dict(corpus, tmp_path / "o", executor=spec)), progress=False)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"mode": "bogus"}, r"mode='bogus': one of"),
        ({"stage": "frob"}, r"stage='frob': one of"),
        ({"tasks": -3}, r"tasks=-3: must be an integer of at least 1"),
        ({"workers": 0}, r"workers=0: must be an integer of at least 1 \(or -1\)"),
        ({"limit": 0}, r"limit=0: at least 1 document per task"),
        ({"output": "/tmp/elsewhere"}, r"output= names the folder of a score pass"),
    ],
)
def test_run_from_python_refuses_bad_arguments_before_writing(
    corpus: Path, tmp_path: Path, kw: dict[str, Any], message: str
) -> None:
    from corpusfilter.errors import RecipeError

    out = tmp_path / "out"
    with pytest.raises(RecipeError, match=message):
        run(load_recipe(recipe_dict(corpus, out)), progress=False, **kw)
    assert not out.exists()


def test_the_run_checks_the_copies_written_against_the_copies_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose files held a copy no block counted said 'accounting ok' and only verify failed
    (the upsample numbering bug); the run itself now compares them. Here the count is made to
    disagree, as that bug did."""
    import corpusfilter.verify as V
    from corpusfilter.errors import AccountingError

    from .conftest import write_shards

    inp = write_shards(tmp_path / "in", [("a", "kindness", "s"), ("b", "plain", "s")], n_shards=1)
    r = recipe_dict(inp, tmp_path / "o", blocks=[
        {"keywords": {"name": "kw", "terms": ["kindness"]}},
        {"upsample": {"where": "kw_hits >= 1", "weight": "2"}},
    ])  # fmt: skip
    assert run(load_recipe(r), progress=False).accounting["added"] == 1  # honest: passes
    real = V.count_copies
    monkeypatch.setattr(V, "count_copies", lambda folder, paths: real(folder, paths) + 1)
    r["output"]["path"] = str(tmp_path / "o2")
    with pytest.raises(
        AccountingError, match=r"output files hold 2 copies \(copy_index > 0\) but the blocks added 1"
    ):
        run(load_recipe(r), progress=False)


def test_a_task_logs_last_exception_line_is_its_cause(tmp_path: Path) -> None:
    """What check_ray_tasks reports: a corpusfilter error as its message, another with its type
    (pyarrow's ArrowInvalid included), nothing when the log has no exception."""
    from datatrove.io import get_datafolder

    from corpusfilter.runner import _task_error

    logs = tmp_path / "logs" / "logs"
    logs.mkdir(parents=True)
    (logs / "task_00000.log").write_text("2026-11-25 | INFO | start\nTraceback (most recent call last):\n"
                                          "pyarrow.lib.ArrowInvalid: Filter inputs must all be the same length\n")  # fmt: skip
    (logs / "task_00001.log").write_text(
        "corpusfilter.errors.InputError: a.parquet: cannot read rows from 5 on (x)\n"
    )
    (logs / "task_00002.log").write_text("2026-11-25 | INFO | nothing went wrong here\n")
    out = get_datafolder(str(tmp_path))
    assert _task_error(out, 0) == "ArrowInvalid: Filter inputs must all be the same length"
    assert _task_error(out, 1) == "a.parquet: cannot read rows from 5 on (x)"
    assert _task_error(out, 2) == "" and _task_error(out, 3) == ""


def test_environment_records_the_packages_the_scores_depend_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Token counts, embeddings, fine-tuned models and fastText scores depend on these packages'
    versions; they are read from the installed distributions, absent ones recorded as null."""
    import subprocess
    from importlib import metadata

    from corpusfilter.manifest import environment

    def installed(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    pkgs = environment()["packages"]
    for name in ("tokenizers", "torch", "transformers", "sentence-transformers", "model2vec", "safetensors"):
        assert name in pkgs and pkgs[name] == installed(name)
    fasttext = {n: v for n in ("fasttext-numpy2-wheel", "fasttext-wheel", "fasttext") if (v := installed(n))}
    assert {n: pkgs[n] for n in fasttext} == fasttext
    assert fasttext or pkgs["fasttext-numpy2-wheel"] is None
    # torch absent, fastText from another distribution of the module: recorded under its own name
    present = {"fasttext": "0.9.3", "datatrove": "1.0"}

    def version(name: str) -> str:
        if name not in present:
            raise metadata.PackageNotFoundError(name)
        return present[name]

    monkeypatch.setattr(metadata, "version", version)
    pkgs = environment()["packages"]
    assert pkgs["torch"] is None and pkgs["tokenizers"] is None and pkgs["fasttext"] == "0.9.3"
    assert "fasttext-numpy2-wheel" not in pkgs
    monkeypatch.undo()
    # read from metadata: recording them imports none of them
    code = (
        "import sys; from corpusfilter.manifest import environment; environment(); "
        "print(sorted({'torch', 'transformers', 'sentence_transformers', 'model2vec', 'fasttext', "
        "'tokenizers', 'safetensors'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_manifest_schemas_equal_the_schemas_the_files_read_back_with(tmp_path: Path) -> None:
    """List columns (a keyword detector's categories, a tag's labels) read back from Parquet as
    ``list<element: ...>``: the manifest records what a reader of the files gets."""
    import pyarrow as pa

    inp = tmp_path / "in"
    inp.mkdir()
    for s in range(2):
        part = [*DOCS, ("empty", "", "x")][s::2]
        table = pa.table(
            {
                "id": [d[0] for d in part],
                "text": [d[1] for d in part],
                "source": pa.array([d[2] for d in part]).dictionary_encode(),
                "tags": [[d[2], "t"] for d in part],
            }
        )
        pq.write_table(table, inp / f"shard-{s}.parquet")
    r = recipe_dict(inp, tmp_path / "out")
    r["blocks"].insert(1, {"tag": {"where": "moral_hits >= 1", "label": "moral"}})
    m = run(load_recipe(r), progress=False).manifest
    lists = {c["name"] for c in m["schemas"]["data"] if c["type"].startswith("list")}
    assert {"moral_categories", "labels", "tags"} <= lists
    for kind in ("data", "rejected", "unreadable"):
        assert m["outputs"][kind], kind  # a file of each kind to compare with
        for f in m["outputs"][kind]:
            schema = pq.read_schema(tmp_path / "out" / f["path"])
            assert [{"name": c.name, "type": str(c.type)} for c in schema] == m["schemas"][kind], f["path"]


def test_python_callers_get_one_line_errors_before_any_work(corpus: Path, tmp_path: Path) -> None:
    """run(tasks=True) ran the whole job and then failed the manifest's schema; run("recipe.yaml")
    and load_recipe(overrides="seed=3") gave an AttributeError and one override per character; a
    block registered as "a@b" or with version "2" could not be looked up."""
    import pytest

    from corpusfilter.errors import RecipeError
    from corpusfilter.recipe import load_recipe
    from corpusfilter.registry import register
    from corpusfilter.runner import run

    recipe = load_recipe(recipe_dict(corpus, tmp_path / "out"))
    with pytest.raises(RecipeError, match="tasks=True"):
        run(recipe, progress=False, tasks=True)
    with pytest.raises(RecipeError, match="limit=False"):
        run(recipe, progress=False, limit=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(RecipeError, match="run\\(\\) takes a recipe from load_recipe"):
        run("recipes/persona_depleted.yaml")  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match="overrides='seed=3': a list of 'key=value' strings"):
        load_recipe(recipe_dict(corpus, tmp_path / "out"), overrides="seed=3")
    for name, version in (("a@b", 1), ("", 1), ("mylen", "2"), ("MyLength", 1)):
        with pytest.raises(ValueError, match="register"):
            register(name, version=version)  # type: ignore[arg-type]
    from corpusfilter.registry import from_config

    with pytest.raises(RecipeError, match=r"block\.type: a block name such as 'drop'"):
        from_config({"type": ["drop"]})
    with pytest.raises(
        RecipeError, match=r"block\.params: a mapping of parameter names to values, not \[1\]"
    ):
        from_config({"type": "drop", "params": [1]})
    with pytest.raises(RecipeError, match=r"block\.params: a mapping of parameter names to values, not \[\]"):
        from_config({"type": "drop", "params": []})
    import types

    proxy = types.MappingProxyType({"where": "s > 1", "reason": "x"})
    assert from_config({"type": "drop", "params": proxy}).to_config()["params"]["where"] == "s > 1"
