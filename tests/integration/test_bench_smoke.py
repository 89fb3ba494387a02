"""Every benchmark this module covers runs at its ``--smoke`` size and ends with its JSON line: the keys
``make bench`` promises, ratio = metric / reference, and ``met`` recomputed here from the figures by the
bench's own rule (a bench that printed ``met`` without computing it would fail)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
KEYS = {"bench", "metric", "reference", "ratio", "target", "met"}


def _met_backtest(r: dict[str, Any]) -> bool:
    return r["ratio"] <= 0.1


def _met_sim(r: dict[str, Any]) -> bool:
    return r["metric"] <= r["target"]


def _met_options(r: dict[str, Any]) -> bool:
    return (r["metric"] <= 2 and r["reference"] / r["metric"] >= 1000 and r["heston_us_per_option"] <= 50
            and all(v <= 2 for v in r["calibration_s"].values()))


def _met_publish(r: dict[str, Any]) -> bool:
    return r["ratio"] <= 2


def _met_collect(r: dict[str, Any]) -> bool:
    return r["ratio"] >= 0.25


def _met_train(r: dict[str, Any]) -> bool:
    return r["metric"] <= r["target"]


def _met_signals(r: dict[str, Any]) -> bool:
    return r["metric"] <= r["target"]


# script, whether it needs a migrated database, its bench name, the rule for met
CASES: list[tuple[str, bool, str, Callable[[dict[str, Any]], bool]]] = [
    ("backtest", False, "backtest", _met_backtest),
    ("sim", False, "sim", _met_sim),
    ("options", False, "options", _met_options),
    ("publish", True, "publish", _met_publish),
    ("collect", True, "collect", _met_collect),
    ("train", False, "train", _met_train),
    ("signals", False, "signals_flashcrash", _met_signals),  # its own tests (tests/unit/signals) run both benches
]


def _last_json(stdout: str) -> dict[str, Any]:
    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    assert lines, "the bench printed nothing"
    return json.loads(lines[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize(("script", "needs_db", "name", "rule"), CASES, ids=[c[0] for c in CASES])
def test_bench_smoke(script: str, needs_db: bool, name: str, rule: Callable[[dict[str, Any]], bool],
                     request: pytest.FixtureRequest, tmp_path: Path) -> None:
    cmd = [sys.executable, str(REPO / "bench" / f"{script}.py"), "--smoke"]
    env = None
    if needs_db:
        import os

        url = request.getfixturevalue("db_url")  # a fresh migrated database instead of a server of its own
        cmd += ["--database-url", url]
        env = {**os.environ, "ENTASIS_HOME": str(tmp_path / "home")}
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    r = _last_json(out.stdout)
    assert KEYS <= set(r), sorted(KEYS - set(r))
    assert r["bench"] == name and isinstance(r["met"], bool)
    assert all(isinstance(r[k], int | float) for k in ("metric", "reference", "ratio"))
    assert r["metric"] > 0 and r["reference"] > 0
    assert r["ratio"] == pytest.approx(r["metric"] / r["reference"], rel=0.02, abs=1e-6)
    assert r["met"] is rule(r)
    assert len(out.stdout.strip().splitlines()) > 1  # its table came before the JSON line
