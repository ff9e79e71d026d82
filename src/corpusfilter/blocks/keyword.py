"""Keyword / lexicon detector: whole-word, case-insensitive, Unicode-aware multi-pattern matching.

Hyperscan scans the Arrow string buffer of a whole batch in one call (no per-document Python
strings). Word boundaries are then checked exactly as Python's ``re`` defines them, so a hit is
``(?<!\\w)term(?!\\w)`` under ``re.IGNORECASE``, with internal whitespace matching ``\\s+``. Every
occurrence of every term counts (two terms may overlap, e.g. "AI takeover" and "takeover").
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpusfilter.blocks.base import Detector
from corpusfilter.errors import RecipeError
from corpusfilter.lexicon import Lexicon, load_lexicon, parse_lexicon
from corpusfilter.registry import register

_ASCII_WORD = np.zeros(256, dtype=bool)
for _c in range(128):
    _ASCII_WORD[_c] = chr(_c).isalnum() or chr(_c) == "_"


def term_pattern(term: str) -> str:
    """Regex body for one term: escaped tokens joined by ``\\s+``."""
    return r"\s+".join(re.escape(tok) for tok in term.split())


def reference_regex(terms: Sequence[str]) -> list[re.Pattern[str]]:
    """Python ``re`` patterns with the detector's exact semantics (used by tests as the oracle)."""
    return [re.compile(r"(?=(?<!\w)(" + term_pattern(t) + r")(?!\w))", re.IGNORECASE) for t in terms]


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeywordParams:
    name: str = dataclasses.field(default="keywords", metadata={"help": "column prefix: <name>_hits, ..."})
    lexicon: str | None = dataclasses.field(
        default=None,
        metadata={"help": "shipped lexicon name (virtue, ...) or a path to a lexicon file", "path": True},
    )
    terms: list[str] | None = dataclasses.field(
        default=None, metadata={"help": "inline terms, each 'term[<TAB>weight[<TAB>category]]'"}
    )

    def check(self, path: str) -> None:
        if (self.lexicon is None) == (self.terms is None):
            raise RecipeError(f"{path}: give exactly one of 'lexicon' or 'terms'")
        if not self.name.isidentifier():
            raise RecipeError(f"{path}.name: {self.name!r} is not a valid column prefix")


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _char_before(data: bytes | memoryview, pos: int, lo: int) -> str:
    i = pos - 1
    while i > lo and (data[i] & 0xC0) == 0x80:
        i -= 1
    return bytes(data[i:pos]).decode("utf-8", "replace")


def _char_after(data: bytes | memoryview, pos: int) -> str:
    b = data[pos]
    n = 1 if b < 0x80 else 2 if b < 0xE0 else 3 if b < 0xF0 else 4
    return bytes(data[pos : pos + n]).decode("utf-8", "replace")


