"""The vectorised trading simulation: fees, slippage, funding, sizing, holding, and the loop reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from entasis.backtest.folds import BacktestError
from entasis.backtest.simulate import (
    TradingConfig,
    funding_per_bar,
    simulate_models,
    simulate_predictions,
    strategy_returns,
    strategy_returns_loop,
    target_weights,
    trading_metrics,
)

W = np.array([1.0, 1.0, -1.0, 0.0])
R = np.array([0.01, 0.02, -0.03, 0.05])


def test_fees_charged_on_turnover() -> None:
    res = strategy_returns(W, R, None, cost_rate=0.001)  # 10 bps per side
    assert res["turnover"].tolist() == [1.0, 0.0, 2.0, 1.0]     # open, hold, flip (two sides), close
    assert res["cost"] == pytest.approx([0.001, 0.0, 0.002, 0.001])
    assert res["net"] == pytest.approx([0.01 - 0.001, 0.02, 0.03 - 0.002, -0.001])
    free = strategy_returns(W, R, None, cost_rate=0.0)
    assert free["net"] == pytest.approx([0.01, 0.02, 0.03, 0.0])
    # fee and slippage add up per side
    assert TradingConfig(fee_bps=10, slippage_bps=5).cost_rate == pytest.approx(0.0015)


def test_funding_longs_pay_shorts_receive() -> None:
    f = np.array([0.0003, -0.0001, 0.0003, 0.0003])
    res = strategy_returns(W, R, f, cost_rate=0.0)
    assert res["funding"] == pytest.approx([0.0003, -0.0001, -0.0003, 0.0])
    # long pays positive funding, long receives negative, short receives positive, flat pays nothing
    assert res["net"] == pytest.approx([0.01 - 0.0003, 0.02 + 0.0001, 0.03 + 0.0003, 0.0])


def test_vectorised_equals_bar_by_bar_loop() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    w = rng.choice([-1.0, 0.0, 1.0, 0.5], size=n)
    r = rng.normal(0, 0.03, n)
    f = rng.normal(0, 1e-4, n)
    vec = strategy_returns(w, r, f, cost_rate=0.0012)["net"]
    assert vec == pytest.approx(strategy_returns_loop(w, r, f, 0.0012), abs=1e-15)


def test_funding_events_map_to_the_holding_bar() -> None:
    day = np.timedelta64(1, "D")
    hold_start = np.array(["2021-01-02", "2021-01-03"], dtype="datetime64[ns]")
    ev = np.array(["2021-01-02T00:00", "2021-01-02T08:00", "2021-01-02T16:00", "2021-01-03T00:00",
                   "2021-01-03T08:00", "2021-01-05T08:00"], dtype="datetime64[ns]")
    rates = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    # (hold_start, hold_start + 1 day]: the event at the opening instant belongs to the previous bar
    assert funding_per_bar(hold_start, day.astype("timedelta64[ns]"), ev, rates).tolist() == [9.0, 5.0]


def test_positions_latest_block_long_only_and_sizing() -> None:
    d = np.array([1.0, -1.0, 0.0, np.nan, 1.0, -1.0])
    conf = np.array([0.9, 0.6, 0.5, np.nan, 0.4, 0.8])
    assert target_weights(d, conf, TradingConfig()).tolist() == [1, -1, 0, 0, 1, -1]
    assert target_weights(d, conf, TradingConfig(long_only=True)).tolist() == [1, 0, 0, 0, 1, 0]
    # non-overlapping 3-day holds: the decision on bars 0 and 3 is held for three bars
    assert target_weights(d, conf, TradingConfig(hold="block"), horizon_bars=3).tolist() == [1, 1, 1, 0, 0, 0]
    spec = target_weights(d, conf, TradingConfig(sizing="confidence"))
    assert spec == pytest.approx([0.018, -0.012, 0.0, 0.0, 0.008, -0.016])
    capped = target_weights(d, conf, TradingConfig(sizing="confidence", risk_fraction=0.1))
    assert capped == pytest.approx([0.05, -0.05, 0.0, 0.0, 0.04, -0.05])
    with pytest.raises(BacktestError, match="sizing"):
        TradingConfig(sizing="kelly")  # type: ignore[arg-type]


def test_simulate_predictions_aligns_next_close_and_costs() -> None:
    ts = pd.date_range("2021-01-01", periods=5, freq="1D", tz="UTC")
    prices = pd.DataFrame({"symbol": "A/USDT", "ts": ts, "close": [100.0, 110.0, 99.0, 99.0, 120.0]})
    preds = pd.DataFrame({"symbol": "A/USDT", "ts": ts[:4], "predicted_class": [2.0, 0.0, np.nan, 1.0],
                          "confidence": [0.7, 0.6, np.nan, 0.5]})
    funding = pd.DataFrame({"symbol": "A/USDT", "ts": [ts[1] + pd.Timedelta(hours=8)], "funding_rate": [0.001]})
    out = simulate_predictions(preds, prices, cfg=TradingConfig(fee_bps=10), horizon_bars=7, funding=funding)
    assert out["weight"].tolist() == [1.0, -1.0, 0.0, 0.0]
    # long 01→02 earns +10% and pays the 01-02 08:00 funding; short 02→03 earns +10%
    assert out["net"].to_numpy() == pytest.approx([0.10 - 0.001 - 0.001, 0.10 - 0.002, -0.001, 0.0])
    assert out["earned_ts"].tolist() == list(ts[1:5])
    bh = simulate_predictions(preds, prices, cfg=TradingConfig(fee_bps=0), horizon_bars=7, always_long=True)
    assert bh["net"].to_numpy() == pytest.approx([0.1, -0.1, 0.0, 120 / 99 - 1])


def test_trading_metrics() -> None:
    res = strategy_returns(W, R, None, cost_rate=0.0)
    m = trading_metrics(res, periods_per_year=365)
    assert m["hit_rate"] == pytest.approx(1.0)            # three active bars, all positive
    assert m["exposure"] == pytest.approx(0.75)
    assert m["turnover_per_bar"] == pytest.approx(1.0)
    assert m["n_trades"] == 3
    assert m["total_return"] == pytest.approx(1.01 * 1.02 * 1.03 - 1)


def test_many_strategies_at_once_equal_one_at_a_time() -> None:
    rng = np.random.default_rng(3)
    ts = pd.date_range("2021-01-01", periods=60, freq="1D", tz="UTC")
    prices = pd.concat([pd.DataFrame({"symbol": s, "ts": ts, "close": 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 60)))})
                        for s in ("A/USDT", "B/USDT")])
    funding = pd.DataFrame({"symbol": "A/USDT", "ts": ts + pd.Timedelta(hours=8), "funding_rate": 1e-4})
    preds = pd.concat([pd.DataFrame({"model": m, "symbol": s, "ts": ts[:-1],
                                     "predicted_class": rng.choice([0.0, 1.0, 2.0, np.nan], 59),
                                     "confidence": rng.uniform(0.34, 1, 59)})
                       for m in ("m1", "m2", "m3") for s in ("A/USDT", "B/USDT")], ignore_index=True)
    for cfg in (TradingConfig(), TradingConfig(sizing="confidence", hold="block", long_only=True)):
        together = simulate_models(preds, prices, cfg=cfg, horizon_bars=5, funding=funding, always_long=("m3",))
        for m in ("m1", "m2", "m3"):
            alone = simulate_predictions(preds[preds["model"] == m], prices, cfg=cfg, horizon_bars=5,
                                         funding=funding, always_long=m == "m3")
            got = together[together["model"] == m].reset_index(drop=True)
            assert got["net"].to_numpy() == pytest.approx(alone["net"].to_numpy())
            assert (got["ts"] == alone["ts"]).all()
    with pytest.raises(BacktestError, match="same rows|other"):
        simulate_models(preds.iloc[1:], prices, cfg=TradingConfig(), horizon_bars=5)


def test_a_short_through_a_huge_rally_is_a_wipe_out_not_an_error() -> None:
    import numpy as np

    from entasis.backtest.simulate import strategy_returns, trading_metrics

    res = strategy_returns(np.array([-1.0, -1.0, 0.0]), np.array([0.1, 3.5, 0.0]), None, 0.0)
    assert res["net"][1] == -3.5                      # the raw bar P&L is kept for inspection
    m = trading_metrics(res, 365.0)
    assert abs(m["max_drawdown"]) == pytest.approx(1.0, abs=1e-6)   # the capital is gone
