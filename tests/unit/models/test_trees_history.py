"""The last-bar tree view ignores ``history`` (faster inference) and gives the same forecasts; lags still use it."""

from __future__ import annotations

import numpy as np

from entasis.models.datasets import split_frame
from entasis.models.factory import build_model

from ._synth import FEATS, TARGET, TINY, frame


def test_last_bar_view_forecasts_do_not_depend_on_history() -> None:
    sp = split_frame(frame(0.6, n_days=200), 7)
    for name in ("rf", "xgb", "lgbm"):
        m = build_model(name, features=FEATS, **TINY[name]).fit(sp.train, TARGET, valid=sp.valid)
        assert m.min_history == 1
        a = m.predict_proba(sp.test, history=sp.frame).to_numpy()
        b = m.predict_proba(sp.test).to_numpy()
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)


def test_lagged_view_still_reads_history() -> None:
    sp = split_frame(frame(0.6, n_days=200), 7)
    m = build_model("rf", features=FEATS, lags=[3], **TINY["rf"]).fit(sp.train, TARGET, history=sp.frame)
    with_hist = m.predict_proba(sp.test, history=sp.frame).to_numpy()
    alone = m.predict_proba(sp.test).to_numpy()
    # without history the first 3 bars of each symbol lack their lags: ineligible (NaN), never guessed
    assert np.isfinite(with_hist).all()
    assert np.isnan(alone).any(axis=1).sum() == 3 * sp.test["symbol"].nunique()
