"""Token, byte and word counts per document, with a real tokenizer that works offline.

Experiments compare arms by tokens, not documents: this detector gives every row its length in the
tokens of a model's own tokenizer (default: the WordPiece tokenizer of the packaged all-MiniLM-L6-v2,
or any ``tokenizer.json`` by path), in UTF-8 bytes, and in words (runs of bytes above 0x20).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from corpusfilter.blocks.base import Detector
from corpusfilter.blocks.keyword import nul_joined, word_counts
from corpusfilter.errors import RecipeError, at_path
from corpusfilter.registry import register

#: Text tokenized at once (a longer document goes alone)
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

        self._tok = Tokenizer.from_file(str(resolve_tokenizer(self.params.tokenizer)))
        self._tok.no_truncation()
        self._tok.no_padding()

    def _unpicklable(self) -> Sequence[str]:
        return ("_tok",)

    def score(self, texts: pa.StringArray) -> Mapping[str, Any]:
        buf, starts = nul_joined(texts)
        nbytes = np.diff(starts) - 1
        # A tokenizer's encodings take ~25x their text in memory: tokenize a few MB at a time and
        # keep only the counts.
        count = np.zeros(len(texts), dtype=np.int64)
        ends = np.cumsum(nbytes)
        i = 0
        while i < len(texts):
            j = max(i + 1, int(np.searchsorted(ends, ends[i] - nbytes[i] + TOKENIZE_BYTES, side="right")))
            encs = self._tok.encode_batch_fast(texts.slice(i, j - i).to_pylist(), add_special_tokens=False)
            count[i:j] = [len(e.ids) for e in encs]
            i = j
        return {"count": count, "bytes": nbytes, "words": word_counts(buf, starts)}
