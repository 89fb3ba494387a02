"""Heston: published reference price, COS accuracy, parity, calibration recovering planted parameters."""

from __future__ import annotations

import numpy as np
import pytest

from entasis.options.black import black_price
from entasis.options.heston import HestonParams, calibrate, char_func, cumulants, heston_price
from entasis.options.iv import implied_vol

REF = HestonParams(v0=0.0175, kappa=1.5768, theta=0.0398, sigma=0.5751, rho=-0.5711)


def test_published_reference_price() -> None:
    # S = K = 100, T = 1, r = q = 0: call 5.785155450 (Lewis; also Crisóstomo 2014)
    assert heston_price(100.0, 100.0, 1.0, REF, True)[()] == pytest.approx(5.785155450, abs=1e-6)


def test_characteristic_function_is_a_martingale_and_cumulants_agree() -> None:
    for T in (0.01, 0.5, 3.0):
        np.testing.assert_allclose(char_func(np.array([-1j, 0.0]), T, REF), [1.0, 1.0], atol=1e-13)
        c1, c2, _ = cumulants(T, REF)
        # c1, c2 from central differences of ln phi (c2's step scaled to the spread)
        h = 1e-4
        lp = np.log(char_func(np.array([h, -h]), T, REF))
        assert c1 == pytest.approx(((lp[0] - lp[1]) / (2j * h)).real, rel=1e-6)
        h = 1e-3 / np.sqrt(REF.theta * T)
        lp = np.log(char_func(np.array([h, -h]), T, REF))
        assert c2 == pytest.approx(-(lp[0] + lp[1]).real / h**2, rel=1e-5)


def test_cos_converges_to_a_brute_force_reference_across_maturities_and_strikes() -> None:
    heavy = HestonParams(0.36, 3.0, 0.4, 2.5, 0.3)       # crypto-like: high vol, high vol of vol
    K = 100.0 * np.exp(np.linspace(-1.0, 1.0, 9))
    for p in (REF, heavy):
        for T in (1 / 365, 7 / 365, 0.1, 1.0, 3.0):
            ref = heston_price(100.0, K, T, p, False, n_terms=8192, L=30.0, tol=1e-16)
            got = heston_price(100.0, K, T, p, False)
            assert np.max(np.abs(got - ref)) < 1e-6, (p, T)


def test_put_call_parity_and_bounds() -> None:
    K = np.linspace(60, 160, 11)
    T, df = 0.7, np.exp(-0.02 * 0.7)
    c = heston_price(110.0, K, T, REF, True, df)
    p = heston_price(110.0, K, T, REF, False, df)
    np.testing.assert_allclose(c - p, df * (110.0 - K), atol=1e-10)
    assert np.all(c >= df * np.maximum(110.0 - K, 0) - 1e-12) and np.all(c <= df * 110.0)


def test_near_zero_vol_of_vol_is_black() -> None:
    # sigma -> 0 with v0 = theta: constant variance, so Black with vol sqrt(theta)
    p = HestonParams(0.04, 2.0, 0.04, 1e-3, 0.0)
    K = np.array([70.0, 90.0, 100.0, 110.0, 140.0])
    np.testing.assert_allclose(heston_price(100.0, K, 1.0, p, True), black_price(100.0, K, 1.0, 0.2, True),
                               atol=2e-5)


def _synthetic_chain(p: HestonParams) -> tuple[np.ndarray, ...]:
    days = np.array([7, 14, 30, 60, 90, 180, 365])
    F, K, T = [], [], []
    for d in days:
        t = d / 365
        f = 60_000.0 * np.exp(0.05 * t)
        sd = 0.6 * np.sqrt(t)
        F.append(np.full(15, f))
        K.append(f * np.exp(np.linspace(-2 * sd, 2 * sd, 15)))
        T.append(np.full(15, t))
    F_, K_, T_ = (np.concatenate(x) for x in (F, K, T))
    call = K_ >= F_
    iv = implied_vol(heston_price(F_, K_, T_, p, call), F_, K_, T_, call)
    return F_, K_, T_, iv


def test_calibration_recovers_planted_parameters() -> None:
    planted = HestonParams(v0=0.36, kappa=2.5, theta=0.45, sigma=1.8, rho=-0.35)
    F, K, T, iv = _synthetic_chain(planted)
    assert np.isfinite(iv).all()
    cal = calibrate(F, K, T, iv)
    np.testing.assert_allclose(cal.params.as_array(), planted.as_array(), rtol=1e-5, atol=1e-6)
    assert cal.rmse_iv < 1e-7 and cal.n_options == F.size and cal.success
    assert cal.feller_ok == planted.feller_ok is False       # 2 * 2.5 * 0.45 = 2.25 < 1.8² = 3.24


def test_calibration_with_noise_stays_close_and_reports_feller() -> None:
    planted = HestonParams(v0=0.25, kappa=3.0, theta=0.3, sigma=0.8, rho=-0.5)
    assert planted.feller_ok   # 2 * 3 * 0.3 = 1.8 > 0.64
    F, K, T, iv = _synthetic_chain(planted)
    noisy = iv + np.random.default_rng(1).normal(0, 0.002, iv.size)     # 0.2 vol points
    cal = calibrate(F, K, T, noisy)
    assert cal.rmse_iv < 0.004
    assert cal.params.v0 == pytest.approx(0.25, rel=0.05)
    assert cal.params.rho == pytest.approx(-0.5, abs=0.08)


def test_bad_parameters_and_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="rho"):
        HestonParams(0.04, 1.0, 0.04, 0.5, -1.0)
    with pytest.raises(ValueError, match="kappa"):
        HestonParams(0.04, 0.0, 0.04, 0.5, 0.0)
    with pytest.raises(ValueError, match="times to expiry"):
        heston_price(100.0, 100.0, 0.0, REF, True)
    with pytest.raises(ValueError, match="at least 5"):
        calibrate([100.0] * 3, [90.0, 100.0, 110.0], [0.5] * 3, [0.5, 0.5, np.nan])
