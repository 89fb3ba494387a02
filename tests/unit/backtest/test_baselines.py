"""Naive baselines on hand-made frames: majority per coin, persistence, always-bullish, momentum."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from entasis.backtest.baselines import FoldBaselines, lagged_values, momentum_signal, rule_signals


def _frame() -> pd.DataFrame:
    ts = pd.date_range("2021-01-01", periods=6, freq="1D", tz="UTC")
    return pd.DataFrame({
        "symbol": ["A/USDT"] * 6 + ["B/USDT"] * 6,
        "ts": list(ts) * 2,
        "y_cls_2d": [2, 2, 0, 1, 2, 2, 0, 0, 0, 1, 2, 0],
    })


def test_lagged_label_is_the_class_h_days_earlier() -> None:
    f = _frame()
    lag = lagged_values(f, "y_cls_2d", 2)
    assert np.isnan(lag[:2]).all() and np.isnan(lag[6:8]).all()   # no row two days earlier
    assert lag[2:6].tolist() == [2, 2, 0, 1]
    assert lag[8:12].tolist() == [0, 0, 0, 1]
    # a missing day leaves NaN, never the wrong day's label
    gap = f.drop(index=[1]).reset_index(drop=True)
    lg = lagged_values(gap, "y_cls_2d", 2)
    assert np.isnan(lg[2])  # 2021-01-04 looks for 01-02, which is gone


def test_majority_and_rules_fit_on_the_window() -> None:
    f = _frame()
    rules = rule_signals(f, target="y_cls_2d", horizon=2, prices=None)
    train = f.index[f["ts"] < "2021-01-05"]
    fb = FoldBaselines(f.loc[train, "symbol"].to_numpy(), f.loc[train, "y_cls_2d"].to_numpy(), rules.loc[train])
    # A: classes 2, 2, 0, 1 -> counts (1, 1, 2) + 1 each over 7
    assert fb.freq["A/USDT"] == pytest.approx(np.array([2, 2, 3]) / 7)
    assert fb.freq["B/USDT"] == pytest.approx(np.array([4, 2, 1]) / 7)
    # persistence on the window: A rows 3, 4 (lags 2, 2 vs 0, 1) miss; B rows (0, 0 vs 0, 1): 1 hit
    assert fb.rule_conf["persistence"] == pytest.approx((1 + 1) / (4 + 2))
    # always bullish hits 2 of 8 training rows
    assert fb.rule_conf["always_bullish"] == pytest.approx((2 + 1) / (8 + 2))
    test = f.index[f["ts"] >= "2021-01-05"]
    syms = np.array(["A/USDT", "B/USDT", "C/USDT", "A/USDT"])
    out = fb.predict(syms, rules.loc[[test[0], test[2], test[2], test[1]]])
    maj = out["majority"]
    assert maj.pred.tolist() == [2, 0, 0, 2]
    assert maj.proba[2] == pytest.approx(fb.pooled)  # unseen coin -> pooled frequencies
    pers = out["persistence"]
    a = fb.rule_conf["persistence"]
    assert pers.pred.tolist() == [0, 0, 0, 1]  # labels two days earlier
    assert pers.proba[0] == pytest.approx([a, (1 - a) / 2, (1 - a) / 2])
    bull = out["always_bullish"]
    assert bull.pred.tolist() == [2, 2, 2, 2]
    assert bull.proba.sum(axis=1) == pytest.approx(np.ones(4))
    # no prices: momentum is undefined and falls back to the majority
    assert out["momentum"].pred.tolist() == maj.pred.tolist()


def test_momentum_against_the_moving_average() -> None:
    ts = pd.date_range("2021-01-01", periods=6, freq="1D", tz="UTC")
    prices = pd.DataFrame({"symbol": "A/USDT", "ts": ts, "close": [10, 11, 12, 9, 9, 15.0]})
    f = pd.DataFrame({"symbol": "A/USDT", "ts": ts})
    sig = momentum_signal(f, prices, days=3)
    # SMA3: -, -, 11, 10.67, 10, 11 -> close above / below
    assert np.isnan(sig[:2]).all()
    assert sig[2:].tolist() == [2, 0, 0, 2]
    with pytest.raises(ValueError, match="momentum_days"):
        momentum_signal(f, prices, days=1)
