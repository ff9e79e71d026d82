"""How often the static-embedding goodness detectors flag texts by length, on the bundled demo corpus.

    python scripts/short_text_rates.py            (about 30 s; writes classifiers/short_text_rates.json)

The detectors were trained and validated on documents of 80+ words; the demo corpus holds one-line
fortunes and short Jargon File entries beside them. Each detector scores the whole demo corpus
through its `embedding` block (a real recipe run), and per source and length band (words split on
spaces: under 30, 30-79, 80 and more) the share of texts at or above its strict threshold (1% false
positives on its validation negatives) and its document threshold (1% on the real neutral corpora's
validation documents), both read from its metrics.json. Some fortunes are moral aphorisms, so these
are flag rates, not false-positive rates. The model cards' failure modes quote them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import polars as pl

from corpusfilter.recipe import load_recipe
from corpusfilter.runner import run

ROOT = Path(__file__).resolve().parents[1]
DETECTORS = ("care", "fairness", "honesty", "goodness")
BANDS = (("<30", 0, 30), ("30-79", 30, 80), (">=80", 80, None))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "classifiers" / "short_text_rates.json"))
    args = ap.parse_args()
    blocks = [
        {
            "embedding": {
                "name": name,
                "model": "static-minilm",
                "head": str(ROOT / "classifiers" / name / "head.npz"),
                "chunk_tokens": 256,
                "max_chunks": 8,
            }
        }
        for name in DETECTORS
    ]
    with tempfile.TemporaryDirectory() as tmp:
        recipe = {"input": {"path": str(ROOT / "demo" / "corpus")}, "output": {"path": tmp + "/out"}}
        res = run(load_recipe({**recipe, "blocks": blocks}), progress=False)
        frame = pl.read_parquet(f"{res.output}/data/*.parquet")
    words = frame["text"].str.split(" ").list.len()
    band = pl.lit(None, dtype=pl.String)
    for name, lo, hi in BANDS:
        band = pl.when((words >= lo) & (words < hi if hi else True)).then(pl.lit(name)).otherwise(band)
    frame = frame.with_columns(band=band)
    out: dict[str, object] = {"command": "python scripts/short_text_rates.py", "detectors": {}}
    for name in DETECTORS:
        gen = json.loads((ROOT / "classifiers" / name / "metrics.json").read_text())["generalization"]
        strict, doc = gen["threshold"]["value"], gen["document_threshold"]["value"]
        col = f"{name}_{name}_doc"
        rates = (
            frame.group_by("source", "band")
            .agg(
                docs=pl.len(),
                strict=(pl.col(col) >= strict).mean().round(4),
                document=(pl.col(col) >= doc).mean().round(4),
            )
            .sort("source", "band")
        )
        out["detectors"][name] = {  # type: ignore[index]
            "thresholds": {"strict": strict, "document": doc},
            "rates": rates.to_dicts(),
        }
    text = json.dumps(out, indent=1)
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
