"""``corpusfilter train CONFIG.yaml``: train a detector (fastText or a linear head on embeddings).

A config names its sources (labelled Parquet, or positive / negative sources with sampling rules),
how short rows become document-length examples, the split and the trainer. Every random choice is
derived from ``hash(id, seed)``, never from global RNG state, so a config and a seed give the same
examples, the same split and (with ``thread: 1``) the same model bytes. Heads are fitted with BLAS on
one thread, so the bytes do not depend on the machine's core count; they still depend on numpy's
BLAS build and CPU kernel, which ``metrics.json`` records (``environment``), and ``--compare MODEL``
says whether a rebuild matches a shipped model bit for bit, within a score tolerance, or not.

Split: each row goes to train / validation / test by ``hash(row id, seed)`` *before* short rows are
grouped into documents, so a document never mixes splits. The test split is never used for training
or model selection (``scripts/eval_detectors.py`` reads it at the end).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import string
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from corpusfilter.errors import CorpusfilterError, InputError, RecipeError, first_line, read_text_file
from corpusfilter.finetune import CHECKPOINT_EVERY
from corpusfilter.params import build_params, params_to_dict

DEFAULT_DATA_ROOT = "../shared/data"
SPLITS = ("train", "validation", "test")


# ---------------------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True, kw_only=True)
class SourceSpec:
    """One source of examples: rows of a Parquet file, filtered, sampled and labelled."""

    name: str
    path: str
    label: str = ""  # every row's class (required unless label_column gives each row's)
    text: str = "text"  # a column name, or a template such as "{prompt} {answer}"
    label_column: str | None = None  # labelled Parquet: the label comes from this column ...
    label_map: dict[str, str] | None = None  # ... mapped through this (str(value) → label)
    where: str | None = None  # polars SQL condition over the file's columns
    id: str | None = None  # row id column or template (default: the file path as written + row number)
    limit: int | None = None  # at most this many rows (a seeded hash sample)
    weight: float = 1.0
    group_by: str | None = None  # documents are built from rows sharing this column / template
    doc_words: list[int] | None = None  # [N, M]: join rows into documents of N..M words
    max_chars: int | None = 20_000  # cut each document to this many characters
    test_where: str | None = None  # rows where this holds are the test split (others: by hash)
    relative_to: Literal["data", "config"] = "data"  # resolve path against the data root or the config
    # lines matching this regex (whole line) are removed first: boilerplate such as inline CSS that
    # sits in only one label's rows and would otherwise be learned as a label signal
    drop_lines: str | None = None

    def check(self, path: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", self.name):
            raise RecipeError(f"{path}.name: {self.name!r}: letters, digits, _ . - only")
        if self.limit is not None and self.limit < 1:
            raise RecipeError(f"{path}.limit: at least 1")
        if self.weight <= 0:
            raise RecipeError(f"{path}.weight: must be positive")
        if self.doc_words is not None and (
            len(self.doc_words) != 2 or not 0 < self.doc_words[0] <= self.doc_words[1]
        ):
            raise RecipeError(f"{path}.doc_words: [N, M] with 0 < N <= M")
        if self.max_chars is not None and self.max_chars < 1:
            raise RecipeError(f"{path}.max_chars: at least 1")
        if self.label_map is not None and self.label_column is None:
            raise RecipeError(f"{path}.label_map: needs label_column")
        if self.label_column is None and not self.label.strip():
            raise RecipeError(
                f"{path}.label: required (its rows' class), unless label_column gives each row's"
            )
        for key, value in (self.label_map or {}).items():
            if not value.strip():
                raise RecipeError(f"{path}.label_map: {key!r} maps to an empty label")
        if self.drop_lines is not None:
            try:
                re.compile(self.drop_lines)
            except re.error as e:
                raise RecipeError(f"{path}.drop_lines: {self.drop_lines!r}: {e}") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class SplitSpec:
    validation: float = 0.1
    test: float = 0.1

    def check(self, path: str) -> None:
        if not (0 <= self.validation < 1 and 0 <= self.test < 1 and self.validation + self.test < 1):
            raise RecipeError(f"{path}: validation and test are shares in [0, 1) summing below 1")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FastTextSpec:
    """fastText supervised options. Word unigrams only: hashed n-gram rows (``wordNgrams > 1``,
    char n-grams) are left uninitialized by this fastText build when training on one thread (and
    training then hits NaN), and one thread is what makes training deterministic."""

    dim: int = 64
    epoch: int = 10
    lr: float = 0.5
    minCount: int = 2
    loss: Literal["softmax", "ova"] = "softmax"
    quantize: Literal["auto", "always", "never"] = "auto"  # auto: .ftz when the .bin is over 50 MB

    def check(self, path: str) -> None:
        if self.dim < 1 or self.epoch < 1 or self.minCount < 1:
            raise RecipeError(f"{path}: dim, epoch and minCount are at least 1")
        if not (0 < self.lr < float("inf")):
            raise RecipeError(f"{path}.lr: a number above 0")


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeadSpec:
    model: str = "static-minilm"
    chunk_tokens: int = 256
    stride: int | None = None  # tokens between chunk starts (default: no overlap)
    max_chunks: int = 4
    aggregate: Literal["max", "mean"] = "mean"
    # chunks: score each chunk, aggregate per document; document+last_paragraph: one score per
    # document from its embedding beside its last paragraph's (a final answer in its context);
    # ...+sentences: and beside the top-k pool of its sentences' embeddings (a moral stated in one
    # sentence of a long story is not averaged away)
    features: Literal["chunks", "document+last_paragraph", "document+last_paragraph+sentences"] = "chunks"
    sentence_top_k: int = 3  # sentences pooled per dimension (1: the max)
    hidden: int = 0  # ReLU units of a one-hidden-layer MLP; 0: logistic regression
    epochs: int = 300  # full-batch steps (logistic) or passes over the data (MLP)
    lr: float = 0.05
    l2: float = 1e-4
    batch: int = 256  # MLP minibatch
    balance: bool = True  # weight classes equally
    cache: str | None = None  # folder for cached embeddings (default: $CORPUSFILTER_EMB_CACHE)
    batch_size: int = 64
    # where a transformer embeds the training text: cpu (the shipped models' numbers), cuda, or auto
    # (cuda when present). A GPU embeds in fp32, within ~1e-6 of the CPU but not bit-identical, so
    # its cache entries are kept apart from the CPU's
    device: Literal["cpu", "cuda", "auto"] = "cpu"

    @property
    def sentence_view(self) -> bool:
        return self.features.endswith("+sentences")

    def check(self, path: str) -> None:
        """Settings that would train nothing useful (``lr: .nan`` had written all-NaN weights, a
        negative lr a useless model) are refused, each naming its key; the chunking as the embedding
        detector checks it, before anything is embedded."""
        if self.hidden < 0:
            raise RecipeError(f"{path}.hidden: 0 (logistic) or more")
        if self.sentence_top_k < 1:
            raise RecipeError(f"{path}.sentence_top_k: 1 or more")
        for key in ("epochs", "batch", "batch_size", "max_chunks"):
            if getattr(self, key) < 1:
                raise RecipeError(f"{path}.{key}: at least 1")
        if self.chunk_tokens < 8:
            raise RecipeError(f"{path}.chunk_tokens: at least 8")
        if self.stride is not None and self.stride < 1:
            raise RecipeError(f"{path}.stride: at least 1")
        if not 0 < self.lr < float("inf"):  # NaN fails too
            raise RecipeError(f"{path}.lr: a finite number above 0")
        if not 0 <= self.l2 < float("inf"):
            raise RecipeError(f"{path}.l2: a finite number, 0 or more")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneSpec:
    """Fine-tuning a transformer's encoder layers (embeddings frozen) with a linear head: see
    corpusfilter.finetune. A document is read as its first ``head_tokens`` and last tokens,
    ``max_tokens`` in all. Needs torch; hours on a CPU for thousands of documents, seconds on a GPU."""

    model: str = "minilm"
    max_tokens: int = 512
    head_tokens: int = 320
    epochs: int = 3
    lr: float = 3e-5  # encoder layers
    head_lr: float = 1e-3
    batch: int = 32
    warmup: float = 0.1  # share of steps with a rising learning rate, then linear decay to 0
    weight_decay: float = 0.01
    dropout: float = 0.1
    balance: bool = True  # weight classes equally
    device: Literal["cpu", "cuda", "auto"] = "auto"
    # bfloat16 autocast on a CPU, as a GPU always trains: 1.4-1.6x faster on a CPU with AMX/AVX512-BF16
    # (benchmarks/cpu_bf16.py); the weights differ from fp32 training's, so opt-in
    cpu_bf16: bool = False

    def check(self, path: str) -> None:
        if not 8 <= self.max_tokens <= 512:
            raise RecipeError(f"{path}.max_tokens: 8 to 512 (the model's positions)")
        if not 0 <= self.head_tokens <= self.max_tokens - 2:
            raise RecipeError(f"{path}.head_tokens: 0 to max_tokens - 2")
        if self.epochs < 1 or self.batch < 1:
            raise RecipeError(f"{path}: epochs and batch are at least 1")
        if not 0 <= self.warmup < 1 or not 0 <= self.dropout < 1:
            raise RecipeError(f"{path}: warmup and dropout are in [0, 1)")
        for key in ("lr", "head_lr"):
            if not 0 < getattr(self, key) < float("inf"):  # NaN fails too
                raise RecipeError(f"{path}.{key}: a finite number above 0")
        if not 0 <= self.weight_decay < float("inf"):
            raise RecipeError(f"{path}.weight_decay: a finite number, 0 or more")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    name: str
    trainer: Literal["fasttext", "head", "finetune"]
    positive: str
    sources: list[SourceSpec]
    seed: int = 0
    description: str = ""
    output: str | None = None  # folder (relative to the config); default: the config's folder
    split: SplitSpec = dataclasses.field(default_factory=SplitSpec)
    fasttext: FastTextSpec = dataclasses.field(default_factory=FastTextSpec)
    head: HeadSpec = dataclasses.field(default_factory=HeadSpec)
    finetune: FinetuneSpec = dataclasses.field(default_factory=FinetuneSpec)
    intended_use: str = ""
    failure_modes: tuple[str, ...] = ()

    def check(self, path: str) -> None:
        if not self.name.isidentifier():
            raise RecipeError(f"{path}name: {self.name!r} is not an identifier")
        if self.seed < 0:
            raise RecipeError(f"{path}seed: 0 or more")
        names = [s.name for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise RecipeError(f"{path}sources: name {dup[0]!r} is used twice")
        labels = {s.label for s in self.sources if s.label_column is None}
        for s in self.sources:
            labels.update((s.label_map or {}).values())
        if self.positive not in labels and not any(s.label_column for s in self.sources):
            raise RecipeError(f"{path}positive: {self.positive!r} is no source's label")


_NESTED: dict[str, type] = {
    "split": SplitSpec,
    "fasttext": FastTextSpec,
    "head": HeadSpec,
    "finetune": FinetuneSpec,
}


def parse_config(data: Mapping[str, Any], origin: str = "<config>") -> TrainConfig:
    """Strict: unknown keys anywhere are errors naming the key."""
    if not isinstance(data, Mapping):
        raise RecipeError(f"{origin}: a training config is a mapping")
    values = dict(data)
    for key, cls in _NESTED.items():
        if key in values:
            values[key] = build_params(cls, values[key] or {}, key)
    raw_sources = values.get("sources")
    if not isinstance(raw_sources, list) or not raw_sources:
        raise RecipeError(f"{origin}: sources: a non-empty list of sources")
    values["sources"] = [
        build_params(SourceSpec, _label_map_keys(s), f"sources[{i}]") for i, s in enumerate(raw_sources)
    ]
    allowed = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise RecipeError(f"{origin}: {unknown[0]}: unknown key (allowed: {', '.join(sorted(allowed))})")
    # build_params re-checks scalar types; nested dataclasses pass as Any-typed values
    nested = {k: values.pop(k) for k in [*_NESTED, "sources"] if k in values}
    cfg = build_params(_TopLevel, values, "")
    out = TrainConfig(**dataclasses.asdict(cfg), **nested)
    out.check("")
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class _TopLevel:
    """The scalar top-level keys, type-checked by build_params."""

    name: str
    trainer: Literal["fasttext", "head", "finetune"]
    positive: str
    seed: int = 0
    description: str = ""
    output: str | None = None
    intended_use: str = ""
    failure_modes: tuple[str, ...] = ()


def load_config(path: str | os.PathLike[str]) -> TrainConfig:
    """A training config file. ``extends: OTHER.yaml`` (relative to this file) starts from another
    config: top-level keys given here replace the other's (``sources`` as a whole list), and the
    ``split``, ``fasttext`` and ``head`` blocks are merged key by key. A variant of a detector (same
    sources, other encoder) is then a few lines instead of a copy that drifts."""
    p = Path(path)
    data, origins = _config_mapping(p, ())
    try:
        return parse_config(data, str(p))
    except RecipeError as e:
        raise RecipeError(_in_file(str(e), p, origins)) from None


def _in_file(msg: str, p: Path, origins: dict[str, Path]) -> str:
    """``msg`` prefixed by the file that set the key it names (``extends`` chains span files)."""
    rest = msg.removeprefix(f"{p}: ")
    key = re.sub(r"\[\d+\]", "", rest.split(":", 1)[0].strip())
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        f = origins.get(".".join(parts[:n]))
        if f is not None and f.resolve() != p.resolve():
            return f"{f} (extended by {p}): {rest}"
    return f"{p}: {rest}"


def _config_mapping(p: Path, seen: tuple[Path, ...]) -> tuple[dict[str, Any], dict[str, Path]]:
    """The YAML mapping of ``p`` with its ``extends:`` chain applied, and the file that set each
    key (``key`` and ``block.key`` for the merged blocks), so errors name the right file."""
    import yaml

    from corpusfilter.recipe import load_yaml, yaml_error

    try:
        data = load_yaml(read_text_file(p, "training config"))
    except RecipeError as e:
        where = f" (extended by {seen[-1]})" if seen else ""
        raise RecipeError(f"{e}{where}") from None
    except yaml.YAMLError as e:
        raise yaml_error(p, e) from None
    if not isinstance(data, dict):
        raise RecipeError(f"{p}: a training config is a mapping")
    ref = data.pop("extends", None)
    mine = {k: p for k in data} | {
        f"{k}.{sub}": p for k in _NESTED if isinstance(data.get(k), dict) for sub in data[k]
    }
    if ref is None:
        return data, mine
    if not isinstance(ref, str) or not ref:
        raise RecipeError(f"{p}: extends: the path of another training config")
    base_path = (p.parent / ref).resolve()
    if base_path in seen or base_path == p.resolve():
        raise RecipeError(f"{p}: extends: {ref} extends this file again (a cycle)")
    base, origins = _config_mapping(base_path, (*seen, p.resolve()))
    if base_path.parent != p.resolve().parent and isinstance(base.get("sources"), list):
        base["sources"] = [_moved_source(s, base_path.parent, p.resolve().parent) for s in base["sources"]]
    out = dict(base)
    for key, value in data.items():
        if key in _NESTED and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
            origins = {k: f for k, f in origins.items() if not k.startswith(f"{key}.")}
    return out, origins | mine


def _moved_source(src: Any, base_dir: Path, here: Path) -> Any:
    """A source of a base config in ``base_dir`` as a config in ``here`` extending it: a path relative
    to the base config still names the same file, and a default id keeps the path as the base
    writes it, ``{path}:{row}`` (an id with the rewritten path had given the variant other splits)."""
    if not (
        isinstance(src, dict) and src.get("relative_to") == "config" and isinstance(src.get("path"), str)
    ):
        return src
    out = {**src, "path": os.path.relpath(base_dir / src["path"], here)}
    if out.get("id") is None:  # load_source's default, as a template over its row-number column
        out["id"] = src["path"].replace("{", "{{").replace("}", "}}") + ":{__row}"
    return out


def _label_map_keys(src: Any) -> Any:
    """A source with its ``label_map`` keys as the labels they match: ``str(value)`` (YAML reads
    ``{1: good}`` and ``{true: good}`` with an int and a bool key; the column's 1 and True are read
    as "1" and "True")."""
    lm = src.get("label_map") if isinstance(src, dict) else None
    if not isinstance(lm, dict):
        return src
    return {**src, "label_map": {(k if isinstance(k, str) else label_text(k)): v for k, v in lm.items()}}


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    d = params_to_dict(cfg)
    d["sources"] = [params_to_dict(s) for s in cfg.sources]
    for key in _NESTED:
        d[key] = params_to_dict(getattr(cfg, key))
    return d


def data_root(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("CORPUSFILTER_DATA") or DEFAULT_DATA_ROOT)


# ---------------------------------------------------------------------------------------- data


def stable_hash(key: str, seed: int) -> int:
    """A 64-bit hash of ``key`` and ``seed``: the source of every random choice."""
    return int.from_bytes(hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest(), "big")


def unit(key: str, seed: int) -> float:
    return stable_hash(key, seed) / 2.0**64


def split_of(key: str, seed: int, spec: SplitSpec) -> str:
    u = unit("split\x00" + key, seed)
    if u < spec.test:
        return "test"
    if u < spec.test + spec.validation:
        return "validation"
    return "train"


@dataclasses.dataclass
class Examples:
    """Document-level examples: parallel lists."""

    ids: list[str] = dataclasses.field(default_factory=list)
    texts: list[str] = dataclasses.field(default_factory=list)
    labels: list[str] = dataclasses.field(default_factory=list)
    weights: list[float] = dataclasses.field(default_factory=list)
    splits: list[str] = dataclasses.field(default_factory=list)
    sources: list[str] = dataclasses.field(default_factory=list)
    #: rows skipped for null or empty text, per source (not a column: reported in metrics and card)
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def columns(cls) -> list[str]:
        """The parallel lists, one entry per example."""
        return [f.name for f in dataclasses.fields(cls) if f.name != "skipped"]

    def write_parquet(self, path: str | os.PathLike[str], config: TrainConfig) -> None:
        """The built examples, with the config they were built from: train elsewhere (a GPU machine
        without the raw data) with ``corpusfilter train CONFIG --examples FILE``."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = {name: getattr(self, name) for name in self.columns()}
        table = pa.table(cols).replace_schema_metadata(
            {"corpusfilter.train_config": json.dumps(config_to_dict(config))}
        )
        pq.write_table(table, path, compression="zstd", compression_level=19)

    @classmethod
    def read_parquet(cls, path: str | os.PathLike[str], config: TrainConfig) -> Examples:
        """Examples written by ``write_parquet`` for this config: its sources, split and seed must be the
        ones they were built with (anything else would train on other data than the config says)."""
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as e:
            raise RecipeError(f"{path}: cannot read examples ({e})") from None
        meta = (table.schema.metadata or {}).get(b"corpusfilter.train_config")
        if meta is None:
            raise RecipeError(f"{path}: not an examples file written by corpusfilter train --export-examples")
        built = json.loads(meta)
        now = config_to_dict(config)
        for key in ("sources", "split", "seed", "positive"):
            if built.get(key) != now.get(key):
                raise RecipeError(f"{path}: built with another `{key}` than {config.name}'s config")
        names = cls.columns()
        missing = [n for n in names if n not in table.column_names]
        if missing:
            raise RecipeError(f"{path}: missing columns {missing}")
        return cls(**{n: table.column(n).to_pylist() for n in names})

    def extend(self, other: Examples) -> None:
        for name in self.columns():
            getattr(self, name).extend(getattr(other, name))
        for src, k in other.skipped.items():
            self.skipped[src] = self.skipped.get(src, 0) + k

    def select(self, mask: Sequence[bool] | np.ndarray) -> Examples:
        idx = [i for i, m in enumerate(mask) if m]
        return Examples(
            **{name: [getattr(self, name)[i] for i in idx] for name in self.columns()},
            skipped=dict(self.skipped),
        )

    def where(self, *, split: str | None = None, source: str | None = None) -> Examples:
        return self.select(
            [
                (split is None or s == split) and (source is None or src == source)
                for s, src in zip(self.splits, self.sources)
            ]
        )


