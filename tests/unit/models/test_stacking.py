"""The stacker falls back to the prior, uses skill when there is some, and decides classes explicitly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from entasis.backtest.metrics import log_loss
from entasis.models.datasets import split_frame
from entasis.models.ensemble import EnsembleModel
from entasis.models.stacking import (
    OOF,
    PRIOR_ASSET,
    PRIOR_POOLED,
    PRIOR_TRAILING,
    LabelHistory,
    LogLinearPool,
    class_frequencies,
    decide,
    prior_inputs,
)

from ._synth import FEATS, TARGET, TINY, labels


def _prior(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    base = np.array([0.3, 0.25, 0.45])
    y = rng.choice(3, size=n, p=base)
    return y, np.tile(base, (n, 1))


def test_noise_members_get_no_weight_and_the_pool_is_the_prior() -> None:
    rng = np.random.default_rng(0)
    y, prior = _prior(6000, rng)
    noise = rng.dirichlet([2, 2, 2], size=6000)          # confident-looking, no skill
    inputs = {"rf": noise, PRIOR_ASSET: prior, PRIOR_POOLED: prior}
    pool = LogLinearPool(["rf", PRIOR_ASSET, PRIOR_POOLED]).fit({k: v[:4000] for k, v in inputs.items()}, y[:4000])
    assert pool.weights()["rf"] < 0.02
    held = {k: v[4000:] for k, v in inputs.items()}
    ll_pool = log_loss(pool.predict(held), y[4000:])
    ll_prior = log_loss(prior[4000:], y[4000:])
    assert ll_pool <= ll_prior + 0.002
    assert log_loss(noise[4000:], y[4000:]) > ll_prior + 0.05   # the member alone is much worse


def test_an_informative_member_is_used_and_beats_the_prior() -> None:
    rng = np.random.default_rng(1)
    y, prior = _prior(5000, rng)
    good = np.full((5000, 3), 0.2)
    hit = rng.random(5000) < 0.6
    cls = np.where(hit, y, rng.integers(0, 3, 5000))
    good[np.arange(5000), cls] = 0.6
    pool = LogLinearPool(["good", PRIOR_ASSET]).fit({"good": good, PRIOR_ASSET: prior}, y)
    assert pool.weights()["good"] > 0.3
    assert log_loss(pool.predict({"good": good, PRIOR_ASSET: prior}), y) < log_loss(prior, y) - 0.05


def test_unfit_pool_is_exactly_the_prior_and_state_round_trips() -> None:
    prior = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    other = np.array([[0.9, 0.05, 0.05], [0.1, 0.1, 0.8]])
    pool = LogLinearPool(["m", PRIOR_ASSET])
    np.testing.assert_allclose(pool.predict({"m": other, PRIOR_ASSET: prior}), prior, atol=1e-12)
    pool.fit({"m": other[:1].repeat(5, 0), PRIOR_ASSET: prior[:1].repeat(5, 0)}, np.zeros(5))  # < 10 rows
    assert pool.n_fit == 5 and pool.weights() == {"m": 0.0, PRIOR_ASSET: 1.0}
    again = LogLinearPool.from_state(pool.state())
    np.testing.assert_array_equal(again.predict({"m": other, PRIOR_ASSET: prior}),
                                  pool.predict({"m": other, PRIOR_ASSET: prior}))
    nan = other.copy()
    nan[1] = np.nan
    assert np.isnan(pool.predict({"m": nan, PRIOR_ASSET: prior})[1]).all()


@pytest.mark.parametrize(("p", "rule", "expected"), [
    ([0.40, 0.35, 0.25], "argmax", 0),
    ([0.40, 0.35, 0.25], "base_rate", 1),       # 0.35 / 0.25 > 0.40 / 0.40
    ([0.40, 0.20, 0.40], "argmax", 0),          # tie: the first class
    ([0.40, 0.25, 0.35], "base_rate", 0),       # 1.0 vs 1.0 vs 1.0: tie -> first
    ([np.nan, np.nan, np.nan], "argmax", -1),
])
def test_decision_rule_table(p: list[float], rule: str, expected: int) -> None:
    base = np.array([0.40, 0.25, 0.35])
    assert decide(np.array([p]), rule, base)[0] == expected


def test_decision_rule_errors() -> None:
    with pytest.raises(ValueError, match="base rates"):
        decide(np.ones((1, 3)) / 3, "base_rate")
    with pytest.raises(ValueError, match="argmax"):
        decide(np.ones((1, 3)) / 3, "mode")


def test_priors_give_unseen_assets_the_pooled_frequencies() -> None:
    freq, pooled = class_frequencies(np.array(["A", "A", "B"]), np.array([0, 0, 2]))
    np.testing.assert_allclose(freq["A"], [3 / 5, 1 / 5, 1 / 5])
    np.testing.assert_allclose(pooled, [3 / 6, 1 / 6, 2 / 6])
    pi = prior_inputs(np.array(["A", "Z"]), freq, pooled)
    np.testing.assert_allclose(pi[PRIOR_ASSET][1], pooled)
    np.testing.assert_allclose(pi[PRIOR_POOLED], [pooled, pooled])


def test_stacked_ensemble_on_noise_is_not_worse_than_the_prior(noise: pd.DataFrame) -> None:
    sp = split_frame(noise, 7)
    params = {k: TINY[k] for k in ("rf", "lgbm")}
    e = EnsembleModel(members=["rf", "lgbm"], features=FEATS, member_params=params).fit(
        sp.train, TARGET, valid=sp.valid, history=sp.frame)
    p = e.predict_proba(sp.test, history=sp.frame).to_numpy()
    y = labels(sp.test)
    ok = ~np.isnan(y) & ~np.isnan(p).any(axis=1)
    prior = prior_inputs(sp.test["symbol"].to_numpy(), e.freq, e.base_rate)[PRIOR_ASSET]
    yy = y[ok].astype(int)
    assert log_loss(p[ok], yy) <= log_loss(prior[ok], yy) + 0.01
    # on noise the pool keeps (almost) all its weight on the prior
    w = e.stacked_weights()
    assert w["rf"] + w["lgbm"] < 0.2 and w["prior:asset_freq"] > 0.8, w


def test_given_oof_rows_are_used_instead_of_inner_folds(noise: pd.DataFrame) -> None:
    sp = split_frame(noise, 7)
    rng = np.random.default_rng(3)
    n = 400
    y = rng.integers(0, 3, n)
    oof = OOF(np.array(["BTC/USDT"] * n), y.astype(float), {"rf": rng.dirichlet([1, 1, 1], n)})
    e = EnsembleModel(members=["rf"], features=FEATS, member_params={"rf": TINY["rf"]}, min_oof_rows=300)
    e.fit(sp.train, TARGET, valid=sp.valid, history=sp.frame, oof=oof)
    assert e.oof_source == "given" and e.stacker is not None and e.stacker.n_fit == n


def test_leave_one_asset_out_still_gets_predictions(noise: pd.DataFrame) -> None:
    sp = split_frame(noise, 7)
    train = sp.train[sp.train["symbol"] != "SOL/USDT"]
    valid = sp.valid[sp.valid["symbol"] != "SOL/USDT"]
    e = EnsembleModel(members=["rf", "lgbm"], features=FEATS,
                      member_params={k: TINY[k] for k in ("rf", "lgbm")}).fit(
        train, TARGET, valid=valid, history=sp.frame[sp.frame["symbol"] != "SOL/USDT"])
    assert "SOL/USDT" not in e.assets
    sol = sp.test[sp.test["symbol"] == "SOL/USDT"]
    p = e.predict_proba(sol, history=sp.frame)
    ok = p.notna().all(axis=1)
    assert ok.mean() > 0.9
    np.testing.assert_allclose(p[ok].sum(axis=1), 1.0, atol=1e-9)


# -- drifting base rates: the trailing frequencies are the best prior, the pool must fall back to them ----

def _drift(seed: int, days: int = 2400, h: int = 7) -> dict[str, object]:
    """Three assets whose class rates drift (bull / bear regimes of ~a year); members have no skill."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2017-01-01", periods=days, freq="D").to_numpy(dtype="datetime64[ns]")
    syms, tt, ys = [], [], []
    for j, a in enumerate(("A", "B", "C")):
        phase = 2 * np.pi * (np.arange(days) / 2400.0 + j / 3.0)   # slow regimes
        bull = 0.35 + 0.25 * np.sin(phase)
        p = np.column_stack([0.65 - bull - 0.15, np.full(days, 0.15), bull])
        p[:, 0] += 0.15
        p /= p.sum(axis=1, keepdims=True)
        ys.append((rng.random(days)[:, None] > np.cumsum(p, axis=1)).sum(axis=1))
        syms += [a] * days
        tt.append(ts)
    sym, t, y = np.array(syms), np.concatenate(tt), np.concatenate(ys)
    n = y.size
    fit = t < np.datetime64("2021-06-01")            # the fit window: class frequencies and stacker rows
    freq, pooled = class_frequencies(sym[fit], y[fit])
    hist = LabelHistory.from_labels(sym, t, y, h)    # trailing frequencies use only labels known at each t
    inputs = {"rf": rng.dirichlet([2, 2, 2], size=n), "xgb": rng.dirichlet([3, 3, 3], size=n),
              **prior_inputs(sym, freq, pooled, labels=hist, ts=t)}
    oof = fit & (t >= np.datetime64("2018-06-01"))    # out-of-fold rows inside the window
    test = t >= np.datetime64("2021-06-15")          # later rows
    return {"inputs": inputs, "y": y, "oof": oof, "test": test}


