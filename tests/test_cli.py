"""The command line as a user meets it: subprocesses, exit codes, one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import recipe_dict

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corpusfilter.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_import_and_help_stay_light() -> None:
    code = (
        "import sys, corpusfilter, corpusfilter.cli\n"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'fasttext', 'datatrove', 'polars', 'pyarrow')"
        " if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert "run" in _cli("--help").stdout


def test_train_help_states_the_fine_tune_checkpoint_interval_it_uses() -> None:
    """The help keeps its own copy of the default (the CLI must not import the fine-tune module)."""
    from corpusfilter.finetune import CHECKPOINT_EVERY

    text = " ".join(_cli("train", "--help").stdout.split())
    assert f"steps between saves (default {CHECKPOINT_EVERY})" in text


def test_blocks_load_polars_only_to_evaluate_a_condition() -> None:
    code = (
        "import sys, pyarrow as pa\n"
        "import corpusfilter.blocks.embedding, corpusfilter.blocks.keyword, corpusfilter.blocks.decisions\n"
        "print('polars' in sys.modules)\n"
        "from corpusfilter.expr import Condition\n"
        "c = Condition('x > 1')\n"
        "print(c.evaluate(pa.table({'x': [1, 2]})).tolist(), 'polars' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["False", "[False, True] True"]


def test_run_prints_summary_and_validate_prints_pipeline(corpus: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(corpus, tmp_path / "out")))
    v = _cli("validate", str(recipe))
    assert v.returncode == 0, v.stderr
    assert "1.drop [decision] drop@1" in v.stdout and "moral_hits:int32" in v.stdout
    r = _cli("run", str(recipe), "--tasks", "2")
    assert r.returncode == 0, r.stderr
    assert "rejected: moral" in r.stdout and "accounting" in r.stdout
    assert r.stderr.strip() == ""
    again = _cli("run", str(recipe))
    assert again.returncode == 1
    assert again.stderr.strip().count("\n") == 0 and "--overwrite" in again.stderr
    j = _cli("run", str(recipe), "--overwrite", "--json", "--set", "blocks.1.drop.where=moral_hits >= 99")
    assert j.returncode == 0, j.stderr
    assert json.loads(j.stdout)["kept"] == 8


def _one_line_error(res: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert res.returncode == 1, res.stdout + res.stderr
    err = res.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("corpusfilter: error:")
    for n in needles:
        assert n in err, err


def test_bad_input_gives_one_line_errors(corpus: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(corpus, tmp_path / "out")))
    (tmp_path / "empty").mkdir()
    _one_line_error(_cli("run", str(recipe), "--input", str(tmp_path / "empty" / "*.parquet")), "matches no")
    _one_line_error(_cli("run", str(recipe), "--input", str(tmp_path / "nowhere")), "input path not found")
    shard = corpus / "shard-001.parquet"
    shard.write_bytes(shard.read_bytes()[:100])
    _one_line_error(_cli("run", str(recipe)), "shard-001.parquet", "not a readable Parquet file")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**recipe_dict(corpus, tmp_path / "o2"), "ouptut": "x"}))
    _one_line_error(_cli("validate", str(bad)), "ouptut: unknown key")


def test_bad_numbers_on_the_command_line_are_errors_not_defaults(capsys) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from corpusfilter.cli import _parser

    for flags, msg in (
        (["--tasks", "0"], "--tasks: 0: must be at least 1"),
        (["--limit", "-3"], "--limit: -3: must be at least 1"),
        (["--workers", "0"], "--workers: 0: must be at least 1"),
        (["--tasks", "two"], "--tasks: 'two' is not an integer"),
    ):
        with pytest.raises(SystemExit) as e:
            _parser().parse_args(["run", "r.yaml", *flags])
        assert e.value.code == 2 and msg in capsys.readouterr().err
    ok = _parser().parse_args(["run", "r.yaml", "--tasks", "3", "--workers", "-1", "--limit", "5"])
    assert (ok.tasks, ok.workers, ok.limit) == (3, -1, 5)
    assert _parser().parse_args(["run", "r.yaml"]).limit == -1  # no limit


def test_blocks_lists_parameters() -> None:
    r = _cli("blocks", "--json")
    infos = {b["type"]: b for b in json.loads(r.stdout)}
    assert {"keywords@1", "drop@1", "keep@1", "tag@1"} <= set(infos)
    assert {p["name"] for p in infos["drop@1"]["params"]} == {"where", "reason"}
    # the control arm is set in the recipe's `control:` section: every key of it is listed, those
    # the runner reads itself (output, exclude_treated) too, as a recipe accepts them
    import dataclasses

    from corpusfilter.recipe import ControlSpec

    listed = {p["name"]: p for p in infos["matched_control@1"]["params"]}
    assert set(listed) == {f.name for f in dataclasses.fields(ControlSpec)}
    assert listed["exclude_treated"]["default"] is False and "treatment" in listed["exclude_treated"]["help"]


def test_demo_recipe_runs_with_no_arguments(tmp_path: Path) -> None:
    env = dict(os.environ)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "corpusfilter.cli",
            "run",
            str(REPO / "recipes" / "persona_depleted.yaml"),
            "--output",
            str(tmp_path / "demo"),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    acc = json.loads(r.stdout)
    assert acc["ok"] and acc["read"] == 10543
    assert acc["rejected_total"] > 0 and acc["kept"] > 0


def test_score_then_decide_from_the_command_line(corpus: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(corpus, tmp_path / "out")))
    s = _cli("score", str(recipe), "--json")
    assert s.returncode == 0, s.stderr
    assert json.loads(s.stdout)["output"] == str(tmp_path / "out.scores")
    d = _cli("decide", str(recipe), "--json", "--set", "blocks.1.drop.where=moral_hits >= 3")
    assert d.returncode == 0, d.stderr
    decided = json.loads(d.stdout)
    r = _cli(
        "run",
        str(recipe),
        "--json",
        "--output",
        str(tmp_path / "full"),
        "--set",
        "blocks.1.drop.where=moral_hits >= 3",
    )
    assert (
        decided["kept"] == json.loads(r.stdout)["kept"]
        and decided["rejected"] == json.loads(r.stdout)["rejected"]
    )
    changed = _cli("decide", str(recipe), "--overwrite", "--set", "blocks.0.keywords.terms=[virtue]")
    _one_line_error(changed, "were made with")


def test_verify_from_the_command_line(corpus: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(corpus, tmp_path / "out")))
    assert _cli("run", str(recipe)).returncode == 0
    # several times: when the id check read through pyarrow's reader threads from a Python file
    # object, some exits aborted ("terminate called without an active exception")
    for _ in range(8):
        ok = _cli("verify", str(tmp_path / "out"))
        assert ok.returncode == 0 and ok.stdout.strip().endswith("verified"), ok.stdout + ok.stderr
    (tmp_path / "out" / "manifest.json").write_text("{}")
    _one_line_error(_cli("verify", str(tmp_path / "out")), "verification failed")


def test_tagging_recipe_keeps_every_document(tmp_path: Path) -> None:
    import polars as pl

    r = _cli(
        "run", str(REPO / "recipes" / "gradient_routing_tags.yaml"), "--output", str(tmp_path / "t"), "--json"
    )
    assert r.returncode == 0, r.stderr
    acc = json.loads(r.stdout)
    assert acc["kept"] == acc["read"] == 10543 and acc["rejected_total"] == 0
    df = pl.read_parquet(str(tmp_path / "t" / "data" / "*.parquet"))
    assert df.schema["labels"] == pl.List(pl.String)
    tagged = df.filter(pl.col("labels").list.contains("goodness"))
    assert 0 < tagged.height < df.height
    assert ((tagged["exemplars_hits"] >= 1) | (tagged["virtue_score"] >= 3)).all()


def test_a_closed_pipe_ends_quietly() -> None:
    """`corpusfilter blocks | head -1`: the reader leaves early; no traceback, exit 141 as coreutils."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "corpusfilter.cli", "blocks"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert err == ""


