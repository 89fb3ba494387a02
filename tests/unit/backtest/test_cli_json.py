"""``entasis backtest ... --json PATH`` (issue 12 item 7): without ``--models`` it evaluates the product
configuration (the stacked ensemble of ``train.models`` and its members) and writes, per horizon, per
model and baseline, n, accuracy, balanced accuracy, log-loss, Brier, ECE, and each model's Δ vs the best
baseline with its CI — the same numbers the walk-forward computed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.unit.models.test_volatility_har import _candles

METRICS = {"n", "accuracy", "balanced_accuracy", "log_loss", "brier", "ece"}
BASELINES = {"majority", "trailing_majority", "persistence", "always_bullish", "momentum", "trailing_freq"}


def test_backtest_json_product_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from entasis.cli import app
    from entasis.config import get_settings

    for i, name in enumerate(("AAAUSDT_1d.csv", "BBBUSDT_1d.csv")):
        c = _candles(700, 40 + i, start="2019-01-01", vol0=0.03 + 0.01 * i)
        c.assign(timestamp=c["ts"].dt.strftime("%Y-%m-%d"))[["timestamp", "open", "high", "low", "close",
                                                             "volume"]].to_csv(tmp_path / name, index=False)
    # the product's members, the LSTM made tiny so the smoke run stays short
    monkeypatch.setenv("ENTASIS_TRAIN__SEQ_LEN", "10")
    monkeypatch.setenv("ENTASIS_TRAIN__MAX_EPOCHS", "2")
    monkeypatch.setenv("ENTASIS_TRAIN__MEMBER_PARAMS",
                       json.dumps({"lstm": {"hidden": [8], "dense": 8, "batch_size": 256, "num_threads": 1}}))
    get_settings.cache_clear()
    out = tmp_path / "out" / "bt.json"
    args = ["backtest", "--csv", str(tmp_path), "--asset", "AAA/USDT", "--asset", "BBB/USDT", "--horizon", "7",
            "--horizon", "14", "--start", "2020-06-01", "--end", "2020-08-31", "--refit-days", "60",
            "--n-estimators", "10", "--n-jobs", "1", "--n-boot", "100", "--no-report", "--json", str(out)]
    try:
        res = CliRunner().invoke(app, args, terminal_width=200)
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert set(data["horizons"]) == {"7", "14"}
    members = set(get_settings().train.models)
    for h, block in data["horizons"].items():
        assert block["horizon"] == int(h) and block["symbols"] == ["AAA/USDT", "BBB/USDT"]
        models, baselines = block["models"], block["baselines"]
        assert {"ensemble", "ensemble:fixed", "ensemble:base_rate", *members} <= set(models)
        assert BASELINES <= set(baselines)
        n = models["ensemble"]["n"]
        assert n > 50
        for row in [*models.values(), *baselines.values()]:
            assert METRICS <= set(row) and row["n"] == n
            assert 0 <= row["accuracy"] <= 1 and 0 <= row["ece"] <= 1 and row["log_loss"] > 0
        best = block["best_baseline"]
        best_ll = min(baselines, key=lambda b: baselines[b]["log_loss"])
        assert best["log_loss"] == "baseline:" + best_ll
        assert best["accuracy"] == "baseline:" + max(baselines, key=lambda b: baselines[b]["accuracy"])
        for m, row in models.items():
            for metric in ("log_loss", "accuracy", "balanced_accuracy"):
                d = row[f"d_{metric}_vs_best"]
                assert d["baseline"] == best[metric]
                assert d["lo"] <= d["estimate"] <= d["hi"], (m, metric, d)
            # the Δ is the model's score minus the best baseline's, on the same rows
            dll = row["d_log_loss_vs_best"]["estimate"]
            assert dll == pytest.approx(row["log_loss"] - baselines[best_ll]["log_loss"], abs=1e-9)
            dacc = row["d_accuracy_vs_best"]["estimate"]
            acc_b = baselines[best["accuracy"].removeprefix("baseline:")]["accuracy"]
            assert dacc == pytest.approx(row["accuracy"] - acc_b, abs=1e-9)
