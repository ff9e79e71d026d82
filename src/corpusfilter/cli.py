"""The ``corpusfilter`` command. Imports are deferred so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from corpusfilter import __version__


def _positive(text: str) -> int:
    """An argparse type: an integer of at least 1 (``--tasks 0`` or ``--limit -3`` are errors, not
    silently the default)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: must be at least 1")
    return n


def _workers(text: str) -> int:
    """An argparse type: tasks at once, at least 1, or -1 for one per CPU (as the recipe's executor)."""
    return -1 if text.strip() == "-1" else _positive(text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="corpusfilter",
        description="Filter, tag and account for LLM pretraining corpora with recipe-driven datatrove pipelines.",
    )
    p.add_argument("--version", action="version", version=f"corpusfilter {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def recipe_args(sp: argparse.ArgumentParser, output: str = "override output.path") -> None:
        sp.add_argument("recipe", help="recipe YAML file")
        sp.add_argument("--input", metavar="PATH", help="override input.path (file, folder or glob)")
        sp.add_argument("--output", metavar="DIR", help=output)
        sp.add_argument(
            "--set",
            metavar="KEY=VALUE",
            action="append",
            default=[],
            dest="overrides",
            help="override any recipe key, e.g. --set blocks.1.drop.where='virtue_hits >= 3' (repeatable)",
        )

    def exec_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--tasks", type=_positive, help="number of datatrove tasks (input files are split among them)"
        )
        sp.add_argument(
            "--workers", type=_workers, help="tasks run at once (default: one per task, up to the CPUs)"
        )
        sp.add_argument(
            "--limit", type=_positive, default=-1, help="read at most N documents per task (for trials)"
        )
        g = sp.add_mutually_exclusive_group()
        g.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
        g.add_argument(
            "--resume", action="store_true", help="finish an interrupted run (completed tasks are kept)"
        )
        sp.add_argument("--no-progress", action="store_true", help="no progress bar")
        sp.add_argument("--json", action="store_true", help="print the accounting as JSON instead of a table")

    r = sub.add_parser("run", help="run a recipe: read, score, decide, write, account, write the manifest")
    recipe_args(r)
    exec_args(r)
    sc = sub.add_parser(
        "score", help="run only the detectors; write every row with its scores (default: <output>.scores)"
    )
    recipe_args(
        sc,
        output="the scores folder itself (default: <output.path>.scores); decide reads it with --scores DIR",
    )
    exec_args(sc)
    de = sub.add_parser("decide", help="apply the recipe's decisions to a `score` output, running no model")
    recipe_args(de)
    de.add_argument(
        "--scores", metavar="DIR", help="the `corpusfilter score` output (default: <output>.scores)"
    )
    exec_args(de)

    v = sub.add_parser("validate", help="check a recipe against its inputs and print the resolved pipeline")
    recipe_args(v)

    ve = sub.add_parser(
        "verify", help="check an output against its manifest (hashes, schema, accounting, ids)"
    )
    ve.add_argument("output", help="a corpusfilter output folder")
    ve.add_argument(
        "--rebuild", action="store_true", help="re-run the recorded recipe and compare the outputs"
    )
    ve.add_argument("--no-inputs", action="store_true", help="do not re-hash the input files")
    ve.add_argument(
        "--input",
        metavar="PATH",
        help="where the input is now, when it moved since the run (re-hashed and, with --rebuild, read from there)",
    )

    pu = sub.add_parser(
        "publish", help="upload an output to the HF Hub as a dataset repo (data, manifest, report, card)"
    )
    pu.add_argument("output", help="a corpusfilter output folder")
    pu.add_argument("--repo", required=True, metavar="ORG/NAME", help="dataset repo (created if missing)")
    pu.add_argument("--private", action="store_true", help="create the repo private")
    pu.add_argument(
        "--revision", default="main", metavar="R", help="branch to commit to (created if missing)"
    )
    pu.add_argument(
        "--dry-run", action="store_true", help="list what would be uploaded and the card; contact nothing"
    )
    pu.add_argument("--force", action="store_true", help="replace files already on the revision")
    pu.add_argument(
        "--license",
        help="license id for the card (default: 'other', with a note to check the sources' licenses)",
    )
    pu.add_argument("--tag", action="append", default=[], dest="tags", help="card tag (repeatable)")
    pu.add_argument(
        "--source-dataset",
        action="append",
        default=[],
        dest="source_datasets",
        metavar="ORG/NAME",
        help="source dataset for the card (repeatable; hf:// inputs are added automatically)",
    )
    pu.add_argument(
        "--include-rejected", action="store_true", help="also upload rejected/ as config 'rejected'"
    )
    pu.add_argument("--message", help="commit message")

    b = sub.add_parser("blocks", help="list every registered block with its parameters")
    b.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser("lexicons", help="list the shipped lexicons")

    rp = sub.add_parser("report", help="write an audit report (report.html, report.md) for an output folder")
    rp.add_argument("output", help="a corpusfilter output folder")
    rp.add_argument("--out", metavar="DIR", help="where to write the report (default: the output folder)")
    rp.add_argument(
        "--samples",
        type=_positive,
        default=8,
        metavar="N",
        help="documents shown per reason and threshold (default 8)",
    )

    tr = sub.add_parser(
        "train", help="train a detector (fastText, an embedding head, a fine-tune) from a config"
    )
    tr.add_argument("config", help="training config YAML")
    tr.add_argument(
        "--data-root", metavar="DIR", help="where source paths resolve ($CORPUSFILTER_DATA, ../shared/data)"
    )
    tr.add_argument(
        "--output", metavar="DIR", help="output folder (default: the config's `output` or folder)"
    )
    gx = tr.add_mutually_exclusive_group()
    gx.add_argument(
        "--export-examples", metavar="PARQUET", help="write the built examples (and the config) and stop"
    )
    gx.add_argument(
        "--examples",
        metavar="PARQUET",
        help="train from examples written by --export-examples (a GPU machine without the raw data)",
    )
    tr.add_argument(
        "--compare",
        metavar="MODEL",
        help="check the rebuild against a model or classifiers/<name> folder: the same bytes, or the "
        "same scores on the validation and test documents within --tolerance (else exit 1); "
        "writes compare.json",
    )
    tr.add_argument(
        "--tolerance",
        type=float,
        metavar="T",
        help="with --compare: largest score difference that counts as reproduced (default 1e-4)",
    )
    tr.add_argument(
        "--checkpoint",
        metavar="DIR",
        help="finetune trainer: save the training state in DIR every --checkpoint-every steps and "
        "resume from it when run again (the same model as an uninterrupted run)",
    )
    tr.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help="with --checkpoint: steps between saves (default 20)",
    )

    ev = sub.add_parser("eval", help="precision, recall, AUROC, thresholds and calibration on labelled data")
    ev.add_argument("model", help="model file (.bin/.ftz/.npz with its sidecar .json) or classifiers/<name>")
    ev.add_argument("--data", required=True, metavar="PARQUET", help="labelled Parquet file")
    ev.add_argument("--text-column", default="text")
    ev.add_argument("--label-column", default="label")
    ev.add_argument("--positive", help="the model's class to score (default: the model's positive label)")
    ev.add_argument(
        "--data-positive",
        metavar="LABEL",
        help="the data's label that counts as positive, when the data names the class otherwise than the "
        "model (default: the model's positive label)",
    )
    ev.add_argument("--threshold", type=float, default=0.5, help="operating threshold reported (default 0.5)")
    g = ev.add_mutually_exclusive_group()
    g.add_argument("--target-recall", type=float, metavar="R", help="report the threshold reaching recall R")
    g.add_argument("--target-fpr", type=float, metavar="F", help="report the threshold reaching FPR F")
    ev.add_argument(
        "--group-column", metavar="G", help="source/register per row: recall, FPR and AUROC per group too"
    )
    ev.add_argument("--json", metavar="OUT", help="write the metrics as JSON")
    ev.add_argument("--plot", metavar="PNG", help="write the precision-recall curve")

    ca = sub.add_parser("calibrate", help="pick a detector threshold on trusted reference documents")
    ca.add_argument("model", help="a model (as for eval) or a recipe YAML (with --block)")
    ca.add_argument("--reference", required=True, metavar="PARQUET", help="reference documents")
    g = ca.add_mutually_exclusive_group(required=True)
    g.add_argument("--target-fpr", type=float, metavar="F", help="flag at most F of the neutral documents")
    g.add_argument("--target-share", type=float, metavar="S", help="flag at most S of the reference")
    ca.add_argument("--text-column", default="text")
    ca.add_argument(
        "--label-column", help="FPR over the rows it marks negative (default: 'label' when present)"
    )
    ca.add_argument(
        "--positive",
        help="the positive label (default: the model's); where no row has it, true / 1 rows are positive",
    )
    ca.add_argument(
        "--data-positive",
        metavar="LABEL",
        help="the data's label that counts as positive, when the data names the class otherwise than the "
        "model (default: the model's positive label)",
    )
    ca.add_argument(
        "--group-column",
        metavar="G",
        help="source/register per document: report the rate per group and whether a threshold "
        "chosen on the other groups holds in each (leave one group out)",
    )
    ca.add_argument(
        "--per-group", action="store_true", help="meet the target in every group, not just pooled"
    )
    ca.add_argument("--recipe", metavar="YAML", help="recipe to write the threshold into")
    ca.add_argument("--block", type=int, metavar="N", help="index of the block whose condition gets it")
    ca.add_argument("--column", help="score column in that condition (default: the only one compared)")
    ca.add_argument("--write", metavar="OUT", help="write the recipe copy here")
    ca.add_argument(
        "--overwrite", action="store_true", help="replace OUT if it exists (the recipe itself included)"
    )
    ca.add_argument("--json", metavar="OUT", help="write the result as JSON")
    return p