def test_the_time_rows_cover_the_score_pass_a_run_made(corpus: Path, tmp_path: Path) -> None:
    """A recipe solved from corpus totals scores, then decides: the table's wall time and throughput
    had been the decide pass's alone (0.4 s for a 3.5 min job). They are the whole command's now,
    with the parts named; a separate decide says it is the decide alone; a control arm its own pass."""
    import re

    from corpusfilter.recipe import load_recipe
    from corpusfilter.runner import format_summary, run

    r = recipe_dict(corpus, tmp_path / "out", control={"type": "matched", "by": ["source"]})
    r["blocks"].insert(0, {"tokens": {}})
    res = run(load_recipe(r), progress=False)
    assert res.score_pass is not None and res.wall_s is not None and res.control is not None
    parts = (
        res.score_pass.manifest["elapsed_s"] + res.manifest["elapsed_s"] + res.control.manifest["elapsed_s"]
    )
    assert res.wall_s >= parts
    table = format_summary(res)
    row = next(line for line in table.splitlines() if line.startswith("wall time"))
    m = re.fullmatch(
        r"wall time +([\d.,]+) s \(score pass ([\d.]+) s, decide ([\d.]+) s\) +([\d.]+) s \(this arm's pass\)",
        row,
    )
    assert m and float(m[1].replace(",", "")) == round(res.wall_s, 1), row
    thr = next(line for line in table.splitlines() if line.startswith("throughput"))
    assert thr.endswith(" -") and f"{res.accounting['read'] / res.wall_s:,.0f} docs/s" in thr
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(r))
    d = _cli("decide", str(recipe), "--overwrite", "--no-progress")
    assert d.returncode == 0, d.stderr
    assert "(decide only; the scores came from an earlier `score` run)" in d.stdout
    j = _cli("run", str(recipe), "--overwrite", "--no-progress", "--json")
    out = json.loads(j.stdout)
    assert out["wall_s"] >= out["elapsed_s"] + out["score_pass_elapsed_s"]


