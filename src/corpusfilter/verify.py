"""Check an output folder against its manifest, and optionally rebuild it and compare.

Everything is re-derived from the files, never trusted from the manifest: output hashes and row
counts, the accounting identities, the input hashes (when the inputs are reachable), and with
``rebuild`` the whole run, re-executed from the resolved recipe the manifest records.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datatrove.io import DataFolder, get_datafolder

from corpusfilter.batch import COPY_COLUMN, REASON_COLUMN, ROW_COLUMN, SHARD_COLUMN
from corpusfilter.errors import CorpusfilterError, first_line
from corpusfilter.io import read_parquet, rows_read, sha256_file
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
    except UnicodeDecodeError as e:
        raise CorpusfilterError(f"{output}/manifest.json: not UTF-8 text (byte {e.start})") from None
    if not isinstance(manifest, dict):
        raise CorpusfilterError(f"{output}/manifest.json: not a JSON object")
    return manifest


def verify(
    output: str,
    *,
    rebuild: bool = False,
    inputs: bool = True,
    input_path: str | None = None,
    _seen: frozenset[str] = frozenset(),
) -> Verification:
    """Verify ``output``; with ``rebuild``, re-run its recipe into a temporary folder and compare.
    ``input_path``: where the input is now, when it moved since the run (for a decide output, the
    input of its score pass)."""
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
    _check_blocks(manifest, result)
    _check_accounting(manifest, result)
    _check_copies(folder, manifest, good, result)
    _check_ids(folder, manifest, good, result)
    _check_rows(folder, manifest, good, result)
    origins = _check_coverage(folder, manifest, good, result)
    _check_tokens(folder, manifest, good, result)
    _check_solutions(folder, manifest, good, result)
    _check_score_pass(
        manifest,
        result,
        inputs=inputs,
        input_path=input_path,
        seen=_seen | {os.path.abspath(output)},
        origins=origins,
    )
    if inputs and not manifest.get("scores"):  # a decide output's inputs are its score pass's files
        _check_inputs(manifest, result, input_path)
    if rebuild:
        _rebuild(manifest, result, input_path)
    return result


def _columns(schema: pa.Schema) -> list[tuple[str, str]]:
    """(name, type) per column, a list's value field named alike whatever the writer called it."""
    return [(f.name, _LIST_ITEM.sub(r"\1list<item: ", str(f.type))) for f in schema]


_LIST_ITEM = re.compile(r"(large_)?list<element: ")


def _recorded_columns(cols: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(c["name"], _LIST_ITEM.sub(r"\1list<item: ", c["type"])) for c in cols]


def _check_outputs(
    folder: DataFolder, manifest: dict[str, Any], result: Verification
) -> dict[str, pa.Schema]:
    """Every listed file present with its sha256, rows and the columns ``schemas`` records, and no
    other file (any name: a reader of the folder would take it in); returns the listed files that
    passed, with their schemas, the only ones read further. The checks that read a column decide
    from ``schemas`` whether it is there, so ``schemas`` must be what the files hold."""
    good: dict[str, pa.Schema] = {}
    for kind in KINDS:
        recorded = _recorded_columns(manifest["schemas"][kind])
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
            try:
                with folder.open(rel, "rb") as f:
                    pf = pq.ParquetFile(f)
                    rows, schema = pf.metadata.num_rows, pf.schema_arrow
            except (OSError, pa.ArrowException) as e:
                result.problems.append(f"{rel}: not a readable Parquet file ({first_line(e)})")
                continue
            if rows != entry["rows"]:
                result.problems.append(f"{rel}: {rows} rows but the manifest says {entry['rows']}")
                continue
            if (cols := _columns(schema)) != recorded:
                diff = sorted(set(cols) ^ set(recorded)) or [("(order)", "")]
                result.problems.append(
                    f"{rel}: its columns are not the ones schemas.{kind} records (e.g. "
                    f"{' '.join(diff[0]).strip()}{' in the file' if diff[0] in cols else ' in the manifest'})"
                )
                continue
            good[rel] = schema
        result.checked.append(f"{len(listed)} {kind} file(s): present, sha256, rows, columns")
    return good