_FIELD = re.compile(r"\{([^{}]+)\}")


def label_text(value: Any) -> str:
    """A label column's value as a label: ``str`` (2 → "2", True → "True", 1.0 → "1.0"). Training
    labels rows by it (then ``label_map``), and ``eval`` and ``calibrate`` read labels by it."""
    return str(value)


def label_problem(values: Sequence[Any]) -> tuple[int, str] | None:
    """The first value that is no label and what it is: null, NaN or empty (``""`` or only
    whitespace). Such a row is an error in training (fastText had trained ``""`` as a class of its
    own), in ``eval`` and in ``calibrate`` (counted as a negative, it would hide)."""
    for i, v in enumerate(values):
        if v is None:
            return i, "null"
        if isinstance(v, float) and v != v:
            return i, "NaN"
        if not label_text(v).strip():
            return i, "empty"
    return None


def _render(spec: str, columns: Mapping[str, list[Any]], n: int, what: str, path: str) -> list[str]:
    """A column's values as strings, or a template filled row by row."""
    if "{" not in spec:
        if spec not in columns:
            raise InputError(f"{path}: {what}: no column {spec!r} (has {', '.join(columns)})")
        return ["" if v is None else str(v) for v in columns[spec]]
    fields = [f for _, f, _, _ in string.Formatter().parse(spec) if f]
    missing = [f for f in fields if f not in columns]
    if missing:
        raise InputError(f"{path}: {what}: template field {missing[0]!r} is not a column")
    return [
        spec.format_map({f: "" if columns[f][i] is None else columns[f][i] for f in fields}) for i in range(n)
    ]


