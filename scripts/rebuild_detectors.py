"""Rebuild each shipped detector from its training config and check it against the shipped model.

    python scripts/rebuild_detectors.py --data-root ../shared/data            # every detector
    python scripts/rebuild_detectors.py goodness care --data-root ../shared/data

Runs ``corpusfilter train classifiers/NAME/train.yaml --output TMP --compare classifiers/NAME`` for
each and writes what it found to classifiers/rebuild.json (``--classifiers DIR``: DIR/rebuild.json) (verdict, score and weight differences,
decisions changed at the shipped thresholds, this machine's environment, seconds, date). The fine-tuned
detectors (hours on a CPU) are rebuilt only when named. Set CORPUSFILTER_EMB_CACHE to reuse the
MiniLM embeddings of an earlier run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLASSIFIERS = Path(__file__).resolve().parents[1] / "classifiers"


def shipped(classifiers: Path) -> list[str]:
    return sorted(p.parent.name for p in classifiers.glob("*/train.yaml"))


def rebuild(folder: Path, data_root: str | None) -> dict[str, object]:
    """One detector folder: train into a temporary folder with --compare; its compare.json and timings."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "corpusfilter.cli", "train", str(folder / "train.yaml")]
        cmd += ["--output", tmp, "--compare", str(folder)]
        cmd += ["--data-root", data_root] if data_root else []
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        secs = round(time.perf_counter() - t0, 1)
        if not (Path(tmp) / "compare.json").is_file():
            raise SystemExit(
                f"{folder.name}: corpusfilter train failed (exit {p.returncode}):\n{p.stderr[-2000:]}"
            )
        c = json.loads((Path(tmp) / "compare.json").read_text())
        env = json.loads((Path(tmp) / "metrics.json").read_text())["environment"]
    for k in ("shipped", "rebuilt"):
        c.pop(k)
    return {**c, "seconds": secs, "date": time.strftime("%Y-%m-%d"), "environment": env}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="detectors (default: all but the fine-tuned ones)")
    ap.add_argument("--data-root", help="where training sources resolve ($CORPUSFILTER_DATA)")
    ap.add_argument(
        "--classifiers", type=Path, default=CLASSIFIERS, help="detector folders (default: the shipped ones)"
    )
    args = ap.parse_args(argv)
    out = args.classifiers / "rebuild.json"
    names = args.names or [n for n in shipped(args.classifiers) if not n.endswith("_ft")]
    done = json.loads(out.read_text()) if out.is_file() else {}
    for name in names:
        r = rebuild(args.classifiers / name, args.data_root)
        r["command"] = f"python scripts/rebuild_detectors.py {name} --data-root DATA"
        done[name] = r
        print(
            f"{name}: {r['verdict']}; largest score difference {r['max_abs_score_diff']:.2g}, "
            f"decisions changed {r['decisions_changed']}, {r['seconds']} s",
            flush=True,
        )
        out.write_text(json.dumps(dict(sorted(done.items())), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
