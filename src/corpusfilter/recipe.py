"""Recipes: strict YAML → validated spec → datatrove pipeline of corpusfilter steps.

Unknown keys anywhere are errors naming the key path. Relative paths (input, output, lexicon files)
are resolved against the recipe file's folder, so a recipe runs the same from any working directory.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import yaml

from corpusfilter.blocks.base import Block, Detector, reads_copies
from corpusfilter.errors import RecipeError, first_line, read_text_file
from corpusfilter.io import (
    InputSet,
    ParquetBatchReader,
    ParquetBatchWriter,
    changed_files,
    input_exists,
    inspect_inputs,
)
from corpusfilter.params import build_params
from corpusfilter.registry import lookup


@dataclasses.dataclass(frozen=True, kw_only=True)
class InputSpec:
    path: str
    text_column: str = "text"
    id_column: str | None = "id"
    batch_size: int = 10_000

    def check(self, path: str) -> None:
        if self.batch_size < 1:
            raise RecipeError(f"{path}.batch_size: must be at least 1")


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutputSpec:
    path: str
    compression: Literal["zstd", "snappy", "gzip", "lz4", "none"] = "zstd"
    rows_per_file: int = 1_000_000

    def check(self, path: str) -> None:
        if self.rows_per_file < 1:
            raise RecipeError(f"{path}.rows_per_file: must be at least 1")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExecutorSpec:
    """Which datatrove executor runs the tasks: ``local`` (this machine's processes), ``ray`` (a Ray
    cluster: the one ``RAY_ADDRESS`` names, else a local one started on first use and kept until
    the process ends) or ``slurm`` (a job array submitted with ``sbatch``; the run waits for it, then
    checks the accounting and writes the manifest as for a local run). For Ray and Slurm the input,
    the output and (Slurm) this Python environment must be on storage every node reaches.
    ``cpus_per_task`` and ``mem_per_cpu_gb`` are what each task reserves on Ray or Slurm; ``workers:
    -1`` is one per CPU locally, every task at once on Ray and Slurm (the cluster then bounds them)."""

    backend: Literal["local", "ray", "slurm"] = "local"
    tasks: int = 1
    workers: int = -1
    cpus_per_task: int = 1
    mem_per_cpu_gb: float = 2.0
    #: Slurm: the partition (required), the time limit per task, a QOS, and more sbatch options
    partition: str | None = None
    time: str = "24:00:00"
    qos: str | None = None
    sbatch_args: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Slurm: shell commands each job runs first (``module load python/3.11``), before this
    #: environment's ``bin`` is put first on the PATH
    setup: str | None = None

    _CLUSTER = ("cpus_per_task", "mem_per_cpu_gb")
    _SLURM = ("partition", "time", "qos", "sbatch_args", "setup")

    def check(self, path: str) -> None:
        if self.tasks < 1:
            raise RecipeError(f"{path}.tasks: must be at least 1")
        if self.workers == 0 or self.workers < -1:
            raise RecipeError(f"{path}.workers: must be -1 (one per task, up to the CPU count) or at least 1")
        default = ExecutorSpec()
        if self.backend == "local" and any(getattr(self, k) != getattr(default, k) for k in self._CLUSTER):
            raise RecipeError(f"{path}: cpus_per_task and mem_per_cpu_gb go with backend: ray or slurm")
        if self.backend != "slurm":
            for k in self._SLURM:
                if getattr(self, k) != getattr(default, k):
                    raise RecipeError(f"{path}.{k}: goes with backend: slurm")
        if self.cpus_per_task < 1 or self.mem_per_cpu_gb <= 0:
            raise RecipeError(f"{path}: cpus_per_task must be at least 1 and mem_per_cpu_gb above 0")
        if self.backend == "slurm":
            if not self.partition:
                raise RecipeError(f"{path}.partition: backend: slurm needs the partition to submit to")
            reserved = {"array", "output", "error", "job-name", "partition", "time", "qos",
                        "cpus-per-task", "mem-per-cpu"}  # fmt: skip
            clash = sorted(set(self.sbatch_args) & reserved)
            if clash:
                raise RecipeError(
                    f"{path}.sbatch_args.{clash[0]}: set by corpusfilter (use the executor's own key)"
                )

    def resolved(self) -> dict[str, Any]:
        """As the resolved recipe records it: each backend's fields only for that backend, so a
        local recipe's hash is what it was before the Ray and Slurm backends existed."""
        d = dataclasses.asdict(self)
        drop = set(self._SLURM) if self.backend != "slurm" else set()
        if self.backend == "local":
            drop |= {"backend", *self._CLUSTER}
        return {k: v for k, v in d.items() if k not in drop}


