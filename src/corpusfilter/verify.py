"""Check an output folder against its manifest, and optionally rebuild it and compare.

Everything is re-derived from the files, never trusted from the manifest: output hashes and row
counts, the accounting identities, the input hashes (when the inputs are reachable), and with
``rebuild`` the whole run, re-executed from the resolved recipe the manifest records.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datatrove.io import DataFolder, get_datafolder

from corpusfilter.errors import CorpusfilterError, first_line
from corpusfilter.io import read_parquet, sha256_file
from corpusfilter.manifest import outputs_digest, validate_manifest

KINDS = ("data", "rejected", "unreadable")


@dataclass
class Verification:
    """What was checked and every problem found (empty ``problems`` means verified)."""

    output: str
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def load_manifest(output: str) -> dict[str, Any]:
    folder = get_datafolder(output)
    if not folder.isfile("manifest.json"):
        raise CorpusfilterError(f"{output}: no manifest.json (not a finished corpusfilter output)")
    try:
        with folder.open("manifest.json") as f:
            manifest: dict[str, Any] = json.load(f)
    except json.JSONDecodeError as e:
        raise CorpusfilterError(f"{output}/manifest.json: not valid JSON (line {e.lineno})") from None
    return manifest


def verify(
    output: str, *, rebuild: bool = False, inputs: bool = True, _seen: frozenset[str] = frozenset()
) -> Verification:
    """Verify ``output``; with ``rebuild``, re-run its recipe into a temporary folder and compare."""
    result = Verification(output)
    manifest = load_manifest(output)
    folder = get_datafolder(output)
    schema_errors = validate_manifest(manifest)
    result.checked.append("manifest against its JSON Schema")
    result.problems += [f"manifest.json: {e}" for e in schema_errors]
    if schema_errors:
        return result  # the rest reads fields the schema guarantees
    good = _check_outputs(folder, manifest, result)
    _check_recipe(manifest, result)
    _check_accounting(manifest, result)
    _check_copies(folder, manifest, good, result)
    _check_ids(folder, manifest, good, result)
    _check_rows(folder, manifest, good, result)
    _check_tokens(folder, manifest, good, result)
    _check_score_pass(manifest, result, inputs=inputs, seen=_seen | {os.path.abspath(output)})
    if inputs:
        _check_inputs(manifest, result)
    if rebuild:
        _rebuild(manifest, result)
    return result


def _check_outputs(folder: DataFolder, manifest: dict[str, Any], result: Verification) -> set[str]:
    """Every listed file present with its sha256 and rows, and no other file (any name: a reader of
    the folder would take it in); returns the listed files that passed, the only ones read further."""
    good: set[str] = set()
    for kind in KINDS:
        listed = {f["path"]: f for f in manifest["outputs"][kind]}
        present = set(folder.list_files(kind) if folder.exists(kind) else [])
        for rel in sorted(present - set(listed)):
            result.problems.append(f"{rel}: not in the manifest")
        for rel, entry in sorted(listed.items()):
            if rel not in present:
                result.problems.append(f"{rel}: listed in the manifest but missing")
                continue
            sha = sha256_file(folder, rel)
            if sha != entry["sha256"]:
                result.problems.append(
                    f"{rel}: sha256 {sha[:12]}… but the manifest says {entry['sha256'][:12]}…"
                )
                continue
            with folder.open(rel, "rb") as f:
                rows = pq.ParquetFile(f).metadata.num_rows
            if rows != entry["rows"]:
                result.problems.append(f"{rel}: {rows} rows but the manifest says {entry['rows']}")
                continue
            good.add(rel)
        result.checked.append(f"{len(listed)} {kind} file(s): present, sha256, rows")
    return good


def _counts(col: pa.ChunkedArray) -> dict[str, int]:
    """Rows per value of a string column (arrow's value_counts: no Python object per row)."""
    vc = pc.value_counts(col)
    return {str(v): int(n) for v, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())}