def _load(args: argparse.Namespace) -> Any:
    from corpusfilter.recipe import load_recipe

    overrides = list(args.overrides)
    if args.input:
        overrides.append(f"input.path={_abs(args.input)}")
    if args.output and args.command != "score":  # score's --output names the scores folder
        overrides.append(f"output.path={_abs(args.output)}")
    return load_recipe(args.recipe, overrides=overrides)


def _abs(p: str) -> str:
    return p if "://" in p else os.path.abspath(p)


def cmd_run(args: argparse.Namespace) -> int:
    from corpusfilter.runner import format_summary, run, unreached_targets

    recipe = _load(args)
    mode: Literal["fresh", "overwrite", "resume"] = (
        "overwrite" if args.overwrite else "resume" if args.resume else "fresh"
    )
    result = run(
        recipe,
        tasks=args.tasks,
        workers=args.workers,
        limit=args.limit,
        mode=mode,
        progress=not args.no_progress,
        stage=args.command,
        scores=_abs(args.scores) if getattr(args, "scores", None) else None,
        output=_abs(args.output) if args.command == "score" and args.output else None,
    )
    if args.json:
        print(json.dumps(_json_summary(result), indent=2))
    else:
        format_summary(result, file=sys.stdout)
    for line in unreached_targets(result.manifest):
        print(f"warning: {line}", file=sys.stderr)
    return 0


