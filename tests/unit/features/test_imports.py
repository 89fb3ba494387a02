"""The features package imports form no cycle, and reaches into no other module's private names.

Read from the source (function-local imports included), so a cycle hidden inside a function body
fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import entasis.features

PKG = Path(entasis.features.__file__).resolve().parent


def _imports() -> dict[str, set[tuple[str, str]]]:
    """module -> {(imported module, imported name)} for imports inside entasis.features."""
    out: dict[str, set[tuple[str, str]]] = {}
    for f in PKG.glob("*.py"):
        mod = f.stem
        deps: set[tuple[str, str]] = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "entasis.features":
                    deps |= {(a.name, "") for a in node.names}
                elif node.module.startswith("entasis.features."):
                    deps |= {(node.module.split(".")[2], a.name) for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {(a.name.split(".")[2], "") for a in node.names if a.name.startswith("entasis.features.")}
        out[mod] = deps
    return out


def test_no_import_cycle_in_features() -> None:
    graph = {m: {d for d, _ in deps if d != m} for m, deps in _imports().items()}
    assert {"plan", "build", "spark_job", "compute"} <= set(graph)
    assert "build" not in graph["spark_job"] and "spark_job" in graph["build"]
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        if state.get(m) == 2:
            return
        assert state.get(m) != 1, f"import cycle: {' -> '.join([*path, m])}"
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            visit(d, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        visit(m, [])


def test_no_private_names_imported_across_features_modules() -> None:
    bad = sorted((m, d, n) for m, deps in _imports().items() for d, n in deps if n.startswith("_"))
    assert bad == []
