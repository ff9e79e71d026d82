"""fastText classifier detector: every label's probability as a typed float32 column.

The model is loaded from its path once per worker (never from a cache keyed by the path string:
a retrained model at the same path must be picked up). Its sha256 is recorded at validation and
checked again when a worker loads it, so a file changed mid-run fails loudly instead of mixing
two models' scores.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpusfilter.blocks.base import Detector
from corpusfilter.errors import RecipeError, at_path
from corpusfilter.io import file_stat, pin_file, sha256_file
from corpusfilter.registry import register

#: Loaded models by the sha256 of their file: a retrained model at the same path is a new entry.
_MODELS: dict[str, Any] = {}

#: Every character Python's ``\s`` matches (none lies above U+3000): training has always split
#: words on these, while fastText splits on ASCII whitespace and NUL only
_SPACE = "".join(c for c in map(chr, range(0x3001)) if re.fullmatch(r"\s", c))
_ANY_SPACE = f"[\\x00{_SPACE}]"
#: a run of separators other than one plain space (one space is left as it is: far fewer matches)
_BREAK = f" ?[\\x00{_SPACE.replace(' ', '')}]{_ANY_SPACE}*| {{2,}}{_ANY_SPACE}*"


#: what fastText itself splits words on (its readWord); the other ``\s`` characters, and NUL, it does not
_FT_SPACE = " \t\n\v\f\r"
#: separators scoring turns into a space so that fastText splits words where training did
_NOT_FT_SPACE = re.compile("[" + re.escape("\x00" + "".join(c for c in _SPACE if c not in _FT_SPACE)) + "]")
_ASCII_NOT_FT_SPACE = "\x00\x1c\x1d\x1e\x1f"
_LABEL_WORD = re.compile(r"(^|[ \t\v\f\r])__label__")


def fasttext_words(texts: pa.Array | pa.ChunkedArray) -> list[str]:
    """Texts as the detector scores them: fastText reads the words of :func:`fasttext_lines` (the
    training lines) from them, at a fraction of the cost. Newlines (fastText's end of line) and the
    separators fastText does not split on (NUL, the other Unicode spaces) become a space, looked for
    only in the texts that can hold them; the ASCII whitespace fastText splits on stays."""
    out = []
    for s in pc.replace_substring(texts, "\n", " ").to_pylist():
        if not s.isascii() or any(c in s for c in _ASCII_NOT_FT_SPACE):
            s = _NOT_FT_SPACE.sub(" ", s)
        if "__label__" in s:
            s = _LABEL_WORD.sub(r"\1_label__", s)
        out.append(s)
    return out


def fasttext_lines(texts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Texts as the lines fastText trains on and scores (the trainer writes them, the detector
    predicts them), so both see the same words: every run of whitespace or NUL one space (a NUL in a
    word had been read into the vocabulary and saved a model that could not be loaded), no newline,
    and a word starting with ``__label__`` renamed ``_label__...`` (fastText reads it as a label: a
    second label when training, no word when scoring)."""
    lines = pc.utf8_trim(pc.replace_substring_regex(texts, _BREAK, " "), " ")
    if pc.any(pc.match_substring(lines, "__label__")).as_py():
        lines = pc.replace_substring_regex(lines, "(^| )__label__", r"\1_label__")
    return lines


def _column_suffix(label: str) -> str:
    """``__label__goodness`` → ``goodness``; other characters that cannot be in a column become ``_``."""
    name = label.removeprefix("__label__")
    return re.sub(r"\W", "_", name) or "label"


@dataclasses.dataclass(frozen=True, kw_only=True)
class FastTextParams:
    model: str = dataclasses.field(metadata={"help": "path to a fastText .bin or .ftz model", "path": True})
    name: str = dataclasses.field(default="fasttext", metadata={"help": "column prefix: <name>_<label>"})
    labels: list[str] | None = dataclasses.field(
        default=None, metadata={"help": "labels to output (without __label__); default: every label"}
    )
    max_chars: int | None = dataclasses.field(
        default=None, metadata={"help": "score only the first N characters of each document"}
    )

    def check(self, path: str) -> None:
        if not self.name.isidentifier():
            raise RecipeError(f"{path}.name: {self.name!r} is not a valid column prefix")
        if self.max_chars is not None and self.max_chars < 1:
            raise RecipeError(f"{path}.max_chars: must be positive")


@register("fasttext", version=1)
class FastTextDetector(Detector):
    """Scores documents with a fastText supervised model; one probability column per label."""

    Params = FastTextParams
    _labels: list[str] | None = None
    _sha256: str | None = None
    _stat: tuple[int, int, int] | None = None  # (size, mtime_ns, inode) when _sha256 was taken

    def _load(self) -> Any:
        """The model, from a cache keyed by file content (sha256), never by path string."""
        sha = self._sha256 if self._sha256 and file_stat(self.params.model) == self._stat else None
        if sha is None and Path(self.params.model).is_file():
            self._stat = file_stat(self.params.model)
            sha = self._sha256 = sha256_file(self.params.model)
        if sha is not None and sha in _MODELS:
            return _MODELS[sha]
        model = self._read_model()
        if sha is not None:
            _MODELS.clear()  # keep one model: they can be large
            _MODELS[sha] = model
        return model

    def _read_model(self) -> Any:
        try:
            from fasttext.FastText import _FastText
        except ImportError:
            raise RecipeError(
                "the fasttext detector needs the fasttext extra: pip install 'corpusfilter[fasttext]'"
            ) from None
        path = self.params.model
        if not Path(path).is_file():
            raise RecipeError(f"fastText model not found: {path}")
        try:
            return _FastText(model_path=path)
        except ValueError as e:
            raise RecipeError(f"{path}: not a fastText model ({e})") from None

    def model_labels(self) -> list[str]:
        """The labels this detector outputs, in the model's order (or the order given)."""
        if self._labels is None:
            available = [lab.removeprefix("__label__") for lab in self._load().labels]
            wanted = list(self.params.labels) if self.params.labels is not None else available
            missing = [lab for lab in wanted if lab not in available]
            if missing:
                raise RecipeError(f"labels {missing} are not in {self.params.model} (it has {available})")
            self._labels = wanted
        return self._labels

    def field_types(self) -> dict[str, pa.DataType]:
        return {_column_suffix(lab): pa.float32() for lab in self.model_labels()}

    def validate(self, schema: pa.Schema, path: str) -> None:
        with at_path(path):
            self.model_labels()
        super().validate(schema, path)

    def provenance(self) -> dict[str, Any]:
        return {
            "model_sha256": self._sha256 or sha256_file(self.params.model),
            "labels": self.model_labels(),
        }

    def setup(self) -> None:
        if self._sha256 is not None and self._stat is not None:
            self._sha256, self._stat = pin_file(self.params.model, (self._sha256, self._stat))
        self._model = self._load()
        self._index = {f"__label__{lab}": i for i, lab in enumerate(self.model_labels())}

    def _unpicklable(self) -> Sequence[str]:
        return ("_model",)

    def teardown(self) -> None:
        self._model = None

    def score(self, texts: pa.StringArray) -> Mapping[str, Any]:
        if self.params.max_chars is not None:
            texts = pc.utf8_slice_codeunits(texts, 0, self.params.max_chars)
        # fastText predicts one line at a time, with the training lines' words; each line ends with
        # "\n", as fastText's own predict() adds (it becomes the EOS token)
        lines = [s + "\n" for s in fasttext_words(texts)]
        labels, probs = self._model.f.multilinePredict(lines, -1, 0.0, "strict")
        out = np.zeros((len(lines), len(self._index)), dtype=np.float32)
        index = self._index
        for i, (labs, ps) in enumerate(zip(labels, probs)):
            for lab, p in zip(labs, ps):
                j = index.get(lab)
                if j is not None:
                    out[i, j] = p
        np.clip(out, 0.0, 1.0, out=out)  # fastText reports p + 1e-5, so a sure label exceeds 1
        return {_column_suffix(lab): out[:, j] for j, lab in enumerate(self.model_labels())}
