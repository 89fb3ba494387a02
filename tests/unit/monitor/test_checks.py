"""Monitor checks: PSI detects a real shift and not noise; stale data by bar age; live accuracy by window."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from entasis.monitor.checks import class_mix_shift, feature_drift, live_accuracy, psi, stale_series


def test_psi_identical_is_small_and_shift_is_large() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 5000)
    same = rng.normal(0, 1, 1000)
    shifted = rng.normal(1.0, 1, 1000)
    assert psi(ref, same) < 0.05
    assert psi(ref, shifted) > 0.25


def test_psi_hand_computed_two_bins() -> None:
    ref = np.array([0.0] * 50 + [1.0] * 50)
    cur = np.array([0.0] * 80 + [1.0] * 20)
    # two distinct values -> bins {0} and {1}; counts smoothed by +0.5
    r = np.array([50.5, 50.5]) / 101
    c = np.array([80.5, 20.5]) / 101
    expected = np.sum((c - r) * np.log(c / r))
    assert psi(ref, cur, bins=2) == pytest.approx(expected, rel=1e-6)


def test_psi_noise_stays_below_threshold_on_small_samples() -> None:
    vals = [psi(np.random.default_rng(i).normal(0, 1, 180), np.random.default_rng(i + 100).normal(0, 1, 30))
            for i in range(200)]
    assert np.percentile(vals, 95) < 0.25


def test_psi_too_little_data_is_nan() -> None:
    assert np.isnan(psi(np.arange(5.0), np.arange(5.0)))


def test_class_mix_shift() -> None:
    ref = np.array([0, 1, 2] * 30)
    assert class_mix_shift(ref, np.array([0, 1, 2] * 10)) < 1e-6
    assert class_mix_shift(ref, np.array([2] * 30)) > 0.25
    assert np.isnan(class_mix_shift(ref, np.array([], dtype=int)))


def test_feature_drift_windows() -> None:
    ts = pd.date_range("2024-01-01", periods=240, freq="D", tz="UTC")
    x = np.r_[np.random.default_rng(1).normal(0, 1, 210), np.random.default_rng(2).normal(3, 1, 30)]
    frame = pd.DataFrame({"ts": ts, "f": x, "g": np.random.default_rng(3).normal(0, 1, 240)})
    now = ts[-1] + pd.Timedelta(days=1)
    d = feature_drift(frame, ["f", "g"], now.to_pydatetime(), window_days=30, reference_days=180).set_index("feature")
    assert d.loc["f", "psi"] > 0.25
    assert d.loc["g", "psi"] < 0.25
    assert d.loc["f", "n_current"] == 30 and d.loc["f", "n_reference"] == 180


def test_stale_series_counts_from_bar_close() -> None:
    now = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    latest = pd.DataFrame({
        "exchange": ["binance"] * 3, "symbol": ["BTC/USDT", "ETH/USDT", "SOL/USDT"], "timeframe": ["1h", "1h", "1d"],
        "ts": pd.to_datetime(["2024-05-01 10:00", "2024-05-01 07:00", "2024-04-29 00:00"], utc=True),
    })
    st = stale_series(latest, now, stale_after_bars=3)
    # BTC closed 11:00 -> 1 bar old (fresh); ETH closed 08:00 -> 4 bars (stale); SOL closed 04-30 -> 1.5 days
    assert st["symbol"].tolist() == ["ETH/USDT"]
    assert st["age_bars"].iloc[0] == pytest.approx(4.0)


def test_live_accuracy_window(db_url: str) -> None:
    from entasis.store.db import connect
    from entasis.store.upsert import upsert_frame

    base = pd.Timestamp("2024-03-01", tz="UTC")
    rows = []
    for i in range(40):
        as_of = base + pd.Timedelta(days=i)
        rows.append({
            "asset": "BTC/USDT", "horizon": 7, "as_of": as_of, "model_version": "1", "predicted_class": 1,
            "p_bearish": 0.2, "p_neutral": 0.6, "p_bullish": 0.2, "confidence": 60.0, "confidence_level": "medium",
            "target_date": as_of + pd.Timedelta(days=7), "published_at": as_of,
            "correct": i % 4 != 0 if i < 30 else None,
            # reconciled rows carry their outcome (ml.live_outcomes counts only those)
            "actual_class": (1 if i % 4 != 0 else 0) if i < 30 else None,
        })
    with connect() as conn:
        df = pd.DataFrame(rows)
        df["actual_class"] = df["actual_class"].astype("Int16")
        upsert_frame(conn, "ml.predictions", df, ["asset", "horizon", "as_of", "model_version"])
        now = (base + pd.Timedelta(days=37)).to_pydatetime()
        live = live_accuracy(conn, now, window_days=10)
    # reconciled rows i<30 with target in (now-10d, now] -> i in 21..29 (target = base+i+7 in (base+27, base+37])
    assert live["n"].iloc[0] == 9
    expected = np.mean([i % 4 != 0 for i in range(21, 30)])
    assert live["accuracy"].iloc[0] == pytest.approx(expected)
    # log-loss beside it: -ln p(actual) = -ln 0.6 when right (neutral), -ln 0.2 when wrong
    hits = [i % 4 != 0 for i in range(21, 30)]
    assert live["log_loss"].iloc[0] == pytest.approx(np.mean([-np.log(0.6 if h else 0.2) for h in hits]))
