"""Naive baselines, refit on exactly the walk-forward folds the models use and always shown beside them.

Direction baselines (each learns only from its fold's purged training window):

* ``majority`` — the most frequent class of the coin's training window. Probabilities: that coin's
  training class frequencies, Laplace-smoothed ``(count + 1) / (n + 3)``; a coin absent from training
  gets the pooled frequencies.
* ``persistence`` — the class of the past h-day return, i.e. the label of the same coin h days
  earlier (its window ``[t−h, t]`` ends at t, so it is known at t; under a vol-scaled band it is
  exactly the labelling rule applied to the past).
* ``always_bullish`` — bullish, always.
* ``momentum`` — bullish when the close is above its ``momentum_days`` simple moving average (50 by
  default, the close itself included), bearish when below; never neutral.
* ``trailing_majority`` — the most frequent class among the coin's labels *known at t* (label at
  ``s`` with ``t − h − 365 days < s ≤ t − h``, i.e. whose window ended by t) over the trailing year.
* ``trailing_freq`` — a probabilistic baseline: the Laplace-smoothed class frequencies
  ``(count + 1) / (n + 3)`` of those same trailing labels (its class is their argmax).

``majority`` is also the probabilistic "training class frequencies" baseline: its probabilities are
exactly those frequencies.

Rules need probabilities for log-loss and the Brier score: each rule gets a *smoothed one-hot*,
``a`` on its class and ``(1 − a)/2`` on the others, with ``a = (hits + 1) / (n + 2)`` its hit rate on
the training window (so a rule is as confident as it has been right, never 0 or 1). Rows where a rule
is undefined (no row h days earlier, or fewer than ``momentum_days`` closes) fall back to ``majority``.

``buy_and_hold`` is the return baseline of the trading simulation (always long), not a classifier.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from entasis.backtest.folds import BacktestError

if TYPE_CHECKING:
    import pandas as pd

N_CLASSES = 3
BEARISH, NEUTRAL, BULLISH = 0, 1, 2
BASELINES: tuple[str, ...] = ("majority", "trailing_majority", "persistence", "always_bullish", "momentum",
                               "trailing_freq")
RULES: tuple[str, ...] = ("persistence", "always_bullish", "momentum", "trailing_majority")
PROBABILISTIC: tuple[str, ...] = ("majority", "trailing_freq")
TRAILING_DAYS = 365
TRAIL_COLUMNS = ("trail_0", "trail_1", "trail_2")
PREFIX = "baseline:"


def baseline_name(name: str) -> str:
    """The model name a baseline carries in prediction and metric frames."""
    return f"{PREFIX}{name}"


def is_baseline(model: str) -> bool:
    return model.startswith(PREFIX)


@dataclass
class BaselineOutput:
    proba: np.ndarray   # (n, 3)
    pred: np.ndarray    # (n,) int class the baseline predicts


def lagged_values(frame: pd.DataFrame, column: str, days: int, rows: pd.DataFrame | None = None) -> np.ndarray:
    """``column`` of the same symbol ``days`` before each row of ``rows`` (default ``frame``), looked up in
    ``frame`` (NaN when no such row).

    Matched on the timestamp, not the bar count, so gaps never shift it onto the wrong day.
    """
    import pandas as pd

    src = frame[["symbol", "ts", column]].copy()
    src["ts"] = pd.to_datetime(src["ts"], utc=True) + pd.Timedelta(days=days)
    src = src.drop_duplicates(["symbol", "ts"], keep="last").rename(columns={column: "_lag"})
    key = (frame if rows is None else rows)[["symbol", "ts"]].copy()
    key["ts"] = pd.to_datetime(key["ts"], utc=True)
    merged = key.merge(src, on=["symbol", "ts"], how="left")
    return np.asarray(pd.to_numeric(merged["_lag"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan))


def momentum_signal(frame: pd.DataFrame, prices: pd.DataFrame, days: int = 50) -> np.ndarray:
    """2 (bullish) when close > SMA(days) of closes up to and including t, 0 when below, NaN otherwise."""
    import pandas as pd

    if days < 2:
        raise BacktestError(f"momentum_days must be >= 2; got {days}")
    p = prices[["symbol", "ts", "close"]].copy()
    p["ts"] = pd.to_datetime(p["ts"], utc=True)
    p = p.sort_values(["symbol", "ts"], kind="stable")
    sma = p.groupby("symbol", sort=False)["close"].transform(lambda s: s.rolling(days, min_periods=days).mean())
    sig = np.where(p["close"] > sma, float(BULLISH), np.where(p["close"] < sma, float(BEARISH), np.nan))
    sig[sma.isna().to_numpy()] = np.nan
    p["_mom"] = sig
    key = frame[["symbol", "ts"]].copy()
    key["ts"] = pd.to_datetime(key["ts"], utc=True)
    merged = key.merge(p[["symbol", "ts", "_mom"]], on=["symbol", "ts"], how="left")
    return np.asarray(merged["_mom"].to_numpy(dtype=np.float64))


def trailing_counts(frame: pd.DataFrame, target: str, horizon: int, days: int = TRAILING_DAYS) -> np.ndarray:
    """(n, 3) counts of each class among the same symbol's labels known at each row's t.

    A label at ``s`` is known at ``t`` when its window has ended: ``s + h <= t``; the trailing window
    keeps ``t − h − days < s``. Matched on timestamps, so gaps never shift it.
    """
    import pandas as pd

    out = np.zeros((len(frame), N_CLASSES))
    ts = pd.to_datetime(frame["ts"], utc=True).dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    y = pd.to_numeric(frame[target], errors="coerce").to_numpy(dtype=np.float64)
    sym = frame["symbol"].astype(str).to_numpy()
    h = np.timedelta64(int(horizon), "D")
    w = np.timedelta64(int(days), "D")
    for s in np.unique(sym):
        pos = np.flatnonzero(sym == s)
        order = pos[np.argsort(ts[pos], kind="stable")]
        t = ts[order]
        lab = y[order]
        ok = ~np.isnan(lab)
        lt = t[ok]
        onehot = np.zeros((lt.size + 1, N_CLASSES))
        onehot[1:] = np.cumsum(np.eye(N_CLASSES)[lab[ok].astype(np.int64)], axis=0)
        hi = np.searchsorted(lt, t - h, side="right")
        lo = np.searchsorted(lt, t - h - w, side="right")
        out[order] = onehot[hi] - onehot[lo]
    return out


def rule_signals(frame: pd.DataFrame, *, target: str, horizon: int, prices: pd.DataFrame | None,
                 momentum_days: int = 50) -> pd.DataFrame:
    """Each rule's class for every row of ``frame`` (NaN where undefined), computed once, backward-only;
    plus the trailing known-label counts (``trail_0..2``) the trailing baselines read."""
    import pandas as pd

    out = pd.DataFrame(index=frame.index)
    out["persistence"] = lagged_values(frame, target, horizon)
    out["always_bullish"] = float(BULLISH)
    out["momentum"] = momentum_signal(frame, prices, momentum_days) if prices is not None else np.nan
    cnt = trailing_counts(frame, target, horizon)
    out["trailing_majority"] = np.where(cnt.sum(axis=1) > 0, cnt.argmax(axis=1).astype(np.float64), np.nan)
    for k, c in enumerate(TRAIL_COLUMNS):
        out[c] = cnt[:, k]
    return out


class FoldBaselines:
    """Baselines fit on one fold's training window."""

    def __init__(self, train_symbols: np.ndarray, train_y: np.ndarray, train_rules: pd.DataFrame) -> None:
        y = np.asarray(train_y, dtype=np.int64)
        if y.size == 0:
            raise BacktestError("baselines need at least one labelled training row")
        self.pooled = (np.bincount(y, minlength=N_CLASSES) + 1.0) / (y.size + N_CLASSES)
        self.freq: dict[str, np.ndarray] = {}
        syms = np.asarray(train_symbols).astype(str)
        for s in np.unique(syms):
            c = np.bincount(y[syms == s], minlength=N_CLASSES) + 1.0
            self.freq[str(s)] = c / c.sum()
        self.rule_conf: dict[str, float] = {}
        for rule in RULES:
            if rule not in train_rules.columns:
                continue
            sig = train_rules[rule].to_numpy(dtype=np.float64)
            ok = ~np.isnan(sig)
            hits = float((sig[ok].astype(np.int64) == y[ok]).sum())
            self.rule_conf[rule] = (hits + 1.0) / (ok.sum() + 2.0)

    def predict(self, symbols: np.ndarray, rules: pd.DataFrame) -> dict[str, BaselineOutput]:
        """Every baseline's probabilities and class for the given test rows."""
        syms = np.asarray(symbols).astype(str)
        n = syms.size
        maj = np.vstack([self.freq.get(s, self.pooled) for s in syms]) if n else np.zeros((0, N_CLASSES))
        maj_pred = maj.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
        out = {"majority": BaselineOutput(maj, maj_pred)}
        for rule in RULES:
            if rule not in self.rule_conf:
                continue
            sig = rules[rule].to_numpy(dtype=np.float64)
            ok = ~np.isnan(sig)
            a = self.rule_conf[rule]
            proba = maj.copy()
            pred = maj_pred.copy()
            if ok.any():
                cls = sig[ok].astype(np.int64)
                proba[ok] = (1.0 - a) / (N_CLASSES - 1)
                proba[np.flatnonzero(ok), cls] = a
                pred[ok] = cls
            out[rule] = BaselineOutput(proba, pred)
        if all(c in rules.columns for c in TRAIL_COLUMNS):
            cnt = rules[list(TRAIL_COLUMNS)].to_numpy(dtype=np.float64)
            freq = (cnt + 1.0) / (cnt.sum(axis=1, keepdims=True) + N_CLASSES)
            none = cnt.sum(axis=1) == 0
            freq[none] = maj[none]          # nothing known yet: the training frequencies
            out["trailing_freq"] = BaselineOutput(freq, freq.argmax(axis=1) if n else np.zeros(0, dtype=np.int64))
        return out


def check_baseline_names(names: Mapping[str, object] | list[str]) -> None:
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise BacktestError(f"unknown baseline(s) {unknown}; expected {', '.join(BASELINES)}")