_TOP_KEYS = {"description", "input", "output", "seed", "executor", "blocks", "control"}


def _is_remote(p: str) -> bool:
    return "://" in p


def _resolve(p: str, base: Path) -> str:
    if _is_remote(p) or os.path.isabs(p):
        return p
    return os.path.normpath(str(base / p))


@dataclasses.dataclass
class Recipe:
    """A validated recipe. ``data`` is the resolved mapping (overrides applied, paths absolute)."""

    data: dict[str, Any]
    input: InputSpec
    output: OutputSpec
    executor: ExecutorSpec
    seed: int
    blocks: list[Block]
    source: str = "<inline>"
    description: str = ""
    control: ControlSpec | None = None

    @property
    def control_path(self) -> str:
        if self.control is None:
            raise RecipeError("this recipe has no control")
        return self.control.output or self.output.path.rstrip("/") + ".control"

    @property
    def needs_corpus_pass(self) -> bool:
        """Whether running it takes score → solve → decide (target shares, backfill, a control)."""
        return self.control is not None or any(needs_totals(b) for b in self.blocks)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.data, sort_keys=True).encode()).hexdigest()

    def block_specs(self) -> list[dict[str, Any]]:
        return [b.to_config() for b in self.blocks]


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``key.path=value`` (YAML value; list items by index: ``blocks.1.drop.where=...``)."""
    if "=" not in assignment:
        raise RecipeError(f"--set {assignment!r}: expected key=value")
    key, _, raw = assignment.partition("=")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node: Any = data
    item = False  # node is a list item (a block: a single-key map)
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if item and isinstance(node, dict) and len(node) == 1 and part not in node:
            (kind,) = node  # e.g. blocks.5.drop.where on a tag block: name the mistake
            raise RecipeError(f"--set {key}: {'.'.join(parts[:i])} is a {kind!r} item, not {part!r}")
        item = isinstance(node, list)
        if isinstance(node, list):
            try:
                idx = int(part)
                if idx < 0:  # blocks.-1 would address the last block: say which, by its index
                    raise IndexError
                node[idx]
            except (ValueError, IndexError):
                raise RecipeError(
                    f"--set {key}: {where} is not an index into a list of {len(node)}"
                ) from None
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise RecipeError(f"--set {key}: {where} is not a mapping or list")


def load_recipe(
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    overrides: Sequence[str] = (),
    base_dir: str | os.PathLike[str] | None = None,
) -> Recipe:
    """Load and validate a recipe from a YAML file or a mapping. Schema errors raise RecipeError."""
    if isinstance(overrides, str):  # iterated, it would be one override per character
        raise RecipeError(f"overrides={overrides!r}: a list of 'key=value' strings, e.g. [{overrides!r}]")
    if isinstance(source, Mapping):
        data: Any = copy.deepcopy(dict(source))
        origin = "<inline>"
        base = Path(base_dir) if base_dir else Path.cwd()
    else:
        path = Path(source)
        origin = str(path)
        text = read_text_file(path, "recipe")
        try:
            data = load_yaml(text)
        except yaml.YAMLError as e:
            raise yaml_error(path, e) from None
        base = Path(base_dir) if base_dir else path.resolve().parent
    if not isinstance(data, dict):
        raise RecipeError(f"{origin}: a recipe is a mapping with input, output and blocks")
    for key in ("input", "output"):  # the `input: PATH` shorthand, before overrides address input.path
        if isinstance(data.get(key), str):
            data[key] = {"path": data[key]}
    for ov in overrides:
        apply_override(data, ov)
    try:
        return _build_recipe(data, origin, base)
    except RecipeError as e:
        if not overrides:
            raise
        sets = " ".join(f"--set {ov}" for ov in overrides)
        raise RecipeError(f"{e} (the recipe as changed by {sets})") from None


def _build_recipe(data: dict[str, Any], origin: str, base: Path) -> Recipe:
    """Validate the loaded (and overridden) mapping into a Recipe."""
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise RecipeError(f"{origin}: {unknown[0]}: unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")
    for req in ("input", "output", "blocks"):
        if req not in data:
            raise RecipeError(f"{origin}: {req}: required key is missing")
    if isinstance(data["input"], str):
        data["input"] = {"path": data["input"]}
    if isinstance(data["output"], str):
        data["output"] = {"path": data["output"]}
    inp = build_params(InputSpec, data["input"], "input")
    out = build_params(OutputSpec, data["output"], "output")
    ex = build_params(ExecutorSpec, data.get("executor") or {}, "executor")
    inp = dataclasses.replace(inp, path=_resolve(inp.path, base))
    out = dataclasses.replace(out, path=_resolve(out.path, base))
    data["input"] = dataclasses.asdict(inp)
    data["output"] = dataclasses.asdict(out)
    data["executor"] = ex.resolved()
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise RecipeError(f"{origin}: seed: expected an integer, got {seed!r}")
    data["seed"] = seed
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise RecipeError(f"{origin}: description: expected a string")
    blocks_raw = data["blocks"]
    if not isinstance(blocks_raw, list) or not blocks_raw:
        raise RecipeError(f"{origin}: blocks: expected a non-empty list of single-key maps")
    blocks: list[Block] = []
    for i, item in enumerate(blocks_raw):
        bpath = f"blocks[{i}]"
        if not isinstance(item, dict) or len(item) != 1:
            raise RecipeError(
                f"{bpath}: expected a single-key map like {{drop: {{where: ..., reason: ...}}}}"
            )
        ((btype, params),) = item.items()
        cls = lookup(str(btype), bpath)
        if cls.not_in_recipes:  # registered for manifests and rebuilds, made by the runner
            raise RecipeError(f"{bpath}.{btype}: {cls.not_in_recipes}")
        if params is not None and not isinstance(params, dict):
            raise RecipeError(
                f"{bpath}.{btype}: expected a map of parameters, like {{where: ..., reason: ...}}, "
                f"not {type(params).__name__} {params!r}"
            )
        params = dict(params or {})
        for f in dataclasses.fields(cls.Params):
            if (
                f.metadata.get("path")
                and isinstance(params.get(f.name), str)
                and _looks_like_path(params[f.name])
            ):
                params[f.name] = _resolve(params[f.name], base)
        block = cls.from_params(params, path=f"{bpath}.{btype}")
        item[btype] = params
        blocks.append(block)
    _label_blocks(blocks, inp.text_column, inp.id_column or "id", seed)
    _check_order(blocks)
    control = None
    if data.get("control") is not None:
        control = build_params(ControlSpec, data["control"], "control")
        if control.output is not None:
            resolved = _resolve(control.output, base)
            _check_control_output(resolved, out.path)
            control = dataclasses.replace(control, output=resolved)
        data["control"] = dataclasses.asdict(control)
        _check_copy_tags(blocks)
    return Recipe(data, inp, out, ex, seed, blocks, origin, desc, control)


def _check_copy_tags(blocks: list[Block]) -> None:
    """With a control arm: a tag of copies (its condition reads ``copy_index`` or ``original_id``)
    may not come before an upsample or backfill. The control makes all its copies in one block, so
    it could label all of them or none, not those of the resamplers before the tag only."""
    tag: Block | None = None
    for b in blocks:
        if b.block_type == "tag" and reads_copies(b):
            tag = tag or b
        elif tag is not None and b.block_type in ("upsample", "backfill"):
            raise RecipeError(
                f"{tag.label}: a tag of copies before {b.label}: the control arm makes every copy in one "
                "block and cannot label only the earlier resamplers' copies; move the tag after the last "
                "upsample or backfill"
            )


def _check_control_output(control: str, output: str) -> None:
    """The control arm writes its own folder: one that is (or holds, or lies in) the treatment's or
    the score pass's folder would overwrite what the run just wrote."""

    def norm(p: str) -> str:  # local paths (file:// URLs too) made absolute; remote ones as written
        p = p.removeprefix("file://")
        return p.rstrip("/") if "://" in p else os.path.abspath(p).replace(os.sep, "/")

    c, out = norm(control), norm(output)
    others = [out, out + ".scores"]
    clash = next((o for o in others if c == o or c.startswith(o + "/") or o.startswith(c + "/")), None)
    if clash is not None:
        what = "score pass's" if clash.endswith(".scores") else "treatment's"
        raise RecipeError(
            f"control.output: {control} is or shares the {what} folder {clash}; the control arm "
            "would overwrite it (give the control a folder of its own, or leave control.output out "
            "for <output>.control)"
        )


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (the plain loader keeps the
    last, so a second `blocks:` would silently drop the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool | None):
                continue  # the base loader names an unhashable key
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """Recipes and training configs: YAML's safe subset, a key given twice being an error."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects


def yaml_error(path: object, e: yaml.YAMLError) -> RecipeError:
    """One line naming the file and line: ``FILE: line N invalid YAML (what)``."""
    mark = getattr(e, "problem_mark", None)
    where = f" line {mark.line + 1}" if mark else ""
    return RecipeError(f"{path}:{where} invalid YAML ({getattr(e, 'problem', None) or first_line(e)})")


def _looks_like_path(v: str) -> bool:
    """Whether a path-or-name parameter names a file, resolved against the recipe's folder (the
    rule the blocks use themselves, :func:`corpusfilter.lexicon.names_a_file`); the packaged
    model's names stay names."""
    from corpusfilter.embed import MODEL_NAMES
    from corpusfilter.lexicon import names_a_file

    return names_a_file(v) and v not in MODEL_NAMES


