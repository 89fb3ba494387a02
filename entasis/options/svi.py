"""Raw SVI smiles, fitted for many expiries at once.

Gatheral's raw SVI gives total implied variance at log-moneyness k = ln(K/F):
``w(k) = a + b (rho (k - m) + sqrt((k - m)² + sigma²))``. We fit in implied-vol space
(residual ``sqrt(w(k)/T) - iv``, so the rmse reads in vol points) with a Levenberg-Marquardt loop
that is vectorised across smiles: every smile of every snapshot is one row of a padded array and
takes the same NumPy steps, which is what makes per-snapshot features cheap over long histories.

The parameters are mapped so that every iterate is a valid smile: rho = tanh(u2),
0 < b < 2 / (1 + |rho|) (Lee's bound on the wing slopes, b = that bound x sigmoid(u1)),
sigma = e^u4 > 0 and a = e^u0 - b sigma sqrt(1 - rho²), i.e. the minimum total variance e^u0
is positive. Several starting points run side by side; each smile keeps its best.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
PARAM_NAMES = ("a", "b", "rho", "m", "sigma")
_LEE_SLOPE = 2.0   # Roger Lee: total variance grows at most like 2|k| in the wings


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=float)


@dataclass(frozen=True)
class SVIFit:
    """Raw SVI parameters per smile (rows of ``params``: a, b, rho, m, sigma) and the fit rmse in vol."""

    params: FloatArray
    rmse: FloatArray
    n: NDArray[np.int64]

    def total_variance(self, k: ArrayLike) -> FloatArray:
        """w(k) for each smile; ``k`` broadcasts against (n_smiles, ...)."""
        return svi_total_variance(self.params, k)


def svi_total_variance(params: ArrayLike, k: ArrayLike) -> FloatArray:
    """Raw SVI total variance; ``params`` is (..., 5) and ``k`` broadcasts against its leading shape."""
    p = np.asarray(params, dtype=float)
    a, b, rho, m, sig = (p[..., i] for i in range(5))
    kk = np.asarray(k, dtype=float)
    extra = kk.ndim - a.ndim
    if extra > 0:
        a, b, rho, m, sig = (x.reshape(x.shape + (1,) * extra) for x in (a, b, rho, m, sig))
    z = kk - m
    return np.asarray(a + b * (rho * z + np.sqrt(z * z + sig * sig)), dtype=float)


def butterfly_density_ok(params: ArrayLike, k: ArrayLike) -> NDArray[np.bool_]:
    """Gatheral's g(k) >= 0 on the grid ``k`` (per smile): no butterfly arbitrage there."""
    p = np.asarray(params, dtype=float)
    a, b, rho, m, sig = (p[:, i : i + 1] for i in range(5))
    kk = np.asarray(k, dtype=float)
    z = kk - m
    r = np.sqrt(z * z + sig * sig)
    w = a + b * (rho * z + r)
    w1 = b * (rho + z / r)
    w2 = b * sig * sig / r**3
    with np.errstate(invalid="ignore", divide="ignore"):
        g = (1.0 - kk * w1 / (2.0 * w)) ** 2 - 0.25 * w1 * w1 * (1.0 / w + 0.25) + 0.5 * w2
    return np.asarray(np.all((g >= -1e-10) & (w > 0), axis=1), dtype=bool)


def _unpack(u: FloatArray) -> tuple[FloatArray, ...]:
    wmin = np.exp(u[..., 0])
    rho = np.tanh(u[..., 2])
    b = _LEE_SLOPE / (1.0 + np.abs(rho)) * _sigmoid(u[..., 1])
    m = u[..., 3]
    sig = np.exp(u[..., 4])
    return wmin, b, rho, m, sig


def _to_raw(u: FloatArray) -> FloatArray:
    wmin, b, rho, m, sig = _unpack(u)
    a = wmin - b * sig * np.sqrt(1.0 - rho * rho)
    return np.stack([a, b, rho, m, sig], axis=-1)


