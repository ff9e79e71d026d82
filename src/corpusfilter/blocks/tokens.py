"""Token, byte and word counts per document, with a real tokenizer that works offline.

Experiments compare arms by tokens, not documents: this detector gives every row its length in the
tokens of a model's own tokenizer (default: the WordPiece tokenizer of the packaged all-MiniLM-L6-v2,
or any ``tokenizer.json`` by path), in UTF-8 bytes, and in words (runs of bytes above 0x20).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from corpusfilter.blocks.base import Detector
from corpusfilter.blocks.keyword import nul_joined, word_counts
from corpusfilter.errors import RecipeError, at_path
from corpusfilter.registry import register

#: Text tokenized at once (a longer document is cut at spaces where that counts exactly, else goes alone)
TOKENIZE_BYTES = 1 << 20


def resolve_tokenizer(spec: str) -> Path:
    """``minilm`` (all-MiniLM-L6-v2's tokenizer.json, shipped in the package), or a tokenizer.json or a
    model folder holding one."""
    if spec == "minilm":  # shipped with the package: no model extra needed to count tokens
        from importlib import resources

        return Path(str(resources.files("corpusfilter") / "tokenizers" / "minilm.json"))
    path = Path(spec)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise RecipeError(f"tokenizer file not found: {path}")
    return path


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokensParams:
    name: str = dataclasses.field(default="tokens", metadata={"help": "column prefix: <name>_count, ..."})
    tokenizer: str = dataclasses.field(
        default="minilm",
        metadata={"help": "minilm, or a tokenizer.json (or a folder holding one)", "path": True},
    )

    def check(self, path: str) -> None:
        if not self.name.isidentifier():
            raise RecipeError(f"{path}.name: {self.name!r} is not a valid column prefix")


@register("tokens", version=1)
class TokenCounter(Detector):
    """Tokens (of a real tokenizer, no special tokens), UTF-8 bytes and words per document."""

    Params = TokensParams
    fields: ClassVar[dict[str, pa.DataType]] = {"count": pa.int64(), "bytes": pa.int64(), "words": pa.int64()}

    def validate(self, schema: pa.Schema, path: str) -> None:
        with at_path(path):
            resolve_tokenizer(self.params.tokenizer)
        super().validate(schema, path)

    def provenance(self) -> dict[str, Any]:
        import hashlib

        path = resolve_tokenizer(self.params.tokenizer)
        return {"tokenizer_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}

    def setup(self) -> None:
        from tokenizers import Tokenizer

        path = resolve_tokenizer(self.params.tokenizer)
        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_truncation()
        self._tok.no_padding()
        self._splits = splits_at_spaces(json.loads(path.read_text(encoding="utf-8")))

    def _unpicklable(self) -> Sequence[str]:
        return ("_tok",)

    def score(self, texts: pa.StringArray) -> Mapping[str, Any]:
        buf, starts = nul_joined(texts)
        nbytes = np.diff(starts) - 1
        # A tokenizer's encodings take ~25x their text in memory: tokenize about TOKENIZE_BYTES at a
        # time and keep only the counts. A longer document is cut at spaces where the tokenizer
        # splits words there anyway (its counts add up exactly), else it goes alone.
        pieces: list[str] = []
        owner: list[int] = []
        for k, t in enumerate(texts.to_pylist()):
            parts = cut_at_spaces(t, TOKENIZE_BYTES) if self._splits and nbytes[k] > TOKENIZE_BYTES else [t]
            pieces += parts
            owner += [k] * len(parts)
        sizes = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
        ends = np.cumsum(sizes)
        per_piece = np.zeros(len(pieces), dtype=np.int64)
        i = 0
        while i < len(pieces):
            j = max(i + 1, int(np.searchsorted(ends, ends[i] - sizes[i] + TOKENIZE_BYTES, side="right")))
            encs = self._tok.encode_batch_fast(pieces[i:j], add_special_tokens=False)
            per_piece[i:j] = [len(e.ids) for e in encs]
            i = j
        count = np.zeros(len(texts), dtype=np.int64)
        np.add.at(count, np.asarray(owner, dtype=np.int64), per_piece)
        return {"count": count, "bytes": nbytes, "words": word_counts(buf, starts)}


#: normalizers that change characters one at a time, and pre-tokenizers that end words at every space
_LOCAL_NORMALIZERS = {"BertNormalizer", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "StripAccents", "Strip"}
_SPACE_SPLITTERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}
_WORD_LOCAL = {*_SPACE_SPLITTERS, "Punctuation", "Digits"}


def splits_at_spaces(spec: Mapping[str, Any]) -> bool:
    """Whether a tokenizer (its tokenizer.json) counts a text cut at spaces as the sum of its parts:
    its normalizer is character-local and its pre-tokenizer ends every word at a space (BERT's
    WordPiece, the default, does; byte-level BPE, which glues a space to the next word, is not
    trusted)."""

    def steps(node: Mapping[str, Any] | None, key: str) -> list[str]:
        if node is None:
            return []
        if node.get("type") == "Sequence":
            return [t for n in node.get(key, []) for t in steps(n, key)]
        return [str(node.get("type"))]

    norm = steps(spec.get("normalizer"), "normalizers")
    pre = steps(spec.get("pre_tokenizer"), "pretokenizers")
    return (
        bool(pre)
        and pre[0] in _SPACE_SPLITTERS
        and set(pre) <= _WORD_LOCAL
        and set(norm) <= _LOCAL_NORMALIZERS
    )


def cut_at_spaces(text: str, size: int) -> list[str]:
    """``text`` in pieces of about ``size`` characters, each cut just before a space (a stretch with
    no space stays whole)."""
    out, start = [], 0
    while len(text) - start > size:
        cut = text.rfind(" ", start + 1, start + size)
        if cut <= start:
            cut = text.find(" ", start + size)
            if cut < 0:
                break
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out