def _check_tokens(folder: DataFolder, manifest: dict[str, Any], good: set[str], result: Verification) -> None:
    """The token report (in, removed by reason, added, out, each category's shares) recomputed from
    the files by the function the run used, and compared."""
    t = manifest.get("tokens")
    if not t or not t.get("column"):
        return  # documents only: the accounting's numbers, checked above
    if not all(e["path"] in good for k in ("data", "rejected") for e in manifest["outputs"][k]):
        return  # a file is already a problem; its tokens cannot be counted
    from corpusfilter.experiment import token_report  # polars: only when there are tokens to count

    again = token_report(folder, manifest["outputs"], t["column"], manifest["accounting"])
    for key in ("in", "removed", "added", "out", "categories"):
        if json.loads(json.dumps(again.get(key))) != t.get(key):
            result.problems.append(
                f"tokens: the files give {key} {_short(again.get(key))}, the manifest says {_short(t.get(key))}"
            )
    result.checked.append(
        f"tokens: in, removed, added, out and category shares recomputed from {t['column']}"
    )


def _short(v: Any) -> str:
    s = json.dumps(v, sort_keys=True)
    return s if len(s) <= 120 else s[:117] + "..."


def _check_recipe(manifest: dict[str, Any], result: Verification) -> None:
    """The recorded recipe is the one its sha256 names (a rebuild and the card use it)."""
    import hashlib

    rec = manifest["recipe"]
    sha = hashlib.sha256(json.dumps(rec["resolved"], sort_keys=True).encode()).hexdigest()
    if sha != rec["sha256"]:
        result.problems.append(
            f"recipe: the recorded recipe hashes to {sha[:12]}…, not {rec['sha256'][:12]}…"
        )
    arm = (manifest.get("experiment") or {}).get("arm")
    control = any(b["config"]["type"].split("@")[0] == "matched_control" for b in manifest["blocks"])
    if arm is not None and (arm == "control") != control:  # the card and report name the arm
        result.problems.append(
            f"experiment.arm: {arm!r}, but its blocks {'include' if control else 'lack'} the matched control"
        )
    if manifest.get("scores") and manifest["stage"] != "decide":
        result.problems.append(
            f"stage: {manifest['stage']!r}, but the manifest records a score pass (a decide output)"
        )
    result.checked.append("recipe: its sha256")


def _check_rows(folder: DataFolder, manifest: dict[str, Any], good: set[str], result: Verification) -> None:
    """The accounting's counts per reject reason, and per input shard (a run or score pass), are the
    rows the files hold, read from their ``reject_reason`` and ``cf_shard`` columns."""
    from collections import Counter

    acc = manifest["accounting"]
    names = {k: {c["name"] for c in manifest["schemas"][k]} for k in KINDS}
    reasons: Counter[str] = Counter()
    shards: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
    per_shard = manifest["stage"] != "decide" and all("cf_shard" in names[k] for k in KINDS)
    for kind in KINDS:
        for entry in manifest["outputs"][kind]:
            if entry["path"] not in good:
                continue
            cols = [c for c in ("reject_reason", "cf_shard") if c in names[kind]]
            if kind != "rejected":
                cols = [c for c in cols if c != "reject_reason"]
            if not cols:
                continue
            t = read_parquet(folder, entry["path"], cols)
            if "reject_reason" in cols:
                reasons.update(_counts(t.column("reject_reason")))
            if per_shard:
                shards[kind].update(_counts(t.column("cf_shard")))
    if (
        all(e["path"] in good for e in manifest["outputs"]["rejected"])
        and "reject_reason" in names["rejected"]
    ):
        if dict(reasons) != {k: v for k, v in acc["rejected"].items() if v}:
            result.problems.append(
                f"rejected/: reasons {dict(sorted(reasons.items()))}, but the accounting says "
                f"{dict(sorted(acc['rejected'].items()))}"
            )
    if per_shard and all(e["path"] in good for k in KINDS for e in manifest["outputs"][k]):
        for shard, c in sorted(acc["per_shard"].items()):
            got = (shards["data"][shard], shards["rejected"][shard], shards["unreadable"][shard])
            want = (c["kept"], sum(c["rejected"].values()), c["unreadable"])
            if got != want:
                result.problems.append(
                    f"{shard}: the files hold kept/rejected/unreadable {got}, the accounting says {want}"
                )
        inputs = {f["path"] for f in manifest["inputs"]}
        for shard in sorted(set(acc["per_shard"]) - inputs):
            result.problems.append(f"{shard}: in the accounting but not among the manifest's inputs")
    result.checked.append(
        "rows per reject reason" + (" and per input shard" if per_shard else "") + ": from the files"
    )


