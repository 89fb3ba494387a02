"""Smoke run of bench/model_quality.py at tiny sizes (two synthetic assets, three refits, 10 trees): the
product configuration is walked forward beside every baseline and the last line is the bench JSON line."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.bench_loader import load_bench
from tests.unit.models.test_volatility_har import write_candle_csvs

KEYS = {"bench", "metric", "reference", "ratio", "target", "met"}


def _bench() -> ModuleType:
    return load_bench("model_quality")


def test_bench_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_candle_csvs(tmp_path, 820, 30, 0.01)
    out = tmp_path / "res.json"
    res = _bench().main(["--data", str(tmp_path), "--horizons", "7", "--start", "2020-10-01", "--end", "2021-02-28",
                         "--refit-days", "60", "--n-boot", "50", "--n-jobs", "1", "--n-estimators", "10",
                         "--no-shuffled", "--json", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    last = json.loads(lines[-1])
    assert set(last) == KEYS
    assert last["bench"] == "model_quality_walk_forward" and isinstance(last["met"], bool)
    assert last["metric"] > 0 and last["reference"] == 600.0
    assert last["ratio"] == pytest.approx(last["metric"] / last["reference"], abs=1e-4)
    assert last["met"] is (last["metric"] <= last["reference"])
    assert last == res["bench_line"]
    saved = json.loads(out.read_text())
    assert saved["assets"] == ["AAA/USDT", "BBB/USDT"]
    h = res["horizons"]["7"]
    choose = h["choose"]
    assert choose["n"] > 100 and h["confirm"]["n"] == 0  # the synthetic data ends in 2021
    assert {"ensemble", "ensemble:fixed", "ensemble:base_rate", "rf", "xgb", "lgbm"} <= set(choose["models"])
    assert {"majority", "trailing_majority", "persistence", "always_bullish", "momentum",
            "trailing_freq"} <= set(choose["baselines"])
    for row in [*choose["models"].values(), *choose["baselines"].values()]:
        assert row["n"] == choose["n"] and np.isfinite(row["log_loss"]) and 0 <= row["accuracy"] <= 1
    ci = choose["models"]["ensemble"]["d_log_loss_vs_best"]
    assert ci["lo"] <= ci["estimate"] <= ci["hi"]
    assert ci["baseline"] == choose["best_baseline"]["log_loss"]