def load_source(
    src: SourceSpec, root: Path, seed: int, split: SplitSpec, config_dir: Path | None = None
) -> Examples:
    """Rows of one source (Parquet, or JSON lines) → document-level examples with their split."""
    import polars as pl

    base = (config_dir or Path.cwd()) if src.relative_to == "config" else root
    path = Path(src.path) if os.path.isabs(src.path) else base / src.path
    where = f"sources.{src.name}"
    try:
        df = pl.read_ndjson(path) if path.suffix in (".jsonl", ".ndjson") else pl.read_parquet(path)
    except FileNotFoundError:
        raise InputError(f"{where}: {path}: file not found (data root: {root})") from None
    except Exception as e:  # polars raises several types for a bad file
        raise InputError(
            f"{where}: {path}: not a readable Parquet / JSON-lines file ({_first_line(e)}){_bad_json_line(path)}"
        ) from None
    df = df.with_row_index("__row")
    if src.where:
        try:
            df = df.sql(f"SELECT * FROM self WHERE {src.where}")
        except Exception as e:  # polars appends its query plan: keep the first line
            raise RecipeError(f"{where}.where: {src.where!r}: {_first_line(e)}") from None
    test_rows: set[int] = set()
    if src.test_where:
        try:
            test_rows = set(df.sql(f"SELECT __row FROM self WHERE {src.test_where}")["__row"].to_list())
        except Exception as e:
            raise RecipeError(f"{where}.test_where: {src.test_where!r}: {_first_line(e)}") from None
    cols = {c: df[c].to_list() for c in df.columns}
    n = df.height
    rows = [int(r) for r in cols["__row"]]
    ids = _render(src.id, cols, n, "id", where) if src.id else [f"{src.path}:{r}" for r in rows]
    if "{" not in src.text and src.text in cols:  # a text column: strings (or null, skipped below)
        bad = next(
            (i for i, v in enumerate(cols[src.text]) if v is not None and not isinstance(v, str)), None
        )
        if bad is not None:
            v = cols[src.text][bad]
            raise InputError(
                f"{where}: {path}: row {rows[bad]}: text is not a string ({type(v).__name__} {v!r})"
            )
    texts = _render(src.text, cols, n, "text", where)
    if src.drop_lines is not None:
        rx = re.compile(src.drop_lines)
        texts = [_drop_lines(t, rx) for t in texts]
    if src.label_column is not None:
        if src.label_column not in cols:
            raise InputError(f"{where}: no label column {src.label_column!r}")
        values = cols[src.label_column]
        problem = label_problem(values)
        if problem is not None:  # NaN or "" is no class either (as in eval and calibrate)
            row, what = problem
            raise InputError(f"{where}: {path}: row {rows[row]}: {what} label in column {src.label_column!r}")
        raw = [label_text(v) for v in values]
        if src.label_map is not None:
            unmapped = sorted({r for r in raw} - set(src.label_map))
            if unmapped:
                raise InputError(f"{where}: label value {unmapped[0]!r} is not in label_map")
            labels = [src.label_map[r] for r in raw]
        else:
            labels = raw
    else:
        labels = [src.label] * n
    groups = _render(src.group_by, cols, n, "group_by", where) if src.group_by else [""] * n

    def split_row(i: int) -> str:
        if src.test_where:  # the test split is given; the rest is train / validation by hash
            if rows[i] in test_rows:
                return "test"
            return split_of(ids[i], seed, SplitSpec(validation=split.validation / (1 - split.test), test=0.0))
        return split_of(ids[i], seed, split)

    keep = [i for i in range(n) if texts[i].strip()]
    if not keep:  # a wrong path, filter or column: say which source, not "one label only" later
        raise InputError(
            f"{where}: {path}: no rows to train on ("
            + (f"{n} rows, all with null or empty text" if n else "0 rows")
            + (f" where {src.where!r}" if src.where else "")
            + ")"
        )
    skipped = {src.name: n - len(keep)} if len(keep) < n else {}
    if skipped:
        from loguru import logger

        first = next(i for i in range(n) if not texts[i].strip())
        logger.warning(
            f"{where}: skipped {n - len(keep)} of {n} rows with null or empty text (first: row {rows[first]})"
        )
    if src.limit is not None and len(keep) > src.limit:
        keep = sorted(sorted(keep, key=lambda i: stable_hash("limit\x00" + ids[i], seed))[: src.limit])
    out = Examples()
    if src.doc_words is None:
        for i in keep:
            out.ids.append(f"{src.name}:{ids[i]}")
            out.texts.append(_cut(texts[i], src.max_chars))
            out.labels.append(labels[i])
            out.splits.append(split_row(i))
        out.sources = [src.name] * len(out.ids)
        out.weights = [src.weight] * len(out.ids)
        out.skipped = skipped
        return out
    # group rows by (split, group, label) and join them, in a seeded order, into N..M-word documents
    buckets: dict[tuple[str, str, str], list[int]] = {}
    for i in keep:
        buckets.setdefault((split_row(i), groups[i], labels[i]), []).append(i)
    lo, hi = src.doc_words
    for (sp, group, label), members in sorted(buckets.items()):
        members.sort(key=lambda i: stable_hash("order\x00" + ids[i], seed))
        docs: list[list[str]] = [[]]
        words = 0
        target = lo + stable_hash(f"len\x00{src.name}\x00{group}\x00{sp}\x000", seed) % (hi - lo + 1)
        for i in members:
            docs[-1].append(texts[i].strip())
            words += len(texts[i].split())
            if words >= target:
                docs.append([])
                words = 0
                target = lo + stable_hash(f"len\x00{src.name}\x00{group}\x00{sp}\x00{len(docs)}", seed) % (
                    hi - lo + 1
                )
        if not docs[-1]:
            docs.pop()
        elif words < lo and len(docs) > 1:  # a short remainder joins the document before it
            docs[-2].extend(docs.pop())
        for k, doc in enumerate(docs):
            out.ids.append(f"{src.name}:{group}:{sp}:{label}:{k}")
            out.texts.append(_cut(" ".join(doc), src.max_chars))
            out.labels.append(label)
            out.splits.append(sp)
    out.sources = [src.name] * len(out.ids)
    out.weights = [src.weight] * len(out.ids)
    out.skipped = skipped
    return out


