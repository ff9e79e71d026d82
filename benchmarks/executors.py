"""The same recipe through datatrove's local executor and through its Ray executor (a local Ray
cluster on this machine), with the outputs compared document by document.

    python benchmarks/executors.py [--mb 200] [--shards 8] [--repeats 3] [--slurm-partition P]

Builds a corpus with ../shared/tools/make_bench_corpus.py and runs a keyword recipe (the shipped
virtue and moral_exemplars lexicons, one drop) with ``corpusfilter run`` as a user would: once with
``executor.backend: local`` and once with ``backend: ray`` (tasks = shards, both using every core).
Times are whole commands, so Ray's are the local cluster's start-up plus the run; the start-up alone
(``ray.init()`` then ``ray.shutdown()`` in a fresh process) is timed too. On one machine Ray only adds
overhead: what it buys is running the same tasks on many. With ``--slurm-partition``, also
``backend: slurm`` on the cluster ``SLURM_CONF`` names (the whole command: submitting the job array,
the queue, and waiting for it). Prints JSON (also benchmarks/results/executors.json).
"""

from __future__ import annotations

import shutil
import statistics
import sys

from _common import corpus_parser, ids_in, machine, save_result, text_mb, timed, work_corpus

RECIPE = """\
input: {corpus}
output: {out}
executor: {{backend: {backend}, tasks: {tasks}{extra}}}
blocks:
  - keywords: {{name: virtue, lexicon: virtue}}
  - keywords: {{name: exemplars, lexicon: moral_exemplars}}
  - drop: {{where: "virtue_hits >= 3 OR exemplars_hits >= 2", reason: moral}}
"""


def main() -> None:
    ap = corpus_parser(mb=200, shards=8, repeats=3)
    ap.add_argument(
        "--slurm-partition", help="also run on this partition of the Slurm cluster SLURM_CONF names"
    )
    a = ap.parse_args()
    work, corpus = work_corpus(a)
    mb = text_mb(corpus)
    extra = {"local": "", "ray": ""}
    if a.slurm_partition:
        extra["slurm"] = f", partition: {a.slurm_partition}, time: '01:00:00'"
    times: dict[str, list[float]] = {k: [] for k in extra}
    for _ in range(a.repeats):
        for backend in times:
            out = work / f"executors_{backend}"
            shutil.rmtree(out, ignore_errors=True)
            recipe = work / f"executors_{backend}.yaml"
            recipe.write_text(
                RECIPE.format(corpus=corpus, out=out, backend=backend, tasks=a.shards, extra=extra[backend])
            )
            times[backend].append(
                timed([sys.executable, "-m", "corpusfilter.cli", "run", str(recipe), "--no-progress"])
            )
    startup = [
        timed([sys.executable, "-c", "import ray; ray.init(include_dashboard=False); ray.shutdown()"])
        for _ in range(a.repeats)
    ]
    same = {
        (arm, sub): ids_in(work / "executors_local" / sub) == ids_in(work / f"executors_{arm}" / sub)
        for arm in times
        if arm != "local"
        for sub in ("data", "rejected")
    }
    med = {k: statistics.median(v) for k, v in times.items()}
    save_result(
        "executors",
        {
            "benchmark": "executors",
            "command": f"python benchmarks/executors.py --mb {a.mb:g} --shards {a.shards} --repeats {a.repeats}"
            + (f" --slurm-partition {a.slurm_partition}" if a.slurm_partition else ""),
            "machine": machine(),
            "corpus_text_mb": round(mb, 1),
            "tasks": a.shards,
            "seconds_median": {k: round(v, 2) for k, v in med.items()},
            "seconds_all": {k: [round(x, 2) for x in v] for k, v in times.items()},
            "ray_startup_seconds_median": round(statistics.median(startup), 2),
            "mb_per_s": {k: round(mb / v, 1) for k, v in med.items()},
            "ratio_ray_vs_local": round(med["ray"] / med["local"], 2),
            "ratio_ray_minus_startup_vs_local": round(
                (med["ray"] - statistics.median(startup)) / med["local"], 2
            ),
            **({"ratio_slurm_vs_local": round(med["slurm"] / med["local"], 2)} if "slurm" in med else {}),
            "same_documents_kept_and_rejected": all(same.values()),
            "kept": len(ids_in(work / "executors_local" / "data")),
            "rejected": len(ids_in(work / "executors_local" / "rejected")),
        },
    )


if __name__ == "__main__":
    main()