def _json_summary(result: Any) -> dict[str, Any]:
    """What ``--json`` prints: this output's accounting and, for a decide output, its score pass's
    counts, with the input-level totals that the table shows (``documents_read``/``_unreadable``);
    ``elapsed_s`` is this output's own pass, ``wall_s`` the whole command (score pass included)."""
    from corpusfilter.manifest import documents_in, upstream_unreadable_outside

    m = result.manifest
    acc = {k: v for k, v in result.accounting.items() if k != "per_shard"}
    read, unreadable = documents_in(m)
    out = {"output": result.output, "elapsed_s": m["elapsed_s"], "wall_s": result.wall_s, **acc}
    if result.score_pass is not None:  # this call scored first: the time it took apart
        out["score_pass_elapsed_s"] = result.score_pass.manifest["elapsed_s"]
    out |= {"documents_read": read, "documents_unreadable": unreadable}
    if m.get("scores"):
        sc = m["scores"]
        out["score_pass"] = {
            "path": sc["path"],
            **sc["accounting"],
            "unreadable_not_counted": upstream_unreadable_outside(m),
        }
    return out


def cmd_validate(args: argparse.Namespace) -> int:
    from corpusfilter.recipe import plan

    recipe = _load(args)
    print(plan(recipe).describe())
    print("recipe is valid")
    return 0


