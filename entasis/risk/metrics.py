"""Risk and performance metrics of a series of periodic (e.g. daily) simple returns.

Pure numpy, so the backtest, the publisher and analysts all compute a Sharpe ratio the same way.
Conventions (stated once, here):

* returns are simple per-period returns (``0.01`` = +1%), NaN-free; ``periods_per_year`` annualises
  (365 for daily crypto, which trades every day);
* risk-free rate 0 unless given (an annual rate, converted per period);
* drawdowns, VaR and expected shortfall are reported as *positive loss fractions* (``0.2`` = −20%);
* historical VaR at level ``alpha`` (default 0.05, i.e. 95% VaR) is minus the empirical
  ``alpha``-quantile taken as an order statistic, ``q = sorted(r)[floor(alpha·(n−1))]``; historical
  ES is minus the mean of the returns at or below ``q``;
* parametric VaR / ES assume normal returns with the sample mean and (ddof=1) standard deviation:
  ``VaR = −(μ + σ·z_α)``, ``ES = −(μ − σ·φ(z_α)/α)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from entasis.domain import bars_per_year


class RiskInputError(ValueError):
    """Bad input to a risk metric (empty series, NaN, bad level)."""


def periods_per_year(timeframe: str) -> float:
    """Bars per year for a timeframe name such as '1d' (crypto trades 365 days a year)."""
    try:
        return bars_per_year(timeframe)
    except ValueError as e:
        raise RiskInputError(str(e)) from None


def _arr(returns: Sequence[float] | np.ndarray, *, what: str = "returns") -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64).ravel()
    if r.size == 0:
        raise RiskInputError(f"{what} is empty")
    if not np.isfinite(r).all():
        i = int(np.flatnonzero(~np.isfinite(r))[0])
        raise RiskInputError(f"{what} has a non-finite value {r[i]!r} at position {i}")
    if (r <= -1).any():
        i = int(np.flatnonzero(r <= -1)[0])
        raise RiskInputError(f"{what}[{i}] = {r[i]!r} loses 100% or more; simple returns must be > -1")
    return r


def _alpha(alpha: float) -> float:
    if not 0 < alpha < 0.5:
        raise RiskInputError(f"alpha must be in (0, 0.5), e.g. 0.05 for 95% VaR; got {alpha}")
    return float(alpha)


def equity_curve(returns: Sequence[float] | np.ndarray, start: float = 1.0) -> np.ndarray:
    """Compounded equity after each period (length n, not including the starting value)."""
    return start * np.cumprod(1.0 + _arr(returns))


def total_return(returns: Sequence[float] | np.ndarray) -> float:
    return float(np.prod(1.0 + _arr(returns)) - 1.0)


def annualized_return(returns: Sequence[float] | np.ndarray, periods_per_year: float = 365) -> float:
    """Compound annual growth rate: (1 + total)^(ppy / n) − 1."""
    r = _arr(returns)
    return float((1.0 + total_return(r)) ** (periods_per_year / r.size) - 1.0)


def annualized_volatility(returns: Sequence[float] | np.ndarray, periods_per_year: float = 365) -> float:
    r = _arr(returns)
    return float(r.std(ddof=1) * math.sqrt(periods_per_year)) if r.size > 1 else float("nan")


def sharpe_ratio(returns: Sequence[float] | np.ndarray, periods_per_year: float = 365,
                 risk_free: float = 0.0) -> float:
    """Annualised mean excess return over its standard deviation (ddof=1); NaN when flat."""
    r = _arr(returns) - risk_free / periods_per_year
    if r.size < 2:
        return float("nan")
    sd = r.std(ddof=1)
    return float(r.mean() / sd * math.sqrt(periods_per_year)) if sd > 0 else float("nan")


def sortino_ratio(returns: Sequence[float] | np.ndarray, periods_per_year: float = 365,
                  target: float = 0.0) -> float:
    """Annualised mean excess over the downside deviation sqrt(mean(min(r − target, 0)²)) over all periods."""
    r = _arr(returns) - target
    dd = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    return float(r.mean() / dd * math.sqrt(periods_per_year)) if dd > 0 else float("nan")


def drawdown_series(returns: Sequence[float] | np.ndarray) -> np.ndarray:
    """Drawdown after each period as a non-positive fraction of the running peak (the start counts as a peak)."""
    eq = equity_curve(returns)
    peak = np.maximum.accumulate(np.concatenate([[1.0], eq]))[1:]
    return np.asarray(eq / peak - 1.0)


def max_drawdown(returns: Sequence[float] | np.ndarray) -> float:
    """Largest peak-to-trough loss as a positive fraction (0 when equity never falls)."""
    return float(-drawdown_series(returns).min()) if len(returns) else float("nan")


def calmar_ratio(returns: Sequence[float] | np.ndarray, periods_per_year: float = 365) -> float:
    """Annualised return over maximum drawdown; NaN when there was no drawdown."""
    mdd = max_drawdown(returns)
    return float(annualized_return(returns, periods_per_year) / mdd) if mdd > 0 else float("nan")


def var_historical(returns: Sequence[float] | np.ndarray, alpha: float = 0.05) -> float:
    """Historical VaR: −sorted(r)[floor(alpha·(n−1))], a positive loss fraction."""
    r = np.sort(_arr(returns))
    return float(-r[int(math.floor(_alpha(alpha) * (r.size - 1)))])


def es_historical(returns: Sequence[float] | np.ndarray, alpha: float = 0.05) -> float:
    """Historical expected shortfall: −mean of the returns at or below the VaR quantile."""
    r = _arr(returns)
    q = -var_historical(r, alpha)
    return float(-r[r <= q].mean())


def var_parametric(returns: Sequence[float] | np.ndarray, alpha: float = 0.05) -> float:
    """Gaussian VaR: −(μ + σ·z_α) with the sample mean and standard deviation (ddof=1)."""
    r = _arr(returns)
    if r.size < 2:
        return float("nan")
    z = NormalDist().inv_cdf(_alpha(alpha))
    return float(-(r.mean() + r.std(ddof=1) * z))


def es_parametric(returns: Sequence[float] | np.ndarray, alpha: float = 0.05) -> float:
    """Gaussian expected shortfall: −(μ − σ·φ(z_α)/α)."""
    r = _arr(returns)
    if r.size < 2:
        return float("nan")
    a = _alpha(alpha)
    nd = NormalDist()
    z = nd.inv_cdf(a)
    return float(-(r.mean() - r.std(ddof=1) * nd.pdf(z) / a))


def performance_summary(returns: Sequence[float] | np.ndarray, periods_per_year: float = 365,
                        alpha: float = 0.05) -> dict[str, float]:
    """Every metric above for one return series, keyed by name (what the backtest stores)."""
    r = _arr(returns)
    lvl = round((1 - _alpha(alpha)) * 100)
    return {
        "n_periods": float(r.size),
        "total_return": total_return(r),
        "annualized_return": annualized_return(r, periods_per_year),
        "annualized_volatility": annualized_volatility(r, periods_per_year),
        "sharpe": sharpe_ratio(r, periods_per_year),
        "sortino": sortino_ratio(r, periods_per_year),
        "calmar": calmar_ratio(r, periods_per_year),
        "max_drawdown": max_drawdown(r),
        f"var_{lvl}_historical": var_historical(r, alpha),
        f"es_{lvl}_historical": es_historical(r, alpha),
        f"var_{lvl}_parametric": var_parametric(r, alpha),
        f"es_{lvl}_parametric": es_parametric(r, alpha),
    }