def _label_blocks(blocks: list[Block], text_column: str, id_column: str, seed: int) -> None:
    for i, b in enumerate(blocks):
        suffix = f":{b.params.name}" if isinstance(b, Detector) and hasattr(b.params, "name") else ""
        b.label = f"{i}.{b.block_type}{suffix}"
        b.stats.name = str(b)
        b.text_column = text_column
        b.id_column = id_column
        b.seed = seed


def needs_totals(block: Block) -> bool:
    """Whether a block is solved from corpus-wide totals (target shares, backfill) before it runs."""
    return bool(getattr(block, "needs_totals", False))


def _check_order(blocks: list[Block]) -> None:
    """The orders whose results the solvers, the accounting and the control arm can state exactly.

    Blocks solved from corpus totals see the corpus after every drop and every earlier copy: no
    detector, drop/keep or fixed-weight upsample may follow them. No drop/keep may follow any block
    that adds copies (it would drop copies, which the control arm, matching removed *documents*,
    cannot mirror). Nothing that adds copies may follow a ``target_share`` (the share is of the final
    output). Resamplers have distinct names: a name salts the block's hash draws."""
    solved: Block | None = None  # the first block solved from totals
    copier: Block | None = None  # the first block that adds copies
    target: Block | None = None  # the first upsample with target_share
    salts: dict[str, Block] = {}  # resamplers by name: the name salts their hash draws
    for b in blocks:
        adds = b.block_type in ("upsample", "backfill")
        if target is not None and adds:
            raise RecipeError(
                f"{b.label}: no upsample or backfill may follow {target.label}: its target_share is "
                "solved as the share of the final output, which a later block would change"
            )
        if solved is not None and b.kind == "detector":
            raise RecipeError(
                f"{b.label}: detectors must come before {solved.label} (it is solved from scores)"
            )
        first = solved if solved is not None else copier
        if hasattr(b, "select") and first is not None:
            why = (
                "which is solved from the corpus left after every drop"
                if first is solved
                else "a drop after it would remove copies it made (counted as removed tokens but not as "
                "added ones, and beyond what a control arm, matching removed documents, can mirror)"
            )
            raise RecipeError(f"{b.label}: drop/keep blocks must come before {first.label}, {why}")
        if solved is not None and adds and not needs_totals(b):
            raise RecipeError(
                f"{b.label}: a fixed-weight upsample must come before {solved.label}, which is solved "
                "from the copies made before it"
            )
        if needs_totals(b):
            solved = solved or b
        if adds:
            copier = copier or b
            if (twin := salts.get(b.params.name)) is not None:
                raise RecipeError(
                    f"{b.label}: name {b.params.name!r} is also {twin.label}'s; a resampler's name salts "
                    "its random draws, so two of one name would copy the same documents together: give "
                    "each its own name"
                )
            salts[b.params.name] = b
        if b.block_type == "upsample" and getattr(b.params, "target_share", None) is not None:
            target = target or b


