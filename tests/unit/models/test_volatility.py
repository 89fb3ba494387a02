"""Volatility forecasts: learnable when planted, reported beside naive and GARCH(1,1) baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entasis.models.base import ModelError
from entasis.models.datasets import split_frame
from entasis.models.volatility import VolatilityModel, evaluate_vol, garch_vol, naive_vol

from ._synth import FEATS, TINY

VT = "y_vol_7d"


def _planted_vol(df: pd.DataFrame, signal: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = df.copy()
    driver = rng.normal(size=len(out))
    out["noise_2"] = driver
    out[VT] = np.exp(-0.5 + signal * 0.5 * driver + 0.2 * rng.normal(size=len(out)))
    return out


@pytest.mark.parametrize("kind", ["lgbm", "lstm"])
def test_vol_model_learns_planted_signal_and_not_noise(planted: pd.DataFrame, kind: str) -> None:
    lstm = dict(TINY["lstm"])
    scores = {}
    for signal in (1.0, 0.0):
        df = _planted_vol(planted, signal, seed=5)
        sp = split_frame(df, 7)
        m = VolatilityModel(kind=kind, features=FEATS, n_jobs=1, n_estimators=150, lstm_params=lstm)
        m.fit(sp.train, VT, valid=sp.valid, history=sp.frame)
        pred = m.predict(sp.test, history=sp.frame)
        y = sp.test[VT].to_numpy()
        ok = ~np.isnan(pred)
        assert ok.sum() > 100
        scores[signal] = 1 - np.sum((pred[ok] - y[ok]) ** 2) / np.sum((y[ok] - y[ok].mean()) ** 2)
    assert scores[1.0] > 0.5, scores
    assert scores[0.0] < 0.1, scores


def test_vol_model_save_load_identical(planted: pd.DataFrame, tmp_path: Path) -> None:
    sp = split_frame(planted, 7)
    m = VolatilityModel(kind="lgbm", features=FEATS, n_jobs=1, n_estimators=50).fit(sp.train, VT, valid=sp.valid)
    m.save(tmp_path / "vol")
    again = VolatilityModel.load(tmp_path / "vol")
    np.testing.assert_array_equal(m.predict(sp.test, history=sp.frame), again.predict(sp.test, history=sp.frame))
    with pytest.raises(ModelError, match="not a saved volatility model"):
        VolatilityModel.load(tmp_path)
    with pytest.raises(ModelError, match="kind"):
        VolatilityModel(kind="svm")


def test_naive_vol_is_the_realized_vol_known_at_t(planted: pd.DataFrame) -> None:
    rows = planted.iloc[[50, 60, 700]]
    got = naive_vol(planted, rows, 7)
    idx = planted.set_index(["symbol", "ts"])[VT]
    expect = [idx[(s, t - pd.Timedelta(days=7))] for s, t in zip(rows["symbol"], rows["ts"], strict=True)]
    np.testing.assert_allclose(got, expect)


def test_garch_baseline_beats_naive_on_garch_data_and_never_looks_ahead(planted: pd.DataFrame) -> None:
    sp = split_frame(planted, 7)
    res = evaluate_vol(None, sp.frame, sp.train, sp.test, 7)
    assert res["garch"]["n"] > 100
    assert res["garch"]["rmse"] < res["naive"]["rmse"]
    # Forecasts for early test rows do not change when later bars are appended.
    cut = sp.test["ts"].min() + pd.Timedelta(days=20)
    early = sp.test[sp.test["ts"] <= cut]
    a, why_a = garch_vol(sp.frame[sp.frame["ts"] <= cut], sp.train, early, 7)
    b, why_b = garch_vol(sp.frame, sp.train, early, 7)
    assert why_a is None and why_b is None
    np.testing.assert_allclose(a, b, rtol=1e-9)


def test_garch_reports_why_it_is_unavailable(planted: pd.DataFrame) -> None:
    sp = split_frame(planted.drop(columns=["ret_1d"]), 7)
    out, why = garch_vol(sp.frame, sp.train, sp.test, 7)
    assert np.isnan(out).all() and why is not None and "daily-return column" in why