def _model(u: FloatArray, k: FloatArray, t: FloatArray, jac: bool) -> tuple[FloatArray, FloatArray | None]:
    """Model vols sqrt(w/T) (S, n) and, if asked, their Jacobian wrt u (S, n, 5)."""
    wmin, b, rho, m, sig = (x[:, None] for x in _unpack(u))
    srho = np.sqrt(1.0 - rho * rho)
    z = k - m
    r = np.sqrt(z * z + sig * sig)
    w = wmin + b * (rho * z + r - sig * srho)
    w = np.maximum(w, 1e-300)
    vol = np.sqrt(w / t[:, None])
    if not jac:
        return vol, None
    dvol_dw = 0.5 / (vol * t[:, None])
    dw = np.empty(k.shape + (5,))
    dw[..., 0] = wmin
    shape = rho * z + r - sig * srho
    db_du1 = b * (1.0 - b * (1.0 + np.abs(rho)) / _LEE_SLOPE)
    db_drho = -b * np.sign(rho) / (1.0 + np.abs(rho))
    dw[..., 1] = db_du1 * shape
    dw[..., 2] = (b * (z + sig * rho / srho) + db_drho * shape) * (1.0 - rho * rho)
    dw[..., 3] = -b * (rho + z / r)
    dw[..., 4] = sig * b * (sig / r - srho)
    return vol, dw * dvol_dw[..., None]


def _initial_guesses(k: FloatArray, iv: FloatArray, t: FloatArray, mask: NDArray[np.bool_]) -> list[FloatArray]:
    """Starting points from the wings' slopes and the variance minimum, at three curvatures."""
    w = np.where(mask, iv * iv * t[:, None], np.inf)
    i_min = np.argmin(w, axis=1)
    rows = np.arange(k.shape[0])
    w_min = w[rows, i_min]
    k_min = k[rows, i_min]
    k_lo = np.where(mask, k, np.inf).min(axis=1)
    k_hi = np.where(mask, k, -np.inf).max(axis=1)
    w_lo = np.where(mask & (k == k_lo[:, None]), w, np.inf).min(axis=1)
    w_hi = np.where(mask & (k == k_hi[:, None]), w, np.inf).min(axis=1)
    span = np.maximum(k_hi - k_lo, 1e-4)
    s_left = np.where(k_min > k_lo, (w_lo - w_min) / np.maximum(k_min - k_lo, 1e-12), 0.0)
    s_right = np.where(k_hi > k_min, (w_hi - w_min) / np.maximum(k_hi - k_min, 1e-12), 0.0)
    b0 = np.maximum(0.5 * (s_left + s_right), 1e-3 * w_min / span + 1e-8)
    rho0 = np.clip((s_right - s_left) / np.maximum(s_right + s_left, 1e-12), -0.9, 0.9)
    out = []
    for frac in (0.1, 0.3, 1.0):
        sig0 = frac * span
        frac_b = np.clip(b0 * (1.0 + np.abs(rho0)) / _LEE_SLOPE, 1e-6, 1 - 1e-6)
        u = np.stack([np.log(np.maximum(w_min, 1e-8)), np.log(frac_b / (1 - frac_b)), np.arctanh(rho0), k_min,
                      np.log(sig0)], axis=1)
        out.append(u)
    return out


