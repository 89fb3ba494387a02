"""Out-of-sample classification metrics and the paired block bootstrap of model − baseline.

Definitions (3 classes: 0 bearish, 1 neutral, 2 bullish; ``p`` is (n, 3), ``y`` the true class):

* accuracy; balanced accuracy = mean recall over the classes present in ``y``;
* per-class precision / recall / F1 (0 when undefined) and the confusion matrix (rows = actual,
  columns = predicted);
* log-loss = mean −ln p[true] (p clipped at 1e-12); Brier = mean Σ_k (p_k − 1[y = k])² (0 … 2);
* calibration of the top-class probability over 10 equal-width bins: the reliability curve (mean
  confidence, accuracy and count per bin) and ECE = Σ_bins |accuracy − confidence| · share;
* accuracy by confidence level: high (max p ≥ 70%), medium (≥ 50%), low;
* accuracy over time: per calendar month of the forecast timestamp.

The bootstrap resamples *days* in moving blocks (all assets of a day together) so that the overlap of
h-day labels and cross-asset correlation are kept; the default block length is ``max(h, ⌈D^⅓⌉)``
days for ``D`` test days. It is paired: model and baseline are scored on the same resampled rows.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.backtest.folds import BacktestError
from entasis.domain import CLASS_NAMES, HIGH_CONFIDENCE, MEDIUM_CONFIDENCE, confidence_levels

if TYPE_CHECKING:
    import pandas as pd

EPS = 1e-12
HIGH, MEDIUM = HIGH_CONFIDENCE, MEDIUM_CONFIDENCE  # probability scale (entasis.domain)
N_BINS = 10


def _check(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y)
    if p.ndim != 2 or p.shape[1] != 3:
        raise BacktestError(f"probabilities must be (n, 3); got shape {p.shape}")
    if len(p) != len(y):
        raise BacktestError(f"{len(p)} probability rows but {len(y)} labels")
    if np.isnan(p).any() or np.isnan(y.astype(np.float64)).any():
        raise BacktestError("metrics got NaN probabilities or labels; drop unscored rows first")
    yi = y.astype(np.int64)
    if ((yi < 0) | (yi > 2)).any():
        raise BacktestError(f"labels must be 0/1/2; got {sorted(set(yi.tolist()))}")
    return p, yi


def confusion(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """3×3 counts, rows = actual class, columns = predicted class."""
    return np.bincount(np.asarray(y, dtype=np.int64) * 3 + np.asarray(pred, dtype=np.int64),
                       minlength=9).reshape(3, 3)


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p, y = _check(p, y)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0)))) if len(y) else float("nan")


def row_log_loss(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    p, y = _check(p, y)
    return np.asarray(-np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0)))


def brier(p: np.ndarray, y: np.ndarray) -> float:
    p, y = _check(p, y)
    return float(np.mean(np.sum((p - np.eye(3)[y]) ** 2, axis=1))) if len(y) else float("nan")


def reliability(p: np.ndarray, y: np.ndarray, pred: np.ndarray | None = None,
                n_bins: int = N_BINS) -> pd.DataFrame:
    """Per confidence bin: bin edges, rows, mean top-class probability and accuracy (NaN when empty)."""
    import pandas as pd

    p, y = _check(p, y)
    conf = p.max(axis=1)
    hit = ((p.argmax(axis=1) if pred is None else np.asarray(pred)) == y).astype(np.float64)
    b = np.clip((conf * n_bins).astype(np.int64), 0, n_bins - 1)
    cnt = np.bincount(b, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mconf = np.bincount(b, weights=conf, minlength=n_bins) / cnt
        macc = np.bincount(b, weights=hit, minlength=n_bins) / cnt
    edges = np.linspace(0, 1, n_bins + 1)
    return pd.DataFrame({"bin_lo": edges[:-1], "bin_hi": edges[1:], "count": cnt.astype(np.int64),
                         "confidence": mconf, "accuracy": macc})


def ece(p: np.ndarray, y: np.ndarray, pred: np.ndarray | None = None, n_bins: int = N_BINS) -> float:
    rel = reliability(p, y, pred, n_bins)
    ok = rel["count"] > 0
    if not ok.any():
        return float("nan")
    w = rel.loc[ok, "count"] / rel.loc[ok, "count"].sum()
    return float((w * (rel.loc[ok, "accuracy"] - rel.loc[ok, "confidence"]).abs()).sum())


def confidence_level(p: np.ndarray) -> np.ndarray:
    """The level of each row's top-class probability (:func:`entasis.domain.confidence_levels`)."""
    return confidence_levels(np.asarray(p, dtype=np.float64).max(axis=1))


