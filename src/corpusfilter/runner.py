"""Run a recipe with datatrove's executor, then check the accounting and write the manifest."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from datatrove.executor.local import LocalPipelineExecutor
from datatrove.executor.ray import RayPipelineExecutor
from datatrove.executor.slurm import SlurmPipelineExecutor
from datatrove.io import DataFolder, get_datafolder

from corpusfilter.blocks.base import Block
from corpusfilter.errors import AccountingError, CorpusfilterError, OutputError, RecipeError, first_line
from corpusfilter.io import (
    UNREADABLE_SCHEMA,
    InputSet,
    changed_files,
    folder_url,
    live_tasks,
    rejected_schema,
    sha256_file,
)
from corpusfilter.manifest import (
    SCHEMA_VERSION,
    control_overlap,
    corpusfilter_info,
    documents_in,
    environment,
    outputs_digest,
    upstream_unreadable_outside,
    validate_manifest,
)
from corpusfilter.recipe import ExecutorSpec, Plan, Recipe, Stage, file_facts, plan

Mode = Literal["fresh", "overwrite", "resume"]


@contextlib.contextmanager
def _quiet_task_logs(base: Any = None) -> Iterator[None]:
    """Keep datatrove's per-task logs in the output's logs/ folder, and off the terminal.

    datatrove's task logger prints INFO lines and full tracebacks to stderr; corpusfilter prints a
    progress bar and a summary instead, and reports errors as one line. ``base``: the executor
    module whose task logger is replaced (the local executors' base, or datatrove's Ray module).
    """
    from loguru import logger

    if base is None:
        import datatrove.executor.base

        base = datatrove.executor.base

    original = base.add_task_logger

    def add_task_logger(logging_dir: Any, rank: int, local_rank: int = 0, node_rank: int = -1) -> Any:
        logger.remove()
        logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
        fmt = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} - {message}"
        logger.add(logfile, colorize=False, level="DEBUG", format=fmt)
        logger.info(f"Launching pipeline for {rank=}")
        return logfile

    def close_task_logger(logfile: Any) -> None:
        logger.complete()
        logger.remove()
        logger.add(sys.stderr, level="WARNING", format="{message}")
        logfile.close()

    original_close = base.close_task_logger
    base.add_task_logger = add_task_logger
    base.close_task_logger = close_task_logger
    try:
        yield
    finally:
        base.add_task_logger = original
        base.close_task_logger = original_close


@contextlib.contextmanager
def _driver_log(out: DataFolder) -> Iterator[None]:
    """The executor's own progress lines go to ``logs/run.log``, not the terminal."""
    from loguru import logger

    logger.remove()
    f = out.open("logs/run.log", "a")
    logger.add(f, level="INFO", colorize=False)
    try:
        yield
    finally:
        logger.remove()
        f.close()
        logger.add(sys.stderr, level="WARNING")


class QuietLocalExecutor(LocalPipelineExecutor):
    """datatrove's LocalPipelineExecutor with task logs going only to files."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1) -> Any:
        with _quiet_task_logs():
            return super()._run_for_rank(rank, local_rank, node_rank)


class QuietRayExecutor(RayPipelineExecutor):
    """datatrove's RayPipelineExecutor with task logs going only to files (in each Ray worker)."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1) -> Any:
        import datatrove.executor.ray as ray_module

        with _quiet_task_logs(ray_module):
            return super()._run_for_rank(rank, local_rank, node_rank)


def _executor(
    spec: ExecutorSpec,
    pipeline: list[Any],
    *,
    tasks: int,
    workers: int,
    logging_dir: Any,
    skip_completed: bool,
) -> Any:
    """datatrove's executor for the recipe's backend. Ray: its ``RayPipelineExecutor`` on the cluster
    ``RAY_ADDRESS`` names (ray's own rule), or on a local one started here if none is running.
    Slurm: its ``SlurmPipelineExecutor`` (see :class:`SlurmExecutor`; the runner waits for it)."""
    kw = {"tasks": tasks, "workers": workers, "logging_dir": logging_dir, "skip_completed": skip_completed}
    if spec.backend == "local":
        return QuietLocalExecutor(pipeline, **kw)
    if spec.backend == "slurm":
        return _slurm_executor(spec, pipeline, **kw)
    try:
        import ray
    except ImportError:
        raise RecipeError(
            "executor.backend: ray needs the ray extra (pip install 'corpusfilter[ray]')"
        ) from None
    from loguru import logger

    if not ray.is_initialized():
        ray.init(log_to_driver=False, include_dashboard=False, logging_level=logging.WARNING)
    # datatrove warns that a local logging folder must be shared by every node: true of one node
    one_node = len([n for n in ray.nodes() if n.get("Alive")]) == 1
    if one_node:
        logger.disable("datatrove.executor.ray")
    try:
        return QuietRayExecutor(
            pipeline, **kw, cpus_per_task=spec.cpus_per_task, mem_per_cpu_gb=spec.mem_per_cpu_gb
        )
    finally:
        logger.enable("datatrove.executor.ray")