@dataclasses.dataclass(frozen=True, kw_only=True)
class ControlSpec:
    """``control: {type: matched}``: also write a control arm that removes (and adds) the same tokens
    as the treatment, chosen at random within each group and length bucket."""

    type: Literal["matched"] = dataclasses.field(
        default="matched", metadata={"help": "control.type: the one kind of control arm"}
    )
    output: str | None = dataclasses.field(
        default=None, metadata={"help": "control.output: the control arm's folder (null: <output>.control)"}
    )
    by: list[str] = dataclasses.field(default_factory=lambda: ["source"])
    length_buckets: list[int] = dataclasses.field(default_factory=lambda: [128, 512, 2048, 8192])
    tokens: str = "tokens_count"
    # draw only among documents the treatment left alone (removed nothing / copied nothing there):
    # the contrast is then "targets vs other documents", not "targets vs random documents"
    exclude_treated: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "control.exclude_treated: draw only among documents the treatment left alone "
            "(targets vs other documents, not vs random ones)"
        },
    )

    def check(self, path: str) -> None:
        b = self.length_buckets
        if any(x <= 0 for x in b) or sorted(set(b)) != list(b):
            raise RecipeError(
                f"{path}.length_buckets: increasing positive token counts, e.g. [128, 512, 2048]"
            )


