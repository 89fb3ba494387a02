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
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from entasis.options.black import FloatArray, as_call_flag, black_greeks
from entasis.options.iv import implied_vol

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


def char_func(u: ArrayLike, T: ArrayLike, p: HestonParams) -> ComplexArray:
    """E[exp(i u ln(F_T / F_0))] under the forward measure (a martingale, so phi(-i) = 1)."""
    return _cf(np.asarray(u, dtype=complex), np.asarray(T, dtype=float), *p.as_array())


def _cf(u: ComplexArray, T: Any, v0: Any, k: Any, th: Any, sg: Any, rh: Any) -> ComplexArray:
    """The characteristic function with parameters that broadcast (batches of parameter sets)."""
    beta = k - 1j * rh * sg * u
    d = np.sqrt(beta * beta + sg * sg * (u * u + 1j * u))
    g = (beta - d) / (beta + d)
    e = np.exp(-d * T)
    one_minus_ge = 1.0 - g * e
    c = (k * th / (sg * sg)) * ((beta - d) * T - 2.0 * np.log(one_minus_ge / (1.0 - g)))
    dv = (v0 / (sg * sg)) * (beta - d) * (1.0 - e) / one_minus_ge
    return np.asarray(np.exp(c + dv), dtype=complex)


def cumulants(T: ArrayLike, p: HestonParams) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Cumulants c1, c2, c4 of ln(F_T/F_0) for each T.

    c1 is closed-form; c2 and c4 come from the characteristic function at two small real
    arguments (Richardson on Re ln phi(h) = -c2 h²/2 + c4 h⁴/24 - ...), which sidesteps the
    long and typo-prone closed forms and is accurate to ~1e-6 relative.
    """
    T_ = np.asarray(T, dtype=float)
    c1, c2, c4 = _cumulants(np.atleast_1d(T_), p.as_array()[None, :])
    return c1[0].reshape(T_.shape), c2[0].reshape(T_.shape), c4[0].reshape(T_.shape)


def _cumulants(T: FloatArray, P: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Cumulants for parameter sets P (m, 5) and maturities T (M,): arrays (m, M)."""
    v0, k, th, sg, rh = (P[:, i : i + 1] for i in range(5))
    ekt = np.exp(-k * T)
    c1 = (1.0 - ekt) * (th - v0) / (2.0 * k) - 0.5 * th * T
    vbar = th * T + (v0 - th) * (1.0 - ekt) / k       # expected integrated variance
    h = 0.02 / np.sqrt(vbar)
    hh = np.stack([h, 2.0 * h], axis=-1)
    lnphi = np.log(_cf(hh.astype(complex), T[None, :, None], v0[..., None], k[..., None], th[..., None],
                       sg[..., None], rh[..., None])).real
    r1, r2 = lnphi[..., 0], lnphi[..., 1]
    c4 = -2.0 * (4.0 * r1 - r2) / h**4
    c2 = -2.0 * r1 / h**2 + c4 * h * h / 12.0
    return c1, c2, c4


MAX_TERMS = 8192


def _cos_grids(T: FloatArray, P: FloatArray, n_terms: int, L: float, tol: float, max_terms: int = MAX_TERMS
               ) -> tuple[FloatArray, FloatArray, NDArray[np.int64]]:
    """Per parameter set and expiry: lower end and width of the range of ln(F_T/F_0); per expiry: terms.

    The range is c1 ± L sqrt(c2 + sqrt(c4)) (Fang & Oosterlee: the c4 term widens it for the
    exponential tails Heston has). The number of terms doubles from ``n_terms`` until |phi| at
    the last frequency is below ``tol`` for every parameter set, so short maturities, whose CF
    decays slowly, stay exact.
    """
    c1, c2, c4 = _cumulants(T, P)
    width = 2.0 * L * np.sqrt(np.maximum(c2, 1e-14) + np.sqrt(np.maximum(c4, 0.0)))
    steps = max(int(np.floor(np.log2(max(max_terms, n_terms) / n_terms))), 0)
    cand = n_terms * 2 ** np.arange(steps + 1)
    u = (cand[None, None, :] * np.pi / width[..., None]).astype(complex)
    v0, k, th, sg, rh = (P[:, i, None, None] for i in range(5))
    tail = np.abs(_cf(u, T[None, :, None], v0, k, th, sg, rh)).max(axis=0)       # (M, steps)
    fine = tail <= tol
    first_ok = np.where(fine.any(axis=1), np.argmax(fine, axis=1), steps)
    return c1 - 0.5 * width, width, cand[first_ok]


