"""The market simulator: reproducible, realistic texture, internally consistent bars, no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from entasis.sim.market import DEFAULT_SYMBOLS, MarketSim, aggregate, asset_params


@pytest.fixture(scope="module")
def sim() -> MarketSim:
    return MarketSim(seed=7)


def _agg(df: pd.DataFrame, rule: str) -> pd.DataFrame:
    g = df.groupby(df["ts"].dt.floor(rule))
    return g.agg(open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last"),
                 volume=("volume", "sum"), quote_volume=("quote_volume", "sum"), n=("open", "size"))


def _assert_aggregates(fine: pd.DataFrame, coarse: pd.DataFrame, rule: str, n: int) -> None:
    """Every ``coarse`` bar is exactly the aggregate of its ``n`` ``fine`` bars (OHLC equal, volumes to rounding)."""
    agg = _agg(fine, rule)
    c = coarse.set_index("ts")
    assert (agg["n"] == n).all()
    pd.testing.assert_frame_equal(agg[["open", "high", "low", "close"]], c[["open", "high", "low", "close"]],
                                  check_names=False, check_freq=False)
    np.testing.assert_allclose(agg["volume"], c["volume"], rtol=1e-12)
    np.testing.assert_allclose(agg["quote_volume"], c["quote_volume"], rtol=1e-12)


def test_same_seed_same_data_different_seed_different() -> None:
    a, b, c = MarketSim(seed=11), MarketSim(seed=11), MarketSim(seed=12)
    pd.testing.assert_frame_equal(a.candles("ETH/USDT", "1h"), b.candles("ETH/USDT", "1h"))
    pd.testing.assert_frame_equal(a.funding("ETH/USDT"), b.funding("ETH/USDT"))
    pd.testing.assert_frame_equal(a.open_interest("ETH/USDT"), b.open_interest("ETH/USDT"))
    assert not np.allclose(a.candles("ETH/USDT", "1h")["close"], c.candles("ETH/USDT", "1h")["close"])
    assert not a.funding("ETH/USDT")["funding_rate"].equals(c.funding("ETH/USDT")["funding_rate"])


def test_history_does_not_depend_on_end_or_symbol_list() -> None:
    """Extending the window or adding symbols never rewrites what was already there."""
    short = MarketSim(seed=5, symbols=["BTC/USDT"], end="2022-03-01")
    long = MarketSim(seed=5, symbols=["DOGE/USDT", "BTC/USDT", "ETH/USDT"], end="2023-01-01")
    a = short.candles("BTC/USDT", "1h")
    b = long.candles("BTC/USDT", "1h").iloc[: len(a)]
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_default_symbols_and_generic_names() -> None:
    assert MarketSim().symbols == DEFAULT_SYMBOLS
    p1, p2 = asset_params("FOO/USDT"), asset_params("FOO/USDT:USDT")
    assert p1 == p2 and p1.price > 0 and 0.5 <= p1.beta <= 0.8
    assert asset_params("BAR/USDT") != p1
    with pytest.raises(ValueError, match="must look like 'BTC/USDT'"):
        MarketSim(symbols=["BTCUSDT"])
    with pytest.raises(ValueError, match="unknown timeframe"):
        MarketSim().candles("BTC/USDT", "7m")


def test_stylised_facts(sim: MarketSim) -> None:
    rets = {}
    for s in DEFAULT_SYMBOLS:
        c = sim.candles(s, "1h")["close"].to_numpy()
        rets[s] = np.diff(np.log(c))
    for s, r in rets.items():
        z = (r - r.mean()) / r.std()
        assert np.mean(z**4) > 3.0, f"{s}: hourly returns are not fat-tailed"
        sq = r**2 - np.mean(r**2)
        acs = [np.dot(sq[:-k], sq[k:]) / np.dot(sq, sq) for k in (1, 2, 6, 24)]
        assert min(acs) > 0.0 and np.mean(acs) > 0.03, f"{s}: no volatility clustering {acs}"
        ann = r.std() * np.sqrt(24 * 365)
        assert 0.3 < ann < 2.0, f"{s}: implausible annual volatility {ann:.2f}"
    corr = np.corrcoef(np.vstack(list(rets.values())))
    assert corr[np.triu_indices(len(rets), 1)].min() > 0.2
    assert corr[0, 1] > 0.6  # BTC-ETH


def test_jumps_exist(sim: MarketSim) -> None:
    r = np.diff(np.log(sim.candles("BTC/USDT", "1h")["close"].to_numpy()))
    assert np.sum(np.abs(r) > 8 * r.std()) >= 3


@pytest.mark.parametrize("tf", ["1h", "4h", "1d", "1w"])
@pytest.mark.parametrize("kind", ["spot", "perp"])
def test_ohlc_consistent(sim: MarketSim, tf: str, kind: str) -> None:
    c = sim.candles("SOL/USDT", tf, kind=kind)
    assert (c["low"] <= c[["open", "close"]].min(axis=1)).all()
    assert (c["high"] >= c[["open", "close"]].max(axis=1)).all()
    assert (c["low"] > 0).all() and (c["volume"] >= 0).all() and (c["quote_volume"] >= 0).all()
    assert c["ts"].is_monotonic_increasing and c["ts"].is_unique
    assert str(c["ts"].dt.tz) == "UTC"
    assert (c["ts"] < sim.end).all()


def test_one_day_is_the_aggregate_of_its_hours(sim: MarketSim) -> None:
    for s in ("BTC/USDT", "XRP/USDT"):
        h = sim.candles(s, "1h")
        _assert_aggregates(h, sim.candles(s, "1d"), "D", 24)
        four = sim.candles(s, "4h").set_index("ts")
        pd.testing.assert_series_equal(_agg(h, "4h")["high"], four["high"], check_names=False, check_freq=False)


def test_minutes_aggregate_exactly_to_hours() -> None:
    sim = MarketSim(seed=3, end="2022-01-04")
    m = sim.candles("ETH/USDT", "1m")
    h = sim.candles("ETH/USDT", "1h")
    assert len(m) == 3 * 24 * 60
    assert (m["low"] <= m[["open", "close"]].min(axis=1)).all()
    assert (m["high"] >= m[["open", "close"]].max(axis=1)).all()
    _assert_aggregates(m, h, "h", 60)
    five = sim.candles("ETH/USDT", "5m").set_index("ts")
    pd.testing.assert_series_equal(_agg(m, "5min")["low"], five["low"], check_names=False, check_freq=False)


def test_perp_tracks_spot_with_a_small_premium(sim: MarketSim) -> None:
    spot = sim.candles("BTC/USDT", "1h")["close"].to_numpy()
    perp = sim.candles("BTC/USDT", "1h", kind="perp")["close"].to_numpy()
    prem = perp / spot - 1
    assert np.abs(prem).max() < 0.02 and np.abs(prem).mean() > 1e-5


def test_now_mid_bar_serves_the_partial_bar() -> None:
    full = MarketSim(seed=7)
    mid = MarketSim(seed=7, now="2023-06-01T12:30:20Z")
    h = mid.candles("BTC/USDT", "1h")
    last = h.iloc[-1]
    assert last["ts"] == pd.Timestamp("2023-06-01 12:00", tz="UTC")
    done = full.candles("BTC/USDT", "1h").set_index("ts").loc[last["ts"]]
    assert last["open"] == done["open"]
    assert last["close"] == mid.price_at("BTC/USDT", "2023-06-01T12:30:20Z")
    assert last["volume"] < done["volume"] and last["high"] <= done["high"] and last["low"] >= done["low"]
    # every complete bar is identical to the one served later
    pd.testing.assert_frame_equal(h.iloc[:-1], full.candles("BTC/USDT", "1h").iloc[: len(h) - 1])
    d = mid.candles("BTC/USDT", "1d").iloc[-1]
    assert d["ts"] == pd.Timestamp("2023-06-01", tz="UTC") and d["close"] == last["close"]
    # moving the clock completes the bar
    mid.now = "2023-06-01T13:00Z"
    now_last = mid.candles("BTC/USDT", "1h").iloc[-1]
    cols = ["open", "high", "low", "close", "volume", "quote_volume"]
    assert now_last["ts"] == last["ts"] and now_last[cols].tolist() == done[cols].tolist()
    with pytest.raises(ValueError, match="must lie in"):
        mid.now = "2030-01-01"


def test_funding_every_8h_mostly_the_interest_rate(sim: MarketSim) -> None:
    f = sim.funding("BTC/USDT")
    assert (f["ts"].dt.hour.isin([0, 8, 16])).all() and (f["ts"].diff().dropna() == pd.Timedelta("8h")).all()
    assert (f["ts"] < sim.now).all() and len(f) == 730 * 3
    assert f["funding_rate"].median() == pytest.approx(0.0001)
    assert f["funding_rate"].std() > 1e-5 and f["funding_rate"].abs().max() <= 0.0075
    eight = np.log(sim.candles("BTC/USDT", "8h")["close"]).diff().shift(1).to_numpy()
    assert np.corrcoef(f["funding_rate"].to_numpy()[2:], eight[2:])[0, 1] > 0.05  # trends pay funding
    perp = sim.candles("BTC/USDT", "1h", kind="perp").set_index("ts")["close"]
    prev_close = perp.shift(1).reindex(f["ts"]).to_numpy()
    np.testing.assert_allclose(f["mark_price"].to_numpy()[1:], prev_close[1:])


def test_open_interest(sim: MarketSim) -> None:
    oi = sim.open_interest("ETH/USDT")
    assert (oi["open_interest"] > 0).all() and len(oi) == 730 * 24
    ratio = oi["open_interest_value"] / oi["open_interest"]
    close = sim.candles("ETH/USDT", "1h", kind="perp")["close"].shift(1).to_numpy()
    np.testing.assert_allclose(ratio.to_numpy()[1:], close[1:], rtol=1e-6)
    five = sim.open_interest("ETH/USDT", "5m", now="2022-01-02")
    assert len(five) == 288 and (five["ts"].diff().dropna() == pd.Timedelta("5min")).all()
    assert five.set_index("ts")["open_interest"].loc[oi["ts"].iloc[:24]].equals(
        oi.set_index("ts")["open_interest"].iloc[:24])
    with pytest.raises(ValueError, match="5m..1d"):
        sim.open_interest("ETH/USDT", "1m")


def test_aggregate_helper_keeps_exact_integer_volumes(sim: MarketSim) -> None:
    b = sim.bars("ADA/USDT", "1h")
    d = aggregate(b, "1d")
    assert d.lots.dtype == np.int64 and d.lots.sum() == b.lots.sum() and d.qvu.sum() == b.qvu.sum()


def test_generation_is_lazy_and_cached(sim: MarketSim) -> None:
    fresh = MarketSim(seed=9)
    fresh.candles("BTC/USDT", "1d")
    assert set(fresh._hourly_cache) == {"BTC/USDT"}
    first = fresh._hourly("BTC/USDT")
    fresh.candles("BTC/USDT", "4h")
    assert fresh._hourly("BTC/USDT") is first
