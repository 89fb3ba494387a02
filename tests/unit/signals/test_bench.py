"""Smoke run of bench/signals.py at tiny sizes: the injected crash is found, the JSON line is well formed."""

from __future__ import annotations

import json

import pytest

from tests.bench_loader import load_bench


def test_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    res = load_bench("signals").main(["--assets", "2", "--repeat", "2", "--crashes", "1"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == res
    assert last["bench"] == "signals_flashcrash" and isinstance(last["met"], bool) and last["target"] == 10.0
    assert last["ratio"] == pytest.approx(last["metric"] / last["reference"], rel=1e-3)
    assert last["events"] == last["injected"] == 1 and last["bars"] == 2 * 1440
    assert last["met"] is (last["metric"] <= last["target"])  # met computed from the figures


def test_levels_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    res = load_bench("signals").main(["--bench", "levels", "--bars", "400", "--repeat", "2"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == res
    assert last["bench"] == "signals_levels" and last["identical"] is True and last["target"] == 10.0
    assert isinstance(last["met"], bool) and last["bars"] == 400
    assert last["met"] is (last["metric"] <= last["target"] and last["identical"])
    assert last["ratio"] == pytest.approx(last["metric"] / last["reference"], rel=1e-3)
