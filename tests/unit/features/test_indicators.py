"""Every indicator against an independent numpy/pandas computation (no TA-Lib) on real candles."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entasis.features.compute import LabelParams, compute

from ._data import candles

PARAMS = LabelParams(horizons=(7, 14, 30), neutral_band=0.02)
POINTS = [150, 777, 1500, 2200]  # far enough in that TA-Lib's EMA seeding has decayed


@functools.lru_cache(maxsize=2)
def _btc(shared: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    c = candles(shared, "BTCUSDT", "1d")
    return c, compute(c, labels=PARAMS)


@pytest.fixture
def btc(shared_data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return _btc(shared_data)


def ema(x: np.ndarray, p: int) -> np.ndarray:
    """EMA seeded with the SMA of the first p values (the textbook / TA-Lib convention)."""
    out = np.full(len(x), np.nan)
    k = 2.0 / (p + 1)
    out[p - 1] = x[:p].mean()
    for i in range(p, len(x)):
        out[i] = out[i - 1] + k * (x[i] - out[i - 1])
    return out


def wilder(x: np.ndarray, p: int, first: int) -> np.ndarray:
    """Wilder smoothing: seed = mean of x[first-p+1 .. first], then (prev*(p-1) + x) / p."""
    out = np.full(len(x), np.nan)
    out[first] = x[first - p + 1:first + 1].mean()
    for i in range(first + 1, len(x)):
        out[i] = (out[i - 1] * (p - 1) + x[i]) / p
    return out


def test_returns_spread_and_volume(btc: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    c, f = btc
    close, vol = c["close"].to_numpy(), c["volume"].to_numpy()
    for t in POINTS:
        assert f["ret_1"].iloc[t] == pytest.approx(close[t] / close[t - 1] - 1, rel=1e-12)
        assert f["ret_24h"].iloc[t] == pytest.approx(close[t] / close[t - 1] - 1, rel=1e-12)  # 1 bar on 1d
        assert f["log_ret_1"].iloc[t] == pytest.approx(math.log(close[t] / close[t - 1]), rel=1e-12)
        assert f["hl_spread"].iloc[t] == pytest.approx((c["high"].iloc[t] - c["low"].iloc[t]) / close[t], rel=1e-12)
        assert f["volume_change"].iloc[t] == pytest.approx(math.log(vol[t] / vol[t - 1]), rel=1e-12)
        assert f["log_volume"].iloc[t] == pytest.approx(math.log1p(vol[t]), rel=1e-12)
        assert f["volume_ma_20_ratio"].iloc[t] == pytest.approx(vol[t] / vol[t - 19:t + 1].mean(), rel=1e-9)
        qv = vol * (c["high"].to_numpy() + c["low"].to_numpy() + close) / 3  # no quote volume in this file
        assert f["log_quote_volume"].iloc[t] == pytest.approx(math.log1p(qv[t]), rel=1e-12)
        assert f["quote_volume_change"].iloc[t] == pytest.approx(math.log(qv[t] / qv[t - 1]), rel=1e-12)


def test_moving_averages_and_bollinger(btc: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    c, f = btc
    x = c["close"].to_numpy()
    e20, e50 = ema(x, 20), ema(x, 50)
    for t in POINTS:
        w20, w50 = x[t - 19:t + 1], x[t - 49:t + 1]
        assert f["sma_20_rel"].iloc[t] == pytest.approx(w20.mean() / x[t] - 1, rel=1e-9, abs=1e-12)
        assert f["sma_50_rel"].iloc[t] == pytest.approx(w50.mean() / x[t] - 1, rel=1e-9, abs=1e-12)
        assert f["ema_20_rel"].iloc[t] == pytest.approx(e20[t] / x[t] - 1, rel=1e-9, abs=1e-12)
        assert f["ema_50_rel"].iloc[t] == pytest.approx(e50[t] / x[t] - 1, rel=1e-9, abs=1e-12)
        mid, sd = w20.mean(), w20.std(ddof=0)
        up, lo = mid + 2 * sd, mid - 2 * sd
        assert f["bb_upper_rel"].iloc[t] == pytest.approx(up / x[t] - 1, rel=1e-8, abs=1e-10)
        assert f["bb_lower_rel"].iloc[t] == pytest.approx(lo / x[t] - 1, rel=1e-8, abs=1e-10)
        assert f["bb_pctb"].iloc[t] == pytest.approx((x[t] - lo) / (up - lo), rel=1e-8)
        assert f["bb_width"].iloc[t] == pytest.approx((up - lo) / mid, rel=1e-8)


def test_rsi_macd_atr_rvol(btc: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    c, f = btc
    x, h, lo = c["close"].to_numpy(), c["high"].to_numpy(), c["low"].to_numpy()
    d = np.r_[np.nan, np.diff(x)]
    gain, loss = np.where(d > 0, d, 0.0), np.where(d < 0, -d, 0.0)
    ag, al = wilder(gain, 14, 14), wilder(loss, 14, 14)
    rsi = 100 - 100 / (1 + ag / al)
    macd = ema(x, 12) - ema(x, 26)
    sig = np.full(len(x), np.nan)
    sig[25:] = ema(macd[25:], 9)
    prev = np.r_[np.nan, x[:-1]]
    tr = np.nanmax(np.c_[h - lo, np.abs(h - prev), np.abs(lo - prev)], axis=1)
    atr = wilder(tr, 14, 14)
    lr = np.log(x / prev)
    for t in POINTS:
        assert f["rsi_14"].iloc[t] == pytest.approx(rsi[t], rel=1e-9)
        assert f["macd_rel"].iloc[t] == pytest.approx(macd[t] / x[t], rel=1e-8, abs=1e-12)
        assert f["macd_signal_rel"].iloc[t] == pytest.approx(sig[t] / x[t], rel=1e-8, abs=1e-12)
        assert f["macd_hist_rel"].iloc[t] == pytest.approx((macd[t] - sig[t]) / x[t], rel=1e-7, abs=1e-12)
        assert f["atr_14_rel"].iloc[t] == pytest.approx(atr[t] / x[t], rel=1e-9)
        assert f["rvol_20"].iloc[t] == pytest.approx(lr[t - 19:t + 1].std(ddof=0) * math.sqrt(365), rel=1e-8)
    # the first values appear exactly when the history allows, not before
    assert f["rsi_14"].iloc[:14].isna().all() and not np.isnan(f["rsi_14"].iloc[14])
    assert f["sma_50_rel"].iloc[:49].isna().all() and not np.isnan(f["sma_50_rel"].iloc[49])


def test_warmup_marks_rows_without_enough_history(btc: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, f = btc
    assert f["warmup"].iloc[:99].all()
    assert not f["warmup"].iloc[99:].any()
    # warm-up rows keep what the indicators give (NaN before the window fills), nothing filled in
    assert f["sma_50_rel"].iloc[:49].isna().all()


def test_labels_match_forward_returns_and_vol(btc: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    c, f = btc
    x = c["close"].to_numpy()
    lr = np.r_[np.nan, np.diff(np.log(x))]
    n = len(x)
    for h in (7, 14, 30):
        for t in [*POINTS, n - h - 1]:
            r = x[t + h] / x[t] - 1
            assert f[f"y_ret_{h}d"].iloc[t] == pytest.approx(r, rel=1e-12)
            assert f[f"y_cls_{h}d"].iloc[t] == (2 if r > 0.02 else 0 if r < -0.02 else 1)
            vol = lr[t + 1:t + h + 1].std(ddof=0) * math.sqrt(365)
            assert f[f"y_vol_{h}d"].iloc[t] == pytest.approx(vol, rel=1e-7)
        # NULL while the future is unknown, never filled
        assert f[f"y_ret_{h}d"].iloc[n - h:].isna().all()
        assert f[f"y_vol_{h}d"].iloc[n - h:].isna().all()
        assert f[f"y_cls_{h}d"].iloc[n - h:].isna().all()
        assert f[f"y_cls_{h}d"].iloc[: n - h].notna().all()
        assert str(f[f"y_cls_{h}d"].dtype) == "Int16"


def _edge_series(closes: list[float]) -> pd.DataFrame:
    n = len(closes)
    ts = pd.Timestamp("2022-01-01", tz="UTC") + pd.Timedelta("1D") * np.arange(n)
    c = np.array(closes)
    return pd.DataFrame({"ts": ts, "open": c, "high": c, "low": c, "close": c, "volume": 1.0})


def test_labels_at_the_band_edges() -> None:
    # 66/64 - 1 == 0.03125 exactly in binary floating point, so the edge is hit exactly.
    band = 0.03125
    closes = [64.0] * 20
    closes[7] = 66.0                                  # t=0: r == +band -> neutral
    closes[8] = float(np.nextafter(66.0, np.inf))     # t=1: just above -> bullish
    closes[9] = 62.0                                  # t=2: r == -band -> neutral
    closes[10] = float(np.nextafter(62.0, -np.inf))   # t=3: just below -> bearish
    f = compute(_edge_series(closes), timeframe="1d", symbol="EDGE/USDT",
                labels=LabelParams(horizons=(7,), neutral_band=band))
    assert f["y_ret_7d"].iloc[0] == band and f["y_ret_7d"].iloc[2] == -band
    assert list(f["y_cls_7d"].iloc[:5]) == [1, 2, 1, 0, 1]
    assert f["y_cls_7d"].iloc[-7:].isna().all() and f["y_cls_7d"].iloc[:-7].notna().all()


def test_vol_scaled_band(btc: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    c, _ = btc
    p = LabelParams(horizons=(7, 30), band_mode="vol_scaled", vol_scale=0.5)
    f = compute(c, labels=p)
    for h in (7, 30):
        band = 0.5 * f["rvol_20"] * math.sqrt(h / 365)
        r = f[f"y_ret_{h}d"]
        ok = r.notna() & band.notna()
        want = np.where(r[ok] > band[ok], 2, np.where(r[ok] < -band[ok], 0, 1))
        np.testing.assert_array_equal(f.loc[ok, f"y_cls_{h}d"].to_numpy(dtype=int), want)
        assert f.loc[~ok, f"y_cls_{h}d"].isna().all()
        assert f.loc[band.isna(), f"y_cls_{h}d"].isna().all() and band.isna().sum() == 20  # rvol warm-up
    # the band changes the classes: with a fixed 2% band they differ somewhere
    fixed = compute(c, labels=LabelParams(horizons=(7,)))
    assert (fixed["y_cls_7d"].fillna(-1) != f["y_cls_7d"].fillna(-1)).sum() > 50


def test_timeframe_aware_on_hourly(shared_data: Path) -> None:
    c = candles(shared_data, "SOLUSDT", "1h", rows=3000)
    f = compute(c, labels=LabelParams(horizons=(7, 30)))
    x = c["close"].to_numpy()
    n = len(x)
    for t in (500, 1200, 2000):
        assert f["ret_24h"].iloc[t] == pytest.approx(x[t] / x[t - 24] - 1, rel=1e-12)
        assert f["y_ret_7d"].iloc[t] == pytest.approx(x[t + 168] / x[t] - 1, rel=1e-12)
        lr = np.diff(np.log(x[t - 20:t + 1]))
        assert f["rvol_20"].iloc[t] == pytest.approx(lr.std(ddof=0) * math.sqrt(365 * 24), rel=1e-8)
    assert f["y_ret_30d"].iloc[n - 720:].isna().all() and not np.isnan(f["y_ret_30d"].iloc[n - 721])
    assert f["y_ret_7d"].iloc[n - 168:].isna().all() and not np.isnan(f["y_ret_7d"].iloc[n - 169])
