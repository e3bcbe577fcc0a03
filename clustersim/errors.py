"""Errors users can act on: what was wrong, where, and what is allowed.

``InputError`` is bad user input (exit code 2, one line, no traceback); ``InputErrors`` carries
several at once, so a sweep can list every problem before anything runs.

>>> str(InputError("unknown key 'tq'; did you mean 'tp'?", file="exp.yaml", line=7, col=5))
"exp.yaml:7:5: unknown key 'tq'; did you mean 'tp'?"
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["InputError", "InputErrorAt", "InputErrors", "closest", "unknown_name", "lookup"]


class InputError(Exception):
    """A problem in what the user gave us; printed as ``file:line:col: message``."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 col: int | None = None):
        super().__init__(message)
        self.message, self.file, self.line, self.col = message, file, line, col

    def located(self, file: str | None = None, line: int | None = None,
                col: int | None = None) -> InputError:
        """The same error with a location filled in where it had none."""
        return InputError(self.message, self.file or file, self.line or line, self.col or col)

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line, self.col) if p is not None)
        return f"{where}: {self.message}" if where else self.message


class InputErrorAt(InputError):
    """An InputError about the value at ``at``, a path into the experiment's data
    (``("jobs", 1, "placement")``), for code that sees the validated values but not the file:
    whoever holds the file turns the path into ``file:line:col``.

    >>> InputErrorAt("overlaps job 'a'", at=("jobs", 1, "placement")).at
    ('jobs', 1, 'placement')
    """

    def __init__(self, message: str, at: tuple = ()):
        super().__init__(message)
        self.at = tuple(at)


class InputErrors(InputError):
    """Several input errors reported together, one per line."""

    def __init__(self, errors: Iterable[InputError]):
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The names in ``choices`` that look most like ``name``.

    >>> closest("h100", ["h100-sxm-80gb", "h200", "a100-sxm-80gb"])
    ['h200', 'h100-sxm-80gb']
    """
    choices = list(choices)
    found = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    found += [c for c in choices if name and c.startswith(name) and c not in found]
    return found[:n]


def unknown_name(what: str, name: str, choices: Iterable[str]) -> InputError:
    """The error for a preset or key that does not exist, suggesting the closest ones.

    >>> str(unknown_name("device preset", "h10", ["h100-sxm-80gb", "h200"]))
    "unknown device preset 'h10'; did you mean 'h200' or 'h100-sxm-80gb'? (see `clustersim presets`)"
    """
    choices = sorted(choices)
    near = closest(name, choices)
    if near:
        hint = "did you mean " + " or ".join(repr(c) for c in near) + "?"
    else:
        hint = "allowed: " + ", ".join(choices[:20]) + (" ..." if len(choices) > 20 else "")
    return InputError(f"unknown {what} {name!r}; {hint} (see `clustersim presets`)")


def lookup(table: dict, name: str, what: str):
    """``table[name]``, or the unknown-name error for a ``what`` (suggesting the closest).

    >>> lookup({"h200": 1}, "h200", "device preset")
    1
    """
    if name not in table:
        raise unknown_name(what, name, table)
    return table[name]