@register("keywords", version=1)
class KeywordDetector(Detector):
    """Counts lexicon hits per document: hits, weighted score, hits per 1,000 words, categories matched.

    Words are runs of non-whitespace; ``per_1k_words`` is 0 for a document without hits.
    """

    Params = KeywordParams
    fields: ClassVar[dict[str, pa.DataType]] = {
        "hits": pa.int32(),
        "score": pa.float64(),
        "per_1k_words": pa.float64(),
        "categories": pa.list_(pa.string()),
    }

    @property
    def lexicon(self) -> Lexicon:
        lex: Lexicon | None = getattr(self, "_lexicon", None)
        if lex is None:
            if self.params.terms is not None:
                lex = parse_lexicon("\n".join(self.params.terms), name=f"{self.params.name}:inline")
            else:
                lex = load_lexicon(self.params.lexicon)
            self._lexicon = lex
        return lex

    def provenance(self) -> dict[str, Any]:
        lex = self.lexicon
        return {"lexicon": lex.name, "lexicon_sha256": lex.sha256, "terms": len(lex)}

    def setup(self) -> None:
        import hyperscan

        lex = self.lexicon
        flags = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_UCP
        flags |= hyperscan.HS_FLAG_SOM_LEFTMOST
        db = hyperscan.Database()
        try:
            db.compile(
                expressions=[term_pattern(t).encode("utf-8") for t in lex.terms],
                ids=list(range(len(lex))),
                flags=[flags] * len(lex),
            )
        except hyperscan.error as e:
            raise RecipeError(f"lexicon {lex.name}: cannot compile terms: {e}") from None
        self._db = db
        self._weights = np.asarray(lex.weights, dtype=np.float64)
        cats = sorted({c for c in lex.categories if c})
        self._cat_names = cats
        self._term_cat = np.asarray([cats.index(c) if c else -1 for c in lex.categories], dtype=np.int64)

    def _unpicklable(self) -> Sequence[str]:
        return ("_db",)

    def find(self, texts: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
        """(document index, term index) of every whole-word hit in ``texts``."""
        if pa.types.is_large_string(texts.type):
            offsets = np.frombuffer(texts.buffers()[1], dtype=np.int64)
        else:
            offsets = np.frombuffer(texts.buffers()[1], dtype=np.int32)
        offsets = offsets[texts.offset : texts.offset + len(texts) + 1].astype(np.int64)
        data_buf = texts.buffers()[2]
        empty = np.zeros(0, dtype=np.int64)
        if data_buf is None or offsets[-1] == offsets[0]:
            return empty, empty
        lo, hi = int(offsets[0]), int(offsets[-1])
        data = memoryview(data_buf).cast("B")  # unsigned bytes (pyarrow exposes signed)
        hits: list[tuple[int, int, int]] = []
        append = hits.append

        def on_match(term: int, start: int, end: int, flags: int, ctx: object) -> None:
            append((term, start, end))

        self._db.scan(data[lo:hi], match_event_handler=on_match)  # type: ignore[type-var]
        if not hits:
            return empty, empty
        h = np.asarray(hits, dtype=np.int64)
        term, start, end = h[:, 0], h[:, 1] + lo, h[:, 2] + lo
        doc = np.searchsorted(offsets, start, side="right") - 1
        doc_start, doc_end = offsets[doc], offsets[doc + 1]
        ok = end <= doc_end  # a match may run across two documents in the shared buffer
        raw = np.frombuffer(data_buf, dtype=np.uint8)
        # boundary before the match
        at_start = start == doc_start
        prev = raw[np.maximum(start - 1, 0)]
        before_ok = at_start | ((prev < 0x80) & ~_ASCII_WORD[prev])
        for i in np.nonzero(~at_start & (prev >= 0x80) & ok)[0]:
            before_ok[i] = not _is_word_char(_char_before(data, int(start[i]), int(doc_start[i])))
        # boundary after the match
        at_end = end >= doc_end
        nxt = raw[np.minimum(end, len(raw) - 1)]
        after_ok = at_end | ((nxt < 0x80) & ~_ASCII_WORD[nxt])
        for i in np.nonzero(~at_end & (nxt >= 0x80) & ok)[0]:
            after_ok[i] = not _is_word_char(_char_after(data, int(end[i])))
        keep = ok & before_ok & after_ok
        return doc[keep], term[keep]

    def score(self, texts: pa.StringArray) -> Mapping[str, Any]:
        n = len(texts)
        doc, term = self.find(texts)
        hits = np.bincount(doc, minlength=n).astype(np.int32)
        score = np.bincount(doc, weights=self._weights[term], minlength=n)
        per_1k = np.zeros(n, dtype=np.float64)
        has = np.nonzero(hits)[0]
        if len(has):
            words = pc.list_value_length(pc.utf8_split_whitespace(texts.take(pa.array(has)))).to_numpy()
            per_1k[has] = 1000.0 * hits[has] / np.maximum(words, 1)
        # categories: unique (doc, category) pairs, as a list array
        ncat = len(self._cat_names)
        cat = self._term_cat[term]
        sel = cat >= 0
        pairs = np.unique(doc[sel] * max(ncat, 1) + cat[sel])
        pdoc, pcat = pairs // max(ncat, 1), pairs % max(ncat, 1)
        list_offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.bincount(pdoc, minlength=n), out=list_offsets[1:])
        values = pa.array(np.asarray(self._cat_names, dtype=object)[pcat] if len(pcat) else [], pa.string())
        categories = pa.ListArray.from_arrays(pa.array(list_offsets), values)
        return {"hits": hits, "score": score, "per_1k_words": per_1k, "categories": categories}