def _bad_json_line(path: Path) -> str:
    """For a JSON-lines file polars cannot read: the first line that is not a JSON object."""
    if path.suffix not in (".jsonl", ".ndjson"):
        return ""
    with open(path, encoding="utf-8", errors="replace") as f:
        for k, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ok = isinstance(json.loads(line), dict)
            except json.JSONDecodeError:
                ok = False
            if not ok:
                return f"; line {k} is not a JSON object: {line.strip()[:60]!r}"
    return ""


def _first_line(e: BaseException) -> str:
    """A polars error's first line, without the row-index column load_source adds."""
    return first_line(e).replace('"__row", ', "")


def _drop_lines(text: str, rx: re.Pattern[str]) -> str:
    """``text`` without the lines that ``rx`` matches in full."""
    return "\n".join(line for line in text.split("\n") if not rx.fullmatch(line))


def _cut(text: str, max_chars: int | None) -> str:
    return text if max_chars is None or len(text) <= max_chars else text[:max_chars]


def build_examples(
    cfg: TrainConfig,
    root: Path,
    *,
    exclude: Sequence[str] = (),
    only: Sequence[str] | None = None,
    config_dir: Path | None = None,
) -> Examples:
    """Every source's examples (minus ``exclude``), in config order."""
    names = {s.name for s in cfg.sources}
    for n in [*exclude, *(only or [])]:
        if n not in names:
            raise RecipeError(f"no source named {n!r} (have {', '.join(sorted(names))})")
    ex = Examples()
    for src in cfg.sources:
        if src.name in exclude or (only is not None and src.name not in only):
            continue
        ex.extend(load_source(src, root, cfg.seed, cfg.split, config_dir))
    return ex


# ---------------------------------------------------------------------------------------- fastText

_WS = re.compile(r"\s+")


def _ft_repeats(ex_id: str, weight: float, seed: int) -> int:
    """A weight as whole copies of an example: floor(w), plus one more with probability frac(w)."""
    whole = int(weight)
    return whole + (1 if unit("weight\x00" + ex_id, seed) < weight - whole else 0)


def train_fasttext(cfg: TrainConfig, train: Examples, out_dir: Path) -> Path:
    """fastText supervised, single-threaded and seeded: the same data and seed give the same bytes.

    fastText 0.9.x initializes only ``thread/10`` of its input matrix (``uniformThread`` splits it
    into 10 blocks, one per thread); the rest holds whatever the allocator returned, and with
    ``thread: 1`` training stops with "Encountered NaN" depending on the heap's state. Supplying
    ``pretrainedVectors`` — a seeded uniform(-1/dim, 1/dim) vector for every word that survives
    ``minCount``, the init fastText would give — sets every row when there are no hashed n-gram rows
    (``bucket: 0``), and training with one thread is then deterministic.
    """
    try:
        import fasttext
    except ImportError:
        raise RecipeError("the fastText trainer needs: pip install 'corpusfilter[fasttext]'") from None
    import pyarrow as pa

    from corpusfilter.blocks.fasttext import fasttext_lines

    p = cfg.fasttext
    # one line per example, words as the detector sees them (no case folding: it folds none)
    texts = fasttext_lines(pa.array(train.texts, pa.large_string())).to_pylist()
    lines: list[str] = []
    order = sorted(range(len(train)), key=lambda i: stable_hash("shuffle\x00" + train.ids[i], cfg.seed))
    counts: dict[str, int] = {}
    for i in order:
        line = texts[i]
        repeats = _ft_repeats(train.ids[i], train.weights[i], cfg.seed)
        for _ in range(repeats):
            lines.append(f"__label__{train.labels[i]} {line}")
        # count as fastText will, copies included: a word it keeps without an init vector would
        # keep an uninitialized row (NaN)
        for w in line.split(" "):
            if w:
                counts[w] = counts.get(w, 0) + repeats
    if not lines:
        raise CorpusfilterError("no training examples")
    work = out_dir / ".train"
    work.mkdir(parents=True, exist_ok=True)
    data = work / "train.txt"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    vocab = sorted(w for w, c in counts.items() if c >= p.minCount)
    vocab.append("</s>")
    rng = np.random.default_rng(cfg.seed)
    vec = work / "init.vec"
    with vec.open("w", encoding="utf-8") as f:
        f.write(f"{len(vocab)} {p.dim}\n")
        for w in vocab:
            f.write(w + " " + " ".join(f"{x:.5f}" for x in rng.uniform(-1 / p.dim, 1 / p.dim, p.dim)) + "\n")
    try:
        model = _ft_train(fasttext, data, vec, p, cfg.seed)
    except RuntimeError as e:  # fastText's own errors ("Encountered NaN"): one line, no temp files
        shutil.rmtree(work)
        raise CorpusfilterError(
            f"fastText training failed: {e} (lower lr or epoch, or check the labels)"
        ) from None
    path = out_dir / "model.bin"
    model.save_model(str(path))
    if p.quantize == "always" or (p.quantize == "auto" and path.stat().st_size > 50 * 2**20):
        try:
            model.quantize(input=str(data), qnorm=True, retrain=False, cutoff=100_000, thread=1)
        except ValueError as e:
            shutil.rmtree(work)
            raise CorpusfilterError(f"cannot quantize the fastText model: {e}") from None
        ftz = out_dir / "model.ftz"
        model.save_model(str(ftz))
        path.unlink()
        path = ftz
    shutil.rmtree(work)
    return path


def _ft_train(fasttext: Any, data: Path, vec: Path, p: Any, seed: int) -> Any:
    """fastText supervised with the trainer's fixed settings (one thread, no n-gram buckets)."""
    return fasttext.train_supervised(
        str(data),
        dim=p.dim,
        epoch=p.epoch,
        lr=p.lr,
        wordNgrams=1,
        minCount=p.minCount,
        bucket=0,
        minn=0,
        maxn=0,
        loss=p.loss,
        thread=1,
        seed=seed,
        verbose=0,
        pretrainedVectors=str(vec),
    )


# ---------------------------------------------------------------------------------------- head


def embed_documents(
    texts: Sequence[str], spec: HeadSpec, *, cache: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Chunk embeddings of ``texts`` and each chunk's document index, as the embedding detector
    computes them (same encoder, same chunking). Cached by content when a cache folder is given:
    the key covers the texts, the chunking, the device and the model's fingerprint (its files and
    libraries, not its path), so a model rebuilt in place is embedded again and a moved one is not."""
    from corpusfilter.embed import Chunking, load_encoder, model_fingerprint, resolve_device, resolve_model

    kind, model_path = resolve_model(spec.model)
    device = resolve_device(spec.device) if kind == "transformer" else "cpu"
    folder = cache or spec.cache or os.environ.get("CORPUSFILTER_EMB_CACHE")
    key = None
    if folder:
        on = "" if device == "cpu" else f"\x00{device}"  # CPU keys as they always were
        # the model by kind and fingerprint (content and libraries), not by where it lies: a copy in
        # another clone or virtual environment is served the same entries
        h = hashlib.sha256(
            f"{kind}\x00{spec.chunk_tokens}\x00{spec.stride}\x00{spec.max_chunks}{on}".encode()
        )
        for t in texts:
            h.update(t.encode())
            h.update(b"\x00")
        # the fingerprint is hashed over the content key (the key before fingerprints), so a cache
        # of a known-unchanged model can be re-keyed by file name without re-embedding
        content = h.hexdigest()[:32]
        fp = model_fingerprint(kind, model_path)
        name = hashlib.sha256(f"{content}\x00{fp}".encode()).hexdigest()[:32]
        key = Path(folder) / f"{name}.npz"
        if key.is_file():
            with np.load(key, allow_pickle=False) as z:
                return z["emb"], z["doc"]
    enc = load_encoder(
        spec.model,
        Chunking(chunk_tokens=spec.chunk_tokens, stride=spec.stride, max_chunks=spec.max_chunks),
        device,
        fp16=False,
    )
    emb, doc = enc.embed_chunks(list(texts), spec.batch_size)
    if key is not None:
        key.parent.mkdir(parents=True, exist_ok=True)
        # a name of its own per writer: two runs embedding the same texts must not share one
        tmp = key.with_name(f"{key.stem}.{os.getpid()}.{time.monotonic_ns()}.tmp.npz")
        np.savez(tmp, emb=emb, doc=doc)
        tmp.replace(key)
    return emb, doc


class Adam:
    """Adam updates in place for named parameter arrays (shared by the logistic and MLP heads)."""

    b1, b2, eps = 0.9, 0.999, 1e-8

    def __init__(self, params: dict[str, np.ndarray], lr: float) -> None:
        self.params, self.lr, self.t = params, lr, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        b1, b2, t = self.b1, self.b2, self.t
        for k, g in grads.items():
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            p = self.params[k]
            p -= (self.lr * (self.m[k] / (1 - b1**t)) / (np.sqrt(self.v[k] / (1 - b2**t)) + self.eps)).astype(
                p.dtype
            )


def one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """BLAS on one thread while a head is fitted. OpenBLAS splits a matrix product by thread count,
    and the partial sums then round differently: over thousands of Adam steps the same seed gave
    other weights on 1 and 2 threads (about 1e-7 apart)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