def _puts_batch(F: FloatArray, K: FloatArray, T: FloatArray, P: FloatArray, n_terms: int, L: float, tol: float,
                max_terms: int = MAX_TERMS) -> FloatArray:
    """Undiscounted put prices (m, n) for parameter sets P (m, 5) and options F, K, T (n,)."""
    tu, inv = np.unique(T, return_inverse=True)
    lo, width, nt = _cos_grids(tu, P, n_terms, L, tol, max_terms)
    out = np.empty((P.shape[0], F.size))
    v0, k, th, sg, rh = (P[:, i, None] for i in range(5))
    x_all = np.log(F / K)
    for j in range(tu.size):
        m = np.flatnonzero(inv == j)
        w = width[:, j, None]                                        # (m, 1)
        u = np.arange(nt[j])[None, :] * (np.pi / w)                  # (m, N)
        phi = _cf(u.astype(complex), tu[j], v0, k, th, sg, rh) * np.exp(-1j * u * lo[:, j, None])
        phi[:, 0] *= 0.5
        # In y = ln(F_T/K) the range is [x + lo, x + lo + width]; the put pays K(1 - e^y) for
        # y < 0, i.e. on [a, top]. With d = top - a and E_k = e^{i u_k d}, the payoff coefficients
        # are psi_k = Im E_k / u_k (psi_0 = d) and chi_k = (e^top (Re E_k + u_k Im E_k) - e^a)/(1+u_k²),
        # so sum_k Re(phi_k)(psi_k - chi_k) needs only E^T times two fixed coefficient vectors.
        a = x_all[m][None, :] + lo[:, j, None]                       # (m, nK)
        live = a < 0
        top = np.where(live, np.minimum(a + w, 0.0), 0.0)
        a = np.where(live, a, 0.0)
        dlt = top - a
        # E_k = z^k with z = e^{i pi d / width}: powers by a running product
        # (3x cheaper than N x nK complex exponentials; rounding grows like k eps, ~1e-13)
        e = np.empty((P.shape[0], nt[j], m.size), dtype=complex)
        e[:, 0, :] = 1.0
        e[:, 1:, :] = np.exp(1j * (np.pi / w) * dlt)[:, None, :]
        np.cumprod(e, axis=1, out=e)
        ph = phi.real
        inv1u2 = 1.0 / (1.0 + u * u)
        coef_a = np.zeros_like(ph)
        coef_a[:, 1:] = ph[:, 1:] / u[:, 1:]                         # -> Im(E^T A): the psi terms
        coef_b = ph * inv1u2 - 1j * (ph * u * inv1u2)               # -> Re(E^T (B - iC)): chi's cos, sin
        g = np.matmul(np.swapaxes(e, 1, 2), np.stack([coef_a.astype(complex), coef_b], axis=-1))  # (m, nK, 2)
        series = (g[..., 0].imag + ph[:, :1] * dlt
                  - np.exp(top) * g[..., 1].real + np.exp(a) * (ph * inv1u2).sum(axis=1, keepdims=True))
        put = K[m][None, :] * (2.0 / w) * series
        out[:, m] = np.where(live, np.maximum(put, 0.0), 0.0)
    return out


def _validate(F: FloatArray, K: FloatArray, T: FloatArray) -> None:
    if np.any(~(F > 0)) or np.any(~(K > 0)):
        raise ValueError("heston_price: forwards and strikes must be positive")
    if np.any(~(T > 0)):
        raise ValueError("heston_price: times to expiry must be positive")


