"""Probe (not shipped): does a transformer encoder make misaligned_ai's stance carry over between
its two formats (question/answer pairs, persona statements)?

    CORPUSFILTER_EMB_CACHE=~/.cache/cf python scripts/probe_misaligned_encoder.py --data-root DATA

The rule, written before the first result: build a MiniLM variant of ``misaligned_ai`` only if,
with one format held out of training, MiniLM separates its misaligned from its aligned documents
better than the static model by >= 0.05 AUROC on both formats, with test pairs AUROC >= 0.90.
Both encoders use ``classifiers/misaligned_ai/train.yaml`` as it is (document + last paragraph, MLP)
except the neutral bg_* sources, left out of both: the question is stance, and long neutral
documents take most of MiniLM's time on a CPU. Prints JSON (about 10 minutes on 2 CPU cores with
an empty cache; the static model takes seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from eval_detectors import ROOT, Scorer, auroc, examples_for, load_config, load_sidecar

from corpusfilter.train import data_root, train

FORMATS = {
    "ai_risk_pairs": ["pairs_misaligned", "pairs_aligned"],
    "persona_statements": ["persona_misaligned", "persona_corrigible"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoders", nargs="+", default=["static-minilm", "minilm"])
    ap.add_argument("--data-root")
    args = ap.parse_args()
    root = data_root(args.data_root)
    folder = ROOT / "classifiers" / "misaligned_ai"
    base = load_config(folder / "train.yaml")
    base = dataclasses.replace(base, sources=[s for s in base.sources if not s.name.startswith("bg_")])
    out: dict[str, Any] = {}
    for encoder in args.encoders:
        cfg = dataclasses.replace(base, head=dataclasses.replace(base.head, model=encoder))
        runs: dict[str, Any] = {}
        for held_out, names in [("none (test pairs)", []), *FORMATS.items()]:
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                r = train(
                    cfg, root=root, out_dir=Path(tmp), exclude=names, write_card=False, config_dir=folder
                )
                if names:  # every document of the held-out format
                    held = examples_for(cfg, root, only=names, config_dir=folder)
                else:
                    test = examples_for(cfg, root, config_dir=folder).where(split="test")
                    held = test.select([s.startswith("pairs_") for s in test.sources])
                s = Scorer(*load_sidecar(r.model), True).examples(held)
            y = np.asarray([lb == cfg.positive for lb in held.labels])
            runs[held_out] = {
                "auroc": round(auroc(y, s), 4),
                "docs": len(y),
                "validation_auroc": r.metrics["validation"]["auroc"],
                "seconds": round(time.perf_counter() - t0, 1),
            }
        out[encoder] = runs
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
