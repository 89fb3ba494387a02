"""Flash crashes injected into the simulated market: seeded, exact aggregates, found by the detector."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from entasis.signals.flashcrash import detect
from entasis.sim.crashes import FlashCrash
from entasis.sim.market import MarketSim

SYMS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"]


def market() -> MarketSim:
    return MarketSim(seed=7, symbols=SYMS, start="2023-01-01", end="2023-01-06")


def test_no_injection_leaves_the_market_untouched() -> None:
    a, b = market(), market()
    b.inject_flash_crash("ETH/USDT", "2023-01-03T10:00Z", depth=0.3)
    for tf in ("1m", "1h", "1d"):
        pd.testing.assert_frame_equal(a.candles("BTC/USDT", tf), b.candles("BTC/USDT", tf))  # other asset
    before = a.candles("ETH/USDT", "1m")
    after = b.candles("ETH/USDT", "1m")
    outside = (before["ts"] < "2023-01-03 10:00") | (before["ts"] >= "2023-01-03 10:33")
    pd.testing.assert_frame_equal(before[outside], after[outside])
    assert not before[~outside].equals(after[~outside])


def test_same_seed_same_crashes() -> None:
    c1 = market().inject_flash_crashes(5, seed=3)
    c2 = market().inject_flash_crashes(5, seed=3)
    c3 = market().inject_flash_crashes(5, seed=4)
    assert c1 == c2 and c1 != c3
    assert len(c1) == 5 and all(c.asset in SYMS for c in c1)


def test_coarser_candles_stay_exact_aggregates() -> None:
    m = market()
    c = m.inject_flash_crash("SOL/USDT", "2023-01-02T23:58Z", depth=0.25, fall_minutes=4)  # across midnight
    for kind in ("spot", "perp"):
        mins = m.candles("SOL/USDT", "1m", kind=kind).set_index("ts")
        for tf, rule in (("1h", "1h"), ("1d", "1D")):
            agg = mins.resample(rule).agg({"open": "first", "high": "max", "low": "min", "close": "last",
                                           "volume": "sum"})
            got = m.candles("SOL/USDT", tf, kind=kind).set_index("ts")
            pd.testing.assert_frame_equal(agg, got[agg.columns], check_freq=False)
    day = m.candles("SOL/USDT", "1d").set_index("ts")
    trough_day = pd.Timestamp(c.trough_minute, unit="ms", tz="UTC").floor("1D")
    assert day.loc[trough_day, "low"] < market().candles("SOL/USDT", "1d").set_index("ts").loc[trough_day, "low"]


def test_every_injected_crash_is_found_with_its_start_and_depth() -> None:
    m = market()
    crashes = m.inject_flash_crashes(8, seed=11, start="2023-01-02", end="2023-01-05")
    found = 0
    for sym in SYMS:
        ev = detect(m.candles(sym, "1m"))
        mine = [c for c in crashes if c.asset == sym]
        assert len(ev) == len(mine), (sym, ev, mine)  # nothing else: the rest of the days are calm
        for c, e in zip(mine, ev.itertuples(), strict=True):
            assert e.start_ts == pd.Timestamp(c.start, unit="ms", tz="UTC")
            assert abs(e.depth - c.depth) < 0.01, (e.depth, c.depth)
            assert 0 <= (e.trough_ts - pd.Timestamp(c.trough_minute, unit="ms", tz="UTC")).total_seconds() <= 60
            assert e.volume_ratio >= 2.5
            found += 1
    assert found == 8


def test_calm_simulated_days_raise_nothing() -> None:
    m = MarketSim(seed=21, symbols=SYMS, start="2023-05-01", end="2023-05-04")
    for sym in SYMS:
        assert detect(m.candles(sym, "1m")).empty, sym


def test_bad_crash_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="minute grid"):
        FlashCrash("BTC/USDT", 1_000, 0.2)
    with pytest.raises(ValueError, match="depth"):
        FlashCrash("BTC/USDT", 60_000, 1.2)
    with pytest.raises(ValueError, match="outside the simulated range"):
        market().inject_flash_crash("BTC/USDT", "2025-01-01")
    with pytest.raises(ValueError, match="cannot place"):
        market().inject_flash_crashes(50, seed=1, symbols=["BTC/USDT"], start="2023-01-02T00:00Z",
                                      end="2023-01-02T02:00Z")
    assert np.isclose(FlashCrash("BTC/USDT", 0, 0.2).factor(np.array([0, 180_000]))[1], 0.8)