Stage = Literal["run", "score", "decide"]


def scores_path(recipe: Recipe) -> str:
    """Default folder of ``corpusfilter score`` output: beside the recipe's output, ``<output>.scores``."""
    return recipe.output.path.rstrip("/") + ".scores"


@dataclasses.dataclass
class Plan:
    """A recipe bound to its inputs for one stage: the active steps and the schemas they produce.

    ``run`` runs every block in order; ``score`` runs only the detectors and keeps every row;
    ``decide`` reads what ``score`` wrote and runs only the decisions.
    """

    recipe: Recipe
    inputs: InputSet
    input_schema: pa.Schema
    output_schema: pa.Schema
    stage: Stage
    blocks: list[Block]
    output_path: str
    scores_manifest: dict[str, Any] | None = None

    def pipeline(self, *, limit: int = -1, progress: bool = True) -> list[Any]:
        inp = self.recipe.input
        reader = ParquetBatchReader(
            folder=self.inputs.folder,
            files=self.inputs.files,
            schema=self.input_schema,
            text_column=inp.text_column,
            id_column=self.inputs.id_column,
            batch_size=inp.batch_size,
            limit=limit,
            expected_rows={s.path: s.rows for s in self.inputs.shards},
            progress=progress,
            scored=self.stage == "decide",
        )
        out = self.recipe.output
        writer = ParquetBatchWriter(
            output=self.output_path,
            schema=self.output_schema,
            compression=out.compression if out.compression != "none" else "none",
            rows_per_file=out.rows_per_file,
            text_column=inp.text_column,
        )
        return [reader, *self.blocks, writer]

    def describe(self) -> str:
        lines = [f"recipe: {self.recipe.source}", f"stage: {self.stage}", f"input: {self.inputs.folder.path}"]
        lines.append(
            f"  {len(self.inputs.shards)} shard(s), {sum(s.rows for s in self.inputs.shards):,} rows"
        )
        lines.append(f"  schema: {', '.join(f'{f.name}:{f.type}' for f in self.input_schema)}")
        lines.append("blocks:")
        for b in self.recipe.blocks:
            params = json.dumps(b.to_config()["params"], sort_keys=True)
            skipped = "" if b in self.blocks else "  (skipped at this stage)"
            lines.append(f"  {b.label} [{b.kind}] {b.block_type}@{b.version} {params}{skipped}")
        lines.append(f"output: {self.output_path}")
        lines.append(f"  schema: {', '.join(f'{f.name}:{f.type}' for f in self.output_schema)}")
        c = self.recipe.control
        if c is not None:
            lines.append(
                f"control: {c.type}, strata {' × '.join([*c.by, 'length bucket'])} "
                f"(buckets {c.length_buckets} of {c.tokens}) → {self.recipe.control_path}"
            )
        if self.stage == "run" and self.recipe.needs_corpus_pass:
            lines.append(f"runs as: score → {scores_path(self.recipe)}, solve from totals, decide")
        return "\n".join(lines)