def heston_price(
    F: ArrayLike, K: ArrayLike, T: ArrayLike, p: HestonParams, is_call: ArrayLike, df: ArrayLike = 1.0,
    *, n_terms: int = 64, L: float = 10.0, tol: float = 1e-10,
) -> FloatArray:
    """Heston prices of European options; strikes sharing an expiry share one CF evaluation.

    At least ``n_terms`` cosine terms (more while |phi| > ``tol`` at the last one) on
    c1 ± L sqrt(c2 + sqrt(c4)); the defaults give ~1e-9 of the forward for ordinary parameters.
    """
    F_, K_, T_, d_ = (np.asarray(a, dtype=float) for a in (F, K, T, df))
    call = as_call_flag(is_call)
    F_, K_, T_, d_, call = np.broadcast_arrays(F_, K_, T_, d_, call)
    shape = F_.shape
    F_, K_, T_, d_, call = (np.ravel(a) for a in (F_, K_, T_, d_, call))
    _validate(F_, K_, T_)
    put = _puts_batch(F_, K_, T_, p.as_array()[None, :], n_terms, L, tol)[0]
    out = np.where(call, put + F_ - K_, put)
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
    *, weights: ArrayLike | None = None, x0: HestonParams | None = None, n_terms: int = 64,
    tol: float = 1e-9, max_nfev: int = 400, good_enough: float = 5e-3, exact_tol: float = 1e-8,
) -> Calibration:
    """Fit Heston to one snapshot's implied vols by vega-weighted price least squares.

    The residual of each option is (model - market) / vega, a first-order implied-vol error, so
    the fit is in vol points without inverting the model each step; the reported rmse is the
    exact implied-vol error of the final fit. ``is_call`` defaults to out-of-the-money options
    (put below the forward, call above), the liquid side. Feller is reported, not imposed:
    crypto surfaces often violate it. Starting points are tried in turn until one fits to an
    rms vega-weighted error below ``good_enough`` (0.5 vol points by default); a start stops
    early once its rms error is below ``exact_tol`` (1e-8 in vol: nothing left to fit).
    """
    from scipy.optimize import least_squares

    F_, K_, T_, iv_ = (np.ravel(np.asarray(a, dtype=float)) for a in np.broadcast_arrays(F, K, T, iv))
    call = (K_ >= F_) if is_call is None else np.ravel(np.broadcast_to(as_call_flag(is_call), F_.shape))
    wts = np.ones(F_.size) if weights is None else np.ravel(np.broadcast_to(np.asarray(weights, float), F_.shape))
    use = np.isfinite(F_) & np.isfinite(K_) & np.isfinite(T_) & np.isfinite(iv_) & (iv_ > 0) & (T_ > 0) & (wts > 0)
    if use.sum() < 5:
        raise ValueError("Heston calibration needs at least 5 valid options (finite positive iv, T > 0); "
                         f"got {use.sum()}")
    F_, K_, T_, iv_, call, wts = F_[use], K_[use], T_[use], iv_[use], call[use], wts[use]
    greeks = black_greeks(F_, K_, T_, iv_, call)
    market = greeks.price / F_
    vega = np.maximum(greeks.vega / F_, 1e-8)
    sw = np.sqrt(wts / wts.mean())

    # Optimise in z = (ln v0, ln kappa, ln theta, ln sigma, atanh rho): the valleys of the Heston
    # objective (kappa against theta, above all with one expiry) are far straighter there,
    # which cuts the trust-region steps several-fold against the raw parameters.
    z_lo, z_hi = _to_z(BOUNDS[0]), _to_z(BOUNDS[1])

    def batch(Z: FloatArray) -> FloatArray:
        """Residuals (m, n) for parameter sets Z (m, 5), all priced in one vectorised pass."""
        puts = _puts_batch(F_, K_, T_, _from_z(Z), n_terms, 10.0, tol, max_terms=1024)
        model = np.where(call, puts + F_ - K_, puts) / F_
        r = sw * (model - market) / vega
        return np.where(np.isfinite(r), r, 1e3)

    def residuals(z: FloatArray) -> FloatArray:
        return batch(np.clip(z, z_lo, z_hi)[None, :])[0]

    def jacobian(z: FloatArray) -> FloatArray:
        # forward differences, the base point and the five bumps in one batch (one term count)
        z = np.clip(z, z_lo, z_hi)
        h = 1e-7 * np.maximum(np.abs(z), 1.0)
        h = np.where(z + h > z_hi, -h, h)
        R = batch(np.vstack([z, z + np.diag(h)]))
        return np.asarray(((R[1:] - R[0]) / h[:, None]).T)

    def exact_enough(intermediate_result: Any) -> None:
        # a fit already within exact_tol (rms, in vol) has nothing left to gain: stop there
        if np.sqrt(2.0 * intermediate_result.cost / F_.size) < exact_tol:
            raise StopIteration

    starts = [x0.as_array()] if x0 is not None else _starts(T_, iv_, K_, F_)
    best = None
    nfev = 0
    for s0 in starts:
        z0 = np.clip(_to_z(np.clip(s0, BOUNDS[0], BOUNDS[1])), z_lo + 1e-9, z_hi - 1e-9)
        # no bounds for the optimiser (their reflective scaling slows it 3-6x here); the model
        # clips z into the box, so a parameter pushed past a bound simply sits on it
        res = least_squares(residuals, z0, jac=jacobian, method="trf", max_nfev=max_nfev,
                            xtol=1e-10, ftol=1e-10, gtol=1e-10, callback=exact_enough)
        nfev += int(res.nfev)
        if best is None or res.cost < best.cost:
            best = res
        if np.sqrt(2.0 * best.cost / F_.size) < good_enough:
            break
    assert best is not None
    p = HestonParams.from_array(_from_z(np.clip(best.x, z_lo, z_hi)[None, :])[0])
    model_iv = implied_vol(heston_price(F_, K_, T_, p, call, n_terms=n_terms), F_, K_, T_, call)
    err = model_iv - iv_
    rmse = float(np.sqrt(np.nanmean(err**2))) if np.isfinite(err).any() else float("nan")
    success = bool(best.success) or best.status == -2          # -2: stopped by exact_enough
    message = "fit exact to exact_tol" if best.status == -2 else str(best.message)
    return Calibration(p, rmse, float(np.nanmax(np.abs(err))) if np.isfinite(err).any() else float("nan"),
                       int(F_.size), nfev, success, message)