def classification_metrics(p: np.ndarray, y: np.ndarray, pred: np.ndarray | None = None) -> dict[str, Any]:
    """Every scalar metric plus ``confusion`` (3×3 list) and ``reliability`` (list of bin dicts).

    ``pred`` defaults to argmax(p); baselines pass the class their rule predicts.
    """
    p, y = _check(p, y)
    pr = p.argmax(axis=1) if pred is None else np.asarray(pred, dtype=np.int64)
    n = len(y)
    out: dict[str, Any] = {"n": n}
    if n == 0:
        return out
    cm = confusion(y, pr)
    hit = pr == y
    out["accuracy"] = float(hit.mean())
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    diag = np.diag(cm).astype(np.float64)
    recall = np.divide(diag, support, out=np.zeros(3), where=support > 0)
    precision = np.divide(diag, predicted, out=np.zeros(3), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(3), where=denom > 0)
    out["balanced_accuracy"] = float(recall[support > 0].mean())
    for i, name in enumerate(CLASS_NAMES):
        out[f"precision_{name}"] = float(precision[i])
        out[f"recall_{name}"] = float(recall[i])
        out[f"f1_{name}"] = float(f1[i])
        out[f"support_{name}"] = int(support[i])
    out["f1_macro"] = float(f1.mean())
    out["log_loss"] = log_loss(p, y)
    out["brier"] = brier(p, y)
    out["ece"] = ece(p, y, pr)
    level = confidence_level(p)
    for lv in ("high", "medium", "low"):
        m = level == lv
        out[f"n_{lv}"] = int(m.sum())
        out[f"accuracy_{lv}"] = float(hit[m].mean()) if m.any() else float("nan")
    out["confusion"] = cm.tolist()
    out["reliability"] = reliability(p, y, pr).to_dict("records")
    return out


def scalar(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric entries only (for tables and MLflow)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)}


def accuracy_over_time(ts: pd.Series, hit: np.ndarray, freq: str = "MS") -> pd.Series:
    """Accuracy per calendar period (month by default) of the forecast timestamp."""
    import pandas as pd

    s = pd.Series(np.asarray(hit, dtype=np.float64), index=pd.DatetimeIndex(pd.to_datetime(ts, utc=True)))
    return s.resample(freq).mean().dropna()


# -- paired block bootstrap -------------------------------------------------------------------------
def default_block(horizon: int, n_days: int) -> int:
    return int(max(horizon, math.ceil(n_days ** (1.0 / 3.0)), 1))


def block_bootstrap_diff(day: np.ndarray, diff: np.ndarray, *, block: int, n_boot: int = 2000,
                         level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Mean of ``diff`` (per row) with a moving-block bootstrap interval over days.

    ``day`` gives each row's day number (any integers; rows of the same day move together). Returns
    ``{"estimate", "lo", "hi", "p_le_0"}``; ``p_le_0`` is the share of resamples with a mean ≤ 0.
    """
    d = np.asarray(diff, dtype=np.float64)
    if d.size == 0:
        return {"estimate": float("nan"), "lo": float("nan"), "hi": float("nan"), "p_le_0": float("nan")}
    if not 0 < level < 1:
        raise BacktestError(f"bootstrap level must be in (0, 1); got {level}")
    days, inv = np.unique(np.asarray(day), return_inverse=True)
    sums = np.bincount(inv, weights=d)
    cnts = np.bincount(inv).astype(np.float64)
    n_days = days.size
    b = int(min(max(block, 1), n_days))
    cs = np.concatenate([[0.0], np.cumsum(sums)])
    cc = np.concatenate([[0.0], np.cumsum(cnts)])
    n_blocks = int(math.ceil(n_days / b))
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_days - b + 1, size=(n_boot, n_blocks))
    tot = (cs[starts + b] - cs[starts]).sum(axis=1)
    cnt = (cc[starts + b] - cc[starts]).sum(axis=1)
    stats = tot / cnt
    a = (1 - level) / 2
    return {"estimate": float(d.mean()), "lo": float(np.quantile(stats, a)),
            "hi": float(np.quantile(stats, 1 - a)), "p_le_0": float(np.mean(stats <= 0))}