def _counts(col: pa.ChunkedArray) -> dict[str, int]:
    """Rows per value of a string column (arrow's value_counts: no Python object per row)."""
    vc = pc.value_counts(col)
    return {str(v): int(n) for v, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())}


def _check_tokens(
    folder: DataFolder, manifest: dict[str, Any], good: dict[str, pa.Schema], result: Verification
) -> None:
    """The token report (in, removed by reason, added, out, each category's shares) recomputed from
    the files by the function the run used, and compared."""
    t = manifest.get("tokens") or {}
    want = _token_column(manifest)
    if t.get("column") != want:
        result.problems.append(
            f"tokens.column: {t.get('column')!r}, but the recorded blocks count tokens into {want!r}"
        )
        return
    if not want:
        return  # documents only: the accounting's numbers, checked above
    if not all(e["path"] in good for k in ("data", "rejected") for e in manifest["outputs"][k]):
        return  # a file is already a problem; its tokens cannot be counted
    from corpusfilter.experiment import label_columns, token_report  # polars: only with tokens to count

    cols = label_columns(b.get("config") or {} for b in manifest.get("blocks") or [])
    again = token_report(folder, manifest["outputs"], t["column"], manifest["accounting"], label_columns=cols)
    if len(cols) > 1 and json.loads(json.dumps(again["categories"])) != t.get("categories"):
        # made before a tag's own column was counted: its categories are those of `labels` alone
        only = token_report(folder, manifest["outputs"], t["column"], manifest["accounting"])
        if json.loads(json.dumps(only["categories"])) == t.get("categories"):
            again["categories"] = only["categories"]
            result.notes.append(
                f"tokens.categories: of `labels` only (made before the columns {', '.join(cols[1:])} of "
                "tags were counted; a --rebuild counts them, so its categories differ there)"
            )
    for key in ("in", "removed", "added", "out", "categories"):
        if json.loads(json.dumps(again.get(key))) != t.get(key):
            result.problems.append(
                f"tokens: the files give {key} {_short(again.get(key))}, the manifest says {_short(t.get(key))}"
            )
    result.checked.append(
        f"tokens: in, removed, added, out and category shares recomputed from {t['column']}"
    )


def _check_solutions(
    folder: DataFolder, manifest: dict[str, Any], good: dict[str, pa.Schema], result: Verification
) -> None:
    """The claims an experiment is read by that the files settle: each target-share upsample's
    achieved share, recomputed from data/ as the run computed it; a control arm's overlap, from the
    strata it records. (The solved weight and the strata themselves come from the score pass and
    the other arm: ``--rebuild`` re-derives them.)"""
    from corpusfilter.experiment import achieved_shares, overlap
    from corpusfilter.registry import from_config

    checked = []
    data_ok = all(e["path"] in good for e in manifest["outputs"]["data"])
    for b in manifest["blocks"]:
        sol = (b.get("provenance") or {}).get("solution") or {}
        params = b["config"].get("params") or {}
        if "achieved_share" in sol and params.get("target_share") is not None and data_ok:
            block = from_config(b["config"])
            block.solution = dict(sol)
            achieved_shares([block], folder, manifest["outputs"])
            got = block.solution["achieved_share"]
            if got != sol["achieved_share"]:
                result.problems.append(
                    f"blocks: {b['label']} records achieved_share {sol['achieved_share']}, the files give {got}"
                )
            checked.append("achieved shares")
    arm = manifest.get("experiment") or {}
    if arm.get("arm") == "control" and arm.get("strata"):
        again = overlap(arm["strata"])
        if json.loads(json.dumps(again)) != arm.get("overlap"):
            result.problems.append(
                f"experiment.overlap: {_short(arm.get('overlap'))}, but its strata give {_short(again)}"
            )
        checked.append("the control's overlap from its strata")
    if checked:
        result.checked.append("experiment: " + " and ".join(dict.fromkeys(checked)) + " recomputed")
    counterpart = arm.get("counterpart")
    if counterpart and "://" not in result.output and "://" not in counterpart:  # local arms only
        other = os.path.normpath(os.path.join(result.output, counterpart))
        if not os.path.isfile(os.path.join(other, "manifest.json")):
            result.notes.append(
                f"experiment: its {'control' if arm.get('arm') == 'treatment' else 'treatment'} arm "
                f"{other} has no manifest (not finished, or moved): this arm alone is not the experiment"
            )