class SlurmExecutor(SlurmPipelineExecutor):
    """datatrove's SlurmPipelineExecutor, remembering the ids of the job arrays it submits and
    without its stats-merging job (the runner merges the per-task stats itself, and a merge job
    left waiting on a failed array would sit in the queue for ever)."""

    submitted: list[str]

    def run(self) -> None:
        import subprocess

        try:
            super().run()
        except subprocess.CalledProcessError as e:  # sbatch printed why to stderr
            raise CorpusfilterError(
                f"sbatch refused the job array (exit status {e.returncode}; its message is above): check "
                "executor.partition, time, qos and sbatch_args, then run again with --overwrite"
            ) from None

    def launch_merge_stats(self) -> None:
        pass

    def get_sbatch_args(self, max_array: int = 1) -> dict[str, Any]:
        args: dict[str, Any] = super().get_sbatch_args(max_array)
        args["mem-per-cpu"] = f"{round(self.mem_per_cpu_gb * 1024)}M"  # Slurm takes whole numbers only
        return args


def _slurm_executor(spec: ExecutorSpec, pipeline: list[Any], **kw: Any) -> SlurmExecutor:
    import shutil

    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        raise RecipeError("executor.backend: slurm needs Slurm's sbatch and squeue on the PATH")
    submitted: list[str] = []

    def job_id(output: str) -> str:  # sbatch prints "Submitted batch job 123"
        submitted.append(output.split()[-1])
        return submitted[-1]

    ex = SlurmExecutor(
        pipeline,
        **kw,
        partition=spec.partition or "",
        time=spec.time,
        cpus_per_task=spec.cpus_per_task,
        mem_per_cpu_gb=spec.mem_per_cpu_gb,
        qos=spec.qos or "",
        sbatch_args=dict(spec.sbatch_args),
        job_name="corpusfilter",
        # the recipe's setup, then this interpreter's environment (on storage every node reaches)
        env_command="\n".join(
            [
                *([spec.setup] if spec.setup else []),
                f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH",
            ]
        ),
        job_id_retriever=job_id,
    )
    ex.submitted = submitted
    return ex


#: the longest wait between looks at the Slurm queue (first after 1 s, then twice as long each time:
#: a short run's failure is seen soon, a long run does not keep asking the scheduler); finished
#: tasks are seen sooner, from their completion markers (every 0.5 s, up to every 2 s)
SLURM_POLL_SECONDS = 10.0


def wait_for_slurm(executor: SlurmExecutor, out: DataFolder, tasks: int) -> None:
    """Block until every task has its completion marker, or the submitted arrays have left the queue
    (then the tasks not completed are an error naming them and the Slurm logs). Interrupted
    (Ctrl-C), the arrays are cancelled, so a later --resume never runs a task twice at once."""
    import subprocess

    if not executor.submitted:  # every task was already complete (--resume)
        return
    ids = ",".join(executor.submitted)
    pause, queue_pause, failures = 0.5, min(1.0, SLURM_POLL_SECONDS), 0
    next_queue_look = time.monotonic() + queue_pause
    try:
        while len(out.list_files("logs/completions")) < tasks:
            if time.monotonic() >= next_queue_look:
                listed = subprocess.run(
                    ["squeue", "--noheader", "--format=%i", "--jobs", ids], capture_output=True, text=True
                )
                if listed.returncode == 0 and not listed.stdout.strip():
                    break  # left the queue
                if listed.returncode != 0:
                    if "Invalid job id" in listed.stderr:
                        break  # finished long enough ago to be purged
                    failures += 1  # the controller is busy or restarting: ask again, do not conclude
                    if failures >= 30:
                        raise CorpusfilterError(
                            f"cannot ask Slurm about job {ids} ({first_line(Exception(listed.stderr))}); "
                            "its tasks may still be running: check squeue before finishing with --resume"
                        )
                else:
                    failures = 0
                queue_pause = min(queue_pause * 2, SLURM_POLL_SECONDS)
                next_queue_look = time.monotonic() + queue_pause
            time.sleep(pause)
            pause = min(pause * 1.5, 2.0)
    except KeyboardInterrupt:
        subprocess.run(["scancel", *executor.submitted], capture_output=True)
        raise
    missing = unfinished_tasks(out, tasks)
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise CorpusfilterError(
            f"run failed: Slurm job {ids} ended with {len(missing)} task(s) not completed ({shown}; "
            f"Slurm logs: {out.path}/logs/slurm_logs/, task logs: {out.path}/logs/logs/); "
            "finish them with --resume"
        )


def unfinished_tasks(out: DataFolder, tasks: int) -> list[int]:
    """Ranks without datatrove's completion marker (one listing, not a look per task)."""
    done = set(out.list_files("logs/completions"))
    return [r for r in range(tasks) if f"logs/completions/{r:05d}" not in done]


def check_ray_tasks(out: DataFolder, tasks: int) -> None:
    """After a Ray run: tasks without a completion marker failed. The error names them and the first
    one's cause, read from its task log (the local executor raises it; datatrove's Ray executor only
    logs it), so a bad input file is named as in a local run."""
    missing = unfinished_tasks(out, tasks)
    if not missing:
        return
    cause = _task_error(out, missing[0])
    shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
    raise CorpusfilterError(
        f"{cause + ' (' if cause else 'run failed ('}{len(missing)} Ray task(s) did not complete: {shown}; "
        f"task logs: {out.path}/logs/logs/); fix it and finish them with --resume"
    )


_EXC_LINE = re.compile(r"^(?P<exc>[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Invalid))(?::\s*(?P<msg>.*))?$")


