"""The flash-crash rule: boundary table, gaps, slow declines, grouping, and input errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from entasis.signals.flashcrash import CrashRule, detect, detect_many, in_interval

T0 = pd.Timestamp("2024-01-01 00:00", tz="UTC")


def flat(n: int = 120, price: float = 100.0, volume: float = 10.0) -> pd.DataFrame:
    """n calm minutes: a tiny wiggle, constant volume."""
    i = np.arange(n)
    c = price * (1 + 0.0005 * np.sin(i / 3.0))
    o = np.r_[price, c[:-1]][:n]
    return pd.DataFrame({"ts": T0 + pd.to_timedelta(i, unit="min"), "open": o, "high": np.maximum(o, c) * 1.0002,
                         "low": np.minimum(o, c) * 0.9998, "close": c, "volume": np.full(n, volume)})


def crash(df: pd.DataFrame, at: int, depth: float, minutes: int = 3, vol_mult: float = 5.0,
          recover: int = 10) -> pd.DataFrame:
    """Drop the path by ``depth`` over ``minutes`` bars from bar ``at``, then recover linearly."""
    d = df.copy()
    n = len(d)
    g = np.ones(n + 1)  # factor at bar boundaries
    for k in range(n + 1):
        m = k - at
        if 0 < m <= minutes:
            g[k] = 1 - depth * m / minutes
        elif minutes < m < minutes + recover:
            g[k] = 1 - depth * (1 - (m - minutes) / recover)
    g0, g1 = g[:-1], g[1:]
    d["open"] = d["open"] * g0
    d["close"] = d["close"] * g1
    d["high"] = np.maximum(d["high"] * np.maximum(g0, g1), np.maximum(d["open"], d["close"]))
    d["low"] = np.minimum(d["low"] * np.minimum(g0, g1), np.minimum(d["open"], d["close"]))
    d.loc[at:at + minutes - 1, "volume"] *= vol_mult
    return d


def test_a_crash_is_found_with_its_start_trough_and_depth() -> None:
    df = crash(flat(), at=70, depth=0.2)
    ev = detect(df)
    assert len(ev) == 1
    e = ev.iloc[0]
    assert e["start_ts"] == T0 + pd.Timedelta(minutes=70)
    assert e["trough_ts"] == T0 + pd.Timedelta(minutes=72)
    assert e["depth"] == pytest.approx(0.2, abs=0.002)
    assert e["volume_ratio"] == pytest.approx(5.0, rel=0.05)
    assert 0.9 < e["recovery"] <= 1.01  # fully regained within the 15 recovery minutes
    assert e["detected_at"] <= e["final_at"]


def test_calm_data_raise_nothing() -> None:
    assert detect(flat(600)).empty


def test_slow_decline_of_15pct_over_hours_raises_nothing() -> None:
    n = 360
    df = flat(n)
    factor = np.linspace(1.0, 0.80, n + 1)  # -20% over 6 hours, with a volume surge
    df["open"] *= factor[:-1]
    df["close"] *= factor[1:]
    df["high"] = np.maximum(df["high"] * factor[:-1], df[["open", "close"]].max(axis=1))
    df["low"] = np.minimum(df["low"] * factor[1:], df[["open", "close"]].min(axis=1))
    df.loc[200:, "volume"] *= 5
    assert detect(df).empty


def test_a_gap_in_the_data_is_not_a_crash() -> None:
    df = flat(200)
    # 30 minutes missing, during which the price fell 20%: after the gap the earlier bars are too old
    after = df.index >= 100
    df.loc[after, ["open", "high", "low", "close"]] *= 0.8
    df.loc[after, "volume"] *= 4
    gapped = df[(df.index < 70) | (df.index >= 100)].reset_index(drop=True)
    assert detect(gapped).empty
    # the same move without the gap, within one minute, is a crash
    assert len(detect(df)) == 1


@pytest.mark.parametrize(("depth", "vol_mult", "found"), [
    (0.15, 5.0, True),     # exactly the drop threshold: inclusive
    (0.1499, 5.0, False),  # just under it
    (0.20, 2.5, True),     # exactly the volume ratio: inclusive
    (0.20, 2.49, False),   # just under it
    (0.50, 1.0, False),    # a deep drop on ordinary volume is not the specification's crash
])
def test_boundary_table(depth: float, vol_mult: float, found: bool) -> None:
    df = flat(120, volume=10.0)
    df["high"], df["low"] = df[["open", "close"]].max(axis=1), df[["open", "close"]].min(axis=1)
    df.loc[:, ["open", "high", "low", "close"]] = 100.0  # flat: the peak is exactly 100
    df.loc[80, "low"] = 100.0 * (1 - depth)
    df.loc[80, "close"] = 100.0 * (1 - depth)
    df.loc[81:, ["open", "high", "low", "close"]] = 100.0 * (1 - depth)
    df.loc[80, "volume"] = 10.0 * vol_mult
    ev = detect(df)
    assert (len(ev) == 1) is found
    if found:
        assert ev["depth"].iloc[0] == pytest.approx(depth)


def test_too_little_volume_history_flags_nothing() -> None:
    df = crash(flat(60), at=20, depth=0.3)  # only 20 minutes before the peak (< 30 required)
    assert detect(df).empty
    assert len(detect(df, CrashRule(min_volume_bars=10))) == 1


def test_two_crashes_are_two_events_and_a_long_fall_is_one() -> None:
    df = crash(crash(flat(300), at=70, depth=0.2), at=200, depth=0.25, minutes=2)
    ev = detect(df)
    assert list(ev["start_ts"]) == [T0 + pd.Timedelta(minutes=70), T0 + pd.Timedelta(minutes=200)]
    long = crash(flat(300), at=100, depth=0.45, minutes=12, vol_mult=6)  # qualifies on several windows
    assert len(detect(long)) == 1


def test_empty_and_bad_input() -> None:
    assert detect(flat(0)).empty
    with pytest.raises(ValueError, match="lack column"):
        detect(flat(10).drop(columns="volume"))
    bad = flat(10)
    bad.loc[3, "low"] = -1
    with pytest.raises(ValueError, match="bad low"):
        detect(bad)
    dup = pd.concat([flat(10), flat(10).iloc[[4]]])
    with pytest.raises(ValueError, match="duplicate bar"):
        detect(dup)
    off = flat(10)
    off.loc[2, "ts"] += pd.Timedelta(seconds=30)
    with pytest.raises(ValueError, match="minute grid"):
        detect(off)
    with pytest.raises(ValueError, match="drop"):
        CrashRule(drop=1.5)
    with pytest.raises(ValueError, match="min_volume_bars"):
        CrashRule(volume_lookback_minutes=10, min_volume_bars=20)


def test_detect_many_and_intervals() -> None:
    a = crash(flat(), at=70, depth=0.2).assign(exchange="x", symbol="A/B")
    b = flat().assign(exchange="x", symbol="C/D")
    ev = detect_many(pd.concat([a, b]))
    assert list(ev["symbol"]) == ["A/B"]
    e = ev.iloc[0]
    # each event belongs to exactly one of consecutive (start, end] intervals
    edges = pd.date_range(T0, T0 + pd.Timedelta(hours=2), freq="5min")
    hits = [len(in_interval(ev, "final_at", lo, hi)) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    assert sum(hits) == 1
    assert in_interval(ev, "detected_at", e["detected_at"] - pd.Timedelta(minutes=5), e["detected_at"]).shape[0] == 1
    assert in_interval(ev, "detected_at", e["detected_at"], e["detected_at"] + pd.Timedelta(minutes=5)).empty
    with pytest.raises(ValueError, match="exchange"):
        detect_many(flat())


def test_rule_and_level_params_take_every_config_field_by_name() -> None:
    """Settings reach the detector and the level finder field by field, whatever their order."""
    from dataclasses import asdict

    from entasis.config import FlashCrashConfig, LevelsConfig
    from entasis.signals.flashcrash import CrashRule
    from entasis.signals.levels import LevelParams

    cfg = FlashCrashConfig(drop=0.2, window_minutes=7, volume_ratio=3.0, volume_lookback_minutes=90,
                           min_volume_bars=40, recovery_minutes=20, onset_tolerance=0.02)
    rule = asdict(CrashRule.from_config(cfg))
    assert rule == {k: v for k, v in cfg.model_dump().items() if k in rule}
    assert set(rule) == set(cfg.model_dump()) - {"liquidity_impact"}  # not applied: needs order-book depth
    lv = LevelsConfig(lookback_bars=300, pivot_bars=4, atr_bars=10, tolerance_atr=0.7, halflife_bars=30.0,
                      profile_bins=30, min_strength=2.0)
    params = asdict(LevelParams.from_config(lv))
    assert {k: params[k] for k in lv.model_dump() if k in params} == {k: v for k, v in lv.model_dump().items()
                                                                       if k in params}
    assert params["min_strength"] == 2.0 and params["profile_bins"] == 30 and params["max_levels"] == 3
