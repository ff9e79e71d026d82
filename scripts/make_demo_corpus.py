#!/usr/bin/env python3
"""Build the small demo corpus bundled with corpusfilter.

Usage:
    python scripts/make_demo_corpus.py [--source PATH] [--out demo/corpus] [--seed 0]

The demo corpus is a deterministic sample of the shared background corpus
(``shared/data/background/background.parquet``) restricted to rows from Debian
packages whose text is public domain or permissively licensed:

* ``bible-kjv-text``  (KJV chapters; the text is public domain, the package GPL-2+)
* ``fortunes``        (BSD)
* ``jargon-text``     (the Jargon File; public domain)
* ``python3.11-doc``  (PSF-2.0)

Every other source (GPL/GFDL documentation, CC-BY corpora, the Brown corpus,
NLTK corpora, ...) is excluded.  A row is kept only if *both* its source is in
the allow-list above *and* its per-row ``license`` value is the expected
public-domain/permissive one.

Determinism: rows are ordered by ``id``; the sample is chosen per source by
walking rows in the order of ``sha256(f"{seed}:{id}")`` and greedily filling a
fixed per-source text budget; the sample is then sorted by ``id`` and assigned
to shards round-robin.  No global RNG, no timestamps: the same input and seed
give byte-identical output (for a given pyarrow version).

Source path resolution: ``--source`` if given, else
``$CORPUSFILTER_SHARED/data/background/background.parquet`` if the environment
variable is set, else ``<repo>/../shared/data/background/background.parquet``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO_ROOT = Path(__file__).resolve().parent.parent
BACKGROUND_REL = Path("data") / "background" / "background.parquet"
DEFAULT_OUT = REPO_ROOT / "demo" / "corpus"

N_SHARDS = 4
MAX_TOTAL_BYTES = 5 * 1024 * 1024  # hard cap on the Parquet shards on disk
METADATA_KEY = "corpusfilter_demo"

# source -> accepted per-row license values (exact match).  Anything else is dropped.
ALLOWED: dict[str, tuple[str, ...]] = {
    "bible-kjv-text": ("public-domain (package GPL-2+)",),
    "fortunes": ("BSD (see copyright)",),
    "jargon-text": ("public-domain",),
    "python3.11-doc": ("PSF-2.0",),
}

# Per-source budget of UTF-8 text bytes (before compression).  Chosen so the
# four zstd shards total roughly 4 MB on disk with a balanced mix: a large
# share of KJV chapters (moralizing hard cases) plus fortunes, Jargon File
# entries and Python docs (text a persona filter must keep).
TEXT_BUDGET: dict[str, int] = {
    "bible-kjv-text": 3_600_000,
    "python3.11-doc": 4_000_000,
    "jargon-text": 1_400_000,
    "fortunes": 1_400_000,
}

DESCRIPTIONS: dict[str, str] = {
    "bible-kjv-text": "King James Bible, one chapter per row (moralizing hard cases)",
    "fortunes": "fortune(6) cookies: aphorisms, jokes, quotations",
    "jargon-text": "The Jargon File 4.4.7 (hacker slang lexicon entries)",
    "python3.11-doc": "Python 3.11 documentation sources (technical text to keep)",
}

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("text", pa.string()),
        pa.field("source", pa.string()),
        pa.field("license", pa.string()),
    ]
)


def resolve_source(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("CORPUSFILTER_SHARED")
    if env:
        return Path(env) / BACKGROUND_REL
    return REPO_ROOT.parent / "shared" / BACKGROUND_REL


def sample_key(seed: int, row_id: str) -> bytes:
    return hashlib.sha256(f"{seed}:{row_id}".encode()).digest()


def load_eligible(path: Path) -> tuple[list[dict], list[tuple[str, str, int]]]:
    """Return eligible rows (sorted by id, deduplicated) and all (source, license, n) pairs."""
    table = pq.read_table(path, columns=["id", "source", "license", "text"])
    pairs_tbl = table.group_by(["source", "license"]).aggregate([("id", "count")])
    pairs = sorted(
        zip(
            pairs_tbl["source"].to_pylist(),
            pairs_tbl["license"].to_pylist(),
            pairs_tbl["id_count"].to_pylist(),
        )
    )

    mask = pc.is_in(table["source"], value_set=pa.array(sorted(ALLOWED), pa.string()))
    sub = table.filter(mask)
    rows = []
    for r in sub.to_pylist():
        if r["id"] is None or r["text"] is None:
            continue
        if r["license"] not in ALLOWED[r["source"]]:
            continue
        if not r["text"].strip():
            continue
        rows.append(r)
    # Stable order: by id, ties (duplicate ids) broken by text; keep the first of each id.
    rows.sort(key=lambda r: (r["id"], r["text"]))
    deduped, seen = [], set()
    for r in rows:
        if r["id"] in seen:
            continue
        seen.add(r["id"])
        deduped.append(r)
    return deduped, pairs


def choose_sample(rows: list[dict], seed: int) -> list[dict]:
    by_source: dict[str, list[dict]] = {s: [] for s in ALLOWED}
    for r in rows:
        by_source[r["source"]].append(r)
    chosen: list[dict] = []
    for source in sorted(by_source):
        budget = TEXT_BUDGET[source]
        used = 0
        for r in sorted(by_source[source], key=lambda r: (sample_key(seed, r["id"]), r["id"])):
            n = len(r["text"].encode("utf-8"))
            if used + n > budget:
                continue  # greedy fill: skip docs that would overflow, try smaller ones
            chosen.append(r)
            used += n
    chosen.sort(key=lambda r: r["id"])
    return chosen


def write_shards(sample: list[dict], out: Path, seed: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("shard-*.parquet"):
        old.unlink()
    meta = {
        "description": "corpusfilter demo corpus: sample of public-domain/permissive Debian package text",
        "sources": {s: list(ALLOWED[s]) for s in sorted(ALLOWED)},
        "seed": seed,
        "rebuild": "python scripts/make_demo_corpus.py",
    }
    schema = SCHEMA.with_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True)})
    paths = []
    for k in range(N_SHARDS):
        part = sample[k::N_SHARDS]
        cols = {name: [r[name] for r in part] for name in SCHEMA.names}
        table = pa.Table.from_pydict(cols, schema=schema)
        path = out / f"shard-{k:05d}.parquet"
        pq.write_table(table, path, compression="zstd")
        paths.append(path)
    return paths


def summarize(
    sample: list[dict], paths: list[Path], pairs: list[tuple[str, str, int]], out: Path, seed: int
) -> dict:
    per_source: dict[str, dict] = {}
    for r in sample:
        d = per_source.setdefault(r["source"], {"license": r["license"], "rows": 0, "text_bytes": 0})
        d["rows"] += 1
        d["text_bytes"] += len(r["text"].encode("utf-8"))
    files = {}
    for p in paths:
        files[p.name] = {
            "rows": pq.read_metadata(p).num_rows,
            "bytes": p.stat().st_size,
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        }
    included = {(s, lic) for s, lics in ALLOWED.items() for lic in lics}
    excluded = [{"source": s, "license": lic, "rows": n} for s, lic, n in pairs if (s, lic) not in included]
    return {
        "out": str(out),
        "seed": seed,
        "rows": len(sample),
        "text_bytes": sum(d["text_bytes"] for d in per_source.values()),
        "per_source": dict(sorted(per_source.items())),
        "files": files,
        "total_file_bytes": sum(f["bytes"] for f in files.values()),
        "excluded_source_licenses": excluded,
    }


def write_readme(summary: dict, out: Path) -> None:
    lines = [
        "# corpusfilter demo corpus",
        "",
        "A small, deterministic sample of real text used by corpusfilter's examples, tests and",
        "quick benchmarks. It is **generated** by `scripts/make_demo_corpus.py`; do not edit by hand.",
        "",
        f"{N_SHARDS} Parquet shards (`shard-00000.parquet` ... `shard-{N_SHARDS - 1:05d}.parquet`, zstd),",
        "columns `id`, `text`, `source`, `license` (all strings). File-level metadata key",
        f"`{METADATA_KEY}` holds a JSON note of the sources and licenses included.",
        "",
        "Only rows from Debian packages whose text is public domain or permissively licensed are",
        "included (per-row `license` checked); everything else in the shared background corpus",
        "(GPL/GFDL docs, CC-BY and non-commercial corpora, NLTK corpora, ...) is excluded.",
        "",
        "| source | license | what | rows | text bytes |",
        "|---|---|---|---:|---:|",
    ]
    for s, d in summary["per_source"].items():
        lines.append(f"| `{s}` | {d['license']} | {DESCRIPTIONS[s]} | {d['rows']:,} | {d['text_bytes']:,} |")
    lines += [
        f"| **total** | | | {summary['rows']:,} | {summary['text_bytes']:,} |",
        "",
        f"Parquet size on disk: {summary['total_file_bytes']:,} bytes.",
        "",
        "The KJV chapters and fortunes are moralizing hard cases a persona filter should not",
        "over-remove; the Python docs and Jargon File are technical text to keep.",
        "",
        "## Rebuild",
        "",
        "```sh",
        f"python scripts/make_demo_corpus.py --seed {summary['seed']}",
        "```",
        "",
        "It reads `../shared/data/background/background.parquet` (relative to the repo root;",
        "override with `--source PATH` or `CORPUSFILTER_SHARED=/path/to/shared`). Output is",
        "byte-identical across runs for the same input, seed and pyarrow version.",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", help="background.parquet path (default: see module docstring)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output directory (default: demo/corpus)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    args = ap.parse_args(argv)

    src = resolve_source(args.source)
    if not src.is_file():
        print(f"error: source parquet not found: {src}", file=sys.stderr)
        return 2
    out = Path(args.out)

    rows, pairs = load_eligible(src)
    sample = choose_sample(rows, args.seed)
    paths = write_shards(sample, out, args.seed)
    summary = summarize(sample, paths, pairs, out, args.seed)
    write_readme(summary, out)
    print(json.dumps(summary, indent=2))
    if summary["total_file_bytes"] > MAX_TOTAL_BYTES:
        print(
            f"error: demo corpus is {summary['total_file_bytes']} bytes > {MAX_TOTAL_BYTES}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
