"""The import contracts CI checks: stages as layers (.importlinter, run with the real lint-imports) and
no private name of one module imported by another."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CODE = [REPO / d for d in ("entasis", "dags", "plugins", "spark_jobs", "bench")]


def test_layers_contract_is_kept() -> None:
    exe = Path(sys.executable).with_name("lint-imports")
    assert exe.exists(), f"{exe} missing: import-linter is pinned in requirements.txt (make venv installs it)"
    r = subprocess.run([str(exe), "--no-cache", "--config", str(REPO / ".importlinter")], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def _rel(p: Path) -> Path:
    return p.relative_to(REPO) if p.is_relative_to(REPO) else p


def _private_imports(root: Path) -> list[str]:
    """`from entasis.x import _name` and `module._name` on an imported entasis module, outside tests."""
    found = []
    for p in sorted(root.rglob("*.py")):
        tree = ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
        modules: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("entasis") and not node.level:
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        found.append(f"{_rel(p)}:{node.lineno} imports {node.module}.{a.name}")
                    modules.add(a.asname or a.name)
            elif isinstance(node, ast.Import):
                modules |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("entasis")}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in modules):
                found.append(f"{_rel(p)}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def test_no_private_name_crosses_a_module() -> None:
    found = [f for root in CODE if root.exists() for f in _private_imports(root)]
    assert found == [], "private names used across modules (make them public or move them):\n" + "\n".join(found)


def test_the_private_import_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("from entasis.demo import _x\nimport entasis.demo as d\nd._y()\n")
    got = _private_imports(tmp_path)
    assert len(got) == 2 and "entasis.demo._x" in got[0] and "d._y" in got[1]