def test_a_folder_or_non_utf8_file_as_recipe_or_config_is_one_line(tmp_path: Path) -> None:
    """`corpusfilter run recipes/` and `train classifiers/goodness` (eval and calibrate take a
    model's folder) had given IsADirectoryError tracebacks; a non-UTF-8 file a UnicodeDecodeError."""
    bad = tmp_path / "r.yaml"
    bad.write_bytes(b"\xff\xfe")
    _one_line_error(_cli("validate", str(tmp_path)), f"{tmp_path} is a folder, not a recipe file")
    _one_line_error(
        _cli("validate", str(bad)), f"{bad}: not UTF-8 text (byte 0); a recipe is a UTF-8 YAML file"
    )
    _one_line_error(_cli("train", str(tmp_path)), f"{tmp_path} is a folder, not a training config file")


def test_paths_that_cannot_be_written_are_one_line(tmp_path: Path) -> None:
    """A missing folder in --export-examples or an existing file as --output had ended in an
    OSError traceback (after the work, for eval --json); now one line naming the path."""
    pytest.importorskip("fasttext")
    data = tmp_path / "lab.jsonl"
    rows = [{"text": f"kind honest gentle {i}", "label": "good"} for i in range(12)]
    rows += [{"text": f"kernel socket driver {i}", "label": "other"} for i in range(12)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tmp_path / "t.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "toy",
                "trainer": "fasttext",
                "positive": "good",
                "fasttext": {"dim": 4, "epoch": 2, "minCount": 1},
                "sources": [
                    {
                        "name": "lab",
                        "path": "lab.jsonl",
                        "relative_to": "config",
                        "label": "x",
                        "label_column": "label",
                    }
                ],
            }
        )
    )
    taken = tmp_path / "taken"
    taken.write_text("mine")
    _one_line_error(_cli("train", str(cfg), "--output", str(taken)), str(taken))
    assert taken.read_text() == "mine"
    missing = tmp_path / "nodir" / "ex.parquet"
    _one_line_error(
        _cli("train", str(cfg), "--output", str(tmp_path / "m"), "--export-examples", str(missing)), "nodir"
    )
