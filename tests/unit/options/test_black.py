"""Black-76 / Black-Scholes: parity, Greeks against finite differences, edge cases, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from entasis.options.black import (
    as_call_flag,
    black_greeks,
    black_price,
    bs_greeks,
    bs_price,
    normalised_time_value,
)

F, K = 100.0, np.array([50.0, 80.0, 95.0, 100.0, 105.0, 130.0, 200.0])


@pytest.mark.parametrize("T,sigma,r", [(0.02, 0.8, 0.0), (0.5, 0.25, 0.03), (3.0, 1.5, 0.05)])
def test_put_call_parity_black(T: float, sigma: float, r: float) -> None:
    df = np.exp(-r * T)
    c = black_price(F, K, T, sigma, True, df)
    p = black_price(F, K, T, sigma, False, df)
    np.testing.assert_allclose(c - p, df * (F - K), rtol=0, atol=1e-12 * F)
    assert np.all(c >= df * np.maximum(F - K, 0)) and np.all(c <= df * F)


def test_put_call_parity_bs_with_dividend_yield() -> None:
    S, T, r, q, sig = 100.0, 0.75, 0.04, 0.02, 0.3
    c = bs_price(S, K, T, r, sig, "call", q)
    p = bs_price(S, K, T, r, sig, "put", q)
    np.testing.assert_allclose(c - p, S * np.exp(-q * T) - K * np.exp(-r * T), atol=1e-12 * S)


def test_textbook_value() -> None:
    # Hull: S=42, K=40, r=10%, sigma=20%, T=0.5 -> call 4.76, put 0.81
    assert bs_price(42, 40, 0.5, 0.10, 0.2, True) == pytest.approx(4.7594, abs=1e-4)
    assert bs_price(42, 40, 0.5, 0.10, 0.2, False) == pytest.approx(0.8086, abs=1e-4)


def _fd(f, x: float, h: float) -> np.ndarray:
    return (f(x + h) - f(x - h)) / (2 * h)


@pytest.mark.parametrize("call", [True, False])
def test_black_greeks_match_finite_differences(call: bool) -> None:
    T, sig, r = 0.4, 0.6, 0.03
    g = black_greeks(F, K, T, sig, call, r)

    def price(f: float = F, t: float = T, s: float = sig, rr: float = r) -> np.ndarray:
        return black_price(f, K, t, s, call, np.exp(-rr * t))

    np.testing.assert_allclose(g.price, price(), rtol=1e-14)
    np.testing.assert_allclose(g.delta, _fd(lambda x: price(f=x), F, 1e-3), atol=1e-8)
    np.testing.assert_allclose(g.gamma, (price(f=F + 1e-2) - 2 * price() + price(f=F - 1e-2)) / 1e-4, atol=1e-6)
    np.testing.assert_allclose(g.vega, _fd(lambda x: price(s=x), sig, 1e-5), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(g.theta, -_fd(lambda x: price(t=x), T, 1e-6), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g.rho, _fd(lambda x: price(rr=x), r, 1e-6), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("call", [True, False])
def test_bs_greeks_match_finite_differences(call: bool) -> None:
    S, T, r, q, sig = 100.0, 0.8, 0.05, 0.01, 0.35
    g = bs_greeks(S, K, T, r, sig, call, q)

    def price(s: float = S, t: float = T, rr: float = r, v: float = sig) -> np.ndarray:
        return bs_price(s, K, t, rr, v, call, q)

    np.testing.assert_allclose(g.delta, _fd(lambda x: price(s=x), S, 1e-3), atol=1e-8)
    np.testing.assert_allclose(g.gamma, (price(s=S + 1e-2) - 2 * price() + price(s=S - 1e-2)) / 1e-4, atol=1e-6)
    np.testing.assert_allclose(g.vega, _fd(lambda x: price(v=x), sig, 1e-5), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(g.theta, -_fd(lambda x: price(t=x), T, 1e-6), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g.rho, _fd(lambda x: price(rr=x), r, 1e-6), rtol=1e-6, atol=1e-7)


def test_zero_time_or_vol_is_intrinsic_and_greeks_stay_finite() -> None:
    for T, sig in ((0.0, 0.5), (1.0, 0.0)):
        c = black_price(F, K, T, sig, True)
        np.testing.assert_allclose(c, np.maximum(F - K, 0.0), atol=1e-12)
        g = black_greeks(F, K, T, sig, True)
        assert np.all(np.isfinite(g.delta)) and np.all(g.gamma == 0) and np.all(g.vega == 0)
        np.testing.assert_array_equal(g.delta[K < F], 1.0)
        np.testing.assert_array_equal(g.delta[K > F], 0.0)


def test_deep_otm_time_value_keeps_relative_precision() -> None:
    # far wing: a naive N(d1) - N(d2) difference would be 0 or noise; the scaled form is exact
    tv = normalised_time_value(-2.0, 0.1)
    assert 0 < tv < 1e-80
    # series check: tv ~ exp(-(x²/s² + s²/4)/2) s³ / (sqrt(2 pi) x²) (1 + O(s²/x²))
    x, s = -2.0, 0.1
    approx = np.exp(-0.5 * (x * x / (s * s) + s * s / 4)) * s**3 / (np.sqrt(2 * np.pi) * x * x)
    assert tv == pytest.approx(approx, rel=0.02)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="F must be positive"):
        black_price(-1.0, 100.0, 1.0, 0.2, True)
    with pytest.raises(ValueError, match="sigma must be non-negative"):
        black_price(100.0, 100.0, 1.0, -0.2, True)
    with pytest.raises(ValueError, match="is_call"):
        as_call_flag(["call", "straddle"])
    np.testing.assert_array_equal(as_call_flag(["Call", "p", "PUT", "c"]), [True, False, False, True])
    assert np.isnan(black_price(np.nan, 100.0, 1.0, 0.2, True))