def _token_column(manifest: dict[str, Any]) -> str | None:
    """The count column of the first ``tokens`` block among the recorded blocks (a decide output's
    detectors are its score pass's), as the run chose it; None without one."""
    blocks = [*(manifest.get("scores") or {}).get("blocks", []), *manifest["blocks"]]
    for b in blocks:
        if b["config"]["type"].split("@")[0] == "tokens":
            return f"{b['config']['params']['name']}_count"
    return None


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


def _check_blocks(manifest: dict[str, Any], result: Verification) -> None:
    """The recorded blocks (what the card and report list) are the recorded recipe's: each label's
    kind and config as the recipe makes them, every block of this stage there (for a decide output,
    its score pass's detectors too)."""
    from corpusfilter.recipe import load_recipe

    try:
        recipe = load_recipe(manifest["recipe"]["resolved"])
    except CorpusfilterError as e:
        result.notes.append(f"blocks not compared: the recorded recipe does not load here ({first_line(e)})")
        return
    from corpusfilter.blocks.resample import control_tags

    want = {b.label: (b.kind, b.to_config()) for b in recipe.blocks}
    stage = manifest["stage"]
    control = (manifest.get("experiment") or {}).get("arm") == "control"
    if control:  # the control arm's own labels: the treatment's tags and its upsamples' conditions
        want |= {t.label: (t.kind, t.to_config()) for t in control_tags(recipe.blocks)}
    recorded = [("blocks", b["label"], (b["kind"], b["config"])) for b in manifest["blocks"]]
    recorded += [
        ("scores.blocks", b["label"], ("detector", b["config"]))
        for b in (manifest.get("scores") or {}).get("blocks", [])
    ]
    for where, label, got in recorded:
        if got[1]["type"].split("@")[0] == "matched_control":
            continue  # the control arm's own block, made from the recipe's control section
        if label not in want:
            result.problems.append(f"{where}: {label} is not a block of the recorded recipe")
        elif got != want[label]:
            result.problems.append(
                f"{where}: {label} is recorded as {_short(got[1])}, the recorded recipe makes {_short(want[label][1])}"
            )
    have = {label for _, label, _ in recorded}
    for label, (kind, _) in want.items():
        if kind == "detector":
            runs_here = stage != "decide" or bool(manifest.get("scores"))
        else:  # a control arm replaces the treatment's removals and copies by its own block
            runs_here = stage != "score" and not control
        if runs_here and label not in have:
            result.problems.append(f"blocks: {label} of the recorded recipe is not recorded")
    result.checked.append("blocks: the recorded recipe's, config by config")


def _check_rows(
    folder: DataFolder, manifest: dict[str, Any], good: dict[str, pa.Schema], result: Verification
) -> None:
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
            cols = [c for c in (REASON_COLUMN, SHARD_COLUMN) if c in names[kind]]
            if kind != "rejected":
                cols = [c for c in cols if c != "reject_reason"]
            if not cols:
                continue
            t = read_parquet(folder, entry["path"], cols)
            if "reject_reason" in cols:
                if nulls := t.column("reject_reason").null_count:  # a removal must say why
                    result.problems.append(
                        f"{entry['path']}: {nulls} rejected row(s) without a reject_reason"
                    )
                reasons.update(_counts(t.column("reject_reason").drop_null()))
            if per_shard:
                shards[kind].update(_counts(t.column("cf_shard")))
    if manifest["outputs"]["rejected"] and REASON_COLUMN not in names["rejected"]:
        result.problems.append(
            f"rejected/: no {REASON_COLUMN} column: the rejected rows' reasons cannot be counted"
        )
    elif all(e["path"] in good for e in manifest["outputs"]["rejected"]):
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