@pytest.mark.parametrize("seed", [0, 1])
def test_no_skill_members_converge_to_the_best_prior(seed: int) -> None:
    d = _drift(seed)
    inputs, y, oof, test = d["inputs"], d["y"], d["oof"], d["test"]
    assert isinstance(inputs, dict) and isinstance(y, np.ndarray)
    names = ["rf", "xgb", PRIOR_ASSET, PRIOR_POOLED, PRIOR_TRAILING]
    pool = LogLinearPool(names).fit({k: v[oof] for k, v in inputs.items()}, y[oof])
    priors = {k: log_loss(inputs[k][test], y[test]) for k in (PRIOR_ASSET, PRIOR_POOLED, PRIOR_TRAILING)}
    best = min(priors, key=priors.__getitem__)
    assert best == PRIOR_TRAILING and priors[PRIOR_TRAILING] < priors[PRIOR_ASSET] - 0.01, priors
    ll_pool = log_loss(pool.predict({k: v[test] for k, v in inputs.items()}), y[test])
    assert ll_pool <= priors[best] + 0.003, (ll_pool, priors)
    w = pool.weights()
    assert w["rf"] < 0.06 and w["xgb"] < 0.06 and w[PRIOR_TRAILING] > 0.7, w
    assert np.abs(pool.b).max() < 0.05               # offsets shrunk hard by default
    # on the rows it was fit on, too
    ll_fit = log_loss(pool.predict({k: v[oof] for k, v in inputs.items()}), y[oof])
    assert ll_fit <= log_loss(inputs[PRIOR_TRAILING][oof], y[oof]) + 0.003