def _task_error(out: DataFolder, rank: int) -> str:
    """The last exception line of a task's log: a corpusfilter error as its message, another as
    ``Type: message``; "" when the log has none."""
    rel = f"logs/logs/task_{rank:05d}.log"
    if not out.exists(rel):
        return ""
    with out.open(rel, "r", encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    for line in reversed(lines):
        m = _EXC_LINE.match(line.strip())
        if m:
            exc, msg = m.group("exc"), (m.group("msg") or "").strip()
            if exc.startswith("corpusfilter.errors."):
                return msg
            return f"{exc.rsplit('.', 1)[-1]}: {msg}" if msg else exc.rsplit(".", 1)[-1]
    return ""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _local_path(folder: DataFolder) -> Path | None:
    """The folder's resolved path on this machine, or None for a remote (fsspec) folder."""
    protocol = folder.fs.protocol
    local = {"file", "local"} & set((protocol,) if isinstance(protocol, str) else protocol)
    return Path(folder.path).resolve() if local else None


def check_output_place(out: DataFolder, inputs: InputSet) -> None:
    """Refuse an output that is a file, or holds the input (``--overwrite`` would delete it)."""
    o, i = _local_path(out), _local_path(inputs.folder)
    if o is None:
        return
    _refuse_file(o)
    if i is None:
        return
    if o == i or o in i.parents:
        raise OutputError(f"output folder {o} holds the input {i}; choose an output folder outside it")
    if inputs.listed and i in o.parents:  # the next run would read this output as input
        raise OutputError(
            f"output folder {o} is inside the input folder {i}, whose files are read as input; "
            "choose an output folder outside it"
        )


def _refuse_file(o: Path) -> None:
    if o.is_file():
        raise OutputError(f"output {o} is a file, not a folder; choose a folder")


def refuse_unwritable(
    out: DataFolder, mode: Mode, existing: list[str] | None = None, *, local: bool = True
) -> None:
    """The checks of :func:`prepare_output` that need no plan: an output is a folder; a non-empty one
    is written only with ``overwrite`` (and then only an earlier corpusfilter output, one with
    run.json) or ``resume``, and (``local``: the local executor, whose workers outlive a ``kill -9``)
    not while a task of an earlier run still writes there. ``run`` and ``decide`` make them on every
    folder they will write before the first pass, which would otherwise run in full (and rewrite a
    score pass that surviving workers read) before a later folder was refused. ``existing``: its
    files, when already listed."""
    if (o := _local_path(out)) is not None:
        _refuse_file(o)
    if existing is None:
        existing = out.list_files() if out.exists("") else []
    if local and existing and mode != "fresh" and (live := live_tasks(out)):
        running = ", ".join(f"task {rel.removesuffix('.json')} (pid {pid})" for rel, pid in live)
        raise OutputError(
            f"{out.path}: an earlier run is still writing there ({running} on this machine; a run killed "
            "with kill -9 leaves its workers running): wait for them to finish or stop them "
            f"(kill PID), then run again (if no such process writes there, delete {out.path}/logs/running/)"
        )
    if mode == "fresh" and existing:
        raise OutputError(
            f"output folder {out.path} is not empty; use --overwrite to replace it or --resume to finish it "
            "(from Python: run(..., mode='overwrite') or mode='resume')"
        )
    if mode == "overwrite" and existing and not out.exists("run.json"):
        raise OutputError(
            f"--overwrite replaces only an earlier corpusfilter output, and {out.path} has no "
            f"run.json ({len(existing)} files, e.g. {existing[0]}); remove it yourself or choose "
            "another output folder"
        )
    if mode == "resume" and existing and not out.exists("run.json"):
        raise OutputError(
            f"cannot resume into {out.path}: it has no run.json from an earlier corpusfilter run"
        )


def prepare_output(
    out: DataFolder,
    mode: Mode,
    recipe_sha: str,
    tasks: int,
    limit: int,
    inputs: InputSet,
    block_files: dict[str, str] | None = None,
    *,
    local: bool = True,
) -> None:
    """Refuse to write into a non-empty folder unless told to overwrite or resume (and resume
    matches: recipe, the files its blocks read, task count, ``--limit`` and the input files);
    ``--overwrite`` replaces only an earlier corpusfilter output (it has run.json).
    ``block_files``: per block label, a digest of its provenance (lexicon, model, tokenizer hashes).
    ``local``: the local executor, whose workers outlive a ``kill -9``: wait for live tasks (Ray
    ends a dead driver's tasks and keeps its worker processes for other work; Slurm's are cancelled)."""
    files = {s.path: [s.rows, s.bytes] for s in inputs.shards}
    existing = out.list_files() if out.exists("") else []
    refuse_unwritable(out, mode, existing, local=local)
    if mode == "overwrite" and existing:
        for f in existing:
            out.rm(f)
    if mode == "resume" and existing:
        with out.open("run.json") as f:
            prev = json.load(f)
        if prev.get("recipe_sha256") != recipe_sha:
            raise OutputError(
                f"cannot resume into {out.path}: it was started with another recipe (the resolved "
                "recipe differs: a block, a parameter, --set, or the input or output path); use --overwrite (mode='overwrite')"
            )
        was = prev.get("block_files")
        if was is not None and block_files is not None and was != block_files:
            which = next((k for k in block_files if was.get(k) != block_files[k]), "a block")
            raise OutputError(
                f"cannot resume into {out.path}: {which} reads other files than when it was started (a "
                "lexicon, model or tokenizer at the same path changed); use --overwrite (mode='overwrite')"
            )
        if prev.get("tasks") != tasks:
            raise OutputError(
                f"cannot resume into {out.path}: it was started with {prev.get('tasks')} tasks, not "
                f"{tasks}; use --tasks {prev.get('tasks')} or --overwrite"
            )
        if prev.get("limit", limit) != limit:
            raise OutputError(
                f"cannot resume into {out.path}: it was started with {_limit(prev['limit'])}, not "
                f"{_limit(limit)}; use the same --limit or --overwrite"
            )
        changed = changed_files(prev.get("inputs", files), files)
        if changed:
            raise OutputError(
                f"cannot resume into {out.path}: the input changed since it was started ({changed}); "
                "use --overwrite"
            )
        if out.exists("manifest.json"):
            out.rm("manifest.json")
        return
    with out.open("run.json", "w") as f:
        json.dump(
            {
                "recipe_sha256": recipe_sha,
                **({"block_files": block_files} if block_files is not None else {}),
                "tasks": tasks,
                "limit": limit,
                "inputs": files,
                "started_at": _now(),
            },
            f,
        )


def _limit(n: int) -> str:
    return "no --limit" if n < 0 else f"--limit {n}"


def _block_stats(out: DataFolder, tasks: int) -> dict[str, dict[str, Any]]:
    """Sum each step's datatrove stats over the ranks' stats files."""
    merged: dict[str, dict[str, Any]] = {}
    for rank in range(tasks):
        rel = f"logs/stats/{rank:05d}.json"
        if not out.exists(rel):
            continue
        with out.open(rel) as f:
            steps = json.load(f)
        for step in steps:
            name = step["name"]
            m = merged.setdefault(name, {"in": 0, "out": 0, "scored": 0, "dropped": {}, "seconds": 0.0})
            ts = step.get("time_stats")
            if isinstance(ts, dict):
                m["seconds"] += float(ts.get("total", 0.0))
            for key, val in (step.get("stats") or {}).items():
                total = int(val.get("total", 0)) if isinstance(val, dict) else int(val or 0)
                if key in ("in", "out", "scored"):
                    m[key] += total
                elif key.startswith("dropped_"):
                    reason = key[len("dropped_") :]
                    m["dropped"][reason] = m["dropped"].get(reason, 0) + total
    return merged


def check_accounting(
    accounts: list[dict[str, Any]], expected: dict[str, int], limit: int
) -> tuple[dict[str, Any], list[str]]:
    """Merge per-rank accounting; list every way it fails read + added = kept + rejected + unreadable
    (``added``: copies made by resampling blocks)."""
    problems: list[str] = []
    per_shard: dict[str, dict[str, Any]] = {}
    for acc in accounts:
        for shard, c in acc["shards"].items():
            if shard in per_shard:
                problems.append(f"{shard}: processed by more than one task")
            per_shard[shard] = c
    for shard, rows in expected.items():
        if shard not in per_shard:
            problems.append(f"{shard}: never reached the writer")
            continue
        c = per_shard[shard]
        rej = sum(c["rejected"].values())
        added = c.get("added", 0)
        if c["read"] + added != c["kept"] + rej + c["unreadable"]:
            problems.append(
                f"{shard}: read {c['read']} + added {added} != kept {c['kept']} + rejected {rej}"
                f" + unreadable {c['unreadable']}"
            )
        if limit < 0 and c["read"] != rows:
            problems.append(f"{shard}: read {c['read']} rows but the file has {rows}")
    for shard in per_shard:
        if shard not in expected:
            problems.append(f"{shard}: not an input shard of this run")
    by_reason: dict[str, int] = {}
    for c in per_shard.values():
        for r, n in c["rejected"].items():
            by_reason[r] = by_reason.get(r, 0) + n
    total = {
        "read": sum(c["read"] for c in per_shard.values()),
        "kept": sum(c["kept"] for c in per_shard.values()),
        "added": sum(c.get("added", 0) for c in per_shard.values()),
        "rejected": dict(sorted(by_reason.items())),
        "rejected_total": sum(by_reason.values()),
        "unreadable": sum(c["unreadable"] for c in per_shard.values()),
        "text_bytes": sum(c.get("text_bytes", 0) for c in per_shard.values()),
        "per_shard": dict(sorted(per_shard.items())),
    }
    return total, problems


@dataclass
class RunResult:
    manifest: dict[str, Any]
    output: str
    #: the matched control arm, when the recipe asks for one
    control: RunResult | None = None
    #: the score pass this call ran first (a recipe solved from corpus totals), if it ran one
    score_pass: RunResult | None = None
    #: seconds the whole call took: score pass, solving, decide pass and control arm
    wall_s: float | None = None

    @property
    def accounting(self) -> dict[str, Any]:
        acc: dict[str, Any] = self.manifest["accounting"]
        return acc


def _columns(schema: pa.Schema) -> list[dict[str, str]]:
    """The columns of files written with ``schema``, typed as ``pq.read_schema`` reads them back: the
    Parquet writer names a list's values ``element`` (Arrow's ``item`` in memory), so the types are
    taken from an empty file written as the output's files are."""
    import pyarrow.parquet as pq

    buf = pa.BufferOutputStream()
    with pq.ParquetWriter(buf, schema) as w:
        w.write_table(schema.empty_table())
    written = pq.read_schema(pa.BufferReader(buf.getvalue()))
    return [{"name": f.name, "type": str(f.type)} for f in written]


def _scores_section(the_plan: Plan, sm: dict[str, Any]) -> dict[str, Any]:
    """A decide output's record of the score pass it read: where it is, what made it, its files'
    digest and counts, and the source corpus it read (folder, files with their sha256, executor
    tasks and ``--limit``); this output's own ``inputs`` are the score pass's files."""
    from corpusfilter import experiment as exp

    scores = the_plan.inputs.folder.path.rstrip("/").removesuffix("/data")
    return {
        "path": scores,
        "relative_path": exp.relpath(scores, the_plan.output_path),
        "recipe_sha256": sm["recipe"]["sha256"],
        "finished_at": sm["finished_at"],
        "outputs_sha256": outputs_digest(sm["outputs"]),
        "blocks": [{"label": b["label"], "config": b["config"]} for b in sm["blocks"]],
        "accounting": {k: sm["accounting"][k] for k in ("read", "unreadable")},
        **({"input_folder": sm["input_folder"]} if "input_folder" in sm else {}),
        "inputs": sm["inputs"],
        "executor": {k: sm["executor"][k] for k in ("tasks", "limit")},
    }


def run(
    recipe: Recipe,
    *,
    tasks: int | None = None,
    workers: int | None = None,
    limit: int = -1,
    mode: Mode = "fresh",
    progress: bool = True,
    stage: Stage = "run",
    scores: str | None = None,
    output: str | None = None,
) -> RunResult:
    """Run ``recipe`` end to end (or one stage of it: ``score`` or ``decide``); raises
    CorpusfilterError subclasses for anything the user can fix."""
    if not isinstance(recipe, Recipe):
        raise RecipeError(
            f"run() takes a recipe from load_recipe(...), not {type(recipe).__name__} {recipe!r}"[:200]
        )
    _check_run_args(tasks=tasks, workers=workers, limit=limit, mode=mode, stage=stage, output=output)
    t0 = time.perf_counter()
    kw: dict[str, Any] = {"tasks": tasks, "workers": workers, "mode": mode, "progress": progress}
    scored: RunResult | None = None
    if stage == "decide" and limit >= 0 and recipe.needs_corpus_pass:
        raise RecipeError(
            f"decide --limit {limit}: this recipe is solved from every scored row (target_share, backfill "
            "or a control arm), which a partial read would not match; for a trial, `corpusfilter run "
            f"--limit {limit}` limits the score pass instead"
        )
    if stage == "run" and recipe.needs_corpus_pass:
        _refuse_occupied(recipe, mode)  # before the score pass runs in full
        # Corpus totals first: score every row, then solve and decide from the scores.
        scored = run(recipe, stage="score", limit=limit, **kw)
        # the decide pass and the control read every row the (limited) score pass scored: that is
        # what the solution was solved from
        stage, scores, limit = "decide", None, -1
    the_plan = plan(recipe, stage=stage, scores=scores, output=output)
    if the_plan.stage == "decide" and scored is None:
        _refuse_occupied(recipe, mode)  # `decide`: its scores checked, before the treatment is written
    if the_plan.stage != "decide":
        result = run_plan(the_plan, limit=limit, **kw)
        result.wall_s = time.perf_counter() - t0
        return result
    from corpusfilter import experiment

    experiment.solve(the_plan)
    arm = None
    if recipe.control is not None:
        arm = {
            "arm": "treatment",
            "counterpart": experiment.relpath(recipe.control_path, the_plan.output_path),
            "control": recipe.data["control"],
        }
    result = run_plan(the_plan, limit=limit, experiment=arm, **kw)
    if recipe.control is not None:
        result.control = _run_control(the_plan, result, limit=limit, **kw)
    result.score_pass = scored
    result.wall_s = time.perf_counter() - t0
    return result


def _refuse_occupied(recipe: Recipe, mode: Mode) -> None:
    """Every folder the decide pass and the control write, checked before the first pass runs (the
    later passes check them again, with what only they know)."""
    for path in [recipe.output.path, *([recipe.control_path] if recipe.control is not None else [])]:
        refuse_unwritable(get_datafolder(path), mode, local=recipe.executor.backend == "local")


def _check_run_args(
    *, tasks: int | None, workers: int | None, limit: int, mode: str, stage: str, output: str | None
) -> None:
    """What the command line's argument types check, for callers of :func:`run` from Python: refused
    before anything is written, rather than a run whose manifest then fails its schema."""
    if mode not in ("fresh", "overwrite", "resume"):
        raise RecipeError(f"mode={mode!r}: one of 'fresh', 'overwrite', 'resume'")
    if stage not in ("run", "score", "decide"):
        raise RecipeError(f"stage={stage!r}: one of 'run', 'score', 'decide'")
    for name, n in (("tasks", tasks), ("workers", workers)):
        bad = isinstance(n, bool) or not isinstance(n, int) or (n < 1 and not (name == "workers" and n == -1))
        if n is not None and bad:
            raise RecipeError(
                f"{name}={n!r}: must be an integer of at least 1" + (" (or -1)" if name == "workers" else "")
            )
    if isinstance(limit, bool) or not isinstance(limit, int) or (limit < 1 and limit != -1):
        raise RecipeError(f"limit={limit!r}: at least 1 document per task, or -1 for no limit")
    if output is not None and stage != "score":
        raise RecipeError(
            "output= names the folder of a score pass (stage='score'); for a run or decide, set the "
            "recipe's output: load_recipe(..., overrides=['output.path=DIR'])"
        )


def _run_control(treatment: Plan, result: RunResult, **kw: Any) -> RunResult:
    """The matched control arm: the same scored rows, the same tokens removed and added at random."""
    import dataclasses

    from corpusfilter import experiment
    from corpusfilter.blocks.base import reads_copies
    from corpusfilter.blocks.resample import COPY_FIELDS, control_tags

    recipe = treatment.recipe
    block = experiment.solve_control(treatment, result.manifest, result.output)
    block.text_column = recipe.input.text_column
    block.id_column = recipe.input.id_column or "id"
    block.seed = recipe.seed
    schema = treatment.input_schema
    for f in COPY_FIELDS:
        if f.name not in schema.names:
            schema = schema.append(f)
    tags = control_tags(treatment.blocks)
    for t in tags:  # each tag's column (`labels`, or its own `column:`)
        for f in t.output_fields(schema):
            schema = schema.append(f)
    # a tag of copies (reading copy_index or original_id) labels the control's copies, made by its
    # block: it and every tag after it (which may read its label) run after that block, in order
    first = next((i for i, t in enumerate(tags) if reads_copies(t)), len(tags))
    before: list[Block] = list(tags[:first])
    after: list[Block] = list(tags[first:])
    block.label = f"{len(before)}.matched_control"
    block.stats.name = str(block)
    cplan = dataclasses.replace(
        treatment, blocks=[*before, block, *after], output_schema=schema, output_path=recipe.control_path
    )
    arm = {
        "arm": "control",
        "counterpart": experiment.relpath(result.output, recipe.control_path),
        "control": recipe.data["control"],
        "strata": block.solution["strata"] if block.solution else {},
        "overlap": block.solution["overlap"] if block.solution else {},
    }
    return run_plan(cplan, experiment=arm, **kw)


def run_plan(
    the_plan: Plan,
    *,
    tasks: int | None = None,
    workers: int | None = None,
    limit: int = -1,
    mode: Mode = "fresh",
    progress: bool = True,
    experiment: dict[str, Any] | None = None,
) -> RunResult:
    """Execute one plan: run the pipeline, check the accounting, write the manifest (``experiment``:
    the arm this output is and where its counterpart lies)."""
    recipe = the_plan.recipe
    n_tasks = tasks or recipe.executor.tasks
    n_workers = workers or recipe.executor.workers
    if n_workers == -1:  # Ray and Slurm: the cluster's resources bound how many run at once
        local = recipe.executor.backend == "local"
        n_workers = max(1, min(n_tasks, os.cpu_count() or 1)) if local else n_tasks
    n_workers = min(n_workers, n_tasks)
    out = get_datafolder(the_plan.output_path)
    check_output_place(out, the_plan.inputs)
    backend = recipe.executor.backend
    executor = _executor(  # before the output is touched: a missing ray extra leaves nothing behind
        recipe.executor,
        the_plan.pipeline(limit=limit, progress=progress and backend == "local"),  # no bars from clusters
        tasks=n_tasks,
        workers=n_workers,
        logging_dir=out.resolve_paths("logs"),
        skip_completed=(mode == "resume"),
    )
    provenance = [b.provenance() for b in the_plan.blocks]  # file hashes: a resume must match them
    block_files = {
        b.label: hashlib.sha256(json.dumps(file_facts(p), sort_keys=True, default=str).encode()).hexdigest()
        for b, p in zip(the_plan.blocks, provenance)
    }
    prepare_output(
        out, mode, recipe.sha256, n_tasks, limit, the_plan.inputs, block_files, local=backend == "local"
    )
    started, t0 = _now(), time.perf_counter()
    # Hash the inputs while the pipeline runs (hashlib releases the GIL).
    folder = the_plan.inputs.folder
    hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corpusfilter-hash")
    hashes_f = hasher.submit(lambda: [sha256_file(folder, s.path) for s in the_plan.inputs.shards])
    try:
        with _driver_log(out):
            executor.run()
        if isinstance(executor, SlurmExecutor):  # sbatch returns at once: wait for the arrays
            wait_for_slurm(executor, out, n_tasks)
        if isinstance(executor, RayPipelineExecutor):  # it logs a task's error and returns
            check_ray_tasks(out, n_tasks)
    except CorpusfilterError:
        raise
    except Exception as e:  # a worker failed: point at its log rather than dumping a traceback
        raise CorpusfilterError(
            f"run failed: {type(e).__name__}: {first_line(e)} (task logs: {out.path}/logs/logs/)"
        ) from e
    elapsed = time.perf_counter() - t0
    accounts = []
    for rank in range(n_tasks):
        rel = f"accounting/{rank:05d}.json"
        if out.exists(rel):
            with out.open(rel) as f:
                accounts.append(json.load(f))
        else:
            accounts.append({"shards": {}, "outputs": {"data": [], "rejected": [], "unreadable": []}})
    expected = {s.path: s.rows for s in the_plan.inputs.shards}
    totals, problems = check_accounting(accounts, expected, limit)
    outputs: dict[str, list[dict[str, Any]]] = {"data": [], "rejected": [], "unreadable": []}
    for acc in accounts:
        for k in outputs:
            outputs[k].extend(acc["outputs"][k])
    for k in outputs:
        outputs[k].sort(key=lambda f: f["path"])
    written = {k: sum(f["rows"] for f in v) for k, v in outputs.items()}
    for k, want in (
        ("data", totals["kept"]),
        ("rejected", totals["rejected_total"]),
        ("unreadable", totals["unreadable"]),
    ):
        if written[k] != want:
            problems.append(f"{k}/ holds {written[k]} rows but the accounting says {want}")
    id_col = recipe.input.id_column or "id"
    paths = [f["path"] for k in ("data", "rejected") for f in outputs[k]]
    hashes = hashes_f.result()
    hasher.shutdown()
    from corpusfilter import experiment as exp

    try:  # every read of the written files back: a damaged one is one line, not a traceback
        if id_col in the_plan.output_schema.names:  # a repeat across shards is only visible here
            from corpusfilter.verify import repeated_ids

            totals["repeated_ids"] = len(repeated_ids(out, paths, id_col).repeats)
        if "copy_index" in the_plan.output_schema.names:  # the copies written are the copies counted
            from corpusfilter.verify import count_copies

            copies = count_copies(out, paths)
            if copies != totals.get("added", 0):
                problems.append(
                    f"output files hold {copies} copies (copy_index > 0) but the blocks added {totals.get('added', 0)}"
                )
        tokens = exp.token_report(
            out,
            outputs,
            exp.token_column(recipe.blocks),
            totals,
            label_columns=exp.label_columns(b.to_config() for b in the_plan.blocks),
        )
        exp.achieved_shares(the_plan.blocks, out, outputs)
    except (pa.ArrowException, OSError) as e:  # a task's file damaged after it was accounted
        raise OutputError(
            f"{out.path}: an output file cannot be read back ({type(e).__name__}: {first_line(e)}); a "
            "disk error or a second run writing the same folder damaged it: run again with --overwrite"
        ) from None
    stats = _block_stats(out, n_tasks)
    blocks = []
    for b, p in zip(the_plan.blocks, provenance):
        s = stats.get(str(b), {"in": 0, "out": 0, "scored": 0, "dropped": {}, "seconds": 0.0})
        s["seconds"] = round(s["seconds"], 6)
        blocks.append(
            {
                "label": b.label,
                "kind": b.kind,
                "config": b.to_config(),
                "provenance": p,
                "stats": s,
            }
        )
    totals["ok"] = not problems
    if problems:
        totals["problems"] = problems
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "corpusfilter": corpusfilter_info(),
        "environment": environment(),
        "recipe": {"source": recipe.source, "sha256": recipe.sha256, "resolved": recipe.data},
        "stage": the_plan.stage,
        "seed": recipe.seed,
        "executor": {
            "type": "datatrove." + type(executor).__mro__[1].__name__,  # the datatrove class ours extend
            "tasks": n_tasks,
            "workers": n_workers,
            "limit": limit,
            "mode": mode,
            **({"slurm_jobs": executor.submitted} if isinstance(executor, SlurmExecutor) else {}),
        },
        "started_at": started,
        "finished_at": _now(),
        "elapsed_s": round(elapsed, 3),
        "input_folder": folder_url(folder),
        "inputs": [
            {"path": s.path, "rows": s.rows, "bytes": s.bytes, "sha256": h}
            for s, h in zip(the_plan.inputs.shards, hashes)
        ],
        "outputs": outputs,
        "schemas": {
            "data": _columns(the_plan.output_schema),
            "rejected": _columns(rejected_schema(the_plan.output_schema)),
            "unreadable": _columns(UNREADABLE_SCHEMA),
        },
        "blocks": blocks,
        "accounting": totals,
        "tokens": tokens,
    }
    if experiment is not None:
        manifest["experiment"] = experiment
    if the_plan.scores_manifest is not None:
        manifest["scores"] = _scores_section(the_plan, the_plan.scores_manifest)
    errors = validate_manifest(manifest)
    if errors:  # a bug in corpusfilter, not in the user's data
        raise AssertionError("manifest does not match its schema: " + "; ".join(errors[:5]))
    with out.open("manifest.json", "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
    if problems:
        raise AccountingError(
            f"accounting failed for {out.path}: {problems[0]}"
            + (f" (and {len(problems) - 1} more; see manifest.json)" if len(problems) > 1 else "")
        )
    return RunResult(manifest, out.path)


def _summary_rows(m: dict[str, Any], output: str, result: RunResult | None = None) -> dict[str, str]:
    """One arm's rows. ``result``: the call that made it (its whole wall time, and the score pass
    it ran first); without it, as for a control arm, the time is this output's own pass."""
    a = m["accounting"]
    wall = result.wall_s if result is not None and result.wall_s is not None else m["elapsed_s"]
    secs = max(wall, 1e-9)
    read, unreadable = documents_in(m)
    rows: dict[str, str] = {"documents read": f"{read:,}"}
    for reason, n in a["rejected"].items():
        rows[f"rejected: {reason}"] = f"{n:,}"
    if a.get("added"):
        rows["added (copies)"] = f"{a['added']:,}"
    rows["kept (written)"] = f"{a['kept']:,}"
    rows["unreadable"] = f"{unreadable:,}"
    where = m["scores"]["path"].rstrip("/") + "/unreadable/" if m.get("scores") else ""
    if unreadable > a["unreadable"]:  # a decide output: the score pass's unreadable rows stay there
        rows["unreadable rows in"] = where
    if outside := upstream_unreadable_outside(m):  # decide --limit read part of the scored rows
        rows["score pass unreadable"] = f"{outside:,} in {where} (not counted in this --limit read)"
    t = m.get("tokens") or {}
    if t.get("column"):
        rows[f"tokens in ({t['column']})"] = f"{t['in']['tokens']:,}"
        rows["tokens removed"] = f"{t['removed']['tokens']:,}"
        rows["tokens added"] = f"{t['added']['tokens']:,}"
        rows["tokens out"] = f"{t['out']['tokens']:,}"
        for lab, c in t["categories"].items():
            rows[f"share: {lab}"] = f"{100 * c['share_in']:.2f}% → {100 * c['share_out']:.2f}%"
    for b in m["blocks"]:
        sol = b["provenance"].get("solution") or {}
        if "target_share" in sol:
            rows[f"target {b['label']}"] = (
                f"{100 * sol['target_share']:.2f}% → {100 * sol.get('achieved_share', 0):.2f}% (×{sol['weight']:.3f})"
            )
        if "relative_error" in b["provenance"]:
            rows[f"backfill {b['label']}"] = (
                f"{b['provenance']['added_tokens']:,} of {b['provenance']['removed_tokens']:,} tokens"
            )
    for what, share in control_overlap(m).items():
        rows[f"control {what}, also in treatment"] = share
    rows["text read"] = f"{a['text_bytes'] / 1e6:,.1f} MB"
    if result is None:  # an arm made within the call: its own pass
        rows["wall time"] = f"{m['elapsed_s']:,.1f} s (this arm's pass)"
    else:
        sp = result.score_pass
        if sp is not None:
            parts = f"score pass {sp.manifest['elapsed_s']:,.1f} s, decide {m['elapsed_s']:,.1f} s"
        elif m["stage"] == "decide":
            parts = "decide only; the scores came from an earlier `score` run"
        else:
            parts = ""
        rows["wall time"] = f"{secs:,.1f} s" + (f" ({parts})" if parts else "")
        if m["executor"]["mode"] == "resume":  # tasks finished before count their documents, not their time
            rows["throughput"] = "- (resumed: tasks finished earlier are counted, not timed)"
        else:
            rows["throughput"] = f"{a['text_bytes'] / 1e6 / secs:,.1f} MB/s, {a['read'] / secs:,.0f} docs/s"
    rows["accounting"] = "ok" if a["ok"] else "FAILED"
    if a.get("repeated_ids"):
        rows["repeated ids"] = f"{a['repeated_ids']:,} (verify names them)"
    rows["output"] = output
    return rows


def unreached_targets(manifest: dict[str, Any]) -> list[str]:
    """One line per ``target_share`` the solve could not aim at (nothing matched, the share already
    above it, capped by ``max_copies``): the run is still correct, but not the experiment asked for."""
    out = []
    for b in manifest["blocks"]:
        sol = b["provenance"].get("solution") or {}
        if "target_share" in sol and sol.get("note", "solved") != "solved":
            out.append(
                f"{b['label']}: target_share {100 * sol['target_share']:.2f}% not reached: {sol['note']} "
                f"(share {100 * sol.get('share_before', 0):.2f}% before, "
                f"{100 * sol.get('achieved_share', sol.get('expected_share', 0)):.2f}% after)"
            )
    return out


def format_summary(result: RunResult, file: Any = None) -> str:
    """The end-of-run table: documents and tokens read, removed by reason, added, out; category
    shares before → after; with a matched control, treatment and control side by side."""
    arms = [("", result)] if result.control is None else [("treatment", result), ("control", result.control)]
    tables = [_summary_rows(r.manifest, r.output, r if i == 0 else None) for i, (_, r) in enumerate(arms)]
    # one row order for all arms: a row only one arm has (its removal reason, the control's
    # overlap) goes after the row it follows in that arm, past rows that arm does not have
    keys: list[str] = []
    for t in tables:
        at = 0
        for k in t:
            if k in keys:
                at = keys.index(k) + 1
                continue
            while at < len(keys) and keys[at] not in t:
                at += 1
            keys.insert(at, k)
            at += 1
    width = max(len(k) for k in keys)
    vw = [max([len(h), *(len(v) for v in t.values())]) for (h, _), t in zip(arms, tables)]
    lines = []
    if len(arms) > 1:
        lines.append(f"{'':<{width}}  " + "  ".join(f"{h:>{w}}" for (h, _), w in zip(arms, vw)))
    for k in keys:
        lines.append(f"{k:<{width}}  " + "  ".join(f"{t.get(k, '-'):>{w}}" for t, w in zip(tables, vw)))
    text = "\n".join(lines)
    if file is not None:
        print(text, file=file)
    return text


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the corpusfilter command")
