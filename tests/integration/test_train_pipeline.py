"""features.bars in a real PostgreSQL -> entasis train -> MLflow run + registered @challenger; real data honesty."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from entasis.backtest.baselines import BASELINES
from entasis.config import get_settings
from entasis.features.compute import LabelParams, compute
from entasis.features.csv_input import compute_from_candles_csv
from entasis.models.base import ModelError
from entasis.models.train import train_and_register
from entasis.registry import models as reg

SYMBOLS = ("AAA/USDT", "BBB/USDT")


def _candles(seed: int, n: int = 420) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 0.03, n)
    close = 100 * np.exp(np.cumsum(r))
    open_ = np.r_[100.0, close[:-1]]
    spread = np.abs(rng.normal(0, 0.01, n)) * close
    return pd.DataFrame({
        "ts": pd.date_range("2021-01-01", periods=n, freq="1D", tz="UTC"),
        "open": open_, "high": np.maximum(open_, close) + spread, "low": np.minimum(open_, close) - spread,
        "close": close, "volume": rng.uniform(1e3, 2e3, n),
    })


def _bars() -> pd.DataFrame:
    labels = LabelParams(horizons=(7, 14, 30))
    return pd.concat([compute(_candles(i), timeframe="1d", exchange="binance", symbol=s, labels=labels)
                      for i, s in enumerate(SYMBOLS)], ignore_index=True)


def _write_bars(df: pd.DataFrame) -> None:
    from entasis.store.db import connect
    from entasis.store.upsert import upsert_frame

    with connect() as conn:
        upsert_frame(conn, "features.bars", df, ["exchange", "symbol", "timeframe", "ts"])


TREES_TINY = {"rf": {"n_estimators": 30, "n_jobs": 1}, "xgb": {"n_estimators": 40, "n_jobs": 1},
              "lgbm": {"n_estimators": 40, "n_jobs": 1}}


def test_cli_train_from_database_registers_a_challenger(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from entasis.cli import app

    _write_bars(_bars())
    monkeypatch.setenv("ENTASIS_TRAIN__MAX_EPOCHS", "2")
    monkeypatch.setenv("ENTASIS_TRAIN__SEQ_LEN", "10")
    get_settings.cache_clear()
    res = CliRunner().invoke(app, ["train", "--assets", ",".join(SYMBOLS), "--horizons", "7",
                                   "--models", "rf,lgbm", "--timeframe", "1d", "--param", "rf.n_estimators=30",
                                   "--param", "rf.n_jobs=1", "--param", "lgbm.n_estimators=40",
                                   "--param", "lgbm.n_jobs=1"])
    assert res.exit_code == 0, res.output
    assert "entasis-pooled-7d" in res.output and "baseline" in res.output
    mv = reg.get_version_by_alias("entasis-pooled-7d", reg.CHALLENGER)
    assert mv is not None and str(mv.version) == "1"
    tags = reg.get_version_tags("entasis-pooled-7d", mv.version)
    for key in ("test_accuracy", "test_log_loss", "best_baseline", "best_baseline_accuracy", "beats_baseline",
                "data_hash", "code_version", "run_id", "vol_model_rmse", "vol_naive_rmse", "edge_suspicious"):
        assert key in tags, key
    assert tags["beats_baseline"] in ("true", "false")
    assert tags["best_baseline"] in BASELINES
    # Pure-noise prices: nothing should look skilful.
    assert float(tags["test_accuracy"]) - float(tags["best_baseline_accuracy"]) < 0.1
    res = CliRunner().invoke(app, ["train", "--assets", "ZZZ/USDT", "--horizons", "7", "--models", "rf"])
    assert res.exit_code == 1 and "ZZZ/USDT" in res.output


def test_library_entry_tracks_everything_and_supports_per_asset(db_url: str) -> None:
    import mlflow

    from entasis.store.db import connect

    _write_bars(_bars())
    lstm = {"seq_len": 10, "hidden": [8], "dense": 4, "max_epochs": 3, "batch_size": 64, "num_threads": 1}
    with connect() as conn:
        results = train_and_register(conn, horizons=[14], assets=list(SYMBOLS), models=["lstm", "rf", "lgbm"],
                                     pooled=False, member_params={"lstm": lstm, **TREES_TINY})
    assert [r.model_name for r in results] == ["entasis-AAA-USDT-14d", "entasis-BBB-USDT-14d"]
    r = results[0]
    assert r.asset == "AAA/USDT" and r.version == "1" and r.run_id
    assert set(r.member_metrics) == {"lstm", "rf", "lgbm"}
    assert set(r.baselines["test"]) == set(BASELINES)
    assert r.weights == pytest.approx({"lstm": 0.5, "rf": 0.25, "lgbm": 0.25})
    run = mlflow.get_run(r.run_id)
    m, p, t = run.data.metrics, run.data.params, run.data.tags
    for key in ("test_accuracy", "test_log_loss", "test_ece", "valid_accuracy", "test_precision_bullish",
                "test_recall_bearish", "test_f1_neutral", "baseline_majority_test_accuracy",
                "baseline_persistence_test_log_loss", "lstm_test_accuracy", "vol_garch_rmse", "weight_lstm"):
        assert key in m, key
    assert p["horizon"] == "14" and p["asset"] == "AAA/USDT" and p["lstm.seq_len"] == "10"
    assert len(t["entasis.data_hash"]) == 64 and t["entasis.code_version"]
    client = mlflow.MlflowClient()
    losses = client.get_metric_history(r.run_id, "lstm_train_loss")
    assert len(losses) >= 1 and [x.step for x in losses] == list(range(len(losses)))
    art = Path(mlflow.artifacts.download_artifacts(run_id=r.run_id, artifact_path="evaluation.json"))
    ev = json.loads(art.read_text())
    assert np.array(ev["ensemble"]["test"]["confusion"]).sum() == ev["ensemble"]["test"]["n"]
    feats = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=r.run_id,
                                                                artifact_path="features.json")).read_text())
    assert "rsi_14" in feats["features"] and "funding_rate" not in feats["features"]  # all-NULL left out
    # The registered pyfunc predicts from raw features.bars rows.
    reg.set_alias(r.model_name, reg.CHAMPION, r.version)
    from entasis.features.store import load_bars

    with connect() as conn:
        rows = load_bars(conn, symbols=["AAA/USDT"], timeframe="1d")
    out = reg.load_champion("AAA/USDT", 14).predict(rows)
    assert len(out) == len(rows) and out["p_bullish"].notna().sum() > 200
    assert out["vol_forecast"].notna().sum() > 200
    # A second training adds version 2 as the new challenger; the champion stays.
    with connect() as conn:
        again = train_and_register(conn, horizons=[14], assets=["AAA/USDT"], models=["rf"], pooled=False,
                                   member_params=TREES_TINY, vol=False)
    assert again[0].version == "2"
    assert reg.alias_version(r.model_name, reg.CHALLENGER) == "2"
    assert reg.alias_version(r.model_name, reg.CHAMPION) == "1"


def test_missing_label_column_is_named() -> None:
    df = _bars().drop(columns=["y_cls_7d"])
    with pytest.raises(ModelError, match="y_cls_7d"):
        train_and_register(df, horizons=[7], models=["rf"], register=False)


@pytest.mark.realdata
def test_real_data_edge_over_baselines_is_small(shared_data: Path) -> None:
    """On real daily prices a competent model beats the per-coin majority by about a point: a big edge is a leak."""
    coins = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "LTCUSDT"]
    labels = LabelParams(horizons=(7,))
    frame = pd.concat([compute_from_candles_csv(shared_data / "binance_spot_yanniedog" / "1d" / f"{c}_1d.csv",
                                                exchange="binance", labels=labels) for c in coins],
                      ignore_index=True)
    (r,) = train_and_register(frame, horizons=[7], models=["rf", "xgb", "lgbm"], member_params=TREES_TINY,
                              vol=True, register=False)
    acc, best = r.metrics["test"]["accuracy"], r.comparison["best_baseline_accuracy"]
    assert r.metrics["test"]["n"] > 1000
    assert abs(acc - best) < 0.06, r.comparison
    assert r.metrics["test"]["log_loss"] < 1.2
    assert r.vol["garch"]["n"] > 1000 and r.vol["model"]["rmse"] < 2 * r.vol["naive"]["rmse"]
