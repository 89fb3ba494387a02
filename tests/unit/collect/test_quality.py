"""Collector data-quality rules: page order, grid, store rules reused, robust outliers.

The outlier thresholds are checked on real Binance history: crashes such as 2020-03-12 must pass,
the known bad bars of the CryptoDataDownload file must not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entasis.collect.quality import (
    REASON_DUPLICATE,
    REASON_OUTLIER_BODY,
    REASON_OUTLIER_SPIKE,
    REASON_PAGE_ORDER,
    check_candles,
    check_funding,
    check_open_interest,
    check_options,
    reason_off_grid,
)

H = 3_600_000


def _bars(n: int = 300, seed: int = 3, step: int = H, vol: float = 0.01) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, vol, n)))
    open_ = np.r_[100.0, close[:-1]]
    t = np.arange(n, dtype=np.int64) * step + 1_600_000_000_000 // step * step
    df = pd.DataFrame({"t": t, "open": open_, "high": np.maximum(open_, close) * 1.002,
                       "low": np.minimum(open_, close) * 0.998, "close": close, "volume": 5.0,
                       "quote_volume": 500.0})
    df["ts"] = pd.to_datetime(df["t"], unit="ms", utc=True)
    df["page"] = (np.arange(n) // 100).astype("int64")
    return df


def _reasons(v: pd.DataFrame) -> dict[object, set[str]]:
    out: dict[object, set[str]] = {}
    for r, rule in zip(v["row"], v["rule"], strict=True):
        out.setdefault(r, set()).add(rule)
    return out


def test_clean_series_passes() -> None:
    assert check_candles(_bars(), H, "1h", np.array([])).empty


def test_store_rules_grid_and_page_order_flag_the_right_rows() -> None:
    df = _bars()
    df.loc[10, "high"] = df.loc[10, "low"] * 0.5  # high below open/close
    df.loc[20, "volume"] = -1.0
    df.loc[30, "t"] += 60_000  # off the hourly grid
    df.loc[40, "close"] = np.nan
    dup = df.loc[[50]].copy()
    dup["open"] *= 1.001
    df = pd.concat([df.iloc[:51], dup, df.iloc[51:]], ignore_index=True)  # same hour twice in one page
    got = _reasons(check_candles(df, H, "1h", np.array([])))
    assert "high < max(open, close)" in got[10]
    assert "negative volume" in got[20]
    assert reason_off_grid("1h") in got[30]
    assert any("NaN" in r for r in got[40])
    assert got[51] == {REASON_DUPLICATE}
    assert set(got) == {10, 20, 30, 40, 51}


def test_out_of_order_rows_and_cross_page_conflicts() -> None:
    df = _bars()
    df = df.iloc[[*range(60), 61, 60, *range(62, len(df))]].reset_index(drop=True)  # 61 served before 60
    late = df.loc[[150]].copy()
    late["page"] = 2
    late["close"] *= 1.001  # page 2 repeats bar 150 (first served on page 1) with another close
    df = pd.concat([df.iloc[:200], late, df.iloc[200:]], ignore_index=True)  # first row of page 2
    got = _reasons(check_candles(df, H, "1h", np.array([])))
    assert got == {61: {REASON_PAGE_ORDER}, 200: {REASON_DUPLICATE}}


def test_same_time_on_two_pages_is_not_a_page_order_violation() -> None:
    df = _bars()
    overlap = df.iloc[95:100].copy()
    overlap["page"] = 1  # the next page repeats the tail of the previous one
    df = pd.concat([df.iloc[:100], overlap, df.iloc[100:]], ignore_index=True)
    assert check_candles(df, H, "1h", np.array([])).empty


def test_bad_open_and_single_bar_spike_are_outliers_but_a_lasting_crash_is_not() -> None:
    df = _bars(n=400)
    df.loc[100, "open"] = df.loc[100, "open"] * 3.0  # a bad open, like the first CDD BTC hour
    df.loc[100, "high"] = df.loc[100, "open"]
    df.loc[200, ["open", "high", "low", "close"]] *= 10  # a whole bar in the wrong unit
    crash = np.arange(300, 400)
    df.loc[crash, ["open", "high", "low", "close"]] *= 0.75  # a lasting 25% crash in one bar (~20 scales)
    df.loc[300, "open"] = df.loc[299, "close"]
    df.loc[300, "high"] = df.loc[300, "open"]
    got = _reasons(check_candles(df, H, "1h", np.array([])))
    assert REASON_OUTLIER_BODY in got[100]
    assert REASON_OUTLIER_SPIKE in got[200]
    assert not {299, 300, 301} & set(got)
    assert set(got) == {100, 200}


def test_context_lets_the_first_new_bar_be_judged() -> None:
    df = _bars(n=5)
    ctx = _bars(n=150)["close"].to_numpy() / _bars(n=150)["close"].to_numpy()[-1] * 100
    assert check_candles(df, H, "1h", ctx).empty
    df.loc[0, ["open", "high", "low", "close"]] = [100.0, 1000.0, 100.0, 1000.0]
    got = _reasons(check_candles(df, H, "1h", ctx))
    assert REASON_OUTLIER_BODY in got[0]


def test_funding_and_open_interest_rules() -> None:
    t = np.arange(4, dtype=np.int64) * 8 * H
    f = pd.DataFrame({"t": t, "ts": pd.to_datetime(t, unit="ms", utc=True), "funding_rate": [1e-4, 2.0, np.nan, 1e-4],
                      "mark_price": 1.0, "page": 0})
    got = _reasons(check_funding(f))
    assert set(got) == {1, 2}
    oi = pd.DataFrame({"t": [0, H, H + 5, 3 * H], "open_interest": [1.0, -1.0, 2.0, 3.0], "open_interest_value": 1.0,
                       "page": 0})
    oi["ts"] = pd.to_datetime(oi["t"], unit="ms", utc=True)
    got = _reasons(check_open_interest(oi, H, "1h"))
    assert got == {1: {"negative open_interest"}, 2: {reason_off_grid("1h")}}


def test_option_rules() -> None:
    snap = pd.Timestamp("2024-01-01", tz="UTC")
    df = pd.DataFrame({
        "exchange": "deribit", "instrument": ["A", "B", "C", "A"], "snapshot_ts": snap, "underlying": "BTC",
        "expiry": [snap + pd.Timedelta(days=1), snap - pd.Timedelta(days=1), snap + pd.Timedelta(days=2),
                   snap + pd.Timedelta(days=1)],
        "strike": [1.0, 1.0, 1.0, 1.0], "kind": ["call", "put", "put", "call"], "bid": [0.1, 0.1, 0.3, 0.1],
        "ask": [0.2, 0.2, 0.2, 0.2], "mark_price": 0.15, "mark_iv": [50.0, 50.0, 50.0, 50.0], "delta": 0.5,
        "gamma": 0.1, "vega": 1.0, "theta": -1.0, "underlying_price": 40000.0, "open_interest": 1.0})
    got = _reasons(check_options(df))
    assert got == {1: {"expiry not after the snapshot"}, 2: {"bid above ask"}, 3: {"instrument listed twice"}}


# -- real data -------------------------------------------------------------------------------------


def _load_yanniedog(p: Path) -> pd.DataFrame:
    df = pd.read_csv(p)
    df["ts"] = pd.to_datetime(df["timestamp"], utc=True)
    df["t"] = ((df["ts"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).astype("int64")
    df["page"] = (np.arange(len(df)) // 1000).astype("int64")
    return df


@pytest.mark.realdata
def test_real_crashes_are_not_quarantined(shared_data: Path) -> None:
    base = shared_data / "binance_spot_yanniedog"
    for name, tf in [("1d/BTCUSDT_1d.csv", "1d"), ("1d/ETHUSDT_1d.csv", "1d"), ("1d/DOGEUSDT_1d.csv", "1d"),
                     ("1h/XRPUSDT_1h.csv", "1h"), ("1h/MATICUSDT_1h.csv", "1h"), ("4h/BTCUSDT_4h.csv", "4h")]:
        df = _load_yanniedog(base / name)
        step = {"1d": 24 * H, "4h": 4 * H, "1h": H}[tf]
        v = check_candles(df, step, tf, np.array([]))
        flagged = df.loc[v["row"].unique(), "timestamp"].tolist()
        if name == "1h/XRPUSDT_1h.csv":  # its listing hour: open 0.50, close 0.92 in a 0.90 market
            assert flagged == ["2018-05-04 08:00:00"], flagged
        else:
            assert flagged == [], (name, flagged)
    btc = _load_yanniedog(base / "1d/BTCUSDT_1d.csv")
    crash = btc[btc["timestamp"] == "2020-03-12"]
    assert float(np.log(crash["close"].iloc[0] / crash["open"].iloc[0])) < -0.4  # the crash is in the data


@pytest.mark.realdata
def test_known_bad_bars_are_quarantined(shared_data: Path) -> None:
    eth4h = _load_yanniedog(shared_data / "binance_spot_yanniedog/4h/ETHUSDT_4h.csv")
    v = check_candles(eth4h, 4 * H, "4h", np.array([]))
    assert eth4h.loc[v["row"].unique(), "timestamp"].tolist() == ["2017-08-22 04:00:00"]  # open 144.21