def _check_accounting(manifest: dict[str, Any], result: Verification) -> None:
    acc = manifest["accounting"]
    if not acc["ok"]:
        result.problems.append("the run itself recorded accounting.ok = false")
    totals = {"read": 0, "kept": 0, "rejected": 0, "unreadable": 0}
    for shard, c in acc["per_shard"].items():
        rej = sum(c["rejected"].values())
        added = c.get("added", 0)
        if c["read"] + added != c["kept"] + rej + c["unreadable"]:
            result.problems.append(
                f"{shard}: read {c['read']} + added {added} != kept {c['kept']} + rejected {rej}"
                f" + unreadable {c['unreadable']}"
            )
        totals["read"] += c["read"]
        totals["kept"] += c["kept"]
        totals["rejected"] += rej
        totals["unreadable"] += c["unreadable"]
    for key, want in (
        ("read", acc["read"]),
        ("kept", acc["kept"]),
        ("rejected", acc["rejected_total"]),
        ("unreadable", acc["unreadable"]),
    ):
        if totals[key] != want:
            result.problems.append(f"accounting: per-shard {key} adds up to {totals[key]}, total says {want}")
    for kind, want in (
        ("data", acc["kept"]),
        ("rejected", acc["rejected_total"]),
        ("unreadable", acc["unreadable"]),
    ):
        rows = sum(f["rows"] for f in manifest["outputs"][kind])
        if rows != want:
            result.problems.append(f"{kind}/ files hold {rows} rows but the accounting says {want}")
    if manifest["executor"]["limit"] < 0:
        rows_by_input = {f["path"]: f["rows"] for f in manifest["inputs"]}
        for shard, c in acc["per_shard"].items():
            if shard in rows_by_input and c["read"] != rows_by_input[shard]:
                result.problems.append(f"{shard}: read {c['read']} of its {rows_by_input[shard]} rows")
        missing = set(rows_by_input) - set(acc["per_shard"])
        for shard in sorted(missing):
            result.problems.append(f"{shard}: an input shard absent from the accounting")
    result.checked.append("accounting: read + added = kept + rejected + unreadable, per shard and in total")


def _read_column(folder: DataFolder, rel: str, col: str) -> pa.ChunkedArray:
    return read_parquet(folder, rel, [col]).column(col)


def _check_copies(folder: DataFolder, manifest: dict[str, Any], good: set[str], result: Verification) -> None:
    """Copies made by resampling blocks (``copy_index`` > 0 in data/ and rejected/) = accounting.added."""
    if not any(c["name"] == "copy_index" for c in manifest["schemas"]["data"]):
        return
    paths = [
        e["path"] for kind in ("data", "rejected") for e in manifest["outputs"][kind] if e["path"] in good
    ]
    copies = count_copies(folder, paths)
    want = manifest["accounting"].get("added", 0)
    if copies != want:
        result.problems.append(
            f"output files hold {copies} copies (copy_index > 0) but accounting.added is {want}"
        )
    result.checked.append(f"copies: {copies} rows with copy_index > 0 = accounting.added")


@dataclass
class RepeatedIds:
    """What :func:`repeated_ids` found: rows looked at, where null ids are, where repeats are."""

    rows: int
    nulls: list[str]  # "FILE row N", the first null of each file that has one
    repeats: dict[str, list[str]]  # id -> ["FILE row N", ...], every place it occurs

    def problems(self, col: str) -> list[str]:
        out = []
        if self.nulls:
            out.append(f"null {col} values in {len(self.nulls)} file(s), e.g. {self.nulls[0]}")
        if self.repeats:
            first = sorted(self.repeats)[:3]
            shown = "; ".join(f"{i!r} at {', '.join(self.repeats[i][:3])}" for i in first)
            out.append(
                f"{len(self.repeats)} {col} value(s) occur more than once in data/ and rejected/ "
                f"({sum(len(w) for w in self.repeats.values())} rows), e.g. {shown}: the input's ids "
                "are not unique (or one has the form of a copy's id, ID#k), so copies, samples and the "
                "control arm cannot tell those documents apart"
            )
        return out


