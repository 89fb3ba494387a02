"""Black-76 and Black-Scholes prices and Greeks, vectorised with NumPy.

Everything is priced off the forward: ``V = df * (intrinsic + sqrt(F K) * tv(x, s))`` with
``x = ln(F/K)`` and ``s = sigma * sqrt(T)``. The normalised time value ``tv`` is computed in a
form that keeps full relative precision for deep out-of-the-money options (scaled complementary
error function) and near the money (``erf`` of opposite-signed arguments), which is what lets the
implied-volatility solver in :mod:`entasis.options.iv` reach ~1e-12 on its round trip.

Units: sigma, T in years, vega per 1.00 of volatility, theta = -dV/dT per year (calendar), rho per
1.00 of rate. :mod:`entasis.options.deribit` converts to Deribit's display units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

FloatArray = NDArray[np.float64]
_SQRT2 = float(np.sqrt(2.0))
_INV_SQRT_2PI = float(1.0 / np.sqrt(2.0 * np.pi))


def as_call_flag(is_call: ArrayLike) -> NDArray[np.bool_]:
    """Booleans from bools, 0/1, or the strings 'call'/'put' ('c'/'p', any case)."""
    arr = np.asarray(is_call)
    if arr.dtype.kind in "USO":
        low = np.char.lower(arr.astype(str))
        calls = np.isin(low, ["call", "c"])
        puts = np.isin(low, ["put", "p"])
        bad = ~(calls | puts)
        if bad.any():
            raise ValueError(f"is_call: expected 'call' or 'put', got {arr[bad].ravel()[0]!r}")
        return calls
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"is_call: expected booleans or 'call'/'put' strings, got dtype {arr.dtype}")
    return arr.astype(bool)


def _check_nonneg(name: str, a: FloatArray, strict: bool) -> None:
    bad = (a <= 0) if strict else (a < 0)
    if np.any(bad):  # NaN compares False: NaN inputs propagate as NaN prices instead
        raise ValueError(f"{name} must be {'positive' if strict else 'non-negative'}; got {a[bad].ravel()[0]!r}")


def normalised_time_value(x: ArrayLike, s: ArrayLike) -> FloatArray:
    """Time value of a Black option divided by sqrt(F K), for total vol ``s`` > 0.

    Only |x| matters (the time value of a call and a put at the same strike is the same); the
    formula used is that of the out-of-the-money call at ``-|x|``:
    ``exp(x/2) N(x/s + s/2) - exp(-x/2) N(x/s - s/2)``, evaluated so that neither branch cancels.
    """
    xa = -np.abs(np.asarray(x, dtype=float))
    sa = np.asarray(s, dtype=float)
    xa, sa = np.broadcast_arrays(xa, sa)
    out = np.zeros(xa.shape)
    pos = sa > 0
    d1 = np.full(xa.shape, np.nan)
    np.divide(xa, sa, out=d1, where=pos)
    d1 = d1 + 0.5 * sa
    low = pos & (d1 < 0)   # both d1, d2 < 0: scaled erfc form, no underflow
    high = pos & ~low      # d1 >= 0 >= d2: erf of opposite signs, no cancellation
    if low.any():
        out[low] = _tv_low(xa[low], sa[low])
    if high.any():
        out[high] = tv_high(xa[high], sa[high])
    out[np.isnan(xa) | np.isnan(sa)] = np.nan
    return out


def _tv_low(x: FloatArray, s: FloatArray) -> FloatArray:
    """x <= 0, d1 < 0: 0.5 exp(-(x²/s² + s²/4)/2) [erfcx(-d1/√2) - erfcx(-d2/√2)]."""
    d1 = x / s + 0.5 * s
    d2 = d1 - s
    e = np.exp(-0.5 * ((x / s) ** 2 + 0.25 * s * s))
    return 0.5 * e * (special.erfcx(-d1 / _SQRT2) - special.erfcx(-d2 / _SQRT2))


def tv_high(x: FloatArray, s: FloatArray) -> FloatArray:
    """x <= 0, d1 >= 0: exp(x/2)(N(d1)-N(d2)) + 2 sinh(x/2) N(d2)."""
    d1 = x / s + 0.5 * s
    d2 = d1 - s
    return (0.5 * np.exp(0.5 * x) * (special.erf(d1 / _SQRT2) - special.erf(d2 / _SQRT2))
            + 2.0 * np.sinh(0.5 * x) * special.ndtr(d2))


def black_price(
    F: ArrayLike, K: ArrayLike, T: ArrayLike, sigma: ArrayLike, is_call: ArrayLike, df: ArrayLike = 1.0
) -> FloatArray:
    """Black-76 price of a European option on a forward ``F`` (discount factor ``df``).

    T = 0 or sigma = 0 gives the discounted intrinsic value.
    """
    F_, K_, T_, sig, dfa = (np.asarray(a, dtype=float) for a in (F, K, T, sigma, df))
    _check_nonneg("F", F_, True)
    _check_nonneg("K", K_, True)
    _check_nonneg("T", T_, False)
    _check_nonneg("sigma", sig, False)
    call = as_call_flag(is_call)
    F_, K_, T_, sig, dfa, call = np.broadcast_arrays(F_, K_, T_, sig, dfa, call)
    intrinsic = np.maximum(np.where(call, F_ - K_, K_ - F_), 0.0)
    s = sig * np.sqrt(T_)
    tv = normalised_time_value(np.log(F_ / K_), s)
    return np.asarray(dfa * (intrinsic + np.sqrt(F_ * K_) * tv), dtype=float)


def bs_price(
    S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike, is_call: ArrayLike,
    q: ArrayLike = 0.0,
) -> FloatArray:
    """Black-Scholes(-Merton) price on spot ``S`` with rate ``r`` and continuous yield ``q``."""
    S_, T_, r_, q_ = (np.asarray(a, dtype=float) for a in (S, T, r, q))
    _check_nonneg("S", S_, True)
    F = S_ * np.exp((r_ - q_) * T_)
    return black_price(F, K, T_, sigma, is_call, np.exp(-r_ * T_))


@dataclass(frozen=True)
class Greeks:
    """Price and first-order sensitivities (plus gamma), all arrays of the broadcast shape."""

    price: FloatArray
    delta: FloatArray
    gamma: FloatArray
    vega: FloatArray
    theta: FloatArray
    rho: FloatArray

    def as_dict(self) -> dict[str, FloatArray]:
        return {k: getattr(self, k) for k in ("price", "delta", "gamma", "vega", "theta", "rho")}


def _d1_d2(F: FloatArray, K: FloatArray, s: FloatArray) -> tuple[FloatArray, FloatArray, NDArray[np.bool_]]:
    live = s > 0
    safe = np.where(live, s, 1.0)
    d1 = np.log(F / K) / safe + 0.5 * safe
    # s == 0: the option is a step in F; +-inf keeps N(d) an indicator (ATM counts as half).
    lnfk = np.log(F / K)
    step = np.where(lnfk > 0, np.inf, np.where(lnfk < 0, -np.inf, 0.0))
    d1 = np.where(live, d1, step)
    d2 = np.where(live, d1 - safe, step)
    return d1, d2, live


def black_greeks(
    F: ArrayLike, K: ArrayLike, T: ArrayLike, sigma: ArrayLike, is_call: ArrayLike, r: ArrayLike = 0.0
) -> Greeks:
    """Black-76 Greeks with the forward held fixed; df = exp(-r T).

    delta = dV/dF, gamma = d²V/dF², vega = dV/dsigma, theta = -dV/dT (F, r fixed),
    rho = dV/dr (F fixed, so only discounting moves: -T V).
    """
    F_, K_, T_, sig, r_ = (np.asarray(a, dtype=float) for a in (F, K, T, sigma, r))
    call = as_call_flag(is_call)
    F_, K_, T_, sig, r_, call = np.broadcast_arrays(F_, K_, T_, sig, r_, call)
    df = np.exp(-r_ * T_)
    price = black_price(F_, K_, T_, sig, call, df)
    sqrt_t = np.sqrt(T_)
    s = sig * sqrt_t
    d1, _, live = _d1_d2(F_, K_, s)
    theta_sign = np.where(call, 1.0, -1.0)
    pdf = np.where(live, _INV_SQRT_2PI * np.exp(-0.5 * np.where(live, d1, 0.0) ** 2), 0.0)
    delta = df * theta_sign * special.ndtr(theta_sign * d1)
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = np.where(live, df * pdf / (F_ * np.where(live, s, 1.0)), 0.0)
        decay = np.where(live, df * F_ * pdf * sig / (2.0 * np.where(sqrt_t > 0, sqrt_t, 1.0)), 0.0)
    vega = df * F_ * pdf * sqrt_t
    theta = r_ * price - decay
    rho = -T_ * price
    return Greeks(price, delta, gamma, vega, theta, rho)


def bs_greeks(
    S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike, is_call: ArrayLike,
    q: ArrayLike = 0.0,
) -> Greeks:
    """Black-Scholes Greeks in spot terms: delta = dV/dS, theta = -dV/dT, rho = dV/dr (S fixed)."""
    S_, K_, T_, r_, sig, q_ = (np.asarray(a, dtype=float) for a in (S, K, T, r, sigma, q))
    call = as_call_flag(is_call)
    S_, K_, T_, r_, sig, q_, call = np.broadcast_arrays(S_, K_, T_, r_, sig, q_, call)
    price = bs_price(S_, K_, T_, r_, sig, call, q_)
    F = S_ * np.exp((r_ - q_) * T_)
    dq, dr = np.exp(-q_ * T_), np.exp(-r_ * T_)
    sqrt_t = np.sqrt(T_)
    s = sig * sqrt_t
    d1, d2, live = _d1_d2(F, K_, s)
    w = np.where(call, 1.0, -1.0)
    pdf = np.where(live, _INV_SQRT_2PI * np.exp(-0.5 * np.where(live, d1, 0.0) ** 2), 0.0)
    n1, n2 = special.ndtr(w * d1), special.ndtr(w * d2)
    delta = dq * w * n1
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = np.where(live, dq * pdf / (S_ * np.where(live, s, 1.0)), 0.0)
        decay = np.where(live, S_ * dq * pdf * sig / (2.0 * np.where(sqrt_t > 0, sqrt_t, 1.0)), 0.0)
    vega = S_ * dq * pdf * sqrt_t
    theta = -decay - w * r_ * K_ * dr * n2 + w * q_ * S_ * dq * n1
    rho = w * K_ * T_ * dr * n2
    return Greeks(price, delta, gamma, vega, theta, rho)


def forward_from_spot(S: ArrayLike, T: ArrayLike, r: ArrayLike = 0.0, q: ArrayLike = 0.0) -> FloatArray:
    """F = S exp((r - q) T): what a Black-76 price needs when only a spot is known."""
    return np.asarray(np.asarray(S, dtype=float) * np.exp((np.asarray(r, float) - np.asarray(q, float))
                                                          * np.asarray(T, float)), dtype=float)
