"""Classification metrics and the block bootstrap against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from entasis.backtest import metrics as bm
from entasis.backtest.folds import BacktestError

Y = np.array([0, 0, 1, 2, 2, 2])
P = np.array([
    [0.6, 0.3, 0.1],    # -> 0, right
    [0.2, 0.5, 0.3],    # -> 1, wrong (0)
    [0.1, 0.8, 0.1],    # -> 1, right
    [0.3, 0.3, 0.4],    # -> 2, right
    [0.5, 0.2, 0.3],    # -> 0, wrong (2)
    [0.05, 0.15, 0.8],  # -> 2, right
])


def test_scores_by_hand() -> None:
    m = bm.classification_metrics(P, Y)
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert m["recall_bearish"] == pytest.approx(0.5)
    assert m["recall_neutral"] == pytest.approx(1.0)
    assert m["recall_bullish"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 2 / 3) / 3)
    assert m["precision_bearish"] == pytest.approx(0.5)
    assert m["precision_neutral"] == pytest.approx(0.5)
    assert m["precision_bullish"] == pytest.approx(1.0)
    assert m["f1_bearish"] == pytest.approx(0.5)
    assert m["f1_neutral"] == pytest.approx(2 / 3)
    assert m["f1_bullish"] == pytest.approx(0.8)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.6, 0.2, 0.8, 0.4, 0.3, 0.8])))
    assert m["brier"] == pytest.approx((0.26 + 0.98 + 0.06 + 0.54 + 0.78 + 0.065) / 6)
    # bins: 0.4 (acc 1), 0.5 ×2 (acc 0), 0.6 (acc 1), 0.8 ×2 (acc 1)
    assert m["ece"] == pytest.approx((0.6 + 2 * 0.5 + 0.4 + 2 * 0.2) / 6)
    assert (m["n_high"], m["n_medium"], m["n_low"]) == (2, 3, 1)
    assert m["accuracy_high"] == 1.0
    assert m["accuracy_medium"] == pytest.approx(1 / 3)
    assert m["accuracy_low"] == 1.0


def test_explicit_prediction_overrides_argmax() -> None:
    # a rule that always says bullish, whatever its smoothed probabilities
    m = bm.classification_metrics(P, Y, pred=np.full(6, 2))
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["confusion"] == [[0, 0, 2], [0, 0, 1], [0, 0, 3]]
    assert m["balanced_accuracy"] == pytest.approx(1 / 3)


def test_reliability_curve() -> None:
    rel = bm.reliability(P, Y)
    assert len(rel) == 10
    b5 = rel.iloc[5]
    assert b5["count"] == 2 and b5["confidence"] == pytest.approx(0.5) and b5["accuracy"] == 0.0
    assert rel["count"].sum() == 6
    assert math.isnan(rel.iloc[0]["accuracy"])


def test_accuracy_over_time() -> None:
    ts = pd.Series(pd.to_datetime(["2021-01-05", "2021-01-20", "2021-02-03"], utc=True))
    s = bm.accuracy_over_time(ts, np.array([1.0, 0.0, 1.0]))
    assert s.tolist() == [0.5, 1.0]


def test_bad_inputs_named() -> None:
    with pytest.raises(BacktestError, match=r"\(n, 3\)"):
        bm.classification_metrics(P[:, :2], Y)
    with pytest.raises(BacktestError, match="NaN"):
        bm.classification_metrics(np.full((1, 3), np.nan), np.array([1]))
    with pytest.raises(BacktestError, match="0/1/2"):
        bm.classification_metrics(P[:1], np.array([3]))


def test_bootstrap_constant_and_known_mean() -> None:
    day = np.repeat(np.arange(50), 2)
    out = bm.block_bootstrap_diff(day, np.full(100, 0.25), block=5, n_boot=200)
    assert out["estimate"] == pytest.approx(0.25)
    assert out["lo"] == pytest.approx(0.25) and out["hi"] == pytest.approx(0.25)
    assert out["p_le_0"] == 0.0
    rng = np.random.default_rng(1)
    d = rng.normal(0.1, 0.5, 2000)
    res = bm.block_bootstrap_diff(np.arange(2000), d, block=10, n_boot=1000)
    assert res["lo"] < 0.1 < res["hi"]
    assert res["hi"] - res["lo"] < 0.1
    # same seed, same interval
    assert bm.block_bootstrap_diff(np.arange(2000), d, block=10, n_boot=1000) == res


def test_bootstrap_blocks_widen_for_autocorrelated_diffs() -> None:
    # a diff that is constant within runs of 20 days: iid resampling understates the spread
    rng = np.random.default_rng(2)
    d = np.repeat(rng.normal(0, 1, 50), 20)
    day = np.arange(d.size)
    narrow = bm.block_bootstrap_diff(day, d, block=1, n_boot=800)
    wide = bm.block_bootstrap_diff(day, d, block=20, n_boot=800)
    assert (wide["hi"] - wide["lo"]) > 2 * (narrow["hi"] - narrow["lo"])
    assert bm.default_block(7, 1000) == 10
    assert bm.default_block(30, 1000) == 30