def id_column_of(manifest: dict[str, Any]) -> str | None:
    """The id column every data/ and rejected/ file has (None when the output has none)."""
    col = (manifest["recipe"]["resolved"].get("input") or {}).get("id_column") or "id"
    have = all(any(c["name"] == col for c in manifest["schemas"][k]) for k in ("data", "rejected"))
    return col if have else None


def count_copies(folder: DataFolder, paths: list[str]) -> int:
    """Rows of ``paths`` that are copies a resampling block made (``copy_index`` > 0)."""
    return sum(
        int(pc.sum(pc.greater(_read_column(folder, rel, "copy_index"), 0)).as_py() or 0) for rel in paths
    )


def repeated_ids(folder: DataFolder, paths: list[str], col: str) -> RepeatedIds:
    """Ids that occur in more than one row of ``paths`` (copies carry ``#k`` ids, so they count).

    A run streams shards in parallel and cannot see a repeat across them; this reads only the id
    column, keeps one 64-bit hash per row (8 bytes of memory), and re-reads the few candidate rows
    to name them (equal hashes of different ids are not repeats)."""
    import numpy as np

    from corpusfilter.hashing import stable_hash

    def ids(rel: str) -> pa.ChunkedArray:
        return _read_column(folder, rel, col).cast(pa.string())

    hashes, nulls = [], []
    for rel in paths:
        a = ids(rel)
        if a.null_count:
            nulls.append(f"{rel} row {pc.index(pc.is_null(a), True).as_py()}")
        hashes.append(stable_hash(a, 0))
    every = np.sort(np.concatenate(hashes)) if hashes else np.empty(0, np.uint64)
    candidates = np.unique(every[1:][every[1:] == every[:-1]])
    where: dict[str | None, list[str]] = {}
    for rel, h in zip(paths, hashes):
        rows = np.flatnonzero(np.isin(h, candidates))
        if len(rows):
            for r, i in zip(rows, ids(rel).take(pa.array(rows)).to_pylist()):
                where.setdefault(i, []).append(f"{rel} row {int(r)}")
    repeats = {i: w for i, w in where.items() if i is not None and len(w) > 1}
    return RepeatedIds(len(every), nulls, repeats)


def _check_ids(folder: DataFolder, manifest: dict[str, Any], good: set[str], result: Verification) -> None:
    col = id_column_of(manifest)
    if col is None:
        result.notes.append("ids not checked: the output has no id column")
        return
    paths = [e["path"] for k in ("data", "rejected") for e in manifest["outputs"][k] if e["path"] in good]
    found = repeated_ids(folder, paths, col)
    result.problems += found.problems(col)
    result.checked.append(f"ids: {found.rows} {col} values in data/ and rejected/: checked for repeats")


def score_pass_path(manifest: dict[str, Any], output: str) -> tuple[str | None, list[str]]:
    """Where a decide output's score pass is: its recorded path, or beside the output when the
    folders moved together; and the places looked at."""
    sc = manifest["scores"]
    here = [sc["path"]]
    if sc.get("relative_path") and "://" not in output:
        here.append(os.path.normpath(os.path.join(output, sc["relative_path"])))
    return next((p for p in here if get_datafolder(p).isfile("manifest.json")), None), here


def _check_score_pass(
    manifest: dict[str, Any], result: Verification, *, inputs: bool, seen: frozenset[str]
) -> None:
    """A decide output (and its control arm) read the rows of a score pass, which holds the input rows
    that could not be read: verify it too, unchanged since, and every row it could read read here."""
    sc = manifest.get("scores")
    if not sc:
        return
    path, here = score_pass_path(manifest, result.output)
    if path is not None and os.path.abspath(path) in seen:
        result.problems.append(f"score pass {path}: is this output or one that names it (a loop)")
        return
    if path is None:
        lost = (sc.get("accounting") or {}).get("unreadable", 0)
        msg = f"score pass not found at {' or '.join(dict.fromkeys(here))}"
        if lost:  # the only copy of those rows, and this output counts them
            result.problems.append(f"{msg}: its unreadable/ holds {lost} input row(s) counted here")
        else:
            result.notes.append(f"{msg}: not checked")
        return
    sv = verify(path, inputs=inputs, _seen=seen)
    result.problems += [f"score pass {path}: {p}" for p in sv.problems]
    sm = load_manifest(path)
    if validate_manifest(sm):
        return  # reported by the score pass's own verification
    if outputs_digest(sm["outputs"]) != sc["outputs_sha256"]:
        result.problems.append(f"score pass {path}: its output files changed since this output was made")
    acc, up = sm["accounting"], sc.get("accounting")
    if up is not None and (up["read"], up["unreadable"]) != (acc["read"], acc["unreadable"]):
        result.problems.append(
            f"score pass {path}: read {acc['read']}, unreadable {acc['unreadable']}, but this manifest "
            f"records {up['read']} and {up['unreadable']}"
        )
    if manifest["executor"]["limit"] < 0 and manifest["accounting"]["read"] != acc["kept"]:
        result.problems.append(
            f"read {manifest['accounting']['read']} scored rows, but the score pass {path} kept {acc['kept']}"
        )
    result.checked.append(
        f"score pass: verified, unchanged, {acc['unreadable']} unreadable input row(s) in its unreadable/"
    )


