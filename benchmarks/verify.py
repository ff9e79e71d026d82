"""What `corpusfilter verify` costs next to the run that made the output, and the shares of its
repeated-id check (one 64-bit hash per row over data/ and rejected/), of its row check (reject
reasons and input shards counted from the files' columns), of its coverage check (every input row
traced once through cf_shard/cf_row) and of its blocks check (the recorded recipe loaded and its
blocks compared with the recorded ones).

    python benchmarks/verify.py [--mb 200] [--shards 8] [--repeats 3]

Builds a corpus with ../shared/tools/make_bench_corpus.py, runs a keyword recipe once, then times
`corpusfilter verify --no-inputs` end to end (the median of the repeats; peak RSS of the verify
process), and in this process the file check (re-hash and re-count every output file) against the
id check on the same output. Prints JSON (also benchmarks/results/verify.json), with the problems
verify found: the bench corpus is real data and may repeat ids, which is what the id check is for.
"""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import corpus_parser, machine, save_result, timed, work_corpus

RECIPE = """\
input: {corpus}
output: {out}
blocks:
  - keywords: {{name: virtue, lexicon: virtue}}
  - drop: {{where: "virtue_score >= 3", reason: virtue}}
"""


def timed_rc(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and exit status (verify exits 1 when it finds a problem)."""
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    return time.perf_counter() - t0, rc


def in_process(out: Path) -> tuple[dict[str, float], list[str]]:
    """Seconds of the file check and of the id check, each on its own, in this process, and the
    problems they found."""
    from datatrove.io import get_datafolder

    from corpusfilter.verify import (
        Verification,
        _check_blocks,
        _check_coverage,
        _check_ids,
        _check_outputs,
        _check_rows,
        load_manifest,
    )

    manifest = load_manifest(str(out))
    folder = get_datafolder(str(out))
    res = Verification(str(out))
    t0 = time.perf_counter()
    good = _check_outputs(folder, manifest, res)
    t1 = time.perf_counter()
    _check_ids(folder, manifest, good, res)
    t2 = time.perf_counter()
    _check_rows(folder, manifest, good, res)
    t3 = time.perf_counter()
    _check_coverage(folder, manifest, good, res)
    t4 = time.perf_counter()
    _check_blocks(manifest, res)
    t5 = time.perf_counter()
    return {
        "files": t1 - t0,
        "ids": t2 - t1,
        "rows": t3 - t2,
        "coverage": t4 - t3,
        "blocks": t5 - t4,
    }, res.problems


def main() -> None:
    a = corpus_parser(mb=200, shards=8, repeats=3).parse_args()
    work, corpus = work_corpus(a)
    out = work / "verify_out"
    shutil.rmtree(out, ignore_errors=True)
    recipe = work / "verify.yaml"
    recipe.write_text(RECIPE.format(corpus=corpus, out=out))
    cli = [sys.executable, "-m", "corpusfilter.cli"]
    t_run = timed([*cli, "run", str(recipe), "--no-progress"])
    verifies = [timed_rc([*cli, "verify", str(out), "--no-inputs"]) for _ in range(a.repeats)]
    t_verify = [t for t, _ in verifies]
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the run's or a verify's
    verify_only = subprocess.run(
        [
            sys.executable,
            "-c",
            "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=False, "
            "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
            *cli,
            "verify",
            str(out),
            "--no-inputs",
        ],
        capture_output=True,
        text=True,
    )
    runs = [in_process(out) for _ in range(a.repeats)]
    parts = [r[0] for r in runs]
    manifest = json.loads((out / "manifest.json").read_text())
    rows = manifest["accounting"]["kept"] + manifest["accounting"]["rejected_total"]
    files_s = statistics.median(p["files"] for p in parts)
    ids_s = statistics.median(p["ids"] for p in parts)
    rows_s = statistics.median(p["rows"] for p in parts)
    cov_s = statistics.median(p["coverage"] for p in parts)
    blocks_s = statistics.median(p["blocks"] for p in parts)
    verify_s = statistics.median(t_verify)
    save_result(
        "verify",
        {
            "benchmark": "verify",
            "command": f"python benchmarks/verify.py --mb {a.mb:g} --shards {a.shards} --repeats {a.repeats}",
            "machine": machine(),
            "corpus_text_mb": a.mb,
            "output_rows": rows,
            "seconds": {
                "run": round(t_run, 2),
                "verify_no_inputs_median": round(verify_s, 2),
                "verify_runs": [round(t, 2) for t in t_verify],
                "file_check_median": round(files_s, 3),
                "id_check_median": round(ids_s, 3),
                "rows_check_median": round(rows_s, 3),
                "coverage_check_median": round(cov_s, 3),
                "blocks_check_median": round(blocks_s, 3),
            },
            "verify_exit_status": verifies[0][1],
            "verify_problems": runs[0][1],
            "verify_over_run": round(verify_s / t_run, 3),
            "id_check_over_file_check": round(ids_s / files_s, 3),
            "rows_check_over_file_check": round(rows_s / files_s, 3),
            "coverage_check_over_file_check": round(cov_s / files_s, 3),
            "blocks_check_over_file_check": round(blocks_s / files_s, 3),
            "verify_peak_rss_mb": round(int(verify_only.stdout.strip().splitlines()[-1]) / 1024, 1),
            "max_child_rss_mb_run_or_verify": round(peak_kb / 1024, 1),
        },
    )


if __name__ == "__main__":
    main()
