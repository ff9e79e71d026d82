"""Fine-tuned transformer detector: the positive class's probability as a typed float32 column.

The model file (written by ``corpusfilter train`` with ``trainer: finetune``) holds MiniLM's encoder
layers and a linear head; the frozen token embeddings come from the packaged base model. The file's
sha256 is recorded at validation and checked when a worker loads it, as for fastText.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from corpusfilter.blocks.base import Detector
from corpusfilter.blocks.embedding import cpu_bf16_field, overlap_field
from corpusfilter.errors import RecipeError, at_path
from corpusfilter.io import file_stat, pin_file, sha256_file
from corpusfilter.registry import register


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetunedParams:
    model: str = dataclasses.field(
        metadata={"help": "fine-tuned model file (.safetensors from trainer: finetune)", "path": True}
    )
    name: str = dataclasses.field(default="finetuned", metadata={"help": "column prefix: <name>_<label>"})
    batch_size: int = dataclasses.field(default=32, metadata={"help": "documents per forward pass"})
    device: Literal["auto", "cpu", "cuda"] = dataclasses.field(
        default="auto", metadata={"help": "auto: CUDA when present, else CPU"}
    )
    fp16: bool = dataclasses.field(
        default=True, metadata={"help": "half precision on a GPU (scores within ~1e-3 of fp32)"}
    )
    cpu_bf16: bool = cpu_bf16_field()
    overlap: bool | None = overlap_field()

    def check(self, path: str) -> None:
        if not self.name.isidentifier():
            raise RecipeError(f"{path}.name: {self.name!r} is not a valid column prefix")
        if self.batch_size < 1:
            raise RecipeError(f"{path}.batch_size: at least 1")


@register("finetuned", version=1)
class FinetunedDetector(Detector):
    """Scores documents with a fine-tuned MiniLM classifier (first and last tokens of each)."""

    Params = FinetunedParams
    _meta: dict[str, str] | None = None
    _pinned: tuple[str, tuple[int, int, int]] | None = None  # sha256 and stat at validation
    _model: Any = None

    def metadata(self) -> dict[str, str]:
        if self._meta is None:
            from corpusfilter.finetune import read_metadata

            if not Path(self.params.model).is_file():
                raise RecipeError(f"fine-tuned model not found: {self.params.model}")
            self._meta = read_metadata(self.params.model)
        return self._meta

    def field_types(self) -> dict[str, pa.DataType]:
        positive = self.metadata().get("positive", "positive")
        return {re.sub(r"\W", "_", positive): pa.float32()}

    def validate(self, schema: pa.Schema, path: str) -> None:
        from corpusfilter.embed import require_modules

        with at_path(path):
            self.metadata()
            require_modules("finetuned", f"fine-tuned model {self.params.model}")
            self._pinned = (sha256_file(self.params.model), file_stat(self.params.model))
        super().validate(schema, path)

    def provenance(self) -> dict[str, Any]:
        from corpusfilter.embed import folder_digest, resolve_model

        meta = self.metadata()
        return {
            "model_sha256": self._pinned[0] if self._pinned else sha256_file(self.params.model),
            "base": meta["base"],
            # The base folder gives the tokenizer and the frozen embeddings the file leaves out.
            "base_files_sha256": folder_digest(resolve_model(meta["base"])[1]),
            "max_tokens": int(meta["max_tokens"]),
            "head_tokens": int(meta["head_tokens"]),
        }

    def setup(self) -> None:
        from corpusfilter.finetune import FinetunedClassifier

        if self._pinned is not None:  # rehashed only if the file's size, mtime or inode moved
            self._pinned = pin_file(self.params.model, self._pinned)
        p = self.params
        self._model = FinetunedClassifier(p.model, device=p.device, fp16=p.fp16, cpu_bf16=p.cpu_bf16)
        # On a GPU, tokenize the next batch on the CPU while the model scores this one.
        self.overlap = p.overlap if p.overlap is not None else self._model.device.startswith("cuda")

    def _unpicklable(self) -> Sequence[str]:
        return ("_model",)

    def teardown(self) -> None:
        self._model = None

    def prepare(self, texts: pa.StringArray) -> list[list[int]]:
        """Token ids (Rust tokenizer, GIL released): runs a batch ahead when overlapping."""
        return self._model.tokenize([t if t is not None else "" for t in texts.to_pylist()])

    def score_prepared(self, prepared: list[list[int]]) -> Mapping[str, Any]:
        key = next(iter(self.field_types()))
        return {key: self._model.score_ids(prepared, self.params.batch_size)}

    def score(self, texts: pa.StringArray) -> Mapping[str, Any]:
        return self.score_prepared(self.prepare(texts))