# distributions whose versions a model's bits depend on, per trainer (besides numpy and its BLAS)
_ENV_PACKAGES = {
    "fasttext": ("fasttext-numpy2-wheel",),
    "head": ("model2vec", "torch", "sentence-transformers", "transformers", "tokenizers"),
    "finetune": ("torch", "transformers", "tokenizers", "safetensors"),
}


def blas_info() -> dict[str, Any] | None:
    """numpy's BLAS: library, version and the CPU kernel it picked (None when there is none)."""
    from threadpoolctl import threadpool_info

    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return {k: blas[0].get(k) for k in ("internal_api", "version", "architecture")} if blas else None


def environment(trainer: str) -> dict[str, Any]:
    """What a model's bits depend on beyond the config, the data and the seed: Python, numpy, the BLAS
    library and the CPU kernel it picked, and the trainer's libraries. To rebuild bit for bit on
    another x86 CPU, OpenBLAS can be told the recorded kernel (``OPENBLAS_CORETYPE``)."""
    import importlib.metadata
    import platform

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "numpy": np.__version__,
    }
    blas = blas_info()
    if blas:
        env["blas"] = blas
    for dist in _ENV_PACKAGES.get(trainer, ()):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            env[dist] = importlib.metadata.version(dist)
    return env


def fit_logistic(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, *, epochs: int, lr: float, l2: float
) -> tuple[np.ndarray, float]:
    """Weighted, L2-regularized logistic regression by full-batch Adam from zero: deterministic."""
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    w = w.astype(np.float64) / w.sum()
    d = x.shape[1]
    theta = np.zeros(d + 1)
    opt = Adam({"theta": theta}, lr)
    for _ in range(epochs):
        z = x @ theta[:d] + theta[d]
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))
        g = w * (p - y)
        opt.step({"theta": np.concatenate([x.T @ g + l2 * theta[:d], [g.sum()]])})
    return theta[:d].astype(np.float32), float(theta[d])


