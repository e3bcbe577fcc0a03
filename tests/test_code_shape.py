"""The shape rules of STYLE.md and issue 11, checked on every module of the package: no
function longer than 80 lines, and an import inside a function only with a one-line reason
(a ``#`` comment on its line or above it in its function), because a hidden import hides an arrow of
the package graph (tests/test_layering.py checks the arrows themselves)."""

from __future__ import annotations

import ast
from pathlib import Path

import clustersim

PACKAGE = Path(clustersim.__file__).parent
MAX_LINES = 80


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, path.read_text().splitlines(), ast.parse(path.read_text())


def _functions(tree):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_no_function_is_longer_than_80_lines():
    long = [f"{path.relative_to(PACKAGE)}:{f.lineno} {f.name} ({f.end_lineno - f.lineno + 1})"
            for path, _, tree in _modules() for f in _functions(tree)
            if f.end_lineno - f.lineno + 1 > MAX_LINES]
    assert not long, long


def _says_why(lines, i: int, top: int) -> bool:
    """A comment on the import's line, or above it in the same function (one comment may
    give the reason for a function's lazy imports)."""
    return "#" in lines[i] or any(line.strip().startswith("#") for line in lines[top:i])


def test_every_function_local_import_says_why():
    silent = []
    for path, lines, tree in _modules():
        for f in _functions(tree):
            for node in ast.walk(f):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and not _says_why(
                        lines, node.lineno - 1, f.lineno - 1):
                    silent.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not silent, silent