def _file_columns(folder: DataFolder, rel: str) -> list[str]:
    with folder.open(rel, "rb") as f:
        return list(pq.ParquetFile(f).schema_arrow.names)


def _origins(folder: DataFolder, paths: list[str], schemas: dict[str, pa.Schema] | None = None) -> pa.Table:
    """(``cf_shard``, ``cf_row``) of every row of ``paths`` that is an input row, not a copy
    (``schemas``: the files' schemas when already read, else their footers are)."""
    parts = []
    for rel in paths:
        copies = COPY_COLUMN in (schemas[rel].names if schemas is not None else _file_columns(folder, rel))
        t = read_parquet(folder, rel, [SHARD_COLUMN, ROW_COLUMN, *([COPY_COLUMN] if copies else [])])
        if copies:
            t = t.filter(pc.invert(pc.fill_null(pc.greater(t.column(COPY_COLUMN), 0), False)))
        parts.append(t.select([SHARD_COLUMN, ROW_COLUMN]).cast(_ORIGIN))
    return pa.concat_tables(parts) if parts else _ORIGIN.empty_table()


_ORIGIN = pa.schema([pa.field(SHARD_COLUMN, pa.string()), pa.field(ROW_COLUMN, pa.int64())])


def _check_coverage(
    folder: DataFolder, manifest: dict[str, Any], good: dict[str, pa.Schema], result: Verification
) -> pa.Table | None:
    """Every input row the accounting says was read is in exactly one output row (kept, rejected or
    unreadable), traced by ``cf_shard``/``cf_row``: a run or score pass holds rows 0 to read-1 of each
    shard once each; a decide output (whose shards are its score pass's files) holds each input row
    at most once, as many as it read. A document deleted from the files and the counts alike is found.
    Returns those (shard, row) pairs (None when a file is already a problem), which a decide output
    then compares with its score pass's."""
    entries = [e["path"] for k in KINDS for e in manifest["outputs"][k]]
    if not all(rel in good for rel in entries):
        return None  # a file is already a problem
    if not all(SHARD_COLUMN in good[rel].names and ROW_COLUMN in good[rel].names for rel in entries):
        result.problems.append(
            f"output files without {SHARD_COLUMN}/{ROW_COLUMN}: their rows cannot be traced to the input"
        )
        return None
    t = _origins(folder, entries, good)
    g = t.group_by(SHARD_COLUMN).aggregate(
        [(ROW_COLUMN, "count"), (ROW_COLUMN, "count_distinct"), (ROW_COLUMN, "min"), (ROW_COLUMN, "max")]
    )
    found = {
        r[SHARD_COLUMN]: (
            r[f"{ROW_COLUMN}_count"],
            r[f"{ROW_COLUMN}_count_distinct"],
            r[f"{ROW_COLUMN}_min"],
            r[f"{ROW_COLUMN}_max"],
        )
        for r in g.to_pylist()
    }
    acc = manifest["accounting"]
    if manifest.get("scores"):
        rows, distinct = t.num_rows, sum(v[1] for v in found.values())
        if rows != distinct:
            result.problems.append(
                f"output files hold {rows - distinct} input row(s) twice (by {SHARD_COLUMN}, {ROW_COLUMN})"
            )
        if distinct != acc["read"]:
            result.problems.append(
                f"output files hold {distinct} input rows, but the accounting read {acc['read']}"
            )
    else:
        for shard in sorted({*found, *(s for s, c in acc["per_shard"].items() if c["read"])}):
            read = acc["per_shard"].get(shard, {}).get("read", 0)
            n, distinct, lo, hi = found.get(shard, (0, 0, None, None))
            if (n, distinct, lo, hi) != (read, read, 0 if read else None, read - 1 if read else None):
                result.problems.append(
                    f"{shard}: the files hold {n} of its rows ({distinct} distinct, {lo} to {hi}), "
                    f"but it read rows 0 to {read - 1}: each once"
                )
    result.checked.append(
        f"input rows: each read row in exactly one output row ({SHARD_COLUMN}, {ROW_COLUMN})"
    )
    return t


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
    ex = manifest["executor"]
    rows_by_input = {f["path"]: f["rows"] for f in manifest["inputs"]}
    reads = rows_read(list(rows_by_input.items()), ex["tasks"], ex["limit"])
    for shard, n in reads.items():
        if shard not in acc["per_shard"]:
            result.problems.append(f"{shard}: an input shard absent from the accounting")
        elif acc["per_shard"][shard]["read"] != n:
            how = f"with --limit {ex['limit']} over {ex['tasks']} task(s) " if ex["limit"] >= 0 else ""
            result.problems.append(
                f"{shard}: read {acc['per_shard'][shard]['read']} of its {rows_by_input[shard]} rows, but "
                f"{how}the reader reads {n}"
            )
    result.checked.append("accounting: read + added = kept + rejected + unreadable, per shard and in total")