def plan(
    recipe: Recipe,
    *,
    stage: Stage = "run",
    scores: str | None = None,
    output: str | None = None,
) -> Plan:
    """Inspect the inputs and check every active block against the schema it will see."""
    if stage == "decide":
        return _plan_decide(recipe, scores or scores_path(recipe), output)
    inputs = inspect_inputs(
        recipe.input.path,
        text_column=recipe.input.text_column,
        id_column=recipe.input.id_column,
    )
    active = [b for b in recipe.blocks if stage == "run" or b.kind == "detector"]
    schema = _check_blocks(recipe, active, inputs.schema, stage)
    # A score pass checks the decisions and the control too: better now than after scoring it all.
    _check_control(
        recipe, schema if stage == "run" else _check_blocks(recipe, recipe.blocks, inputs.schema, "run")
    )
    out = output or (scores_path(recipe) if stage == "score" else recipe.output.path)
    return Plan(recipe, inputs, inputs.schema, schema, stage, active, out)


def _check_blocks(recipe: Recipe, active: Sequence[Block], schema: pa.Schema, stage: Stage) -> pa.Schema:
    """Validate the ``active`` blocks in recipe order, each against the columns before it; the
    schema after the last."""
    for i, b in enumerate(recipe.blocks):
        if b not in active:
            continue
        path = f"blocks[{i}].{b.block_type}"
        try:
            b.validate(schema, path)
        except RecipeError as e:
            if stage == "score":
                raise RecipeError(f"{e} (at the score stage only detectors run)") from None
            raise
        for f in b.output_fields(schema):
            schema = schema.append(f)
    return schema


def _check_control(recipe: Recipe, schema: pa.Schema) -> None:
    """A control arm needs its strata columns and an integer token column, before anything runs."""
    c = recipe.control
    if c is None:
        return
    from corpusfilter.blocks.resample import require_columns

    require_columns(schema, "control", by=c.by, tokens=c.tokens)


