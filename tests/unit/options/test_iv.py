"""Implied volatility: round trip to 1e-10 over a grid, NaN with a reason outside the bounds."""

from __future__ import annotations

import numpy as np
import pytest

from entasis.options import iv as ivm
from entasis.options.black import black_greeks, black_price
from entasis.options.iv import implied_vol, implied_vol_detail


def _grid() -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    F = 100.0
    K = F * np.exp(np.linspace(-2.5, 2.5, 101))
    T = np.array([1 / 365, 7 / 365, 30 / 365, 0.25, 1.0, 3.0, 5.0])
    sig = np.array([0.02, 0.05, 0.2, 0.5, 1.0, 2.0, 3.0])
    KK, TT, SS = np.meshgrid(K, T, sig, indexing="ij")
    return F, KK, TT, SS


@pytest.mark.parametrize("call", [True, False])
def test_round_trip_error_below_1e10_on_grid(call: bool) -> None:
    F, K, T, sig = _grid()
    price = black_price(F, K, T, sig, call)
    vega = black_greeks(F, K, T, sig, call).vega
    res = implied_vol_detail(price, F, K, T, call)
    assert res.iv.shape == K.shape
    # Where the price determines sigma to 1e-12 at double precision (its rounding, eps * price,
    # moves sigma by less than 1e-12) and is a normal float, the round trip must hold to 1e-10.
    determined = (np.finfo(float).eps * price / np.maximum(vega, 1e-300) < 1e-12) & (price > 1e-300)
    assert determined.sum() > 0.6 * determined.size     # the grid is mostly well-posed
    assert np.all(res.code[determined] == ivm.OK)
    err = np.abs(res.iv - sig)[determined]
    assert err.max() <= 1e-10, f"max round-trip error {err.max():.3e}"
    # elsewhere: a number when the price has time value, never a wildly wrong one
    ok = res.code == ivm.OK
    assert np.all(np.abs(res.iv[ok] - sig[ok]) < 0.05 * sig[ok] + 1e-3)


def test_random_options_round_trip_and_put_call_agree() -> None:
    rng = np.random.default_rng(7)
    n = 20_000
    F = rng.uniform(10, 1e5, n)
    K = F * np.exp(rng.normal(0, 0.4, n))
    T = rng.uniform(2 / 365, 2.0, n)
    sig = rng.uniform(0.1, 1.6, n)
    df = np.exp(-rng.uniform(0, 0.06, n) * T)
    otm_call = K >= F
    price = black_price(F, K, T, sig, otm_call, df)
    np.testing.assert_allclose(implied_vol(price, F, K, T, otm_call, df), sig, rtol=0, atol=1e-10)
    # the same vol from the in-the-money side, to within what its rounding leaves determined:
    # there the intrinsic value dominates and eps * price / vega bounds the attainable accuracy
    itm = black_price(F, K, T, sig, ~otm_call, df)
    res = implied_vol_detail(itm, F, K, T, ~otm_call, df)
    vega = black_greeks(F, K, T, sig, ~otm_call, -np.log(df) / T).vega
    limit = 1e-10 + 8 * np.finfo(float).eps * itm / vega
    ok = res.code == ivm.OK
    assert np.all(np.abs(res.iv[ok] - sig[ok]) <= limit[ok])
    assert np.median(np.abs(res.iv[ok] - sig[ok])) < 1e-13
    # the rest are prices whose time value rounded away entirely: NaN, said so, never a number
    assert np.all(res.code[~ok] == ivm.AT_INTRINSIC)
    assert np.all(limit[~ok] > 1e-3) and (~ok).sum() < 0.02 * n


def test_atm_closed_form_and_shapes() -> None:
    sig = np.array([[0.1, 0.5], [1.0, 2.0]])
    price = black_price(50.0, 50.0, 0.5, sig, "call")
    out = implied_vol(price, 50.0, 50.0, 0.5, "call")
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out, sig, atol=1e-13)


def test_prices_outside_bounds_give_nan_with_reason() -> None:
    F, K, T = 100.0, np.array([80.0, 80.0, 120.0, 100.0, 100.0, 100.0, 100.0, 100.0]), 0.5
    kind = np.array(["call", "call", "put", "call", "put", "call", "call", "call"])
    price = np.array([
        19.0,       # call below intrinsic (20)
        20.0,       # call exactly at intrinsic
        25.0,       # put: above intrinsic 20 but fine -> ok
        100.0,      # call at the forward: upper bound
        150.0,      # put above the strike
        -1.0,       # negative
        np.nan,     # missing
        5.0,        # ok
    ])
    T_arr = np.array([T] * 7 + [0.0])   # the last one has expired
    res = implied_vol_detail(price, F, K, T_arr, kind)
    assert list(res.code) == [ivm.BELOW_INTRINSIC, ivm.AT_INTRINSIC, ivm.OK, ivm.ABOVE_UPPER_BOUND,
                              ivm.ABOVE_UPPER_BOUND, ivm.INVALID_INPUT, ivm.INVALID_INPUT, ivm.EXPIRED]
    assert np.isnan(res.iv[res.code != ivm.OK]).all()
    assert np.isfinite(res.iv[2])
    assert res.reasons()[0] == "price below intrinsic value"
    assert res.summary()["ok"] == 1
    # discounted bounds: a call worth more than df * F is impossible
    assert implied_vol_detail(99.0, 100.0, 100.0, 1.0, True, df=0.95).code == ivm.ABOVE_UPPER_BOUND


def test_extreme_wings_converge() -> None:
    # very deep OTM, very short and very long: prices from 1e-250 to near the upper bound
    F = 1.0
    K = np.array([0.2, 5.0, 1e-3, 1e3, 1.0, 1.0])
    T = np.array([1 / 365, 1 / 365, 10.0, 10.0, 1e-4, 30.0])
    sig = np.array([0.9, 0.9, 1.2, 1.2, 0.3, 1.5])
    call = K >= F
    price = black_price(F, K, T, sig, call)
    res = implied_vol_detail(price, F, K, T, call)
    assert np.all(res.code == ivm.OK), res.reasons()
    np.testing.assert_allclose(res.iv, sig, rtol=1e-9)


def test_solver_is_bracketed_from_bad_starts() -> None:
    # starting far away on purpose must still land on the root (bisection safeguard)
    x = np.array([-0.5, -0.5, -3.0])
    s_true = np.array([0.05, 4.0, 0.3])
    from entasis.options.black import normalised_time_value

    beta = normalised_time_value(x, s_true)
    s, ok = ivm.normalised_implied_total_vol(x, beta)
    assert ok.all()
    np.testing.assert_allclose(s, s_true, rtol=1e-12)
