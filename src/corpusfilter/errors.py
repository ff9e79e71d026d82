"""Errors that the CLI reports as one line, without a traceback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class CorpusfilterError(Exception):
    """A problem the user can fix; its message names the file, row or key at fault."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[str]]:
        # Picklable across datatrove's worker processes with the message intact.
        return (type(self), (self.message,))

    def __str__(self) -> str:
        return self.message


class RecipeError(CorpusfilterError):
    """The recipe is invalid: unknown key, wrong type, bad expression, unknown block."""


class InputError(CorpusfilterError):
    """An input file cannot be used at all (missing, unreadable, wrong columns)."""


class AccountingError(CorpusfilterError):
    """Documents read do not equal kept + rejected + unreadable."""


class OutputError(CorpusfilterError):
    """The output folder is not in a state the run may write to."""


@contextmanager
def at_path(path: str) -> Iterator[None]:
    """Prefix a RecipeError raised inside with the recipe key path it concerns."""
    try:
        yield
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first line (libraries append plans and tracebacks), or its
    type's name when it has none: for one-line errors."""
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def read_text_file(path: os.PathLike[str] | str, what: str) -> str:
    """A recipe's or config's text; missing, a folder or not UTF-8 is one RecipeError naming
    ``path`` as ``what`` (``recipe``, ``training config``)."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{what} not found: {p}") from None
    except IsADirectoryError:
        raise RecipeError(f"{p} is a folder, not a {what} file") from None
    except UnicodeDecodeError as e:
        raise RecipeError(f"{p}: not UTF-8 text (byte {e.start}); a {what} is a UTF-8 YAML file") from None
