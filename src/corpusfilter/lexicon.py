"""Lexicons: plain text, one term per line, optional ``<TAB>weight<TAB>category``."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from corpusfilter.errors import RecipeError

_WS = re.compile(r"\s+")


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


def parse_lexicon(text: str, *, name: str, default_category: str = "") -> Lexicon:
    """Parse lexicon text; a malformed line is an error naming the lexicon and line number."""
    terms: list[str] = []
    weights: list[float] = []
    cats: list[str] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) > 3:
            raise RecipeError(f"lexicon {name}, line {lineno}: expected term[<TAB>weight[<TAB>category]]")
        term = _WS.sub(" ", parts[0].strip())
        if not term:
            raise RecipeError(f"lexicon {name}, line {lineno}: empty term")
        weight = 1.0
        if len(parts) >= 2 and parts[1].strip():
            try:
                weight = float(parts[1])
            except ValueError:
                raise RecipeError(
                    f"lexicon {name}, line {lineno}: weight {parts[1]!r} is not a number"
                ) from None
            if not weight > 0:
                raise RecipeError(f"lexicon {name}, line {lineno}: weight must be positive")
        cat = parts[2].strip() if len(parts) == 3 else default_category
        key = term.casefold()
        if key in seen:
            raise RecipeError(f"lexicon {name}, line {lineno}: duplicate of line {seen[key]} ({term!r})")
        seen[key] = lineno
        terms.append(term)
        weights.append(weight)
        cats.append(cat)
    if not terms:
        raise RecipeError(f"lexicon {name}: no terms")
    digest = hashlib.sha256(
        "\n".join(f"{t}\t{w!r}\t{c}" for t, w, c in zip(terms, weights, cats)).encode()
    ).hexdigest()
    return Lexicon(name, tuple(terms), tuple(weights), tuple(cats), digest)


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
    keep = [i for i, c in enumerate(lex.categories) if c in categories]
    body = "\n".join(f"{lex.terms[i]}\t{lex.weights[i]}\t{lex.categories[i]}" for i in keep)
    return parse_lexicon(body, name=f"{lex.name}[{','.join(categories)}]")
