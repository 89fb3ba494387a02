"""Baselines and metrics: what every model figure is shown beside."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, precision_score
from sklearn.metrics import log_loss as sk_log_loss

from entasis.models.datasets import split_frame
from entasis.models.scoring import Baselines, classification_metrics, compare, lagged_label, regression_metrics

from ._synth import TARGET, labels


def test_classification_metrics_agree_with_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 300)
    p = rng.dirichlet([2, 2, 2], 300)
    m = classification_metrics(p, y)
    pred = p.argmax(axis=1)
    assert m["accuracy"] == pytest.approx((pred == y).mean())
    assert m["log_loss"] == pytest.approx(sk_log_loss(y, p, labels=[0, 1, 2]))
    assert m["precision_bullish"] == pytest.approx(precision_score(y, pred, labels=[2], average="macro"))
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert np.array(m["confusion"]).sum() == 300 and np.trace(np.array(m["confusion"])) == (pred == y).sum()
    assert 0 <= m["ece"] <= 1


def test_majority_baseline_is_per_coin_and_from_training_only() -> None:
    ts = pd.date_range("2021-01-01", periods=6, freq="1D", tz="UTC")
    train = pd.DataFrame({"symbol": ["A"] * 3 + ["B"] * 3, "ts": list(ts[:3]) * 2,
                          TARGET: pd.array([2, 2, 0, 0, 0, 1], dtype="Int16")})
    test = pd.DataFrame({"symbol": ["A", "B", "C"], "ts": [ts[5]] * 3, TARGET: pd.array([0, 0, 1], dtype="Int16")})
    b = Baselines.fit(train, TARGET, 7)
    p = b.predict(test, frame=pd.concat([train, test]))["majority"]
    assert list(p.argmax(axis=1)) == [2, 0, 0]  # A: bullish, B: bearish, unseen C: pooled majority (bearish)
    np.testing.assert_allclose(p[0], (np.array([1, 0, 2]) + 1) / 6)  # Laplace-smoothed frequencies of A


def test_persistence_is_the_label_h_days_earlier(planted: pd.DataFrame) -> None:
    sp = split_frame(planted, 7)
    b = Baselines.fit(sp.train, TARGET, 7, frame=sp.frame)
    p = b.predict(sp.test, frame=sp.frame)["persistence"]
    lag = lagged_label(sp.frame, sp.test, TARGET, 7)
    expect = (sp.frame.set_index(["symbol", "ts"])[TARGET]
              .reindex(list(zip(sp.test["symbol"], sp.test["ts"] - pd.Timedelta(days=7), strict=True)))
              .to_numpy(dtype=float, na_value=np.nan))
    np.testing.assert_array_equal(lag, expect)
    ok = ~np.isnan(lag)
    assert ok.sum() > 100
    assert (p[ok].argmax(axis=1) == lag[ok]).all()
    assert 0 < b.fold.rule_conf["persistence"] < 1
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_baselines_score_near_chance_on_planted_signal(planted: pd.DataFrame) -> None:
    sp = split_frame(planted, 7)
    y = labels(sp.test)
    ok = ~np.isnan(y)
    b = Baselines.fit(sp.train, TARGET, 7, frame=sp.frame).predict(sp.test[ok], frame=sp.frame)
    for p in b.values():
        m = classification_metrics(p, y[ok].astype(int))
        assert m["accuracy"] < 0.6 and m["log_loss"] > 0.9


@pytest.mark.parametrize(("acc", "ll", "beats"), [
    (0.51, 0.94, True),     # below the lowest baseline log-loss
    (0.49, 0.90, True),     # log-loss decides: lower accuracy does not veto it
    (0.51, 0.95, False),    # a tie with the best baseline does not beat it
    (0.51, 0.97, False),    # better than one baseline only
    (0.60, 1.20, False),    # accuracy alone never beats
])
def test_compare_is_the_one_log_loss_rule(acc: float, ll: float, beats: bool) -> None:
    base = {"majority": {"accuracy": 0.50, "log_loss": 1.00}, "persistence": {"accuracy": 0.45, "log_loss": 0.95}}
    c = compare({"accuracy": acc, "log_loss": ll}, base)
    assert c["beats_baseline"] is beats
    assert c["best_baseline"] == "persistence" and c["best_accuracy_baseline"] == "majority"
    assert c["accuracy_edge"] == pytest.approx(acc - 0.50)
    assert c["log_loss_edge"] == pytest.approx(0.95 - ll)


def test_compare_with_nothing_to_compare_is_false() -> None:
    assert compare({"accuracy": 0.9, "log_loss": 0.1}, {}) == {"beats_baseline": False}
    assert compare({"accuracy": 0.9}, {"majority": {"accuracy": 0.5, "log_loss": 1.0}})["beats_baseline"] is False


def test_regression_metrics() -> None:
    y = np.array([1.0, 2.0, 3.0, np.nan])
    m = regression_metrics(np.array([1.0, 2.0, 4.0, 5.0]), y)
    assert m["n"] == 3 and m["rmse"] == pytest.approx(np.sqrt(1 / 3)) and m["mae"] == pytest.approx(1 / 3)
    assert m["r2"] == pytest.approx(1 - 1 / 2)
