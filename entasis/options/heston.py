"""Heston stochastic volatility: characteristic function, COS pricing, one-snapshot calibration.

Prices are computed in the forward measure (``F`` is the forward to the expiry, ``df`` the discount
factor), which is how Deribit quotes: no rates to guess, the forward comes from the future. The
characteristic function uses the "little Heston trap" form (Albrecher et al. 2007), which has no
branch-cut discontinuity. Pricing is the COS method (Fang & Oosterlee 2008) on puts, whose
payoff coefficients are bounded, with calls from put-call parity; one characteristic-function
evaluation per expiry serves every strike of that expiry (a cosine series times a strike
matrix), so a whole chain costs a few matrix products.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from entasis.options.black import FloatArray, as_call_flag

ComplexArray = NDArray[np.complex128]

# (lower, upper) bounds used by the calibration: v0, kappa, theta, sigma, rho
BOUNDS = (np.array([1e-4, 1e-3, 1e-4, 1e-3, -0.999]), np.array([9.0, 50.0, 9.0, 10.0, 0.999]))


@dataclass(frozen=True)
class HestonParams:
    """dv = kappa (theta - v) dt + sigma sqrt(v) dW2, d ln F = -v/2 dt + sqrt(v) dW1, <dW1,dW2> = rho dt."""

    v0: float
    kappa: float
    theta: float
    sigma: float
    rho: float

    def __post_init__(self) -> None:
        for name in ("v0", "kappa", "theta", "sigma"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"Heston {name} must be positive and finite, got {v!r}")
        if not (np.isfinite(self.rho) and -1 < self.rho < 1):
            raise ValueError(f"Heston rho must lie in (-1, 1), got {self.rho!r}")

    @property
    def feller_ok(self) -> bool:
        """2 kappa theta > sigma²: the variance process never reaches zero."""
        return bool(2.0 * self.kappa * self.theta > self.sigma**2)

    def as_array(self) -> FloatArray:
        return np.array([self.v0, self.kappa, self.theta, self.sigma, self.rho])

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_array(cls, a: ArrayLike) -> HestonParams:
        v = np.asarray(a, dtype=float)
        return cls(float(v[0]), float(v[1]), float(v[2]), float(v[3]), float(v[4]))


def char_func(u: ArrayLike, T: float, p: HestonParams) -> ComplexArray:
    """E[exp(i u ln(F_T / F_0))] under the forward measure (a martingale, so phi(-i) = 1)."""
    u_ = np.asarray(u, dtype=complex)
    k, th, sg, rh, v0 = p.kappa, p.theta, p.sigma, p.rho, p.v0
    beta = k - 1j * rh * sg * u_
    d = np.sqrt(beta * beta + sg * sg * (u_ * u_ + 1j * u_))
    g = (beta - d) / (beta + d)
    e = np.exp(-d * T)
    one_minus_ge = 1.0 - g * e
    c = (k * th / (sg * sg)) * ((beta - d) * T - 2.0 * np.log(one_minus_ge / (1.0 - g)))
    dv = (v0 / (sg * sg)) * (beta - d) * (1.0 - e) / one_minus_ge
    return np.asarray(np.exp(c + dv), dtype=complex)


def cumulants(T: float, p: HestonParams) -> tuple[float, float]:
    """First two cumulants of ln(F_T/F_0) (Fang & Oosterlee 2008, table 11, with zero drift)."""
    k, th, sg, rh, v0 = p.kappa, p.theta, p.sigma, p.rho, p.v0
    ekt = np.exp(-k * T)
    c1 = (1.0 - ekt) * (th - v0) / (2.0 * k) - 0.5 * th * T
    c2 = (1.0 / (8.0 * k**3)) * (
        sg * T * k * ekt * (v0 - th) * (8.0 * k * rh - 4.0 * sg)
        + k * rh * sg * (1.0 - ekt) * (16.0 * th - 8.0 * v0)
        + 2.0 * th * k * T * (-4.0 * k * rh * sg + sg**2 + 4.0 * k**2)
        + sg**2 * ((th - 2.0 * v0) * ekt**2 + th * (6.0 * ekt - 7.0) + 2.0 * v0)
        + 8.0 * k**2 * (v0 - th) * (1.0 - ekt)
    )
    return float(c1), float(c2)


def _price_one_expiry(F: FloatArray, K: FloatArray, T: float, p: HestonParams, n_terms: int, L: float) -> FloatArray:
    """Undiscounted put prices for strikes K on forwards F (all one expiry)."""
    c1, c2 = cumulants(T, p)
    width = 2.0 * L * np.sqrt(max(c2, 1e-12))
    lo_z = c1 - 0.5 * width                       # truncation range of ln(F_T/F_0)
    kk = np.arange(n_terms)
    u = kk * np.pi / width
    phi = char_func(u, T, p) * np.exp(-1j * u * lo_z)
    phi[0] *= 0.5
    # In y = ln(F_T/K) the range is [x + lo_z, x + lo_z + width]; the put pays K(1 - e^y) for y < 0.
    x = np.log(F / K)
    a = x + lo_z
    top = np.minimum(a + width, 0.0)             # upper end of the paid region
    live = a < 0
    # chi/psi of the paid region [a, top], relative to a: arguments u*(top - a)
    dlt = np.where(live, top - a, 0.0)
    ud = np.outer(u, dlt)
    cos_d, sin_d = np.cos(ud), np.sin(ud)
    et = np.exp(np.where(live, top, 0.0))
    ea = np.exp(np.where(live, a, 0.0))
    u_col = u[:, None]
    chi = (cos_d * et - ea + u_col * sin_d * et) / (1.0 + u_col**2)
    psi = np.empty_like(cos_d)
    psi[0] = dlt
    psi[1:] = sin_d[1:] / u_col[1:]
    vk = (2.0 / width) * (psi - chi)
    put = K * (phi.real @ vk)
    return np.asarray(np.where(live, np.maximum(put, 0.0), 0.0), dtype=float)


def heston_price(
    F: ArrayLike, K: ArrayLike, T: ArrayLike, p: HestonParams, is_call: ArrayLike, df: ArrayLike = 1.0,
    *, n_terms: int = 192, L: float = 12.0,
) -> FloatArray:
    """Heston prices of European options; strikes sharing an expiry share one CF evaluation.

    ``n_terms`` cosine terms on a range of ``c1 ± L sqrt(c2)``; the defaults give ~1e-9 absolute
    accuracy (per unit of forward) for maturities from a day to years.
    """
    F_, K_, T_, d_ = (np.asarray(a, dtype=float) for a in (F, K, T, df))
    call = as_call_flag(is_call)
    F_, K_, T_, d_, call = np.broadcast_arrays(F_, K_, T_, d_, call)
    shape = F_.shape
    F_, K_, T_, d_, call = (np.ravel(a) for a in (F_, K_, T_, d_, call))
    if np.any(~(F_ > 0)) or np.any(~(K_ > 0)):
        raise ValueError("heston_price: forwards and strikes must be positive")
    if np.any(~(T_ > 0)):
        raise ValueError("heston_price: times to expiry must be positive")
    out = np.empty(F_.size)
    for t in np.unique(T_):
        m = T_ == t
        put = _price_one_expiry(F_[m], K_[m], float(t), p, n_terms, L)
        out[m] = np.where(call[m], put + F_[m] - K_[m], put)
    return (np.maximum(out, 0.0) * d_).reshape(shape)


@dataclass(frozen=True)
class Calibration:
    """Result of :func:`calibrate`: parameters, fit quality and how the optimiser ended."""

    params: HestonParams
    rmse_iv: float          # root-mean-square implied-vol error over the options used
    max_abs_iv_err: float
    n_options: int
    n_evals: int
    success: bool
    message: str

    @property
    def feller_ok(self) -> bool:
        return self.params.feller_ok


def calibrate(
    F: ArrayLike, K: ArrayLike, T: ArrayLike, iv: ArrayLike, is_call: ArrayLike | None = None,
    *, weights: ArrayLike | None = None, x0: HestonParams | None = None, n_terms: int = 128,
    max_nfev: int = 400,
) -> Calibration:
    """Fit Heston to one snapshot's implied vols by vega-weighted price least squares.

    The residual of each option is (model - market) / vega, a first-order implied-vol error, so
    the fit is in vol points without inverting the model each step; the reported rmse is the
    exact implied-vol error of the final fit. ``is_call`` defaults to out-of-the-money options
    (put below the forward, call above), the liquid side. Feller is reported, not imposed:
    crypto surfaces often violate it.
    """
    from scipy.optimize import least_squares

    from entasis.options.black import black_greeks
    from entasis.options.iv import implied_vol

    F_, K_, T_, iv_ = (np.ravel(np.asarray(a, dtype=float)) for a in np.broadcast_arrays(F, K, T, iv))
    call = (K_ >= F_) if is_call is None else np.ravel(np.broadcast_to(as_call_flag(is_call), F_.shape))
    wts = np.ones(F_.size) if weights is None else np.ravel(np.broadcast_to(np.asarray(weights, float), F_.shape))
    use = np.isfinite(F_) & np.isfinite(K_) & np.isfinite(T_) & np.isfinite(iv_) & (iv_ > 0) & (T_ > 0) & (wts > 0)
    if use.sum() < 5:
        raise ValueError(f"Heston calibration needs at least 5 valid options (finite positive iv, T > 0); got {use.sum()}")
    F_, K_, T_, iv_, call, wts = F_[use], K_[use], T_[use], iv_[use], call[use], wts[use]
    greeks = black_greeks(F_, K_, T_, iv_, call)
    market = greeks.price / F_
    vega = np.maximum(greeks.vega / F_, 1e-8)
    sw = np.sqrt(wts / wts.mean())

    def residuals(v: FloatArray) -> FloatArray:
        try:
            p = HestonParams.from_array(v)
        except ValueError:
            return np.full(F_.size, 1e3)
        model = heston_price(F_, K_, T_, p, call, n_terms=n_terms) / F_
        r = sw * (model - market) / vega
        return np.where(np.isfinite(r), r, 1e3)

    starts = [x0.as_array()] if x0 is not None else _starts(T_, iv_, K_, F_)
    best = None
    nfev = 0
    for s0 in starts:
        res = least_squares(residuals, np.clip(s0, BOUNDS[0], BOUNDS[1]), bounds=BOUNDS, method="trf",
                            x_scale="jac", max_nfev=max_nfev, xtol=1e-12, ftol=1e-12, gtol=1e-12)
        nfev += int(res.nfev)
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    p = HestonParams.from_array(best.x)
    model_iv = implied_vol(heston_price(F_, K_, T_, p, call, n_terms=n_terms), F_, K_, T_, call)
    err = model_iv - iv_
    rmse = float(np.sqrt(np.nanmean(err**2))) if np.isfinite(err).any() else float("nan")
    return Calibration(p, rmse, float(np.nanmax(np.abs(err))) if np.isfinite(err).any() else float("nan"),
                       int(F_.size), nfev, bool(best.success), str(best.message))


def _starts(T: FloatArray, iv: FloatArray, K: FloatArray, F: FloatArray) -> list[FloatArray]:
    """Starting points from the data: short- and long-dated ATM variance, neutral correlation."""
    atm = np.abs(np.log(K / F)) <= np.quantile(np.abs(np.log(K / F)), 0.3)
    short = T <= np.quantile(T[atm], 0.3) if atm.any() else np.ones(T.size, bool)
    long_ = T >= np.quantile(T[atm], 0.7) if atm.any() else np.ones(T.size, bool)
    v_short = float(np.median(iv[atm & short] ** 2)) if (atm & short).any() else float(np.median(iv**2))
    v_long = float(np.median(iv[atm & long_] ** 2)) if (atm & long_).any() else float(np.median(iv**2))
    return [np.array([v_short, 2.0, v_long, 1.0, -0.3]), np.array([v_short, 5.0, v_long, 2.0, 0.2])]