def _check_scored_input(recipe: Recipe, manifest: Mapping[str, Any], scores: str) -> None:
    """Refuse to decide on scores of an input that has changed since (files added, removed or
    resized, or rows changed): the output would silently miss the new documents. Skipped where the
    recipe's input is not here (deciding on another machine needs only the scores)."""
    if not input_exists(recipe.input.path):
        return
    # an input that is here but broken (a bad new shard) is an error, not a reason to skip the check
    now = inspect_inputs(
        recipe.input.path, text_column=recipe.input.text_column, id_column=recipe.input.id_column
    )
    then = {f["path"]: (f["rows"], f["bytes"]) for f in manifest.get("inputs", [])}
    changed = changed_files(then, {s.path: (s.rows, s.bytes) for s in now.shards})
    if changed:
        raise RecipeError(
            f"--scores {scores}: the input {recipe.input.path} changed since the score pass ({changed}); score again"
        )


def file_facts(provenance: dict[str, Any]) -> dict[str, Any]:
    """What a block's provenance says about the files it reads (hashes, labels, sizes), without
    where they lie (``*_path``): the same model installed elsewhere is the same model."""
    return {k: v for k, v in provenance.items() if not k.endswith("_path")}


def _plan_decide(recipe: Recipe, scores: str, output: str | None) -> Plan:
    from datatrove.io import get_datafolder

    folder = get_datafolder(scores)
    if not folder.isfile("manifest.json"):
        raise RecipeError(f"--scores {scores}: no manifest.json (run `corpusfilter score` first)")
    with folder.open("manifest.json") as f:
        manifest = json.load(f)
    if manifest.get("stage") != "score" or not manifest.get("accounting", {}).get("ok"):
        raise RecipeError(f"--scores {scores}: not a completed `corpusfilter score` output")
    made_with = {b["label"]: b["config"] for b in manifest["blocks"]}
    made_by = {b["label"]: b.get("provenance") for b in manifest["blocks"]}
    for b in recipe.blocks:
        if b.kind == "detector" and b.label not in made_with:
            raise RecipeError(
                f"{b.label}: the scores in {scores} have no such detector (they have "
                f"{', '.join(made_with) or 'none'}); score again"
            )
        if b.kind == "detector" and made_with[b.label] != b.to_config():
            raise RecipeError(
                f"{b.label}: the scores in {scores} were made with "
                f"{json.dumps(made_with[b.label])}, not {json.dumps(b.to_config())}; score again"
            )
        if b.kind != "detector" or made_by[b.label] is None:
            continue
        was, now = file_facts(made_by[b.label]), file_facts(b.provenance())
        if was != now:
            changed = sorted(k for k in {*was, *now} if was.get(k) != now.get(k))
            raise RecipeError(
                f"{b.label}: the scores in {scores} were made with other files at the same paths "
                f"({', '.join(changed)} changed: a lexicon, model or tokenizer was edited); score again"
            )
    _check_scored_input(recipe, manifest, scores)
    if not any(f["rows"] for f in manifest.get("outputs", {}).get("data", [])):
        acc = manifest.get("accounting", {})
        read, unreadable = acc.get("read", 0), acc.get("unreadable", 0)
        why = f"; see {scores}/unreadable/" if unreadable else ": the input holds no rows" if not read else ""
        raise RecipeError(
            f"--scores {scores}: the score pass has no readable rows to decide on (read {read}, "
            f"unreadable {unreadable}){why}"
        )
    id_column = recipe.input.id_column or "id"
    inputs = inspect_inputs(
        folder.resolve_paths("data"), text_column=recipe.input.text_column, id_column=id_column, scored=True
    )
    schema = inputs.schema
    active = [b for b in recipe.blocks if b.kind != "detector"]
    for i, b in enumerate(recipe.blocks):
        path = f"blocks[{i}].{b.block_type}"
        if b.kind == "detector":
            for f in b.output_fields(pa.schema([])):
                if f.name not in schema.names or schema.field(f.name).type != f.type:
                    raise RecipeError(f"{path}: scored shards in {scores} lack column {f.name} ({f.type})")
            continue
        b.validate(schema, path)
        for f in b.output_fields(schema):
            schema = schema.append(f)
    _check_control(recipe, schema)
    return Plan(
        recipe, inputs, inputs.schema, schema, "decide", active, output or recipe.output.path, manifest
    )
