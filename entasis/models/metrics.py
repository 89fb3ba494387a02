"""Classification metrics and the naive baselines every model figure is shown beside.

Baselines (all fit on the training window only, scored on the same out-of-sample rows as the model):

* ``majority``: the most frequent class of each coin's training window; its probabilities are that
  coin's training class frequencies (Laplace-smoothed), so it has a finite log-loss.
* ``persistence``: the class of the past h-day return, i.e. the label of the same coin h days
  earlier (known at t because that label's window ends at t). Probability ``a`` on that class and
  ``(1-a)/2`` elsewhere, ``a`` = persistence accuracy on the training window. Rows whose lagged label is
  unknown fall back to ``majority``.

On real data a competent model beats the per-coin majority class by about one accuracy point; much
more than that is a leak until proven otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.models.base import CLASS_NAMES, N_CLASSES, label_array
from entasis.models.calibration import expected_calibration_error, log_loss

if TYPE_CHECKING:
    import pandas as pd


def classification_metrics(p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """accuracy, log_loss, brier, ece, per-class precision / recall / F1, confusion matrix, n."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y = y.astype(int)
    pred = p.argmax(axis=1) if len(p) else np.zeros(0, dtype=int)
    out: dict[str, Any] = {"n": len(y)}
    if not len(y):
        return out
    onehot = np.eye(N_CLASSES)[y]
    out["accuracy"] = float((pred == y).mean())
    out["log_loss"] = log_loss(p, y)
    out["brier"] = float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
    out["ece"] = expected_calibration_error(p, y)
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=list(range(N_CLASSES)),
                                                         zero_division=0)
    for i, name in enumerate(CLASS_NAMES):
        out[f"precision_{name}"] = float(prec[i])
        out[f"recall_{name}"] = float(rec[i])
        out[f"f1_{name}"] = float(f1[i])
        out[f"support_{name}"] = int(sup[i])
    out["f1_macro"] = float(np.mean(f1))
    out["confusion"] = confusion_matrix(y, pred, labels=list(range(N_CLASSES))).tolist()
    return out


def scalar_metrics(m: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries (for mlflow.log_metrics)."""
    return {k: float(v) for k, v in m.items() if isinstance(v, int | float | np.floating | np.integer)
            and np.isfinite(float(v))}


def lagged_label(frame: pd.DataFrame, rows: pd.DataFrame, column: str, horizon_days: int) -> np.ndarray:
    """``column`` of the same symbol ``horizon_days`` before each row's ts (NaN when absent).

    Matching by timestamp rather than by bar count keeps this right on any timeframe and over gaps.
    """
    import pandas as pd

    src = frame[["symbol", "ts", column]].copy()
    src["ts"] = pd.to_datetime(src["ts"], utc=True) + pd.Timedelta(days=horizon_days)
    src = src.drop_duplicates(["symbol", "ts"], keep="last").rename(columns={column: "_lag"})
    key = rows[["symbol", "ts"]].copy()
    key["ts"] = pd.to_datetime(key["ts"], utc=True)
    merged = key.merge(src, on=["symbol", "ts"], how="left")
    return label_array(merged["_lag"])


@dataclass
class Baselines:
    """Per-coin class frequencies and the persistence hit rate, learned from the training window."""

    target: str
    horizon: int
    freq: dict[str, np.ndarray] = field(default_factory=dict)
    pooled_freq: np.ndarray = field(default_factory=lambda: np.full(N_CLASSES, 1.0 / N_CLASSES))
    persistence_acc: float = 1.0 / N_CLASSES

    @classmethod
    def fit(cls, train: pd.DataFrame, target: str, horizon: int, *, frame: pd.DataFrame | None = None
            ) -> Baselines:
        b = cls(target=target, horizon=horizon)
        lab = train.dropna(subset=[target])
        y_all = label_array(lab[target]).astype(int)
        b.pooled_freq = (np.bincount(y_all, minlength=N_CLASSES) + 1.0) / (len(y_all) + N_CLASSES)
        for sym, g in lab.groupby("symbol"):
            counts = np.bincount(label_array(g[target]).astype(int), minlength=N_CLASSES) + 1.0
            b.freq[str(sym)] = counts / counts.sum()
        lag = lagged_label(frame if frame is not None else train, lab, target, horizon)
        ok = ~np.isnan(lag)
        if ok.sum():
            b.persistence_acc = float(np.clip((lag[ok].astype(int) == y_all[ok]).mean(), 0.34, 0.98))
        return b

    def predict(self, rows: pd.DataFrame, *, frame: pd.DataFrame | None = None) -> dict[str, np.ndarray]:
        """{'majority': (n,3), 'persistence': (n,3)} probabilities for ``rows``."""
        maj = np.vstack([self.freq.get(str(s), self.pooled_freq) for s in rows["symbol"]]) if len(rows) \
            else np.zeros((0, N_CLASSES))
        # The majority baseline predicts the majority class: make argmax unambiguous and keep probabilities.
        lag = lagged_label(frame if frame is not None else rows, rows, self.target, self.horizon)
        pers = maj.copy()
        ok = ~np.isnan(lag)
        a = self.persistence_acc
        pers[ok] = (1 - a) / (N_CLASSES - 1)
        pers[np.flatnonzero(ok), lag[ok].astype(int)] = a
        return {"majority": maj, "persistence": pers}


def compare(model_metrics: Mapping[str, Any], baseline_metrics: Mapping[str, Mapping[str, Any]]
            ) -> dict[str, Any]:
    """The honesty summary stored as model-version tags.

    ``best_baseline`` is the baseline with the highest accuracy (ties: lower log-loss).
    ``beats_baseline`` is true only when the model's accuracy is higher than every baseline's AND its
    log-loss is lower than every baseline's.
    """
    if not baseline_metrics or "accuracy" not in model_metrics:
        return {"beats_baseline": False}
    best = max(baseline_metrics, key=lambda k: (baseline_metrics[k].get("accuracy", -1.0),
                                                 -baseline_metrics[k].get("log_loss", np.inf)))
    best_acc = max(v.get("accuracy", -1.0) for v in baseline_metrics.values())
    best_ll = min(v.get("log_loss", np.inf) for v in baseline_metrics.values())
    beats = bool(model_metrics["accuracy"] > best_acc and model_metrics["log_loss"] < best_ll)
    return {
        "test_accuracy": round(float(model_metrics["accuracy"]), 6),
        "test_log_loss": round(float(model_metrics["log_loss"]), 6),
        "best_baseline": best,
        "best_baseline_accuracy": round(float(baseline_metrics[best]["accuracy"]), 6),
        "best_baseline_log_loss": round(float(baseline_metrics[best]["log_loss"]), 6),
        "accuracy_edge": round(float(model_metrics["accuracy"] - best_acc), 6),
        "beats_baseline": beats,
    }


def regression_metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² (NaN pairs dropped); R² is against the mean of ``y`` on the same rows."""
    ok = ~(np.isnan(pred) | np.isnan(y))
    if not ok.any():
        return {"n": 0.0}
    e = pred[ok] - y[ok]
    ss_tot = float(np.sum((y[ok] - y[ok].mean()) ** 2))
    return {"n": float(ok.sum()), "rmse": float(np.sqrt(np.mean(e ** 2))), "mae": float(np.mean(np.abs(e))),
            "r2": float(1 - np.sum(e ** 2) / ss_tot) if ss_tot > 0 else float("nan")}
