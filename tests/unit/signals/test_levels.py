"""Support/resistance levels: known levels found, no look-ahead, features, evaluation, input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entasis.signals.evaluate import compare, touch_events
from entasis.signals.levels import LevelParams, level_distance_features, levels_at, levels_series, pivots, windowed_atr


def ranging(n: int = 300, lo: float = 100.0, hi: float = 110.0, seed: int = 1) -> pd.DataFrame:
    """Daily bars bouncing between lo and hi (a triangle wave with noise): two obvious levels."""
    rng = np.random.default_rng(seed)
    phase = (np.arange(n) % 20) / 20.0
    mid = lo + (hi - lo) * np.abs(2 * phase - 1)
    c = mid + rng.normal(0, 0.3, n)
    o = np.r_[c[0], c[:-1]]
    h = np.maximum(o, c) + np.abs(rng.normal(0, 0.3, n))
    low = np.minimum(o, c) - np.abs(rng.normal(0, 0.3, n))
    return pd.DataFrame({"ts": pd.date_range("2022-01-01", periods=n, freq="D", tz="UTC"), "open": o, "high": h,
                         "low": low, "close": c, "volume": rng.uniform(50, 150, n)})


def test_range_bound_prices_give_support_and_resistance_at_the_range_edges() -> None:
    df = ranging()
    df = df.iloc[:286]  # the last bar mid-range (close ~105): between the edges
    lv = levels_at(df)
    sup = lv[lv["side"] == "support"].sort_values("strength").iloc[-1]  # the strongest on each side
    res = lv[lv["side"] == "resistance"].sort_values("strength").iloc[-1]
    assert sup["price"] == pytest.approx(100, abs=1.5) and sup["touches"] >= 5
    assert res["price"] == pytest.approx(110, abs=1.5) and res["touches"] >= 5
    close, atr = lv.attrs["close"], lv.attrs["atr"]
    assert sup["distance_atr"] == pytest.approx((close - sup["price"]) / atr)
    assert list(lv["rank"][lv["side"] == "support"]) == list(range(1, (lv["side"] == "support").sum() + 1))


def test_no_look_ahead_truncation() -> None:
    """Levels and features at bar t are the same whether or not later bars exist."""
    df = ranging(400, seed=3)
    full = levels_series(df, start=df["ts"].iloc[150])
    cut = 260
    part = levels_series(df.iloc[:cut], start=df["ts"].iloc[150])
    pd.testing.assert_frame_equal(full[full["ts"] < df["ts"].iloc[cut]].reset_index(drop=True), part)
    a = level_distance_features(*(df[c].to_numpy() for c in ("high", "low", "close", "volume")))
    b = level_distance_features(*(df[c].to_numpy()[:cut] for c in ("high", "low", "close", "volume")))
    for name in a:
        np.testing.assert_array_equal(a[name][:cut], b[name])
    # levels_at(at=t) ignores every bar after t
    at = df["ts"].iloc[200]
    pd.testing.assert_frame_equal(levels_at(df, at=at), levels_at(df.iloc[:201]))


def test_pivots_are_known_only_k_bars_later_and_atr_is_windowed() -> None:
    h = np.array([1, 2, 3, 9, 3, 2, 1, 2, 3.0])
    low = h - 0.5
    hi, lo = pivots(h, low, 3)
    assert list(np.flatnonzero(hi)) == [3] and not lo.any()
    c = np.full(30, 10.0)
    atr = windowed_atr(c + 1, c - 1, c, 14)
    assert np.isnan(atr[:14]).all() and np.allclose(atr[14:], 2.0)


def test_features_distance_signs_and_warmup() -> None:
    df = ranging()
    f = level_distance_features(*(df[c].to_numpy() for c in ("high", "low", "close", "volume")))
    assert np.isnan(f["support_dist_atr"][:14]).all()
    s, r = f["support_dist_atr"], f["resistance_dist_atr"]
    assert np.nanmin(s) > 0 and np.nanmin(r) > 0
    assert np.isfinite(s[100:]).mean() > 0.8


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="lack column"):
        levels_at(ranging().drop(columns="volume"))
    bad = ranging()
    bad.loc[5, "high"] = np.nan
    with pytest.raises(ValueError, match="bad high"):
        levels_at(bad)
    with pytest.raises(ValueError, match="no candle at or before"):
        levels_at(ranging(), at="2000-01-01")
    with pytest.raises(ValueError, match="lookback_bars"):
        LevelParams(lookback_bars=5)
    assert levels_at(ranging(10)).empty  # too few bars for an ATR: no levels, no error


def test_evaluation_finds_real_levels_in_a_ranging_market() -> None:
    """Where price really bounces off fixed levels, real touches reverse more often than control ones."""
    df = ranging(600, seed=5)
    ev = touch_events(df, k=5, move_atr=1.0, n_controls=5)
    res = compare(ev, n_boot=300)
    assert res.touches_real > 20 and res.touches_control > 50
    assert res.diff > 0 and res.ci_low <= res.diff <= res.ci_high
    with pytest.raises(ValueError, match="no touch events"):
        compare(ev.iloc[0:0])


def test_evaluation_on_real_candles_smoke(shared_data: Path) -> None:
    from entasis.features.csv_input import read_candle_csv

    df = read_candle_csv(shared_data / "binance_spot_yanniedog" / "1d" / "BTCUSDT_1d.csv").tail(500)
    res = compare(touch_events(df, n_controls=2), n_boot=200)
    assert 0 <= res.rate_real <= 1 and 0 <= res.rate_control <= 1
    assert res.ci_low <= res.diff <= res.ci_high