def _read_column(folder: DataFolder, rel: str, col: str) -> pa.ChunkedArray:
    return read_parquet(folder, rel, [col]).column(col)


def _check_copies(
    folder: DataFolder, manifest: dict[str, Any], good: dict[str, pa.Schema], result: Verification
) -> None:
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


def _check_ids(
    folder: DataFolder, manifest: dict[str, Any], good: dict[str, pa.Schema], result: Verification
) -> None:
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
    manifest: dict[str, Any],
    result: Verification,
    *,
    inputs: bool,
    input_path: str | None,
    seen: frozenset[str],
    origins: pa.Table | None,
) -> None:
    """A decide output (and its control arm) read the rows of a score pass, which holds the input rows
    that could not be read and the input hashes: verify it too, unchanged since, and every row it
    could read read here. Without it the output cannot be verified (its unreadable rows and inputs
    are known only from there)."""
    sc = manifest.get("scores")
    if not sc:
        return
    path, here = score_pass_path(manifest, result.output)
    if path is not None and os.path.abspath(path) in seen:
        result.problems.append(f"score pass {path}: is this output or one that names it (a loop)")
        return
    if path is None:
        lost = (sc.get("accounting") or {}).get("unreadable", 0)
        held = f"; its unreadable/ holds {lost} input row(s) counted here" if lost else ""
        result.problems.append(
            f"score pass not found at {' or '.join(dict.fromkeys(here))}: a decide output is verified "
            f"with the score pass it read (its unreadable rows, scores and input hashes{held}); put it beside the output"
        )
        return
    sv = verify(path, inputs=inputs, input_path=input_path, _seen=seen)
    result.problems += [f"score pass {path}: {p}" for p in sv.problems]
    result.notes += [f"score pass {path}: {n}" for n in sv.notes]  # e.g. its inputs not reachable
    sm = load_manifest(path)
    if validate_manifest(sm):
        return  # reported by the score pass's own verification
    if outputs_digest(sm["outputs"]) != sc["outputs_sha256"]:
        result.problems.append(f"score pass {path}: its output files changed since this output was made")
        return
    ran = {"inputs": sm["inputs"], "executor": {k: sm["executor"][k] for k in ("tasks", "limit")}}
    for key, theirs in ran.items():  # what the card shows of the source corpus
        if key in sc and sc[key] != theirs:
            result.problems.append(f"scores.{key}: not what the score pass {path} records")
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
    scored = [e["path"] for e in sm["outputs"]["data"]]
    if manifest["executor"]["limit"] < 0 and not sv.problems and origins is not None:
        order = [(SHARD_COLUMN, "ascending"), (ROW_COLUMN, "ascending")]
        ours, theirs = origins.sort_by(order), _origins(get_datafolder(path), scored).sort_by(order)
        if not ours.equals(theirs):
            result.problems.append(
                f"the input rows in the files ({ours.num_rows}) are not the rows the score pass {path} kept "
                f"({theirs.num_rows}), by {SHARD_COLUMN} and {ROW_COLUMN}"
            )
    result.checked.append(
        f"score pass: verified, unchanged, {acc['unreadable']} unreadable input row(s) in its unreadable/, "
        "its kept rows the rows here"
    )