def fit_svi(k: ArrayLike, iv: ArrayLike, t: ArrayLike, mask: ArrayLike | None = None,
            weights: ArrayLike | None = None, *, max_iter: int = 100) -> SVIFit:
    """Fit one raw SVI smile per row of the padded arrays ``k``, ``iv`` (S, n); ``t`` is (S,).

    ``mask`` marks real points (padding is ignored); ``weights`` scale each squared residual.
    Rows with fewer than 5 points get NaN parameters: five parameters need five quotes.
    """
    k_ = np.atleast_2d(np.asarray(k, dtype=float))
    iv_ = np.atleast_2d(np.asarray(iv, dtype=float))
    t_ = np.atleast_1d(np.asarray(t, dtype=float))
    if k_.shape != iv_.shape or t_.shape != (k_.shape[0],):
        raise ValueError(f"fit_svi: k {k_.shape}, iv {iv_.shape} and t {t_.shape} do not line up")
    msk = np.ones(k_.shape, bool) if mask is None else np.atleast_2d(np.asarray(mask, dtype=bool))
    msk = msk & np.isfinite(k_) & np.isfinite(iv_) & (iv_ > 0)
    wts = np.ones(k_.shape) if weights is None else np.atleast_2d(np.asarray(weights, dtype=float))
    n = msk.sum(axis=1)
    fit_rows = (n >= 5) & (t_ > 0)
    params = np.full((k_.shape[0], 5), np.nan)
    rmse = np.full(k_.shape[0], np.nan)
    if fit_rows.any():
        kk = np.where(msk, k_, 0.0)[fit_rows]
        vv = np.where(msk, iv_, 0.0)[fit_rows]
        ww = np.where(msk, wts, 0.0)[fit_rows]
        tt = t_[fit_rows]
        mm = msk[fit_rows]
        best_u, best_cost = None, None
        for u0 in _initial_guesses(kk, vv, tt, mm):
            u, cost = _levenberg_marquardt(u0, kk, vv, tt, ww, max_iter)
            if best_u is None or best_cost is None:
                best_u, best_cost = u, cost
            else:
                better = cost < best_cost
                best_u = np.where(better[:, None], u, best_u)
                best_cost = np.where(better, cost, best_cost)
        assert best_u is not None
        vol, _ = _model(best_u, kk, tt, jac=False)
        resid = np.where(mm, vol - vv, 0.0)
        params[fit_rows] = _to_raw(best_u)
        rmse[fit_rows] = np.sqrt((resid**2).sum(axis=1) / mm.sum(axis=1))
    return SVIFit(params, rmse, n.astype(np.int64))


def _levenberg_marquardt(u: FloatArray, k: FloatArray, iv: FloatArray, t: FloatArray, w: FloatArray,
                         max_iter: int) -> tuple[FloatArray, FloatArray]:
    """Batched LM: each smile has its own damping; converged smiles drop out of the work set."""
    sw = np.sqrt(w)
    lam = np.full(u.shape[0], 1e-3)
    vol, _ = _model(u, k, t, jac=False)
    cost = ((sw * (vol - iv)) ** 2).sum(axis=1)
    act = np.arange(u.shape[0])
    eye = np.eye(5)
    for _ in range(max_iter):
        ua, ka, ta, sa, ia = u[act], k[act], t[act], sw[act], iv[act]
        vol, jac = _model(ua, ka, ta, jac=True)
        assert jac is not None
        r = sa * (vol - ia)
        J = sa[..., None] * jac
        JtJ = np.einsum("snp,snq->spq", J, J)
        g = np.einsum("snp,sn->sp", J, r)
        diag = np.einsum("spp->sp", JtJ)
        A = JtJ + (lam[act, None, None] * (diag[:, :, None] * eye + 1e-12 * eye))
        with np.errstate(all="ignore"):
            try:
                step = -np.linalg.solve(A, g[..., None])[..., 0]
            except np.linalg.LinAlgError:
                step = -np.stack([np.linalg.lstsq(Ai, gi, rcond=None)[0] for Ai, gi in zip(A, g, strict=True)])
            step = np.clip(np.nan_to_num(step, nan=0.0), -2.0, 2.0)
            u_new = ua + step
            u_new[:, 2] = np.clip(u_new[:, 2], -4.0, 4.0)        # |rho| <= tanh(4) = 0.9993
            u_new[:, 4] = np.clip(u_new[:, 4], -12.0, 3.0)
            u_new[:, 0] = np.clip(u_new[:, 0], -30.0, 5.0)
            u_new[:, 1] = np.clip(u_new[:, 1], -30.0, 30.0)
            v_new, _ = _model(u_new, ka, ta, jac=False)
            c_new = ((sa * (v_new - ia)) ** 2).sum(axis=1)
        ok = np.isfinite(c_new) & (c_new < cost[act])
        gain = np.where(ok, (cost[act] - c_new) / np.maximum(cost[act], 1e-300), 0.0)
        u[act[ok]] = u_new[ok]
        cost[act[ok]] = c_new[ok]
        lam[act] = np.where(ok, np.maximum(lam[act] / 3.0, 1e-12), np.minimum(lam[act] * 4.0, 1e12))
        small_step = np.abs(step).max(axis=1) < 1e-10
        done = (ok & (gain < 1e-10)) | (~ok & (lam[act] >= 1e12)) | small_step | (cost[act] < 1e-28)
        act = act[~done]
        if act.size == 0:
            break
    return u, cost
