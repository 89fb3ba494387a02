"""The shared vocabulary: names, label columns, the band rule, confidence levels, timeframes, time rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from entasis import domain as d


def test_class_names_and_probability_columns_share_one_order() -> None:
    assert d.CLASS_NAMES == ("bearish", "neutral", "bullish")
    assert d.PROBA_COLUMNS == tuple(f"p_{n}" for n in d.CLASS_NAMES)
    assert [d.class_name(i) for i in range(3)] == list(d.CLASS_NAMES)
    assert [d.class_code(n) for n in d.CLASS_NAMES] == [d.BEARISH, d.NEUTRAL, d.BULLISH] == [0, 1, 2]
    for bad in (3, -1, 1.5):
        with pytest.raises(ValueError, match="class code"):
            d.class_name(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="class name"):
        d.class_code("up")


def test_label_columns_one_format() -> None:
    assert d.target_column(7) == "y_cls_7d" == d.label_column("cls", 7)
    assert d.label_columns([30, 7, 7]) == ["y_cls_7d", "y_ret_7d", "y_vol_7d", "y_cls_30d", "y_ret_30d", "y_vol_30d"]
    assert d.parse_label_column("y_vol_14d") == ("vol", 14)
    assert d.horizon_of("y_cls_30d") == 30
    for bad in (0, -7, 1.5, "x", True):
        with pytest.raises(ValueError, match="positive whole number of days"):
            d.target_column(bad)  # type: ignore[arg-type]
    for bad in ("y_cls_7", "cls_7d", "y_foo_7d", "y_cls_0d"):
        with pytest.raises(ValueError):
            d.horizon_of(bad)


@pytest.mark.parametrize(("r", "band", "want"), [
    (0.02, 0.02, 1),            # exactly at the upper edge: neutral
    (-0.02, 0.02, 1),           # exactly at the lower edge: neutral
    (np.nextafter(0.02, 1), 0.02, 2),
    (np.nextafter(-0.02, -1), 0.02, 0),
    (0.0, 0.0, 1),              # zero band, zero return: neutral
    (1e-12, 0.0, 2),
    (-1e-12, 0.0, 0),
])
def test_band_rule_boundary_table(r: float, band: float, want: int) -> None:
    assert d.classify_return(r, band) == want
    codes, unknown = d.classify_returns(np.array([r]), band)
    assert int(codes[0]) == want and not unknown[0]


def test_band_rule_unknowns_and_modes() -> None:
    codes, unknown = d.classify_returns(np.array([0.1, np.nan, 0.1]), np.array([0.02, 0.02, np.nan]))
    assert unknown.tolist() == [False, True, True] and int(codes[0]) == 2
    with pytest.raises(ValueError, match="non-finite return"):
        d.classify_return(float("nan"), 0.02)
    with pytest.raises(ValueError, match="unknown band"):
        d.classify_return(0.1, float("nan"))
    fixed = d.BandRule(0.03, "fixed")
    assert fixed.band(7, None) == 0.03 and fixed.band(30, np.array([0.5])) == 0.03
    vol = d.BandRule(0.02, "vol_scaled", 0.5)
    assert vol.band(7, None) is None
    assert vol.band(7, float("nan")) is None
    assert vol.band(365, 0.8) == pytest.approx(0.4)
    arr = vol.band(7, np.array([0.8, np.nan]))
    assert arr[0] == 0.5 * 0.8 * np.sqrt(7 / 365.0) and np.isnan(arr[1])  # bit-identical order
    for kw in ({"band_mode": "x"}, {"neutral_band": 1.0}, {"neutral_band": -0.01}, {"vol_scale": 0.0}):
        with pytest.raises(ValueError):
            d.BandRule(**kw)  # type: ignore[arg-type]


def _old_published_level(top_p: float) -> str:
    """publish/predictions.py and models/calibration.py before: percent scale, >= 70 / >= 50."""
    c = top_p * 100.0
    return "high" if c >= 70.0 else "medium" if c >= 50.0 else "low"


def _old_backtest_level(top_p: float) -> str:
    """backtest/metrics.py before: probability scale, >= 0.70 / >= 0.50."""
    return "high" if top_p >= 0.70 else "medium" if top_p >= 0.50 else "low"


def test_confidence_levels_identical_to_both_old_scales_at_every_edge() -> None:
    ps = [0.0, 1 / 3, 0.49, 0.5, 0.69, 0.7, 0.71, 1.0]
    for edge in (0.5, 0.7):
        lo = hi = edge
        for _ in range(2000):
            lo, hi = np.nextafter(lo, 0.0), np.nextafter(hi, 1.0)
            ps += [float(lo), float(hi)]
    ps += np.random.default_rng(0).uniform(1 / 3, 1, 20_000).tolist()
    new = d.confidence_levels(np.array(ps))
    for p, lv in zip(ps, new, strict=True):
        assert lv == _old_published_level(p) == _old_backtest_level(p) == d.confidence_level(p), p
    assert d.confidence_level(0.7) == "high" and d.confidence_level(np.nextafter(0.7, 0)) == "medium"
    assert d.confidence_level(0.5) == "medium" and d.confidence_level(np.nextafter(0.5, 0)) == "low"


def test_confidence_percent_and_nan_rows() -> None:
    p = np.array([[0.2, 0.1, 0.7], [0.4, 0.35, 0.25], [np.nan, np.nan, np.nan], [0.5, np.nan, 0.5]])
    conf, level = d.confidence(p)
    assert conf[0] == 0.7 * 100.0 and conf[1] == 0.4 * 100.0 and np.isnan(conf[2:]).all()
    assert level.tolist() == ["high", "low", None, None]
    with pytest.raises(ValueError, match="non-finite"):
        d.confidence_level(float("nan"))


def test_timeframes_one_table() -> None:
    assert d.timeframe_ms("1m") == 60_000 and d.timeframe_ms("1w") == 7 * 86_400_000
    assert d.timeframe_seconds("4h") == 14_400
    assert d.bars_per_year("1d") == 365 and d.bars_per_year("1h") == 8760 and d.bars_per_year("1m") == 525_600
    assert d.timeframe_origin_ms("1w") == 4 * 86_400_000 and d.timeframe_origin_ms("1d") == 0
    assert set(d.PIPELINE_TIMEFRAMES) <= set(d.TIMEFRAME_MS)
    for bad in ("2d", "1x", "", " 1h"):
        with pytest.raises(ValueError, match="unknown timeframe"):
            d.timeframe_ms(bad)
    with pytest.raises(ValueError, match="unknown timeframe '1w'; expected one of 1m, 5m"):
        d.timeframe_seconds("1w", d.PIPELINE_TIMEFRAMES)


def test_time_rule_naive_refused_dates_are_utc_days() -> None:
    want = pd.Timestamp("2024-01-01T06:00:00", tz="UTC")
    assert d.utc_timestamp("2024-01-01T06:00:00Z") == want
    assert d.utc_timestamp("2024-01-01T07:00:00+01:00") == want
    assert d.utc_timestamp(datetime(2024, 1, 1, 1, tzinfo=timezone(timedelta(hours=-5)))) == want
    assert d.utc_timestamp("2024-01-01") == pd.Timestamp("2024-01-01", tz="UTC")
    assert str(d.utc_timestamp(want).tz) == "UTC"
    assert d.utc_datetime("2024-01-01T06:00Z") == datetime(2024, 1, 1, 6, tzinfo=UTC)
    for naive in ("2024-01-01T06:00:00", "2024-01-01 06:00", datetime(2024, 1, 1), pd.Timestamp("2024-01-01"),
                  np.datetime64("2024-01-01")):
        with pytest.raises(ValueError, match="start=.*has no time zone"):
            d.utc_timestamp(naive, "start")
    for bad in (None, pd.NaT, "yesterday", "June 1st", "", 5, True):
        with pytest.raises(ValueError, match="start"):
            d.utc_timestamp(bad, "start")
    assert d.to_ms("2024-01-01") == 1_704_067_200_000 == d.to_ms(1_704_067_200_000)
    assert d.from_ms(1_704_067_200_000) == datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="has no time zone"):
        d.to_ms("2024-01-01T01:00")
    with pytest.raises(ValueError, match="boolean"):
        d.to_ms(True)
