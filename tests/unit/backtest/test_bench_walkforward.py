"""Smoke run of bench/walkforward.py at tiny sizes (real shared data), and its pass rule as a boundary table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.bench_loader import load_bench


def _bench() -> Any:
    return load_bench("walkforward")


def test_bench_smoke(shared_data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from entasis.config import get_settings

    monkeypatch.setenv("ENTASIS_SHARED_DATA", str(shared_data))
    get_settings.cache_clear()
    res = _bench().main(["--quick", "--workers", "2"])
    out = capsys.readouterr().out
    last = json.loads(out.strip().splitlines()[-1])
    assert last == res
    assert {"bench", "metric", "reference", "ratio", "target", "met"} <= set(last)
    assert last["bench"] == "walk_forward_pooled_monthly" and last["metric"] > 0 and last["reference"] > 0
    assert last["ratio"] == pytest.approx(last["reference"] / last["metric"], abs=0.02)
    assert last["met"] == (last["ratio"] >= 10 and last["est_24_refits_s"] <= 180)   # no full run in a smoke
    assert last["cpu_s"]["reference"] > 0 and last["cpu_s"]["ours"] > 0
    assert "reference" in out and "ours" in out


@pytest.mark.parametrize(("ref", "new", "full", "btc", "met"), [
    (100.0, 10.0, 180.0, None, True),      # exactly 10x and exactly 180 s
    (99.9, 10.0, 100.0, None, False),      # just under 10x
    (100.0, 10.0, 180.1, None, False),     # full run just over
    (100.0, 10.0, None, None, True),       # no full run: the extrapolated 150 s decides
    (100.0, 10.0, 100.0, 300.0, True),     # BTC weekly exactly at its limit
    (100.0, 10.0, 100.0, 300.1, False),
])
def test_met_is_computed_from_the_figures(ref: float, new: float, full: float | None, btc: float | None,
                                          met: bool) -> None:
    r = _bench().evaluate(ref, new, full, 150.0, btc)
    assert r["met"] is met
    assert r["ratio"] == round(ref / new, 2)
