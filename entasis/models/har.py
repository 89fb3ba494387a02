"""HAR-RV volatility forecasts from daily candles: realized-variance components plus a Parkinson range.

Why HAR: volatility is persistent over several time scales, and a regression of future variance on
its daily, weekly and monthly averages (Corsi's HAR-RV) captures that with a handful of coefficients
that are stable across assets, so one pooled fit serves every asset, including one it never saw. With
only daily candles the daily squared return is a very noisy variance proxy; the high-low (Parkinson)
range of the same day carries roughly five times the information, so its daily/weekly/monthly
averages are added as terms.

Everything here is a pure function of candles known at the bar's close (``ts`` is the bar's open, as
in ``features.bars``). Components, all annualized variances (x 365, daily bars):

* ``rv_d`` = r_t², ``rv_w`` / ``rv_m`` = mean of r² over the last 7 / 30 bars (r = log close return);
* ``pk_d`` = ln(high/low)² / (4 ln 2), ``pk_w`` / ``pk_m`` its 7 / 30-bar means;
* ``mkt_w`` = mean over the assets present at that ts of log ``rv_w`` (a market vol level).

The regression is in logs (variance is right-skewed and multiplicative): log(y_vol²) = b·[1, log
terms]. exp of a log-forecast is a median, biased low for the mean, and QLIKE punishes under-forecasts
hardest, so the forecast is multiplied by the QLIKE-optimal constant c = mean(y_var / exp(fit)) of the
training rows (a closed form, no tuning). ``fit="qlike"`` instead minimises mean QLIKE of
F = exp(b·x) directly (Newton steps from the OLS solution; the loss RV·e^{-bx} + bx is convex in b, so
this is the Gamma GLM with log link): the forecast is then a conditional mean by construction.

The target ``y_vol_{h}d`` is the product's label (population
sd of the next h daily log returns, annualized), computed by the same ``features.compute.forward_vol``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.features.compute import forward_vol
from entasis.models.base import ModelError

if TYPE_CHECKING:
    import pandas as pd

DAYS_PER_YEAR = 365.0
WEEK, MONTH = 7, 30
# Variance floor (annualized) before logs: vol of 1%; a flat day (r = 0 or high = low) would give -inf.
VAR_FLOOR = 1e-4
TERMS = ("rv_d", "rv_w", "rv_m", "pk_d", "pk_w", "pk_m", "mkt_w")
# Named term sets the walk-forward chooses between (on the choice window only).
VARIANTS: dict[str, tuple[str, ...]] = {
    "har_rv": ("rv_d", "rv_w", "rv_m"),
    "har_pk": ("rv_d", "rv_w", "rv_m", "pk_d", "pk_w", "pk_m"),
    "har_pk_mkt": ("rv_d", "rv_w", "rv_m", "pk_d", "pk_w", "pk_m", "mkt_w"),
}
# The same term sets fit by minimising QLIKE itself (a Gamma GLM with log link) instead of OLS in logs.
VARIANTS.update({f"{k}_q": v for k, v in list(VARIANTS.items())})
FITS = ("ols", "qlike")


def variant_fit(name: str) -> str:
    """How a named variant is fit: names ending in ``_q`` minimise QLIKE, the others are OLS in logs."""
    return "qlike" if name.endswith("_q") else "ols"
SPEC = "har_spec.json"


def vol_target(horizon: int) -> str:
    return f"y_vol_{int(horizon)}d"


def components(candles: pd.DataFrame) -> pd.DataFrame:
    """Per-bar variance components of one symbol's daily candles (columns ts, high, low, close).

    Row t uses bars up to and including t only. The first bar has no return (NaN); the 7/30-bar means
    need that many bars (NaN before).
    """
    import pandas as pd

    need = {"ts", "high", "low", "close"}
    missing = need - set(candles.columns)
    if missing:
        raise ModelError(f"candles lack column(s) {sorted(missing)} needed for volatility components")
    c = candles.sort_values("ts").reset_index(drop=True)
    close = c["close"].to_numpy(dtype=np.float64)
    hi = c["high"].to_numpy(dtype=np.float64)
    lo = c["low"].to_numpy(dtype=np.float64)
    if (close <= 0).any() or (lo <= 0).any() or (hi < lo).any():
        bad = int(np.flatnonzero((close <= 0) | (lo <= 0) | (hi < lo))[0])
        raise ModelError(f"candle at {c['ts'].iloc[bad]} has a non-positive price or high < low")
    r = np.full(len(c), np.nan)
    r[1:] = np.log(close[1:] / close[:-1])
    rv = DAYS_PER_YEAR * r**2
    pk = DAYS_PER_YEAR * np.log(hi / lo) ** 2 / (4.0 * math.log(2.0))
    out = pd.DataFrame({"ts": pd.to_datetime(c["ts"], utc=True), "close": close, "r": r, "rv_d": rv, "pk_d": pk})
    for name, src in (("rv", rv), ("pk", pk)):
        s = pd.Series(src)
        out[f"{name}_w"] = s.rolling(WEEK, min_periods=WEEK).mean().to_numpy()
        out[f"{name}_m"] = s.rolling(MONTH, min_periods=MONTH).mean().to_numpy()
    return out


def panel(candles: Mapping[str, pd.DataFrame], horizons: Sequence[int] = ()) -> pd.DataFrame:
    """Components of every symbol stacked (symbol, ts, ...), ``mkt_w``, and the y_vol targets.

    ``horizons``: add ``y_vol_{h}d`` (NaN where the window runs past the last candle). Leave it empty
    at publish time: targets are not needed to forecast.
    """
    import pandas as pd

    if not candles:
        raise ModelError("no candles to build volatility components from")
    frames = []
    ann = math.sqrt(DAYS_PER_YEAR)
    for sym, c in candles.items():
        comp = components(c)
        for h in horizons:
            if int(h) <= 0:
                raise ModelError(f"horizon must be a positive number of days; got {h}")
            comp[vol_target(h)] = forward_vol(comp["r"].to_numpy(), int(h), ann)
        comp.insert(0, "symbol", str(sym))
        frames.append(comp)
    p = pd.concat(frames, ignore_index=True)
    lw = np.log(np.maximum(p["rv_w"].to_numpy(), VAR_FLOOR))
    lw[~np.isfinite(p["rv_w"].to_numpy())] = np.nan
    p["_lw"] = lw
    p["mkt_w"] = np.exp(p.groupby("ts")["_lw"].transform("mean"))
    return p.drop(columns="_lw").sort_values(["symbol", "ts"]).reset_index(drop=True)


def design(frame: pd.DataFrame, terms: Sequence[str]) -> np.ndarray:
    """[1, log(max(term, floor))...]; NaN rows where a term is unknown."""
    cols = [np.ones(len(frame))]
    for t in terms:
        if t not in frame.columns:
            raise ModelError(f"frame lacks the HAR term {t!r}")
        v = frame[t].to_numpy(dtype=np.float64)
        cols.append(np.where(np.isfinite(v), np.log(np.maximum(v, VAR_FLOOR)), np.nan))
    return np.column_stack(cols)


class HARModel:
    """Pooled log-HAR for one horizon: fit on training rows, forecast annualized vol over h days."""

    def __init__(self, horizon: int, terms: Sequence[str] = VARIANTS["har_pk"], fit: str = "ols") -> None:
        if fit not in FITS:
            raise ModelError(f"HAR fit must be one of {FITS}; got {fit!r}")
        self.fit_method = fit
        if int(horizon) <= 0:
            raise ModelError(f"horizon must be a positive number of days; got {horizon}")
        unknown = [t for t in terms if t not in TERMS]
        if unknown or not terms:
            raise ModelError(f"HAR terms must be a non-empty subset of {TERMS}; got {list(terms)}")
        self.horizon = int(horizon)
        self.terms = tuple(terms)
        self.coef: np.ndarray | None = None
        self.scale = 1.0
        self.n_train = 0

    @property
    def target(self) -> str:
        return vol_target(self.horizon)

    @property
    def min_history(self) -> int:
        """Bars a forecast needs (the 30-bar means, plus the first bar without a return)."""
        return MONTH + 1

    def fit(self, train: pd.DataFrame) -> HARModel:
        """OLS of log(y_vol²) on the log terms over rows where all are known; then the QLIKE scale."""
        if self.target not in train.columns:
            raise ModelError(f"training frame lacks the target {self.target}")
        x = design(train, self.terms)
        yv = train[self.target].to_numpy(dtype=np.float64) ** 2
        ok = np.isfinite(x).all(axis=1) & np.isfinite(yv)
        if ok.sum() < 10 * x.shape[1]:
            raise ModelError(f"HAR {self.target}: only {int(ok.sum())} complete training rows; need "
                             f"{10 * x.shape[1]}")
        y = np.log(np.maximum(yv[ok], VAR_FLOOR))
        coef, *_ = np.linalg.lstsq(x[ok], y, rcond=None)
        if self.fit_method == "qlike":
            coef = _qlike_newton(x[ok], np.maximum(yv[ok], VAR_FLOOR), coef)
        fit = np.exp(x[ok] @ coef)
        self.coef = coef
        self.scale = float(np.mean(np.maximum(yv[ok], VAR_FLOOR) / fit))
        self.n_train = int(ok.sum())
        return self

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        """Annualized vol forecast per row (NaN where a term is unknown)."""
        if self.coef is None:
            raise ModelError("HAR model is not fitted")
        x = design(rows, self.terms)
        with np.errstate(invalid="ignore"):
            return np.sqrt(self.scale * np.exp(x @ self.coef))

    def to_dict(self) -> dict[str, Any]:
        if self.coef is None:
            raise ModelError("cannot save an unfitted HAR model")
        return {"horizon": self.horizon, "terms": list(self.terms), "fit": self.fit_method, "coef": self.coef.tolist(),
                "scale": self.scale, "n_train": self.n_train}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HARModel:
        m = cls(int(d["horizon"]), tuple(d["terms"]), str(d.get("fit", "ols")))
        m.coef = np.asarray(d["coef"], dtype=np.float64)
        if m.coef.shape != (len(m.terms) + 1,):
            raise ModelError(f"HAR spec has {m.coef.size} coefficients for {len(m.terms)} terms")
        m.scale, m.n_train = float(d["scale"]), int(d.get("n_train", 0))
        return m

    def save(self, path: str | Path) -> None:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        (p / SPEC).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> HARModel:
        p = Path(path) / SPEC
        if not p.exists():
            raise ModelError(f"{p.parent} is not a saved HAR model (no {SPEC})")
        return cls.from_dict(json.loads(p.read_text()))


def _qlike_newton(x: np.ndarray, rv: np.ndarray, b0: np.ndarray, *, max_iter: int = 50,
                  tol: float = 1e-10) -> np.ndarray:
    """argmin_b mean(rv·exp(-x b) + x b) by damped Newton (convex; Hessian = mean x xᵀ rv e^{-xb})."""
    b = b0.copy()

    def loss(v: np.ndarray) -> float:
        z = x @ v
        return float(np.mean(rv * np.exp(-z) + z))

    cur = loss(b)
    for _ in range(max_iter):
        w = rv * np.exp(-(x @ b))
        g = x.T @ (1.0 - w) / len(rv)
        hess = (x * w[:, None]).T @ x / len(rv)
        step = np.linalg.solve(hess + 1e-12 * np.eye(len(b)), g)
        t = 1.0
        while t > 1e-6:
            nb = b - t * step
            new = loss(nb)
            if new <= cur:
                break
            t /= 2
        else:
            break
        done = cur - new < tol
        b, cur = nb, new
        if done:
            break
    return b


def trainable(frame: pd.DataFrame, horizon: int, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Rows whose h-day target window has closed by ``cutoff`` (bar close + h days <= cutoff)."""
    import pandas as pd

    end = pd.to_datetime(frame["ts"], utc=True) + pd.Timedelta(days=1 + int(horizon))
    return frame[(end <= cutoff).to_numpy()]
