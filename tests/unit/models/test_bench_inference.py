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
    for key in ("trees_us", "trees_model_only_us", "trees_reference_us"):
        assert set(last[key]) == {"rf", "xgb", "lgbm"} and all(v > 0 for v in last[key].values()), key
    # trees together = the ensemble's shared-view path; the reference = the three pre-issue-14 context paths
    assert last["trees_total_us"] > 0 and last["trees_shared_matrix"] is True
    assert last["trees_reference_total_us"] == pytest.approx(sum(last["trees_reference_us"].values()), abs=0.02)
    assert last["trees_speedup"] == pytest.approx(last["trees_reference_total_us"] / last["trees_total_us"], rel=0.01)
    assert last["met"] == (last["ratio"] <= 2.0 and last["trees_total_us"] <= 20.0)


def test_context_path_reference_is_the_members_forecast() -> None:
    """The bench's reference path (what every tree member ran before issue 14) forecasts what the fast path
    forecasts, including the ineligible (warmup) rows' NaN: the bench asserts it, here it is pinned once."""
    import numpy as np

    from entasis.models.datasets import split_frame
    from entasis.models.factory import build_model

    from ._synth import FEATS, TARGET, TINY, frame

    sp = split_frame(frame(0.6, n_days=160), 7)
    rows = sp.test.copy()
    rows["warmup"] = np.arange(len(rows)) % 4 == 0
    for name in ("rf", "xgb", "lgbm"):
        m = build_model(name, features=FEATS, **TINY[name]).fit(sp.train, TARGET, valid=sp.valid)
        ref = _bench().context_path_proba(m, rows).to_numpy()
        assert np.isnan(ref[rows["warmup"].to_numpy()]).all() and np.isfinite(ref[~rows["warmup"].to_numpy()]).all()
        np.testing.assert_array_equal(m.predict_proba(rows).to_numpy(), ref)