def test_offset_modes_none_shrunk_free() -> None:
    """Offsets learned on a window whose base rates differ from the prior's: free ones move most."""
    rng = np.random.default_rng(3)
    n = 6000
    y = rng.choice(3, size=n, p=[0.2, 0.2, 0.6])          # a bull window
    prior = np.tile([0.4, 0.2, 0.4], (n, 1))                # the prior does not know it
    inputs = {PRIOR_ASSET: prior}
    b = {}
    for mode in ("none", "shrunk", "free"):
        pool = LogLinearPool([PRIOR_ASSET], offsets=mode, l2_rows=0.0).fit(inputs, y)
        b[mode] = float(np.abs(pool.b).max())
        assert pool.state()["offsets"] == mode
        assert LogLinearPool.from_state(pool.state()).offsets == mode
    assert b["none"] == 0.0 < b["shrunk"] < b["free"], b
    with pytest.raises(ValueError, match="offsets must be one of"):
        LogLinearPool([PRIOR_ASSET], offsets="big")
    with pytest.raises(ValueError, match="prior_pull must be one of"):
        LogLinearPool([PRIOR_ASSET], prior_pull="x")
    # a state saved by the first version (no keys) is read as it was fit: free offsets, point pull
    old = {k: v for k, v in LogLinearPool([PRIOR_ASSET]).state().items()
           if k not in ("offsets", "l2_offsets", "prior_pull")}
    assert LogLinearPool.from_state(old).offsets == "free"
    assert LogLinearPool.from_state(old).prior_pull == "point"


_T0 = np.datetime64("2021-01-01T00:00:00", "ns")
_DAY = np.timedelta64(1, "D")


@pytest.mark.parametrize(("label_day", "t_day", "expected"), [
    (0, 7, [0.25, 0.25, 0.5]),           # s + h == t: known
    (1, 7, [1 / 3, 1 / 3, 1 / 3]),       # s + h == t + 1 day: not yet known
    (-365, 7, [1 / 3, 1 / 3, 1 / 3]),    # s == t - h - 365: just outside the window
    (-364, 7, [0.25, 0.25, 0.5]),        # just inside
    (0, 400, [0.4, 0.2, 0.4]),           # past the last stored label (day 100) the window ends there
])
def test_trailing_window_boundaries(label_day: int, t_day: int, expected: list[float]) -> None:
    # a bullish label at label_day and a bearish one at day 100 (after t - h except in the last case)
    hist = LabelHistory.from_labels(np.array(["A", "A"]), np.array([_T0 + label_day * _DAY, _T0 + 100 * _DAY]),
                                    np.array([2, 0]), 7)
    f = hist.frequencies(np.array(["A"]), np.array([_T0 + t_day * _DAY]), np.array([0.2, 0.3, 0.5]))
    np.testing.assert_allclose(f[0], expected)


def test_trailing_frequencies_unseen_asset_state_and_bad_input() -> None:
    ts = _T0 + np.arange(30) * _DAY
    hist = LabelHistory.from_labels(np.array(["A"] * 30), ts, np.arange(30) % 3, 7)
    fb = np.array([0.2, 0.3, 0.5])
    f = hist.frequencies(np.array(["A", "Z"]), np.array([ts[-1], ts[-1]]), fb)
    np.testing.assert_allclose(f[1], fb)                         # unseen asset: the fallback
    np.testing.assert_allclose(f[0].sum(), 1.0)
    back = LabelHistory.from_state(hist.state())
    np.testing.assert_allclose(back.frequencies(np.array(["A"]), ts[-1:], fb), f[:1])
    with pytest.raises(ValueError, match="differ in length"):
        LabelHistory.from_labels(np.array(["A"]), ts, np.zeros(30), 7)
    with pytest.raises(ValueError, match="must be positive"):
        LabelHistory.from_labels(np.array(["A"]), ts[:1], np.zeros(1), 0)
