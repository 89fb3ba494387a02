"""entasis.options against a reference library: vollib (Jaeckel's "Let's be rational" and textbook Greeks).

A grid of strikes from deep in the money to deep out of it (K/S from 0.2 to 5), expiries from one
hour to three years, vols from 5% to 200%, rates 0 and 5%, calls and puts. Tolerances: prices to
1e-10 relative (down to 1e-129 of the spot, where our scaled-erfc form and vollib's agree to ~3e-12),
Greeks to 1e-12 on vollib's display units, implied vols to 1e-12 where the time value is at least
1e-4 of the spot and 1e-8 where it is down to 1e-10 of it (there the price itself carries only
~1e-6 relative time-value precision, and both solvers land on the same vol to ~1e-9).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
from vollib.black import black as v_black
from vollib.black.implied_volatility import implied_volatility as v_black_iv
from vollib.black_scholes import black_scholes as v_bs
from vollib.black_scholes.greeks import analytical as v_greeks
from vollib.black_scholes.implied_volatility import implied_volatility as v_bs_iv

from entasis.options.black import black_price, bs_greeks, bs_price
from entasis.options.iv import implied_vol

S = 100.0
STRIKES = [20.0, 50.0, 80.0, 95.0, 100.0, 105.0, 120.0, 200.0, 500.0]
EXPIRIES = [1 / (365 * 24), 1 / 365, 7 / 365, 0.25, 1.0, 3.0]
VOLS = [0.05, 0.2, 0.8, 2.0]
RATES = [0.0, 0.05]


@pytest.fixture(scope="module")
def grid() -> dict[str, np.ndarray]:
    g = np.array(list(itertools.product(STRIKES, EXPIRIES, VOLS, RATES, [1.0, 0.0])))
    K, T, sigma, r, c = g.T
    flags = np.where(c == 1.0, "c", "p")
    return {"K": K, "T": T, "sigma": sigma, "r": r, "call": c == 1.0, "flag": flags}


def _ref(fn: Callable[..., float], grid: dict[str, np.ndarray], *lead: float) -> np.ndarray:
    return np.array([float(fn(f, *lead, k, t, r, s)) for f, k, t, r, s in
                     zip(grid["flag"], grid["K"], grid["T"], grid["r"], grid["sigma"], strict=True)])


def test_grid_covers_deep_itm_otm_and_short_expiries(grid: dict[str, np.ndarray]) -> None:
    ref = _ref(v_bs, grid, S)
    assert ref.min() < 1e-100 and ref.max() > 390  # deep OTM to deep ITM (K=500 put)
    assert grid["T"].min() < 1e-3 and len(ref) == 864


def test_black_scholes_prices_match_vollib(grid: dict[str, np.ndarray]) -> None:
    ref = _ref(v_bs, grid, S)
    ours = bs_price(S, grid["K"], grid["T"], grid["r"], grid["sigma"], grid["call"])
    live = ref > 1e-200
    np.testing.assert_allclose(ours[live], ref[live], rtol=1e-10, atol=0)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_black76_prices_match_vollib(grid: dict[str, np.ndarray]) -> None:
    F = 100.0
    ref = _ref(v_black, grid, F)
    ours = black_price(F, grid["K"], grid["T"], grid["sigma"], grid["call"], np.exp(-grid["r"] * grid["T"]))
    live = ref > 1e-200
    np.testing.assert_allclose(ours[live], ref[live], rtol=1e-10, atol=0)


@pytest.mark.parametrize(("name", "per_unit"), [
    ("delta", 1.0), ("gamma", 1.0),
    ("vega", 100.0),   # vollib: per 1% of vol; ours per 1.00
    ("theta", 365.0),  # vollib: per calendar day; ours per year
    ("rho", 100.0),    # vollib: per 1% of rate; ours per 1.00
])
def test_black_scholes_greeks_match_vollib(grid: dict[str, np.ndarray], name: str, per_unit: float) -> None:
    ref = _ref(getattr(v_greeks, name), grid, S) * per_unit
    ours = getattr(bs_greeks(S, grid["K"], grid["T"], grid["r"], grid["sigma"], grid["call"]), name)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


def test_implied_vols_match_vollib(grid: dict[str, np.ndarray]) -> None:
    K, T, r, call, sigma = grid["K"], grid["T"], grid["r"], grid["call"], grid["sigma"]
    price = _ref(v_bs, grid, S)
    disc = np.exp(-r * T)
    time_value = price - np.maximum(np.where(call, S - K * disc, K * disc - S), 0.0)
    usable = time_value > 1e-10 * S
    clear = time_value > 1e-4 * S
    assert usable.sum() >= 450 and clear.sum() >= 400
    ours = implied_vol(price, S / disc, K, T, call, disc)
    ref = np.array([v_bs_iv(p, S, k, t, rr, f) for p, k, t, rr, f in
                    zip(price[usable], K[usable], T[usable], r[usable], grid["flag"][usable], strict=True)])
    np.testing.assert_allclose(ours[usable], ref, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours[clear], ref[clear[usable]], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours[clear], sigma[clear], rtol=0, atol=1e-12)
    # Black-76 on the forward gives the same vols through vollib's Black solver
    F = S / disc
    ref76 = np.array([v_black_iv(p, f_, k, rr, t, fl) for p, f_, k, rr, t, fl in
                      zip(price[clear], F[clear], K[clear], r[clear], T[clear], grid["flag"][clear], strict=True)])
    np.testing.assert_allclose(ours[clear], ref76, rtol=0, atol=1e-12)