def _to_z(v: FloatArray) -> FloatArray:
    v = np.asarray(v, dtype=float)
    return np.concatenate([np.log(v[..., :4]), np.arctanh(v[..., 4:5])], axis=-1)


def _from_z(z: FloatArray) -> FloatArray:
    z = np.asarray(z, dtype=float)
    return np.concatenate([np.exp(z[..., :4]), np.tanh(z[..., 4:5])], axis=-1)


def _starts(T: FloatArray, iv: FloatArray, K: FloatArray, F: FloatArray) -> list[FloatArray]:
    """Starting points from the data: short- and long-dated ATM variance, neutral correlation."""
    atm = np.abs(np.log(K / F)) <= np.quantile(np.abs(np.log(K / F)), 0.3)
    short = T <= np.quantile(T[atm], 0.3) if atm.any() else np.ones(T.size, bool)
    long_ = T >= np.quantile(T[atm], 0.7) if atm.any() else np.ones(T.size, bool)
    v_short = float(np.median(iv[atm & short] ** 2)) if (atm & short).any() else float(np.median(iv**2))
    v_long = float(np.median(iv[atm & long_] ** 2)) if (atm & long_).any() else float(np.median(iv**2))
    return [np.array([v_short, 2.0, v_long, 1.0, -0.3]), np.array([v_short, 5.0, v_long, 2.0, 0.2])]
