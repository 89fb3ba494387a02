"""``run_checks`` at its edges on a seeded database: healthy, stale data alone, one drifted feature,
drift at exactly the configured share of features, broad drift; and the monitor DAG through
``dag.test()`` running or skipping ``trigger_retrain`` accordingly.

Current-window feature values are the reference distribution's own quantiles (PSI ~ 0) unless a
feature is shifted by ten standard deviations (PSI far above any threshold), so every verdict below
is decided by the rule, not by sampling noise.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import psycopg
import pytest

from entasis.config import MonitorConfig
from entasis.features.catalog import FEATURE_COLUMNS
from entasis.monitor.checks import run_checks
from entasis.store.upsert import upsert_frame

NOW = dt.datetime(2024, 6, 1, 3, 30, tzinfo=dt.UTC)
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT"]
CFG = MonitorConfig()  # psi 0.25, retrain at >= 25% of judged features, 30-day window, 180 reference days


def seed(url: str, *, drifted: list[str] = (), stale_symbol: str | None = None) -> None:  # type: ignore[assignment]
    rng = np.random.default_rng(3)
    day0 = pd.Timestamp(NOW).floor("D")
    ref_ts = pd.date_range(day0 - pd.Timedelta(days=CFG.drift_window_days + CFG.reference_days),
                           periods=CFG.reference_days, freq="1D")
    cur_ts = pd.date_range(day0 - pd.Timedelta(days=CFG.drift_window_days), periods=CFG.drift_window_days, freq="1D")
    frames = []
    n_ref, n_cur = len(ref_ts) * len(SYMBOLS), len(cur_ts) * len(SYMBOLS)
    values_ref, values_cur = {}, {}
    for f in FEATURE_COLUMNS:
        ref = rng.normal(size=n_ref)
        cur = np.quantile(ref, (np.arange(n_cur) + 0.5) / n_cur)
        rng.shuffle(cur)
        values_ref[f], values_cur[f] = ref, cur + (10.0 if f in drifted else 0.0)
    for ts, vals, n in ((ref_ts, values_ref, len(ref_ts)), (cur_ts, values_cur, len(cur_ts))):
        for i, sym in enumerate(SYMBOLS):
            df = pd.DataFrame({"exchange": "binance", "symbol": sym, "timeframe": "1d", "ts": ts, "warmup": False})
            for f in FEATURE_COLUMNS:
                df[f] = vals[f][i * n:(i + 1) * n]
            frames.append(df)
    bars = pd.concat(frames, ignore_index=True)
    last = {s: day0 - pd.Timedelta(days=1) for s in SYMBOLS}
    if stale_symbol:
        last[stale_symbol] = day0 - pd.Timedelta(days=10)
    candles = pd.DataFrame({"exchange": "binance", "symbol": list(last), "timeframe": "1d", "ts": list(last.values()),
                            "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0, "quote_volume": 1.0})
    with psycopg.connect(url) as conn:
        upsert_frame(conn, "features.bars", bars, ["exchange", "symbol", "timeframe", "ts"])
        upsert_frame(conn, "market.candles", candles, ["exchange", "symbol", "timeframe", "ts"])
        conn.commit()


def check(url: str) -> dict:  # type: ignore[type-arg]
    with psycopg.connect(url) as conn:
        return run_checks(conn, NOW, CFG).to_dict()


def test_empty_store_asks_for_nothing(db_url: str) -> None:
    r = check(db_url)
    assert r["retrain"] is False and r["reasons"] == [] and r["stale"] == []


def test_healthy_no_retrain(db_url: str) -> None:
    seed(db_url)
    r = check(db_url)
    assert r["retrain"] is False, r["reasons"]
    assert r["reasons"] == [] and r["drifted_features"] == []
    assert len(r["feature_psi"]) == len(FEATURE_COLUMNS)
    assert max(p["psi"] for p in r["feature_psi"]) < 0.05


def test_stale_data_alone_reports_but_does_not_retrain(db_url: str) -> None:
    seed(db_url, stale_symbol="ETH/USDT")
    r = check(db_url)
    assert r["retrain"] is False
    assert [s["symbol"] for s in r["stale"]] == ["ETH/USDT"]
    assert len(r["reasons"]) == 1 and r["reasons"][0].startswith("stale data: binance ETH/USDT 1d")


def test_one_drifted_feature_does_not_retrain(db_url: str) -> None:
    f = FEATURE_COLUMNS[3]
    seed(db_url, drifted=[f])
    r = check(db_url)
    assert r["retrain"] is False and r["drifted_features"] == []
    psis = {p["feature"]: p["psi"] for p in r["feature_psi"]}
    assert psis[f] > CFG.psi_threshold  # seen and kept in the report, below the share that retrains


@pytest.mark.parametrize("share_below", [True, False])
def test_drift_share_boundary(db_url: str, share_below: bool) -> None:
    need = int(np.ceil(CFG.min_drifted_share * len(FEATURE_COLUMNS)))
    assert need / len(FEATURE_COLUMNS) >= CFG.min_drifted_share > (need - 1) / len(FEATURE_COLUMNS)
    k = need - 1 if share_below else need
    seed(db_url, drifted=list(FEATURE_COLUMNS[:k]))
    r = check(db_url)
    assert r["retrain"] is (not share_below)
    assert len(r["drifted_features"]) == (0 if share_below else need)


def test_broad_drift_retrains_and_names_features(db_url: str) -> None:
    seed(db_url, drifted=list(FEATURE_COLUMNS))
    r = check(db_url)
    assert r["retrain"] is True
    assert len(r["drifted_features"]) == len(FEATURE_COLUMNS)
    assert any(x.startswith("feature drift (PSI > 0.25)") for x in r["reasons"])


@pytest.mark.parametrize("drift", [False, True])
def test_monitor_dag_runs_or_skips_trigger_retrain(db_url: str, drift: bool) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    from entasis.demo import load_dags

    marker = Path(os.environ["AIRFLOW_HOME"]) / ".migrated"  # the session's own Airflow metadata DB
    if not marker.exists():
        subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True,  # noqa: S603
                       stdout=subprocess.DEVNULL)
        marker.touch()
    seed(db_url, drifted=list(FEATURE_COLUMNS) if drift else [])
    dag = load_dags()["entasis_monitor"]
    dr = dag.test(logical_date=NOW)
    assert "success" in str(dr.state)
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert "success" in states["check"]
    assert ("success" if drift else "skipped") in states["trigger_retrain"], states