def _check_inputs(manifest: dict[str, Any], result: Verification) -> None:
    base = manifest.get("input_folder")
    if not base:
        result.notes.append("inputs not checked: the manifest names no input folder")
        return
    folder = get_datafolder(base)
    try:
        reachable = bool(folder.exists(""))
    except Exception as e:  # a remote input without network or token: a note, like a missing folder
        result.notes.append(
            f"inputs not checked: {base} cannot be reached ({type(e).__name__}: {first_line(e)})"
        )
        return
    if not reachable:
        result.notes.append(f"inputs not checked: {base} is not reachable from here")
        return
    for entry in manifest["inputs"]:
        rel = entry["path"]
        if not folder.isfile(rel):
            result.problems.append(f"input {rel}: missing from {base}")
            continue
        sha = sha256_file(folder, rel)
        if sha != entry["sha256"]:
            result.problems.append(f"input {rel}: sha256 changed since the run ({sha[:12]}…)")
    result.checked.append(f"{len(manifest['inputs'])} input file(s): sha256")


def _rebuild(manifest: dict[str, Any], result: Verification) -> None:
    from corpusfilter.recipe import load_recipe
    from corpusfilter.runner import run

    resolved = json.loads(json.dumps(manifest["recipe"]["resolved"]))
    with tempfile.TemporaryDirectory(prefix="corpusfilter-rebuild-") as tmp:
        out = os.path.join(tmp, "out")
        resolved["output"]["path"] = out
        if resolved.get("control"):  # both arms are rebuilt together; the control beside the treatment
            resolved["control"]["output"] = out + ".control"
        recipe = load_recipe(resolved)
        ex = manifest["executor"]
        scores = score_pass_path(manifest, result.output)[0] if manifest["stage"] == "decide" else None
        res = run(
            recipe,
            tasks=ex["tasks"],
            workers=ex["workers"],
            limit=ex["limit"],
            progress=False,
            stage=manifest["stage"],
            scores=scores,
            output=out if manifest["stage"] == "score" else None,  # a score pass's own folder
        )
        is_control = (manifest.get("experiment") or {}).get("arm") == "control"
        if is_control and res.control is None:
            result.problems.append("rebuild: the recorded recipe no longer makes a control arm")
            return
        rebuilt = res.control.manifest if is_control and res.control else res.manifest
    for kind in KINDS:
        want = [(f["path"], f["sha256"]) for f in manifest["outputs"][kind]]
        got = [(f["path"], f["sha256"]) for f in rebuilt["outputs"][kind]]
        if want != got:
            result.problems.append(
                f"rebuild: {kind}/ differs ({len(got)} file(s) rebuilt, {len(want)} recorded)"
            )
    for key in ("accounting", "tokens"):  # the numbers the summary, report and card show
        if manifest.get(key) != rebuilt.get(key):
            result.problems.append(f"rebuild: the {key} differs from the recorded one")
    result.checked.append("rebuild from the recorded recipe: identical output files")


def format_verification(v: Verification) -> str:
    lines = [f"verify {v.output}"]
    lines += [f"  checked: {c}" for c in v.checked]
    lines += [f"  note: {n}" for n in v.notes]
    lines += [f"  PROBLEM: {p}" for p in v.problems]
    lines.append("verified" if v.ok else f"FAILED: {len(v.problems)} problem(s)")
    return "\n".join(lines)
