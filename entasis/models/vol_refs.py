"""The standard volatility references a forecast must beat: RiskMetrics EWMA and GARCH(1,1).

Both forecast the conditional variance of daily returns; the label ``y_vol_{h}d`` is the *population*
sd of the next h returns around their own mean, whose expectation for uncorrelated returns is
(h-1)/h of the variance. Both references are multiplied by that exact factor (no fitting), so they are
scored on the label's own footing. Units: annualized vol (x sqrt(365), daily bars).

* EWMA: s²_{t+1} = λ s²_t + (1-λ) r_t², λ = 0.94 (RiskMetrics), zero mean, flat over the horizon;
  seeded with the mean r² of the first 30 returns.
* GARCH(1,1): parameters fit by ``arch`` (constant mean, normal or Student-t errors) on the returns
  known at the refit date only, then filtered forward with those fixed parameters, so the forecast at
  t uses returns up to t. The h-day forecast is the mean of the k = 1..h step variance forecasts,
  E s²_{t+k} = ω Σ_{j<k-1} φ^j + φ^{k-1} s²_{t+1}, φ = α + β (valid for φ >= 1 too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from entasis.models.base import ModelError

DAYS_PER_YEAR = 365.0
RISKMETRICS_LAMBDA = 0.94
EWMA_SEED_BARS = 30
MIN_GARCH_OBS = 250


def demean_factor(horizon: int) -> float:
    """E[population variance of h iid draws] / variance = (h-1)/h (1 for h = 1, nothing to demean)."""
    h = int(horizon)
    return 1.0 if h <= 1 else (h - 1) / h


def ewma_variance(r: np.ndarray, lam: float = RISKMETRICS_LAMBDA) -> np.ndarray:
    """s²_{t+1|t} for every t (the variance of the next return known at t's close); NaN in r skipped."""
    if not 0.0 < lam < 1.0:
        raise ModelError(f"EWMA lambda must be in (0, 1); got {lam}")
    r = np.asarray(r, dtype=np.float64)
    out = np.full(len(r), np.nan)
    ok = np.flatnonzero(np.isfinite(r))
    if ok.size < EWMA_SEED_BARS:
        return out
    s2 = float(np.mean(r[ok[:EWMA_SEED_BARS]] ** 2))
    for i in ok:
        s2 = lam * s2 + (1.0 - lam) * r[i] ** 2
        out[i] = s2
    out[ok[: EWMA_SEED_BARS - 1]] = np.nan  # still inside the seed
    return out


def ewma_vol(r: np.ndarray, horizon: int, lam: float = RISKMETRICS_LAMBDA) -> np.ndarray:
    """Annualized h-day vol forecast at each t, on the label's footing."""
    return np.sqrt(ewma_variance(r, lam) * DAYS_PER_YEAR * demean_factor(horizon))


@dataclass(frozen=True)
class GarchParams:
    mu: float
    omega: float
    alpha: float
    beta: float
    nu: float | None = None  # Student-t degrees of freedom
    scale: float = 100.0  # returns were multiplied by this before fitting (percent returns)

    @property
    def persistence(self) -> float:
        return self.alpha + self.beta


def fit_garch(r: np.ndarray, dist: str = "normal") -> GarchParams:
    """GARCH(1,1) with constant mean by ``arch`` on the given (training) returns; NaNs dropped."""
    from arch import arch_model

    if dist not in ("normal", "t"):
        raise ModelError(f"GARCH dist must be 'normal' or 't'; got {dist!r}")
    x = np.asarray(r, dtype=np.float64)
    x = x[np.isfinite(x)] * 100.0
    if x.size < MIN_GARCH_OBS:
        raise ModelError(f"GARCH needs {MIN_GARCH_OBS} returns; got {x.size}")
    am = arch_model(x, mean="Constant", vol="GARCH", p=1, q=1, dist="t" if dist == "t" else "normal",
                    rescale=False)
    res = am.fit(disp="off", show_warning=False)
    p = res.params
    return GarchParams(mu=float(p["mu"]), omega=float(p["omega"]), alpha=float(p["alpha[1]"]),
                       beta=float(p["beta[1]"]), nu=float(p["nu"]) if "nu" in p.index else None)


def garch_filter(r: np.ndarray, params: GarchParams) -> np.ndarray:
    """s²_{t+1|t} (in scaled units) at every t with fixed parameters; seeded with the sample variance.

    NaN returns (the first bar) are skipped; the seed's influence decays as β^t.
    """
    x = np.asarray(r, dtype=np.float64) * params.scale
    out = np.full(len(x), np.nan)
    ok = np.flatnonzero(np.isfinite(x))
    if not ok.size:
        return out
    e = x[ok] - params.mu
    s2 = float(np.mean(e**2))
    w, a, b = params.omega, params.alpha, params.beta
    vals = np.empty(e.size)
    for i, ei in enumerate(e.tolist()):
        s2 = w + a * ei * ei + b * s2
        vals[i] = s2
    out[ok] = vals
    return out


def multi_step_mean(s2_next: np.ndarray, params: GarchParams, horizon: int) -> np.ndarray:
    """Mean of E s²_{t+k}, k = 1..h, given s²_{t+1} (closed form, any persistence)."""
    h = int(horizon)
    phi = params.persistence
    k = np.arange(1, h + 1)
    pw = phi ** (k - 1)
    # Σ_{j=0}^{k-2} φ^j: 0 for k = 1
    geo = np.array([float(np.sum(phi ** np.arange(kk - 1))) for kk in k])
    return params.omega * geo.mean() + pw.mean() * np.asarray(s2_next, dtype=np.float64)


def garch_vol(r: np.ndarray, params: GarchParams, horizon: int) -> np.ndarray:
    """Annualized h-day vol forecast at each t, on the label's footing."""
    s2 = multi_step_mean(garch_filter(r, params), params, horizon) / params.scale**2
    return np.sqrt(s2 * DAYS_PER_YEAR * demean_factor(horizon))


def naive_vol(r: np.ndarray, horizon: int) -> np.ndarray:
    """Last realized: the population sd of the last h returns, annualized (the label h days ago)."""
    import pandas as pd

    h = int(horizon)
    s = pd.Series(np.asarray(r, dtype=np.float64)).rolling(h, min_periods=h).std(ddof=0).to_numpy()
    return s * math.sqrt(DAYS_PER_YEAR)
