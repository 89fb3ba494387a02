"""Smoke run of bench/inference.py at tiny sizes: the JSON line, ``met`` from the figures, the FLOP count."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.bench_loader import load_bench


def _bench() -> Any:
    return load_bench("inference")


def test_flop_count_matches_the_networks_weights() -> None:
    """2 FLOPs per weight per step for every LSTM layer (4 gates x (input + hidden) x hidden), then the head."""
    from entasis.models.lstm import build_net

    b = _bench()
    n_in, assets, hidden, dense, steps = 40, 16, [128, 64, 32], 16, 90
    net = build_net(n_in, assets, 3, hidden, 0.0, dense)
    lstm_w = sum(p.numel() for name, p in net.lstms.named_parameters() if "weight" in name)
    head_w = sum(p.numel() for name, p in net.head.named_parameters() if "weight" in name)
    assert b.lstm_flops(n_in, hidden, steps, assets, dense) == 2 * steps * lstm_w + 2 * head_w
    assert 24e6 < b.lstm_flops(n_in, hidden, steps, assets, dense) < 28e6   # the issue's ~25 MFLOP/sample


def test_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    res = _bench().main(["--quick"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == res
    assert {"bench", "metric", "reference", "ratio", "target", "met"} <= set(last)
    assert last["bench"] == "inference_lstm_vs_flop_bound" and last["gflops"] > 0
    assert last["ratio"] == pytest.approx(last["metric"] / last["reference"], rel=0.01)
    assert set(last["trees_us"]) == {"rf", "xgb", "lgbm"}
    assert last["met"] == (last["ratio"] <= 2.0 and last["trees_total_us"] <= 20.0)