def _check_inputs(manifest: dict[str, Any], result: Verification, input_path: str | None) -> None:
    """Each input file re-hashed, and its rows counted, where the run read it (or ``input_path``)."""
    base = _input_folder(manifest, input_path)
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
        result.notes.append(
            f"inputs not checked: {base} is not reachable from here (--input says where it is now)"
        )
        return
    for entry in manifest["inputs"]:
        rel = entry["path"]
        if not folder.isfile(rel):
            result.problems.append(f"input {rel}: missing from {base}")
            continue
        sha = sha256_file(folder, rel)
        if sha != entry["sha256"]:
            result.problems.append(f"input {rel}: sha256 changed since the run ({sha[:12]}…)")
            continue
        with folder.open(rel, "rb") as f:
            rows = pq.ParquetFile(f).metadata.num_rows
        if rows != entry["rows"]:
            result.problems.append(f"input {rel}: {rows} rows, but the manifest says {entry['rows']}")
    result.checked.append(f"{len(manifest['inputs'])} input file(s): sha256, rows")


def _input_folder(manifest: dict[str, Any], input_path: str | None) -> str | None:
    """The folder the manifest's input paths are relative to: the recorded one, or, when the input
    moved, the folder ``input_path`` names (the recipe's input: a folder, a file or a glob)."""
    if input_path is None:
        return manifest.get("input_folder")
    from corpusfilter.io import resolve_input

    return resolve_input(input_path)[0].path


def _rebuild(manifest: dict[str, Any], result: Verification, input_path: str | None) -> None:
    """Re-run the recorded recipe (a decide output: its score pass first, from that pass's own
    manifest) into a temporary folder, and compare everything the run derives: the output files,
    schemas, blocks (config, provenance, stats), accounting, token report, experiment and score pass."""
    with tempfile.TemporaryDirectory(prefix="corpusfilter-rebuild-") as tmp:
        out = os.path.join(tmp, "out")
        scores = None
        if manifest["stage"] == "decide":
            path = score_pass_path(manifest, result.output)[0]
            if path is None:
                result.problems.append("rebuild: the score pass is needed to rebuild a decide output")
                return
            sm = load_manifest(path)
            scores = out + ".scores"
            rebuilt_scores = _rerun(sm, scores, input_path, result)
            if rebuilt_scores is None:
                return
            _compare(sm, rebuilt_scores.manifest, result, "rebuild of the score pass")
        res = _rerun(manifest, out, input_path, result, scores=scores)
        if res is None:
            return
        is_control = (manifest.get("experiment") or {}).get("arm") == "control"
        if is_control and res.control is None:
            result.problems.append("rebuild: the recorded recipe no longer makes a control arm")
            return
        rebuilt = res.control.manifest if is_control and res.control else res.manifest
    _compare(manifest, rebuilt, result, "rebuild")
    result.checked.append(
        "rebuild from the recorded recipe: identical output files, schemas, blocks, accounting, tokens"
        + (", experiment" if manifest.get("experiment") else "")
        + (", and score pass (re-scored)" if manifest["stage"] == "decide" else "")
    )