def cmd_blocks(args: argparse.Namespace) -> int:
    from corpusfilter.params import describe_params
    from corpusfilter.registry import all_blocks

    infos: list[dict[str, Any]] = []
    for cls in all_blocks():
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        params = describe_params(cls.Params)
        if cls.block_type == "matched_control":  # also the `control:` keys the runner reads itself
            from corpusfilter.recipe import ControlSpec

            own = {p["name"] for p in params}
            params += [p for p in describe_params(ControlSpec) if p["name"] not in own]
        if cls.kind == "detector":
            params.append(
                {
                    "name": "when",
                    "type": "str | null",
                    "required": False,
                    "default": None,
                    "help": "condition over earlier columns: score only rows where it holds (others get null)",
                }
            )
        infos.append(
            {
                "type": f"{cls.block_type}@{cls.version}",
                "kind": cls.kind,
                "doc": doc,
                "params": params,
                "recipe_block": not cls.not_in_recipes,
                **({"note": f"not a recipe block: {cls.not_in_recipes}"} if cls.not_in_recipes else {}),
            }
        )
    if args.json:
        print(json.dumps(infos, indent=2, default=str))
        return 0
    for info in infos:
        print(f"{info['type']}  [{info['kind']}]  {info['doc']}")
        if "note" in info:
            print(f"    note: {info['note']}")
        for prm in info["params"]:
            default = "required" if prm["required"] else f"default {prm['default']!r}"
            print(f"    {prm['name']}: {prm['type']} ({default})  {prm['help']}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from corpusfilter.errors import CorpusfilterError
    from corpusfilter.verify import format_verification, verify

    v = verify(
        _abs(args.output),
        rebuild=args.rebuild,
        inputs=not args.no_inputs,
        input_path=_abs(args.input) if args.input else None,
    )
    print(format_verification(v))
    if not v.ok:
        more = f" (and {len(v.problems) - 1} more)" if len(v.problems) > 1 else ""
        raise CorpusfilterError(f"verification failed: {v.problems[0]}{more}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from corpusfilter.hub import plan_publish, publish

    common: dict[str, Any] = dict(
        repo_id=args.repo,
        revision=args.revision,
        license=args.license,
        tags=args.tags,
        source_datasets=args.source_datasets,
        include_rejected=args.include_rejected,
    )
    if args.dry_run:
        print(plan_publish(_abs(args.output), **common).describe())
        print("dry run: nothing was uploaded")
        return 0
    r = publish(
        _abs(args.output),
        private=args.private,
        force=args.force,
        message=args.message,
        log=sys.stdout,
        **common,
    )
    deleted = f", deleted {len(r.deleted)} stale file(s)" if r.deleted else ""
    print(
        f"published {r.files} file(s), {r.bytes / 1e6:.1f} MB to {r.url}@{r.revision} (commit {r.commit[:12]}){deleted} in {r.elapsed_s:.1f} s"
    )
    return 0


def cmd_lexicons(args: argparse.Namespace) -> int:
    from corpusfilter.lexicon import load_lexicon, shipped_lexicons

    for name in shipped_lexicons():
        lex = load_lexicon(name)
        cats = sorted({c for c in lex.categories if c})
        print(f"{name}: {len(lex)} terms; categories: {', '.join(cats) or '-'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from corpusfilter.train import cmd_train as run_train

    return run_train(args)


def cmd_eval(args: argparse.Namespace) -> int:
    from corpusfilter.evaluate import cmd_eval as run_eval

    return run_eval(args)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from corpusfilter.calibrate import cmd_calibrate as run_calibrate

    return run_calibrate(args)


def cmd_report(args: argparse.Namespace) -> int:
    from corpusfilter.report import report

    res = report(_abs(args.output), out_dir=_abs(args.out) if args.out else None, samples=args.samples)
    print(f"wrote {res.html} and {res.markdown} in {res.seconds:.1f} s")
    return 0


@contextlib.contextmanager
def _stop_on_sigterm(command: str) -> Iterator[None]:
    """While a run, score or decide runs: SIGTERM (``kill``, a scheduler's stop) as Ctrl-C, so the run
    unwinds and datatrove's worker pool is terminated on its way out. Python's default ended only
    this process, and the workers wrote on into the output (a re-run then raced them). The previous
    handler is put back after (``main()`` may be called from a host program)."""
    import signal
    import threading

    if command not in ("run", "score", "decide") or threading.current_thread() is not threading.main_thread():
        yield  # main() called from a thread: signals are the host program's business
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to run a command again (train)
    if args.command is None:
        _parser().print_help()
        return 2
    from corpusfilter.errors import CorpusfilterError

    handlers = {
        "run": cmd_run,
        "score": cmd_run,
        "decide": cmd_run,
        "validate": cmd_validate,
        "blocks": cmd_blocks,
        "verify": cmd_verify,
        "publish": cmd_publish,
        "lexicons": cmd_lexicons,
        "train": cmd_train,
        "eval": cmd_eval,
        "calibrate": cmd_calibrate,
        "report": cmd_report,
    }
    try:
        with _stop_on_sigterm(args.command):
            return handlers[args.command](args)
    except CorpusfilterError as e:
        print(f"corpusfilter: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("corpusfilter: interrupted (finish later with --resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`corpusfilter blocks | head`): stop quietly, as coreutils do. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as e:
        # A path the user gave that cannot be written or read (a missing folder, a file where a
        # folder should be, a read-only or full disk): one line naming it.
        if os.environ.get("CORPUSFILTER_TRACEBACK"):
            raise
        from corpusfilter.errors import first_line

        what = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else first_line(e)
        print(f"corpusfilter: error: {what} (CORPUSFILTER_TRACEBACK=1 shows where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