def fit_mlp(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    *,
    hidden: int,
    epochs: int,
    lr: float,
    l2: float,
    batch: int,
    seed: int,
    reweight: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Weighted logistic loss through one ReLU layer, minibatch Adam. Initial weights and batch order
    come from a generator seeded by ``seed`` (never the global RNG): deterministic.

    ``reweight(idx, p, y, w)``, for probes of other objectives (group DRO): each minibatch's
    per-example loss weights from its rows, predictions, labels and weights (default ``w / len(idx)``).
    """
    rng = np.random.default_rng(seed)
    x = x.astype(np.float32)
    y = y.astype(np.float32)
    w = (w / w.mean()).astype(np.float32)
    d = x.shape[1]
    params = {
        "hidden_weight": (rng.standard_normal((hidden, d)) * np.sqrt(2.0 / d)).astype(np.float32),
        "hidden_bias": np.zeros(hidden, np.float32),
        "weight": (rng.standard_normal((1, hidden)) * np.sqrt(1.0 / hidden)).astype(np.float32),
        "bias": np.zeros(1, np.float32),
    }
    opt = Adam(params, lr)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            xb, yb, wb = x[idx], y[idx], w[idx]
            pre = xb @ params["hidden_weight"].T + params["hidden_bias"]
            h = np.maximum(pre, 0.0)
            z = h @ params["weight"][0] + params["bias"][0]
            p = 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))
            if reweight is None:
                g = wb * (p - yb) / len(idx)  # d loss / d z
            else:
                g = reweight(idx, p, yb, wb).astype(np.float32) * (p - yb)
            gh = np.outer(g, params["weight"][0]) * (pre > 0)
            opt.step(
                {
                    "weight": (h.T @ g)[None, :] + l2 * params["weight"],
                    "bias": np.asarray([g.sum()], np.float32),
                    "hidden_weight": gh.T @ xb + l2 * params["hidden_weight"],
                    "hidden_bias": gh.sum(axis=0),
                }
            )
    return params


def head_features(texts: Sequence[str], spec: HeadSpec) -> tuple[np.ndarray, np.ndarray]:
    """Training rows as the embedding detector sees them, and each row's document index: one row per
    chunk, or (document+last_paragraph[+sentences]) one row per document."""
    from corpusfilter.blocks.embedding import last_paragraph
    from corpusfilter.embed import mean_pool, split_sentences, top_k_pool

    emb, doc = embed_documents(texts, spec)
    if spec.features == "chunks":
        return emb, doc
    last, ldoc = embed_documents([last_paragraph(t) for t in texts], spec)
    n = len(texts)
    views = [mean_pool(emb, doc, n), mean_pool(last, ldoc, n)]
    if spec.sentence_view:
        sents, owner = split_sentences(texts)
        semb, sdoc = embed_documents(sents, spec)
        views.append(top_k_pool(semb, owner[sdoc], n, spec.sentence_top_k))
    return np.hstack(views), np.arange(n, dtype=np.int64)


def train_head(cfg: TrainConfig, train: Examples, out_dir: Path) -> Path:
    """A one-vs-rest head per label (logistic, or an MLP with ``hidden`` units) over chunk embeddings
    (each chunk carries its document's label, weighted 1/chunks) or over document features, saved as
    .npz for the embedding detector's head mode."""
    spec = cfg.head
    # embedded source by source, so a cache entry survives leaving another source out
    parts, docs = [], []
    for src in dict.fromkeys(train.sources):
        idx = [i for i, s in enumerate(train.sources) if s == src]
        e, d = head_features([train.texts[i] for i in idx], spec)
        parts.append(e)
        docs.append(np.asarray(idx, dtype=np.int64)[d])
    emb = np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)
    doc = np.concatenate(docs) if docs else np.zeros(0, dtype=np.int64)
    counts = np.bincount(doc, minlength=len(train)).astype(np.float64)
    w_doc = np.asarray(train.weights, dtype=np.float64)
    labels = sorted(set(train.labels))
    # an MLP head is binary: the positive label against the rest
    heads = [cfg.positive] if len(labels) <= 2 or spec.hidden else labels
    layers: dict[str, list[np.ndarray]] = {}
    with one_blas_thread():  # the same bits on any number of cores
        for lab in heads:
            y_doc = np.asarray([lb == lab for lb in train.labels], dtype=np.float64)
            wd = w_doc.copy()
            if spec.balance and 0 < y_doc.sum() < len(y_doc):
                pos_w = (wd * y_doc).sum()
                neg_w = (wd * (1 - y_doc)).sum()
                wd = np.where(y_doc == 1, wd / pos_w, wd / neg_w)
            wc = wd[doc] / np.maximum(counts[doc], 1)
            if spec.hidden:
                fitted = fit_mlp(
                    emb,
                    y_doc[doc],
                    wc,
                    hidden=spec.hidden,
                    epochs=spec.epochs,
                    lr=spec.lr,
                    l2=spec.l2,
                    batch=spec.batch,
                    seed=cfg.seed,
                )
            else:
                wgt, b = fit_logistic(emb, y_doc[doc], wc, epochs=spec.epochs, lr=spec.lr, l2=spec.l2)
                fitted = {"weight": wgt[None, :], "bias": np.asarray([b], np.float32)}
            for k, val in fitted.items():
                layers.setdefault(k, []).append(val)
    arrays = {
        k: (np.concatenate(v) if k in ("weight", "bias") else v[0]).astype(np.float32)
        for k, v in layers.items()
    }
    path = out_dir / "head.npz"
    arrays.update(labels=np.asarray(heads), input=np.asarray(spec.features))
    if spec.sentence_view:
        arrays["sentence_top_k"] = np.asarray(spec.sentence_top_k)
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def train_finetune(
    cfg: TrainConfig, train: Examples, out_dir: Path, *, checkpoint: Checkpointing | None = None
) -> Path:
    """``model.safetensors``: the fine-tuned encoder layers and head (corpusfilter.finetune);
    resumable from ``checkpoint``."""
    import importlib.util

    from corpusfilter.finetune import train_classifier

    if not all(importlib.util.find_spec(m) for m in ("torch", "transformers", "safetensors")):
        raise RecipeError("the finetune trainer needs: pip install torch==2.13.0 'corpusfilter[embed]'")
    y = np.asarray([lb == cfg.positive for lb in train.labels], dtype=np.float32)
    return train_classifier(
        train.texts,
        y,
        np.asarray(train.weights, dtype=np.float64),
        spec=cfg.finetune,
        seed=cfg.seed,
        out_path=out_dir / "model.safetensors",
        metadata={"name": cfg.name, "positive": cfg.positive},
        checkpoint=checkpoint.folder if checkpoint else None,
        checkpoint_every=checkpoint.every if checkpoint else CHECKPOINT_EVERY,
    )


@dataclasses.dataclass(frozen=True)
class Checkpointing:
    """Where and how often a fine-tune saves its state to resume from (``train --checkpoint``)."""

    folder: Path
    every: int = CHECKPOINT_EVERY

    def __post_init__(self) -> None:
        if self.every < 1:
            raise RecipeError("--checkpoint-every: at least 1")


TRAINERS = {"fasttext": train_fasttext, "head": train_head, "finetune": train_finetune}
#: the model files each trainer writes (fastText: one of the two, .ftz when quantized)
MODEL_FILES = {
    "fasttext": ("model.bin", "model.ftz"),
    "head": ("head.npz",),
    "finetune": ("model.safetensors",),
}


def _check_model_folder(out_dir: Path, trainer: str) -> None:
    """Before training: a folder holding another trainer's model would end with two models, which
    ``eval`` and ``calibrate`` (given the folder) cannot choose between."""
    other = [out_dir / n for t, names in MODEL_FILES.items() if t != trainer for n in names]
    found = [p for p in other if p.exists()]
    if found:
        raise CorpusfilterError(
            f"{out_dir}: holds another trainer's model ({found[0].name}); train into another folder "
            "(--output) or remove it"
        )


def _drop_stale_model(model: Path) -> None:
    """After training: remove this trainer's other model file from an earlier run in the folder (a
    quantized .ftz beside a new .bin, or the reverse); the sidecar, model.json, was just rewritten."""
    for name in MODEL_FILES["fasttext"]:
        old = model.parent / name
        if model.suffix in (".bin", ".ftz") and old != model and old.exists():
            old.unlink()


# ---------------------------------------------------------------------------------------- driver


def detector_params(cfg: TrainConfig, model_path: Path) -> dict[str, Any]:
    """The detector block (recipe form) that scores with the trained model."""
    if cfg.trainer == "fasttext":
        return {"fasttext": {"name": cfg.name, "model": str(model_path)}}
    if cfg.trainer == "finetune":
        return {"finetuned": {"name": cfg.name, "model": str(model_path)}}
    h = cfg.head
    return {
        "embedding": {
            "name": cfg.name,
            "model": h.model,
            "head": str(model_path),
            "chunk_tokens": h.chunk_tokens,
            "stride": h.stride,
            "max_chunks": h.max_chunks,
            "aggregate": [h.aggregate],
        }
    }


def score_column(cfg_or_sidecar: Mapping[str, Any]) -> str:
    """The score column of the positive label in the detector's output."""
    name, positive = cfg_or_sidecar["name"], cfg_or_sidecar["positive"]
    col = re.sub(r"\W", "_", positive)
    if cfg_or_sidecar["trainer"] in ("fasttext", "finetune"):
        return f"{name}_{col}"
    if cfg_or_sidecar.get("features", "chunks") != "chunks":
        return f"{name}_{positive}_doc"
    return f"{name}_{positive}_chunk{cfg_or_sidecar['aggregate']}"


def write_sidecar(cfg: TrainConfig, model_path: Path) -> dict[str, Any]:
    """``<model>.json``: what a scorer needs to use the model like a recipe would."""
    side: dict[str, Any] = {
        "name": cfg.name,
        "trainer": cfg.trainer,
        "positive": cfg.positive,
        "model_file": model_path.name,
    }
    if cfg.trainer == "finetune":
        side.update(base_model=cfg.finetune.model, max_tokens=cfg.finetune.max_tokens)
    if cfg.trainer == "head":
        side.update(
            embedding_model=cfg.head.model,
            chunk_tokens=cfg.head.chunk_tokens,
            stride=cfg.head.stride,
            max_chunks=cfg.head.max_chunks,
            aggregate=cfg.head.aggregate,
            features=cfg.head.features,
        )
        if cfg.head.sentence_view:
            side["sentence_top_k"] = cfg.head.sentence_top_k
    side["score_column"] = score_column(side)
    model_path.with_suffix(".json").write_text(json.dumps(side, indent=2) + "\n", encoding="utf-8")
    return side


def _overlap_text(o: dict[str, Any]) -> str:
    f = o["first"]
    parts = [
        f"{o[k]} {what} (first: {f[k][:60]!r})"
        for k, what in (
            ("validation_in_train", "validation examples whose text is also a training example's"),
            ("test_in_train", "test examples whose text is also a training example's"),
            ("texts_with_two_labels", "texts with two labels"),
        )
        if o[k]
    ]
    return "; ".join(parts)


def split_overlap(ex: Examples) -> dict[str, Any]:
    """Evaluation examples whose text (case and whitespace folded) is also a training example's, and
    texts given more than one label. Splits are drawn by id, so a source that repeats a text under
    two ids can put it on both sides: held-out numbers are then optimistic, and two labels on one
    text are noise. Counted, with the first of each, so a user can see and fix it in the data."""
    folded = [" ".join(t.lower().split()) for t in ex.texts]
    in_train = {f for f, sp in zip(folded, ex.splits) if sp == "train"}
    out: dict[str, Any] = {"validation_in_train": 0, "test_in_train": 0, "texts_with_two_labels": 0}
    first: dict[str, str] = {}
    for i, (f, sp) in enumerate(zip(folded, ex.splits)):
        if sp != "train" and f in in_train:
            out[f"{sp}_in_train"] += 1
            first.setdefault(f"{sp}_in_train", ex.ids[i])
    labels: dict[str, set[str]] = {}
    for f, lab in zip(folded, ex.labels):
        labels.setdefault(f, set()).add(lab)
    two = {f for f, v in labels.items() if len(v) > 1}
    out["texts_with_two_labels"] = len(two)
    if two:
        first["texts_with_two_labels"] = next(ex.ids[i] for i, f in enumerate(folded) if f in two)
    if first:
        out["first"] = first
    return out


@dataclasses.dataclass
class TrainResult:
    model: Path
    metrics: dict[str, Any]
    out_dir: Path


def train(
    cfg: TrainConfig,
    *,
    root: Path,
    out_dir: Path,
    exclude: Sequence[str] = (),
    config_text: str | None = None,
    write_card: bool = True,
    config_dir: Path | None = None,
    examples: Examples | None = None,
    checkpoint: Checkpointing | None = None,
    config_path: Path | None = None,
) -> TrainResult:
    """Build examples (or take ``examples`` built before), train on the train split, score the
    validation split, write everything. ``checkpoint``: a fine-tune saves its state there and resumes
    from it. ``config_path``: the config file, named in the card's reproduce line."""
    if checkpoint is not None and cfg.trainer != "finetune":
        raise RecipeError(
            f"--checkpoint applies to the finetune trainer, not {cfg.trainer!r} (minutes at most)"
        )
    from corpusfilter.evaluate import binary_metrics, score_by_source

    t0 = time.perf_counter()
    if examples is None:
        ex = build_examples(cfg, root, exclude=exclude, config_dir=config_dir)
    else:
        ex = examples.select([s not in set(exclude) for s in examples.sources])
    tr, va = ex.where(split="train"), ex.where(split="validation")
    if len(set(tr.labels)) < 2:
        raise CorpusfilterError(f"the train split has one label only ({sorted(set(tr.labels))})")
    if cfg.positive not in set(tr.labels):
        raise CorpusfilterError(
            f"positive label {cfg.positive!r} is not among the train split's labels ({', '.join(sorted(set(tr.labels)))})"
        )
    if cfg.trainer == "fasttext":  # `__label__very good` is the label `very` and a word `good`
        bad = next((i for i, lb in enumerate(ex.labels) if _WS.search(lb) or "\x00" in lb), None)
        if bad is not None:
            raise CorpusfilterError(
                f"sources.{ex.sources[bad]}: label {ex.labels[bad]!r} holds whitespace (or NUL), which fastText "
                "reads as the end of a label; use another label (label_map can rename one)"
            )
    if cfg.trainer == "head":  # a head's label names its score column: <name>_<label>_doc (a binary
        # or MLP head scores the positive only; a fine-tune's column replaces such characters)
        labels = sorted(set(ex.labels))
        named = [cfg.positive] if len(labels) <= 2 or cfg.head.hidden else labels
        odd = [lb for lb in named if not re.fullmatch(r"\w+", lb)]
        if odd:
            raise CorpusfilterError(
                f"label {odd[0]!r} would name the score column {cfg.name}_{odd[0]}_..., which a recipe's "
                "conditions could only read quoted; use letters, digits and _ (label_map can rename one)"
            )
    if not len(va):
        from loguru import logger

        logger.warning(f"{cfg.name}: no example fell in the validation split: no validation metrics")
    _check_model_folder(out_dir, cfg.trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = (
        train_finetune(cfg, tr, out_dir, checkpoint=checkpoint)
        if checkpoint is not None
        else TRAINERS[cfg.trainer](cfg, tr, out_dir)
    )
    _drop_stale_model(model)
    train_s = time.perf_counter() - t0
    side = write_sidecar(cfg, model)
    sizes: dict[str, dict[str, Any]] = {}
    by_label: dict[str, dict[str, int]] = {"train": {}, "validation": {}, "test": {}}
    for src, sp, lab in zip(ex.sources, ex.splits, ex.labels):
        d = sizes.setdefault(src, {"label": lab, "train": 0, "validation": 0, "test": 0})
        d[sp] += 1
        if lab not in d["label"].split("/"):  # a label column's source holds several labels
            d["label"] = "/".join(sorted([*d["label"].split("/"), lab]))
        by_label[sp][lab] = by_label[sp].get(lab, 0) + 1
    metrics: dict[str, Any] = {
        "name": cfg.name,
        "trainer": cfg.trainer,
        "positive": cfg.positive,
        "seed": cfg.seed,
        "model_file": model.name,
        "model_bytes": model.stat().st_size,
        "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "train_seconds": round(train_s, 2),
        "excluded_sources": list(exclude),
        "sources": sizes,
        "documents_per_label": {sp: dict(sorted(c.items())) for sp, c in by_label.items()},
        "environment": environment(cfg.trainer),
    }
    if ex.skipped:
        metrics["skipped_rows_null_or_empty_text"] = dict(sorted(ex.skipped.items()))
    overlap = split_overlap(ex)
    metrics["split_overlap"] = overlap
    if "first" in overlap:
        from loguru import logger

        logger.warning(f"{cfg.name}: {_overlap_text(overlap)}")
    if len(va):
        # source by source through the embedding cache, if one is set (the block's numbers, tested)
        scores = score_by_source(side, model, va.texts, va.sources, cached=True)
        y = np.asarray([lb == cfg.positive for lb in va.labels])
        metrics["validation"] = binary_metrics(y, scores)
        per: dict[str, Any] = {}
        for s in sorted(set(va.sources)):
            m = np.asarray([x == s for x in va.sources])
            per[s] = _source_rates(y[m], scores[m], 0.5)
        metrics["validation_per_source"] = per
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    if config_text is not None:
        (out_dir / "train.resolved.yaml").write_text(
            _resolved_yaml(cfg, config_dir, out_dir), encoding="utf-8"
        )
    if write_card:
        config = os.path.relpath(config_path, out_dir) if config_path is not None else None
        (out_dir / "MODEL_CARD.md").write_text(
            model_card(cfg, metrics, root, config=config), encoding="utf-8"
        )
    return TrainResult(model, metrics, out_dir)


def _source_rates(y: np.ndarray, s: np.ndarray, thr: float) -> dict[str, Any]:
    hit = s >= thr
    out: dict[str, Any] = {"docs": len(y), "positives": int(y.sum())}
    if y.any():
        out["recall"] = round(float(hit[y].mean()), 4)
    if (~y).any():
        out["fpr"] = round(float(hit[~y].mean()), 4)
    return out


def _resolved_yaml(cfg: TrainConfig, config_dir: Path | None = None, out_dir: Path | None = None) -> str:
    """The config with defaults filled in: a record of what was trained, which retrains the model
    from the model's folder. When that is not the config's folder, paths relative to the config are
    rewritten relative to it, a default id keeping the path as the config wrote it (the splits hang
    on the ids), as a variant config in another folder gets them (:func:`_moved_source`)."""
    import yaml

    d = config_to_dict(cfg)
    for key in ("fasttext", "head", "finetune"):  # only the trainer's own options
        if key != cfg.trainer:
            d.pop(key)
    head = "# resolved configuration (defaults filled in) written by corpusfilter train\n"
    moved = (
        config_dir is not None
        and out_dir is not None
        and Path(config_dir).resolve() != Path(out_dir).resolve()
    )
    if moved:  # its default output folder is its own: the model's (a relative `output` would nest)
        d["output"] = None
    if moved and any(src.get("relative_to") == "config" for src in d["sources"]):
        assert config_dir is not None and out_dir is not None
        d["sources"] = [
            _moved_source(s, Path(config_dir).resolve(), Path(out_dir).resolve()) for s in d["sources"]
        ]
        head += (
            f"# paths relative to the config ({Path(config_dir).resolve()}) rewritten relative to this "
            "folder; default ids keep them as the config wrote them\n"
        )
    return head + yaml.safe_dump(d, sort_keys=False, allow_unicode=True)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.1f} KB"


def _num(x: float | None) -> str:
    """A metric to 4 places, or "n/a" where it is undefined (no predicted positives, one class)."""
    return "n/a" if x is None else f"{x:.4f}"


def _env_line(env: Mapping[str, Any] | None) -> list[str]:
    """The card's record of what the bits depend on (``environment``), with ``--compare`` to check."""
    if not env:
        return []
    blas = env.get("blas") or {}
    libs = ", ".join(f"{k} {v}" for k, v in env.items() if k not in ("python", "machine", "numpy", "blas"))
    return [
        f"- built with Python {env['python']} on {env['machine']}, numpy {env['numpy']}"
        + (
            f", {blas.get('internal_api')} {blas.get('version')} ({blas.get('architecture')} kernel)"
            if blas
            else ""
        )
        + (f", {libs}" if libs else "")
        + "; check a rebuild with `corpusfilter train train.yaml --output DIR --compare .`"
    ]


def model_card(
    cfg: TrainConfig, metrics: Mapping[str, Any], root: Path, *, config: str | None = "train.yaml"
) -> str:
    """MODEL_CARD.md: sources and sizes, hyperparameters, validation metrics, use, failure modes.
    ``config``: the training config's path from the model's folder (None: built in Python)."""
    if config is None:
        how = "a config built in Python (its settings are below; the CLI writes train.resolved.yaml)"
    elif config == "train.yaml":
        how = "`corpusfilter train train.yaml`"
    else:
        how = f"`corpusfilter train {config}` from this folder"
    lines = [f"# {cfg.name} detector", ""]
    if cfg.description:
        lines += [cfg.description.strip(), ""]
    lines += [
        f"- trainer: `{cfg.trainer}`; positive label `{cfg.positive}`; seed {cfg.seed}",
        f"- model file: `{metrics['model_file']}` ({_size(metrics['model_bytes'])}, "
        f"sha256 `{metrics['model_sha256'][:16]}…`); sidecar `{Path(metrics['model_file']).stem}.json`",
        f"- reproduce: {how} with the data root "
        f"(`--data-root`, `$CORPUSFILTER_DATA`, default `{DEFAULT_DATA_ROOT}`)",
        *_env_line(metrics.get("environment")),
        "- trained on text derived from the third-party data sets listed below (licenses: each file's "
        "Parquet metadata and the data folder's README); a fastText model stores its vocabulary "
        "(words of that text), a head only its weights.",
        "",
        "## Training sources (documents per split)",
        "",
        "| source | file | label | rows / documents | train | validation | test |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in cfg.sources:
        n = metrics["sources"].get(s.name, {"train": 0, "validation": 0, "test": 0})
        how = (
            f"grouped into {s.doc_words[0]}–{s.doc_words[1]}-word documents"
            if s.doc_words
            else "one row a document"
        )
        if s.group_by:
            how += f" by `{s.group_by}`"
        where = f" where `{s.where}`" if s.where else ""
        lab = f"from `{s.label_column}`" if s.label_column else f"`{s.label}`"
        lines.append(
            f"| {s.name} | `{s.path}`{where} | {lab} | {how}"
            f"{f', limit {s.limit}' if s.limit else ''}{f', weight {s.weight:g}' if s.weight != 1 else ''} "
            f"| {n['train']} | {n['validation']} | {n['test']} |"
        )
    per_label = metrics.get("documents_per_label")
    if per_label:
        lines += [
            "",
            "Documents per label: "
            + "; ".join(
                f"{sp} " + ", ".join(f"{lb} {n}" for lb, n in c.items()) for sp, c in per_label.items() if c
            )
            + ".",
        ]
    if "first" in metrics.get("split_overlap", {}):
        lines += ["", f"Repeated texts: {_overlap_text(metrics['split_overlap'])}."]
    if metrics.get("skipped_rows_null_or_empty_text"):
        skipped = ", ".join(f"{k} {v}" for k, v in metrics["skipped_rows_null_or_empty_text"].items())
        lines += ["", f"Rows skipped for null or empty text: {skipped}."]
    hp = params_to_dict(getattr(cfg, cfg.trainer))
    lines += ["", "## Hyperparameters", "", "```json", json.dumps(hp, indent=1), "```", ""]
    val = metrics.get("validation")
    if val:
        lines += ["## Validation (in-distribution split; says little about real corpora)", ""]
        lines += [
            f"AUROC {_num(val['auroc'])}, at threshold 0.5: precision {_num(val['precision'])}, "
            f"recall {_num(val['recall'])}, F1 {_num(val['f1'])}, ECE {_num(val['ece'])} "
            f"({val['positives']} positive / {val['negatives']} negative documents)",
            "",
        ]
    gen = metrics.get("generalization")
    if gen:
        lines += ["## Generalization (scripts/eval_detectors.py)", "", gen.get("markdown", ""), ""]
    if cfg.intended_use:
        lines += ["## Intended use", "", cfg.intended_use.strip(), ""]
    if cfg.failure_modes:
        lines += ["## Known failure modes", ""] + [f"- {f}" for f in cfg.failure_modes] + [""]
    return "\n".join(lines)


COMPARE_TOLERANCE = 1e-4  # metrics and cards print scores and thresholds to 4 decimals


def compare_models(
    shipped: Path, rebuilt: Path, examples: Examples, *, tolerance: float = COMPARE_TOLERANCE
) -> dict[str, Any]:
    """Does a rebuilt model reproduce a shipped one? The same bytes; else, for a head, the largest
    weight difference, and on the validation and test documents the largest score difference and how
    many decisions change at 0.5 and at the shipped operating thresholds (its ``metrics.json``; a
    threshold is a validation document's score, so rounding noise can move that document across).
    ``verdict``: ``identical``, ``scores within <tolerance>`` or ``different``."""
    from corpusfilter.evaluate import load_sidecar, score_by_source

    side_a, model_a = load_sidecar(shipped)
    side_b, model_b = load_sidecar(rebuilt)
    out: dict[str, Any] = {
        "shipped": str(model_a),
        "rebuilt": str(model_b),
        "identical_bytes": model_a.read_bytes() == model_b.read_bytes(),
    }
    if model_a.suffix == model_b.suffix == ".npz":
        with np.load(model_a) as a, np.load(model_b) as b:
            if a.files == b.files and all(a[k].shape == b[k].shape for k in a.files):
                out["max_abs_weight_diff"] = max(
                    (
                        float(np.abs(a[k] - b[k]).max())
                        for k in a.files
                        if a[k].dtype.kind == "f" and a[k].size
                    ),
                    default=0.0,
                )
    # split by split and source by source: the embedding cache entries of training and evaluation
    parts = [examples.where(split=sp) for sp in ("validation", "test")]
    s_a, s_b = (
        np.concatenate([score_by_source(side, model, p.texts, p.sources, cached=True) for p in parts])
        for side, model in ((side_a, model_a), (side_b, model_b))
    )
    n = sum(len(p) for p in parts)
    thresholds = {"0.5": 0.5}
    m_path = model_a.parent / "metrics.json"
    gen = json.loads(m_path.read_text(encoding="utf-8")).get("generalization", {}) if m_path.is_file() else {}
    for key in ("threshold", "document_threshold"):
        if isinstance(gen.get(key), dict) and isinstance(gen[key].get("value"), float):
            thresholds[key] = gen[key]["value"]
    changed = {k: int(((s_a >= t) != (s_b >= t)).sum()) for k, t in thresholds.items()}
    out.update(
        documents=n,
        max_abs_score_diff=float(np.abs(s_a - s_b).max()) if n else 0.0,
        thresholds=thresholds,
        decisions_changed=changed,
    )
    out["tolerance"] = tolerance
    out["verdict"] = (
        "identical"
        if out["identical_bytes"]
        else (f"scores within {tolerance:g}" if out["max_abs_score_diff"] <= tolerance else "different")
    )
    return out


def _compare_args(args: Any, out: Path) -> tuple[Path | None, float]:
    """``--compare MODEL`` and ``--tolerance T``, checked before any training: MODEL exists and is
    not where the rebuild is written, T is a finite number >= 0 and comes with ``--compare``."""
    compare = Path(args.compare) if getattr(args, "compare", None) else None
    given = getattr(args, "tolerance", None)
    tol = COMPARE_TOLERANCE if given is None else given
    if not (tol >= 0 and np.isfinite(tol)):
        raise RecipeError(f"--tolerance {tol}: not a finite number >= 0")
    if compare is None:
        if given is not None:
            raise RecipeError("--tolerance goes with --compare")
        return None, tol
    if not compare.exists():
        raise RecipeError(f"--compare {compare}: no such model or folder")
    if out.resolve() == (compare if compare.is_dir() else compare.parent).resolve():
        raise RecipeError(f"--compare {compare}: give another --output, or the rebuild overwrites it")
    return compare, tol


#: CPU flags (as /proc/cpuinfo names them) that each x86 OpenBLAS kernel a model may record needs
_KERNEL_FLAGS = {
    "Nehalem": {"sse4_2"},
    "Sandybridge": {"avx"},
    "Haswell": {"avx2", "fma"},
    "Zen": {"avx2", "fma"},
    "SkylakeX": {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
    "Cooperlake": {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx512_bf16"},
}


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def blas_kernel_to_match(model: Path) -> tuple[str, str] | None:
    """(recorded, current) when ``model`` (a file or its folder) was fitted under another OpenBLAS
    CPU kernel than this process uses and this CPU can run the recorded one: a rebuild with
    ``OPENBLAS_CORETYPE=recorded`` then does the same arithmetic. OpenBLAS reads that variable only
    when it loads, so the caller has to start a new process."""
    metrics = (model if model.is_dir() else model.parent) / "metrics.json"
    try:
        recorded = json.loads(metrics.read_text(encoding="utf-8"))["environment"]["blas"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    current = blas_info() or {}
    if recorded.get("internal_api") != "openblas" or current.get("internal_api") != "openblas":
        return None
    want, have = recorded.get("architecture"), current.get("architecture")
    if not want or want == have or not _KERNEL_FLAGS.get(want, {"?"}) <= _cpu_flags():
        return None
    return str(want), str(have)


def _rerun_under_kernel(compare: Path, argv: list[str] | None) -> int | None:
    """Run the command line ``argv`` again under the OpenBLAS kernel ``compare`` was fitted with, when
    this process has another and the CPU can run it (its exit status); None: go on here."""
    if argv is None or "OPENBLAS_CORETYPE" in os.environ:
        return None
    kernel = blas_kernel_to_match(compare)
    if kernel is None:
        return None
    import subprocess
    import sys

    print(
        f"{compare} was fitted with OpenBLAS's {kernel[0]} kernel and this process has {kernel[1]}: "
        f"running again with OPENBLAS_CORETYPE={kernel[0]}, which this CPU supports",
        file=sys.stderr,
        flush=True,
    )
    env = {**os.environ, "OPENBLAS_CORETYPE": kernel[0]}
    return subprocess.run([sys.executable, "-m", "corpusfilter.cli", *argv], env=env, check=False).returncode


def _checkpoint_args(args: Any) -> Checkpointing | None:
    """``--checkpoint DIR [--checkpoint-every N]`` (N alone is refused: it would do nothing)."""
    every = getattr(args, "checkpoint_every", None)
    if not getattr(args, "checkpoint", None):
        if every is not None:
            raise RecipeError("--checkpoint-every goes with --checkpoint")
        return None
    return Checkpointing(Path(args.checkpoint), CHECKPOINT_EVERY if every is None else every)


def cmd_train(args: Any) -> int:
    """CLI entry: ``corpusfilter train CONFIG.yaml [--data-root DIR] [--output DIR]
    [--export-examples FILE | --examples FILE] [--compare MODEL [--tolerance T]]
    [--checkpoint DIR [--checkpoint-every N]]``; exit 1 when the
    rebuild and MODEL differ."""
    cfg_path = Path(args.config)
    cfg = load_config(cfg_path)
    root, cfg_dir = data_root(args.data_root), cfg_path.resolve().parent
    if getattr(args, "export_examples", None) and getattr(args, "compare", None):
        raise RecipeError("--compare checks a trained model: not with --export-examples")
    if getattr(args, "export_examples", None):
        ex = build_examples(cfg, root, config_dir=cfg_dir)
        ex.write_parquet(args.export_examples, cfg)
        print(f"wrote {len(ex)} examples to {args.export_examples}")
        return 0
    examples = Examples.read_parquet(args.examples, cfg) if getattr(args, "examples", None) else None
    out = (
        Path(args.output)
        if args.output
        else (cfg_path.parent / cfg.output if cfg.output else cfg_path.parent)
    )
    compare, tol = _compare_args(args, out)
    if (
        compare is not None
        and (code := _rerun_under_kernel(compare, getattr(args, "argv", None))) is not None
    ):
        return code
    if compare is not None and examples is None:  # built once: trained on, then scored by both models
        examples = build_examples(cfg, root, config_dir=cfg_dir)
    res = train(
        cfg,
        root=root,
        out_dir=out,
        config_text=cfg_path.read_text(encoding="utf-8"),
        config_dir=cfg_dir,
        config_path=cfg_path,
        examples=examples,
        checkpoint=_checkpoint_args(args),
    )
    m = res.metrics
    print(f"model: {res.model} ({m['model_bytes'] / 2**20:.2f} MB) in {m['train_seconds']} s")
    for s, d in m["sources"].items():
        print(
            f"  {s:28s} {d['label']:>14s}  train {d['train']:6d}  val {d['validation']:5d}  test {d['test']:5d}"
        )
    if "validation" in m:
        v = m["validation"]
        print(
            f"validation: AUROC {_num(v['auroc'])}  P {_num(v['precision'])}  R {_num(v['recall'])}  "
            f"F1 {_num(v['f1'])}  ECE {_num(v['ece'])}"
        )
    print(f"wrote {out / 'metrics.json'}, {out / 'MODEL_CARD.md'}")
    if compare is None:
        return 0
    assert examples is not None
    c = compare_models(compare, res.model, examples, tolerance=tol)
    (out / "compare.json").write_text(json.dumps(c, indent=2) + "\n", encoding="utf-8")
    weights = f", weights within {c['max_abs_weight_diff']:.2g}" if "max_abs_weight_diff" in c else ""
    changed = ", ".join(f"{k} {v}" for k, v in c["decisions_changed"].items())
    print(
        f"compared with {c['shipped']}: {c['verdict']} (bytes {'equal' if c['identical_bytes'] else 'differ'}"
        f"{weights}; {c['documents']} validation/test documents: scores within "
        f"{c['max_abs_score_diff']:.2g}, decisions changed at {changed}); wrote {out / 'compare.json'}"
    )
    return 0 if c["verdict"] != "different" else 1
