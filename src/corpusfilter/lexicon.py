"""Lexicons: plain text, one term per line, optional ``<TAB>weight<TAB>category``.

In a file, a line starting with ``#`` is a comment and a leading ``\\`` is dropped from a term, so
``\\#StopAI`` is the term ``#StopAI``. Inline term lists (:func:`parse_terms`) have neither.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from corpusfilter.errors import RecipeError

_WS = re.compile(r"\s+")

#: Case pairs newer than hyperscan's Unicode tables: the keyword matcher does not fold these
#: characters to their partners (test_keyword checks :func:`match_key` against hyperscan).
_UNFOLDED = re.compile(
    "[\u13f8-\u13fd\u1c80-\u1c88\u1c90-\u1cba\u1cbd-\u1cbf\u2c2f\ua7ae\ua7b2-\ua7b4\ua7b6\ua7b8"
    "\ua7ba\ua7bc\ua7be\ua7c0\ua7c2\ua7c4-\ua7c7\ua7c9\ua7d0\ua7d6\ua7d8\ua7f5\uab70-\uabbf"
    "\U000104b0-\U000104d3\U00010570-\U0001057a\U0001057c-\U0001058a\U0001058c-\U00010592"
    "\U00010594-\U00010595\U00010c80-\U00010cb2\U00016e40-\U00016e5f\U0001e900-\U0001e921]"
)


def _fold(ch: str) -> str:
    if _UNFOLDED.match(ch):
        return ch
    folded = ch.casefold()
    if len(folded) == 1:
        return folded
    lower = ch.lower()  # full folds (ß -> ss) are not applied; ẞ still matches ß
    return lower if len(lower) == 1 else ch


def match_key(term: str) -> str:
    """``term`` under the keyword matcher's case folding (hyperscan's caseless, one character to one):
    terms with equal keys match the same text, others never match the same text."""
    return term.lower() if term.isascii() else "".join(map(_fold, term))


@dataclass(frozen=True)
class Lexicon:
    """Normalized terms with weights and categories; ``sha256`` identifies the exact content used."""

    name: str
    terms: tuple[str, ...]
    weights: tuple[float, ...]
    categories: tuple[str, ...]
    sha256: str

    def __len__(self) -> int:
        return len(self.terms)


def shipped_lexicons() -> list[str]:
    """Names of the lexicons shipped in the package."""
    folder = resources.files("corpusfilter") / "lexicons"
    return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".txt"))


def _parse_entry(entry: str, where: str, default_category: str, *, unescape: bool) -> tuple[str, float, str]:
    parts = entry.split("\t")
    if len(parts) > 3:
        raise RecipeError(f"{where}: expected term[<TAB>weight[<TAB>category]]")
    term = parts[0].strip()
    if unescape and term.startswith("\\"):
        term = term[1:]
    term = _WS.sub(" ", term).strip()
    if not term:
        raise RecipeError(f"{where}: empty term")
    weight = 1.0
    if len(parts) >= 2 and parts[1].strip():
        try:
            weight = float(parts[1])
        except ValueError:
            raise RecipeError(f"{where}: weight {parts[1]!r} is not a number") from None
        if not weight > 0:
            raise RecipeError(f"{where}: weight must be positive")
    cat = parts[2].strip() if len(parts) == 3 else default_category
    return term, weight, cat


def _make(name: str, rows: Iterable[tuple[str, str, float, str]]) -> Lexicon:
    """A lexicon from ``(where, term, weight, category)`` rows; a duplicate under match_key is an error."""
    terms: list[str] = []
    weights: list[float] = []
    cats: list[str] = []
    seen: dict[str, str] = {}
    for where, term, weight, cat in rows:
        key = match_key(term)
        if key in seen:
            raise RecipeError(f"lexicon {name}, {where}: duplicate of {seen[key]} ({term!r})")
        seen[key] = where
        terms.append(term)
        weights.append(weight)
        cats.append(cat)
    if not terms:
        raise RecipeError(f"lexicon {name}: no terms")
    digest = hashlib.sha256(
        "\n".join(f"{t}\t{w!r}\t{c}" for t, w, c in zip(terms, weights, cats)).encode()
    ).hexdigest()
    return Lexicon(name, tuple(terms), tuple(weights), tuple(cats), digest)


def parse_lexicon(text: str, *, name: str, default_category: str = "") -> Lexicon:
    """Parse lexicon file text (``#`` comments, ``\\`` escape); a malformed line is an error naming the
    lexicon and line number."""

    def rows() -> Iterable[tuple[str, str, float, str]]:
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            where = f"line {lineno}"
            yield (where, *_parse_entry(line, f"lexicon {name}, {where}", default_category, unescape=True))

    return _make(name, rows())


def parse_terms(items: Sequence[str], *, name: str) -> Lexicon:
    """Inline terms, each ``term[<TAB>weight[<TAB>category]]`` taken as is: no comments, no escapes;
    an empty item is an error."""
    return _make(
        name,
        (
            (f"item {i}", *_parse_entry(item, f"lexicon {name}, item {i}", "", unescape=False))
            for i, item in enumerate(items, 1)
        ),
    )


def names_a_file(spec: str) -> bool:
    """Whether a path-or-name value (a lexicon, a model) is a file path: it has a separator or a file
    extension (``my.lex``, ``model.bin``); shipped names (``virtue``, ``static-minilm``) have neither."""
    return "/" in spec or "\\" in spec or bool(Path(spec).suffix)


def load_lexicon(spec: str, *, base_dir: Path | None = None) -> Lexicon:
    """A shipped lexicon by name (``virtue``) or a file by path (relative to ``base_dir``)."""
    if not names_a_file(spec):
        res = resources.files("corpusfilter") / "lexicons" / f"{spec}.txt"
        if not res.is_file():
            raise RecipeError(
                f"unknown lexicon {spec!r} (shipped: {', '.join(shipped_lexicons())}; or give a path)"
            )
        return parse_lexicon(res.read_text(encoding="utf-8"), name=spec)
    path = Path(spec)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"lexicon file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise RecipeError(f"lexicon file {path} is not UTF-8 (byte {e.start})") from None
    return parse_lexicon(text, name=str(path))


def select_categories(lex: Lexicon, categories: list[str]) -> Lexicon:
    """The terms of ``lex`` in ``categories``; an unknown category is an error listing the known ones."""
    known = sorted({c for c in lex.categories if c})
    unknown = [c for c in categories if c not in known]
    if unknown:
        raise RecipeError(f"lexicon {lex.name}: no category {unknown[0]!r} (categories: {', '.join(known)})")
    rows = zip(lex.terms, lex.weights, lex.categories)
    return _make(
        f"{lex.name}[{','.join(categories)}]",
        ((f"term {i}", t, w, c) for i, (t, w, c) in enumerate(rows, 1) if c in categories),
    )