def _rerun(
    manifest: dict[str, Any],
    out: str,
    input_path: str | None,
    result: Verification,
    scores: str | None = None,
) -> Any:
    """Run ``manifest``'s recorded recipe, stage, tasks and limit into ``out`` (a decide stage from
    ``scores``); None, with a problem, when the input no longer lists the recorded files."""
    from corpusfilter.io import resolve_input
    from corpusfilter.recipe import load_recipe
    from corpusfilter.runner import run

    resolved = json.loads(json.dumps(manifest["recipe"]["resolved"]))
    resolved["output"]["path"] = out
    if resolved.get("control"):  # both arms are rebuilt together; the control beside the treatment
        resolved["control"]["output"] = out + ".control"
    if scores is None:
        if input_path is not None:
            resolved["input"]["path"] = input_path
        try:
            listed = resolve_input(resolved["input"]["path"])[1]
        except CorpusfilterError as e:
            result.problems.append(f"rebuild: {first_line(e)} (--input says where the input is now)")
            return None
        recorded = [f["path"] for f in manifest["inputs"]]
        if listed != recorded:
            extra, gone = sorted(set(listed) - set(recorded)), sorted(set(recorded) - set(listed))
            result.problems.append(
                f"rebuild: {resolved['input']['path']} now lists {len(listed)} Parquet file(s), the manifest "
                f"{len(recorded)} ({'new: ' + extra[0] if extra else 'missing: ' + gone[0] if gone else 'another order'}); "
                "not rebuilt from other input"
            )
            return None
    ex = manifest["executor"]
    return run(
        load_recipe(resolved),
        tasks=ex["tasks"],
        workers=ex["workers"],
        limit=ex["limit"],
        progress=False,
        stage=manifest["stage"],
        scores=scores,
        output=out if manifest["stage"] == "score" else None,  # a score pass's own folder
    )


#: What a rebuild may change: where things are and when they ran (and so the recipe's hash, which
#: covers the output path); every other field is re-derived and must be equal.
_MOVES = {
    "counterpart",
    "path",
    "relative_path",
    "finished_at",
    "started_at",
    "elapsed_s",
    "seconds",
    "input_folder",
    "recipe_sha256",
}


def _comparable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _comparable(x) for k, x in v.items() if k not in _MOVES and not k.endswith("_path")}
    if isinstance(v, list):
        return [_comparable(x) for x in v]
    return v


def _compare(recorded: dict[str, Any], rebuilt: dict[str, Any], result: Verification, what: str) -> None:
    for kind in KINDS:
        want = [(f["path"], f["sha256"]) for f in recorded["outputs"][kind]]
        got = [(f["path"], f["sha256"]) for f in rebuilt["outputs"][kind]]
        if want != got:
            result.problems.append(
                f"{what}: {kind}/ differs ({len(got)} file(s) rebuilt, {len(want)} recorded)"
            )
    control = {**(recorded.get("experiment") or {}).get("control", {})}
    for key in (
        "stage",
        "seed",
        "inputs",
        "schemas",
        "blocks",
        "accounting",
        "tokens",
        "experiment",
        "scores",
    ):
        a, b = _comparable(recorded.get(key)), _comparable(rebuilt.get(key))
        if key == "experiment" and a and b:  # the control arm's folder is the rebuild's
            a["control"] = b["control"] = {k: v for k, v in control.items() if k != "output"}
        if a != b:
            result.problems.append(
                f"{what}: the {key} differs from the recorded one ({_first_difference(a, b)})"
            )


def _first_difference(a: Any, b: Any, at: str = "") -> str:
    """Where two JSON values first differ, as a dotted path with both values (shortened)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted({*a, *b}, key=str):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{at}.{k}" if at else str(k))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{at}[{i}]")
    return f"{at or 'value'}: recorded {_short(a)}, rebuilt {_short(b)}"


def format_verification(v: Verification) -> str:
    lines = [f"verify {v.output}"]
    lines += [f"  checked: {c}" for c in v.checked]
    lines += [f"  note: {n}" for n in v.notes]
    lines += [f"  PROBLEM: {p}" for p in v.problems]
    lines.append("verified" if v.ok else f"FAILED: {len(v.problems)} problem(s)")
    return "\n".join(lines)
