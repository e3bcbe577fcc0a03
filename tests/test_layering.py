"""The package graph is layered: every import (function-local ones too) runs down the floors
below, and no modules import each other in a circle.

Floors, lowest first; a package may import its own floor's and any lower floor's packages.
``step``, ``result``, ``fidelity`` and ``serving`` are the floors the design names for
packages still to come.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parent.parent / "clustersim"

FLOORS = [
    ("units", "errors", "_numba", "version"),
    ("config",),
    ("hardware",),
    ("topology",),
    ("network",),
    ("collectives",),
    ("engine",),
    ("workload",),
    ("step",),
    ("result",),
    ("fidelity",),
    ("serving",),
    ("experiment",),
    ("validate",),
    ("calibrate",),
    ("cli", "__main__"),
]
FLOOR_OF = {name: level for level, names in enumerate(FLOORS) for name in names}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The clustersim modules ``path`` imports anywhere in its code (not in docstrings)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                      else node.module for a in node.names}
    return {m for m in found if m in modules}


def _graph() -> nx.DiGraph:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    G = nx.DiGraph()
    G.add_nodes_from(paths)
    for name, path in paths.items():
        G.add_edges_from((name, target) for target in _imports(path, set(paths)))
    return G


def _floor(module: str) -> int | None:
    parts = module.split(".")
    return FLOOR_OF.get(parts[1]) if len(parts) > 1 else None


def test_every_package_has_a_floor():
    unplaced = sorted({m.split(".")[1] for m in _graph() if "." in m and _floor(m) is None})
    assert not unplaced, f"place these packages in FLOORS: {unplaced}"


def test_no_import_runs_up_a_floor():
    upward = [f"{a} -> {b}" for a, b in _graph().edges
              if _floor(a) is not None and _floor(b) is not None and _floor(a) < _floor(b)]
    assert not upward, "imports that run up a floor:\n" + "\n".join(sorted(upward))


def test_the_top_package_is_imported_by_no_module():
    # `clustersim/__init__.py` lazily reaches the runner; a module importing it would be a
    # way back up
    importers = sorted(_graph().predecessors("clustersim"))
    assert not importers, f"these import the top package: {importers}"


def test_no_modules_import_each_other_in_a_circle():
    circles = [sorted(c) for c in nx.strongly_connected_components(_graph()) if len(c) > 1]
    assert not circles, f"import circles: {circles}"
