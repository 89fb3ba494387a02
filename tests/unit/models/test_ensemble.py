"""The ensemble: weights, renormalisation, calibration, confidence, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entasis.domain import PROBA_COLUMNS, confidence
from entasis.models.base import ModelError
from entasis.models.datasets import Split, split_frame
from entasis.models.ensemble import DEFAULT_WEIGHTS, EnsembleModel, resolve_weights
from entasis.models.factory import build_model, load_model
from entasis.models.weights import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    fit_weights,
    log_loss,
)

from ._synth import FEATS, TARGET, TINY, labels

ALL = ["lstm", "rf", "xgb", "lgbm"]


@pytest.fixture(scope="module")
def split(planted: pd.DataFrame) -> Split:
    return split_frame(planted, 7)


@pytest.fixture(scope="module")
def ensemble(split: Split) -> EnsembleModel:
    e = build_model("ensemble", members=ALL, features=FEATS, member_params=TINY)
    assert isinstance(e, EnsembleModel)
    return e.fit(split.train, TARGET, valid=split.valid, history=split.frame)


def test_default_weights_are_the_specified_ones_and_renormalise() -> None:
    assert resolve_weights(ALL, "default") == DEFAULT_WEIGHTS == {"lstm": 0.4, "rf": 0.2, "xgb": 0.2, "lgbm": 0.2}
    w = resolve_weights(["rf", "xgb", "lgbm"], "default")
    assert w == pytest.approx({"rf": 1 / 3, "xgb": 1 / 3, "lgbm": 1 / 3})
    w = resolve_weights(["lstm", "rf"], "default")
    assert w == pytest.approx({"lstm": 2 / 3, "rf": 1 / 3})
    with pytest.raises(ModelError, match="non-negative"):
        resolve_weights(["rf", "xgb"], {"rf": -1.0, "xgb": 2.0})
    with pytest.raises(ModelError, match="lacks"):
        resolve_weights(["rf", "xgb"], {"rf": 1.0})


def test_probabilities_sum_to_one_and_follow_the_stack(ensemble: EnsembleModel, split: Split) -> None:
    from entasis.models.stacking import prior_inputs

    p = ensemble.predict_proba(split.test, history=split.frame)
    ok = p.notna().all(axis=1)
    assert ok.sum() > 100
    np.testing.assert_allclose(p[ok].sum(axis=1), 1.0, atol=1e-12)
    raw = ensemble.member_proba(split.test, history=split.frame, calibrated=False)
    inputs = {**raw, **prior_inputs(split.test["symbol"].to_numpy(), ensemble.freq, ensemble.base_rate,
                                    labels=ensemble.labels, ts=split.test["ts"].to_numpy())}
    assert ensemble.stacker is not None and ensemble.oof_source == "inner:1"
    # the trailing frequencies known at t are a stacker input; the class offsets are shrunk hard by default
    assert "prior:trailing_freq" in ensemble.stacker.names
    assert ensemble.stacker.offsets == "shrunk" and np.abs(ensemble.stacker.b).max() < 0.1
    np.testing.assert_allclose(p[ok].to_numpy(), ensemble.stacker.predict(inputs)[ok.to_numpy()], atol=1e-12)
    # the fixed preset (specification weights over temperature-scaled members) is shown beside it
    members = ensemble.member_proba(split.test, history=split.frame)
    mix = np.sum([DEFAULT_WEIGHTS[m] * members[m] for m in ALL], axis=0)
    np.testing.assert_allclose(ensemble.preset_proba(split.test, history=split.frame)[ok.to_numpy()],
                               mix[ok.to_numpy()], atol=1e-12)
    assert ensemble.weights == DEFAULT_WEIGHTS
    # planted signal: the stack puts weight on the members, not only on the prior
    w = ensemble.stacked_weights()
    assert sum(w[m] for m in ALL) > 0.1, w
    # eligibility is the strictest member's
    assert ensemble.min_history == max(m.min_history for m in ensemble.models.values())


def test_temperatures_improve_validation_log_loss(split: Split) -> None:
    params = {k: TINY[k] for k in ("rf", "lgbm")}
    e = EnsembleModel(members=["rf", "lgbm"], weights="default", features=FEATS, member_params=params)
    e.fit(split.train, TARGET, valid=split.valid, history=split.frame)
    raw = e.member_proba(split.valid, history=split.frame, calibrated=False)
    y = labels(split.valid)
    for name, p in raw.items():
        ok = ~np.isnan(y) & ~np.isnan(p).any(axis=1)
        t = e.temperatures[name]
        assert t > 0
        before = log_loss(p[ok], y[ok].astype(int))
        after = log_loss(apply_temperature(p[ok], t), y[ok].astype(int))
        assert after <= before + 1e-12, (name, t, before, after)


def test_learned_weights_are_a_simplex_and_lower_validation_loss(split: Split) -> None:
    params = {k: TINY[k] for k in ("rf", "lgbm")}
    e = EnsembleModel(members=["rf", "lgbm"], weights="learned", features=FEATS, member_params=params)
    e.fit(split.train, TARGET, valid=split.valid, history=split.frame)
    w = np.array(list(e.weights.values()))
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
    cal = e.member_proba(split.valid, history=split.frame)
    y = labels(split.valid)
    ok = ~np.isnan(y) & ~np.isnan(cal["rf"]).any(axis=1)
    yy = y[ok].astype(int)
    learned = log_loss(np.sum([e.weights[m] * cal[m][ok] for m in cal], axis=0), yy)
    equal = log_loss(0.5 * cal["rf"][ok] + 0.5 * cal["lgbm"][ok], yy)
    assert learned <= equal + 1e-9


def test_fit_weights_finds_the_informative_member() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 500)
    good = np.full((500, 3), 0.1)
    good[np.arange(500), y] = 0.8
    bad = rng.dirichlet([1, 1, 1], 500)
    w = fit_weights([good, bad], y)
    assert w[0] > 0.9 and w.sum() == pytest.approx(1.0) and (w >= 0).all()


def test_fit_temperature_softens_overconfident_probabilities() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 2000)
    # right 50% of the time but claims 95%
    pred = np.where(rng.random(2000) < 0.5, y, (y + 1) % 3)
    p = np.full((2000, 3), 0.025)
    p[np.arange(2000), pred] = 0.95
    t = fit_temperature(p, y)
    assert t > 1.5
    cal = apply_temperature(p, t)
    assert expected_calibration_error(cal, y) < expected_calibration_error(p, y) / 3
    assert np.allclose(cal.sum(axis=1), 1.0)


def test_confidence_levels() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.69, 0.3, 0.01], [0.5, 0.25, 0.25], [0.4, 0.3, 0.3], [np.nan] * 3])
    conf, level = confidence(p)
    np.testing.assert_allclose(conf[:4], [70.0, 69.0, 50.0, 40.0])
    assert list(level) == ["high", "medium", "medium", "low", None]
    assert np.isnan(conf[4])


def test_predict_adds_class_and_confidence(ensemble: EnsembleModel, split: Split) -> None:
    out = ensemble.predict(split.test, history=split.frame, members=True)
    ok = out["p_bearish"].notna()
    assert (out.loc[ok, "predicted_class"].astype(int).to_numpy()
            == out.loc[ok, list(PROBA_COLUMNS)].to_numpy().argmax(axis=1)).all()
    np.testing.assert_allclose(out.loc[ok, "confidence"], out.loc[ok, list(PROBA_COLUMNS)].max(axis=1) * 100)
    assert set(out.loc[ok, "confidence_level"]) <= {"high", "medium", "low"}
    assert "lstm_p_bullish" in out.columns
    assert list(out.index) == list(split.test.index)


def test_ensemble_save_load_identical(ensemble: EnsembleModel, split: Split, tmp_path: Path) -> None:
    ensemble.save(tmp_path / "ens")
    again = load_model(tmp_path / "ens")
    assert isinstance(again, EnsembleModel)
    assert again.weights == ensemble.weights and again.temperatures == ensemble.temperatures
    assert again.stacked_weights() == ensemble.stacked_weights()
    np.testing.assert_array_equal(ensemble.predict_proba(split.test, history=split.frame).to_numpy(),
                                  again.predict_proba(split.test, history=split.frame).to_numpy())


def test_ensemble_needs_validation_for_calibration(split: Split) -> None:
    e = EnsembleModel(members=["rf"], weights="default", features=FEATS, member_params={"rf": TINY["rf"]})
    with pytest.raises(ModelError, match="validation"):
        e.fit(split.train, TARGET)
    with pytest.raises(ModelError, match="duplicate"):
        EnsembleModel(members=["rf", "rf"])
    with pytest.raises(ModelError, match="not in members"):
        EnsembleModel(members=["rf"], member_params={"xgb": {}})
