"""Keyword / lexicon detector: whole-word, case-insensitive, Unicode-aware multi-pattern matching.

Hyperscan scans the Arrow string buffer of a whole batch in one call (no per-document Python
strings). Word boundaries are then checked exactly as Python's ``re`` defines them, so a hit is
``(?<!\\w)term(?!\\w)`` under ``re.IGNORECASE``, with internal whitespace matching ``\\s+``, except for
the rare case folds the README lists. Every occurrence of every term counts (two terms may overlap,
e.g. "AI takeover" and "takeover").
"""

from __future__ import annotations

import array
import dataclasses
import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpusfilter.blocks.base import Detector
from corpusfilter.errors import RecipeError, at_path
from corpusfilter.lexicon import Lexicon, load_lexicon, parse_terms, select_categories
from corpusfilter.registry import register

_ASCII_WORD = np.zeros(256, dtype=bool)
for _c in range(128):
    _ASCII_WORD[_c] = chr(_c).isalnum() or chr(_c) == "_"


#: Every character Python's ``re`` counts as ``\s`` (test_keyword checks this list against ``re``).
UNICODE_SPACES = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _byte_space_class() -> str:
    """``\\s`` as a byte-level hyperscan alternation over the UTF-8 encodings of UNICODE_SPACES."""
    singles = "".join(f"\\x{ord(c):02x}" for c in UNICODE_SPACES if ord(c) < 0x80)
    multi = sorted({"".join(f"\\x{b:02x}" for b in c.encode()) for c in UNICODE_SPACES if ord(c) >= 0x80})
    return "(?:[" + singles + "]|" + "|".join(multi) + ")+"


_BYTE_SPACES = _byte_space_class()
#: ``re``'s ``\s`` for hyperscan's UTF-8 mode, whose own ``\s`` differs (U+001C-U+001F, U+180E).
_UTF8_SPACES = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in UNICODE_SPACES) + "]+"


def term_pattern(term: str) -> str:
    """Regex body for one term: escaped tokens joined by ``\\s+``."""
    return r"\s+".join(re.escape(tok) for tok in term.split())


def unicode_term_pattern(term: str) -> str:
    """UTF-8-mode pattern for a non-ASCII term: escaped tokens joined by runs of UNICODE_SPACES."""
    return _UTF8_SPACES.join(re.escape(tok) for tok in term.split())


def ascii_term_pattern(term: str) -> str:
    """Byte-mode pattern for an ASCII term: Unicode whitespace between tokens, ASCII \\b at word edges.

    ASCII \\b is necessary for a Unicode word boundary next to an ASCII word character, so it only
    prunes candidates; the exact check runs after the scan.
    """
    body = _BYTE_SPACES.join(re.escape(tok) for tok in term.split())
    pre = r"\b" if _is_word_char(term[0]) else ""
    post = r"\b" if _is_word_char(term[-1]) else ""
    return pre + body + post


def reference_regex(terms: Sequence[str]) -> list[re.Pattern[str]]:
    """Python ``re`` patterns with the detector's exact semantics (used by tests as the oracle)."""
    return [re.compile(r"(?=(?<!\w)(" + term_pattern(t) + r")(?!\w))", re.IGNORECASE) for t in terms]


def cache_dir() -> Path:
    """Where compiled pattern databases are cached: ``$CORPUSFILTER_CACHE`` or ``~/.cache/corpusfilter``."""
    root = os.environ.get("CORPUSFILTER_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "corpusfilter"
    )
    return Path(root) / "hyperscan"


def compile_cached(patterns: list[bytes], ids: list[int], flags: int, *, name: str) -> Any:
    """Compile a hyperscan block-mode database, reusing a serialized copy keyed by its exact inputs.

    Phrase patterns with Unicode whitespace take seconds to compile; every task of every run would
    otherwise pay that again.
    """
    import hyperscan

    h = hashlib.sha256()
    h.update(f"{hyperscan_version()}|{flags}|{ids}".encode())
    for p in patterns:
        h.update(p + b"\x00")
    path = cache_dir() / f"{h.hexdigest()}.hsdb"
    if path.is_file():
        try:
            db = hyperscan.loadb(path.read_bytes(), mode=hyperscan.HS_MODE_BLOCK)
            db.scratch = hyperscan.Scratch(db)
            return db
        except Exception:  # a corrupt or foreign cache entry: compile afresh
            pass
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    try:
        db.compile(expressions=patterns, ids=ids, flags=[flags] * len(ids))
    except hyperscan.error as e:
        raise RecipeError(f"lexicon {name}: cannot compile terms: {e}") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(hyperscan.dumpb(db))
        os.replace(tmp, path)
    except OSError:  # a read-only home is no reason to fail the run
        pass
    return db


def nul_joined(texts: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
    """The batch's texts as one byte buffer, each followed by a NUL (one C++ pass), and the start of
    each text in it (``n + 1`` entries). Nulls count as empty texts.

    Hyperscan scans it in one call: the NULs make document edges word boundaries, so no match spans
    two documents, and word counting needs no per-document Python.
    """
    if texts.null_count:
        texts = pc.fill_null(texts, "")
    lengths = pc.binary_length(texts).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths + 1, out=starts[1:])
    if len(texts) == 0:
        return np.zeros(0, dtype=np.uint8), starts
    joined = pc.binary_join_element_wise(texts, pa.scalar(""), pa.scalar("\x00"))
    return np.frombuffer(joined.buffers()[2], dtype=np.uint8)[: int(starts[-1])], starts


def word_counts(buf: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Words per document of a batch buffer (documents at ``starts``, each followed by a NUL).

    A word is a maximal run of bytes above 0x20: ASCII whitespace and control characters separate
    words. Word starts are marked, packed into bits and counted with a popcount per 64-bit word, so a
    30 MB batch takes a few milliseconds and no per-document Python.
    """
    if len(buf) == 0:
        return np.zeros(max(len(starts) - 1, 0), dtype=np.int64)
    inside = buf > 32
    first = np.empty(len(buf), dtype=bool)
    first[0] = inside[0]
    np.greater(inside[1:], inside[:-1], out=first[1:])  # inside here, outside just before
    packed = np.packbits(first, bitorder="little")
    packed = np.concatenate([packed, np.zeros((-len(packed)) % 8 + 8, dtype=np.uint8)])
    words64 = packed.view(np.uint64)
    cum = np.zeros(len(words64) + 1, dtype=np.int64)
    np.cumsum(np.bitwise_count(words64), out=cum[1:])
    q = starts // 64
    below = np.left_shift(np.uint64(1), (starts % 64).astype(np.uint64)) - np.uint64(1)
    prefix = cum[q] + np.bitwise_count(words64[q] & below)  # word starts before each position
    return np.diff(prefix)


#: One thread for word counting beside the scan (created lazily by ThreadPoolExecutor).
_WORDS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corpusfilter-words")


def hyperscan_version() -> str:
    from importlib.metadata import version

    return version("hyperscan")


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeywordParams:
    name: str = dataclasses.field(default="keywords", metadata={"help": "column prefix: <name>_hits, ..."})
    lexicon: str | None = dataclasses.field(
        default=None,
        metadata={"help": "shipped lexicon name (virtue, ...) or a path to a lexicon file", "path": True},
    )
    terms: list[str] | None = dataclasses.field(
        default=None, metadata={"help": "inline terms, each 'term[<TAB>weight[<TAB>category]]' (no comments)"}
    )
    categories: list[str] | None = dataclasses.field(
        default=None,
        metadata={"help": "use only the terms of these categories (e.g. [honesty]: one kind of goodness)"},
    )

    def check(self, path: str) -> None:
        if (self.lexicon is None) == (self.terms is None):
            raise RecipeError(f"{path}: give exactly one of 'lexicon' or 'terms'")
        if self.categories is not None and not self.categories:
            raise RecipeError(f"{path}.categories: give at least one category, or leave it out")
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

    Words are maximal runs of bytes above 0x20 (ASCII whitespace and control characters separate
    them); ``per_1k_words`` is 0 for a document without hits.
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
                lex = parse_terms(self.params.terms, name=f"{self.params.name}:inline")
            else:
                lex = load_lexicon(self.params.lexicon)
            if self.params.categories is not None:
                lex = select_categories(lex, self.params.categories)
            self._lexicon = lex
        return lex

    def validate(self, schema: pa.Schema, path: str) -> None:
        super().validate(schema, path)
        with at_path(path):
            self.setup()  # lexicon errors surface at validation; the compiled databases get cached

    def provenance(self) -> dict[str, Any]:
        lex = self.lexicon
        return {"lexicon": lex.name, "lexicon_sha256": lex.sha256, "terms": len(lex)}

    def setup(self) -> None:
        import hyperscan

        lex = self.lexicon
        # ASCII terms compile in byte mode (fast to compile and scan); terms with other characters
        # need hyperscan's Unicode mode for case folding.
        ascii_ids, ascii_pats, uni_ids, uni_pats = [], [], [], []
        for i, t in enumerate(lex.terms):
            if t.isascii():
                ascii_ids.append(i)
                ascii_pats.append(ascii_term_pattern(t).encode())
            else:
                uni_ids.append(i)
                uni_pats.append(unicode_term_pattern(t).encode("utf-8"))
        self._dbs = []
        base = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_SOM_LEFTMOST
        unicode = base | hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_UCP
        for ids, pats, flags in ((ascii_ids, ascii_pats, base), (uni_ids, uni_pats, unicode)):
            if ids:
                self._dbs.append(compile_cached(pats, ids, flags, name=lex.name))
        self._weights = np.asarray(lex.weights, dtype=np.float64)
        cats = sorted({c for c in lex.categories if c})
        self._cat_names = cats
        self._term_cat = np.asarray([cats.index(c) if c else -1 for c in lex.categories], dtype=np.int64)

    def _unpicklable(self) -> Sequence[str]:
        return ("_dbs",)

    def find(self, texts: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
        """(document index, term index) of every whole-word hit in ``texts`` (nulls count as empty)."""
        doc, term, _, _ = self._scan(texts)
        return doc, term

    def _scan(
        self, texts: pa.StringArray, on_buffer: Callable[[np.ndarray, np.ndarray], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Hits as (document, term), plus the NUL-separated batch buffer and each document's start in it."""
        empty = np.zeros(0, dtype=np.int64)
        buf, sep = nul_joined(texts)
        if len(buf) == len(texts):  # nothing but the NULs: no text at all
            return empty, empty, buf, sep
        lengths = np.diff(sep) - 1
        if on_buffer is not None:
            on_buffer(buf, sep)
        data = memoryview(buf.data)
        hits = array.array("q")

        def on_match(
            term: int, start: int, end: int, flags: int, ctx: object, extend: Any = hits.extend
        ) -> None:
            extend((term, start, end))  # the hot path: one call per candidate, nothing else here

        for db in self._dbs:
            db.scan(data, match_event_handler=on_match)
        if not hits:
            return empty, empty, buf, sep
        h = np.frombuffer(hits, dtype=np.int64).reshape(-1, 3)
        term, start, end = h[:, 0], h[:, 1], h[:, 2]
        doc = np.searchsorted(sep, start, side="right") - 1
        doc_start, doc_end = sep[doc], sep[doc] + lengths[doc]
        ok = end <= doc_end
        # exact boundaries as Python's re defines \w; the byte before a document is NUL (non-word)
        prev = buf[np.maximum(start - 1, 0)]
        before_ok = (start == doc_start) | ((prev < 0x80) & ~_ASCII_WORD[prev])
        for i in np.nonzero(~before_ok & (prev >= 0x80) & ok)[0]:
            before_ok[i] = not _is_word_char(_char_before(data, int(start[i]), int(doc_start[i])))
        nxt = buf[np.minimum(end, len(buf) - 1)]
        after_ok = (end >= doc_end) | ((nxt < 0x80) & ~_ASCII_WORD[nxt])
        for i in np.nonzero(~after_ok & (nxt >= 0x80) & ok)[0]:
            after_ok[i] = not _is_word_char(_char_after(data, int(end[i])))
        keep = ok & before_ok & after_ok
        return doc[keep], term[keep], buf, sep

    def score(self, texts: pa.StringArray) -> Mapping[str, Any]:
        n = len(texts)
        words: Future[np.ndarray] | None = None

        def count_words(buf: np.ndarray, sep: np.ndarray) -> None:
            nonlocal words  # numpy releases the GIL: words are counted while hyperscan scans
            words = _WORDS.submit(word_counts, buf, sep)

        doc, term, buf, sep = self._scan(texts, on_buffer=count_words)
        hits = np.bincount(doc, minlength=n).astype(np.int32)
        score = np.bincount(doc, weights=self._weights[term], minlength=n)
        per_1k = np.zeros(n, dtype=np.float64)
        has = np.nonzero(hits)[0]
        counts = words.result() if words is not None else word_counts(buf, sep)
        if len(has):
            per_1k[has] = 1000.0 * hits[has] / np.maximum(counts[has], 1)
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
