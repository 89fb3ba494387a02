"""Training-side scoring adapters over the one evaluation module (:mod:`entasis.backtest.evaluation`).

Training scores its validation and test splits with exactly the walk-forward's metrics, baselines and
``beats_baseline`` rule (log-loss decides); this module only adapts them to the ``split_frame`` frames
training works with. :class:`Baselines` fits :class:`~entasis.backtest.baselines.FoldBaselines` on the
training split (rule signals computed once on the whole frame, backward-only) and predicts every
baseline's probabilities for other rows.

On real data a competent model beats the per-coin majority class by about one accuracy point; much
more than that is a leak until proven otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.backtest.baselines import FoldBaselines, lagged_values, rule_signals
from entasis.backtest.evaluation import beats_baseline
from entasis.backtest.evaluation import classification_metrics as cm
from entasis.models.base import label_array

if TYPE_CHECKING:
    import pandas as pd


def classification_metrics(p: np.ndarray, y: np.ndarray, pred: np.ndarray | None = None) -> dict[str, Any]:
    """The evaluation module's metrics (accuracy, balanced accuracy, log-loss, Brier, ECE, per class);
    ``pred``: the classes a rule chose (a baseline's), else the argmax of ``p``."""
    y = np.asarray(y).astype(int)
    if not len(y):
        return {"n": 0}
    return cm(p, y, pred)


def scalar_metrics(m: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries (for mlflow.log_metrics)."""
    return {k: float(v) for k, v in m.items() if isinstance(v, int | float | np.floating | np.integer)
            and np.isfinite(float(v))}


def lagged_label(frame: pd.DataFrame, rows: pd.DataFrame, column: str, horizon_days: int) -> np.ndarray:
    """``column`` of the same symbol ``horizon_days`` before each row's ts (NaN when absent).

    Matching by timestamp rather than by bar count keeps this right on any timeframe and over gaps
    (:func:`entasis.backtest.baselines.lagged_values`, the one lookup).
    """
    return lagged_values(frame, column, horizon_days, rows=rows)


@dataclass
class Baselines:
    """The evaluation module's baselines fit on a training split (see :mod:`entasis.backtest.baselines`)."""

    target: str
    horizon: int
    fold: Any = None
    rules: Any = None
    keys: dict[tuple[str, Any], int] = field(default_factory=dict)

    @classmethod
    def fit(cls, train: pd.DataFrame, target: str, horizon: int, *, frame: pd.DataFrame | None = None,
            prices: pd.DataFrame | None = None) -> Baselines:
        b = cls(target=target, horizon=horizon)
        b._index(frame if frame is not None else train, prices)
        lab = train.dropna(subset=[target])
        pos = b._positions(lab)
        b.fold = FoldBaselines(lab["symbol"].astype(str).to_numpy(), label_array(lab[target]).astype(int),
                               b.rules.iloc[pos].reset_index(drop=True))
        return b

    def _index(self, frame: pd.DataFrame, prices: pd.DataFrame | None = None) -> None:
        """Rule signals (backward-only) for every row of ``frame``, and where each (symbol, ts) sits."""
        import pandas as pd

        src = frame.copy()
        src["ts"] = pd.to_datetime(src["ts"], utc=True)
        src = src.drop_duplicates(["symbol", "ts"], keep="last").reset_index(drop=True)
        if prices is None and "close" in src.columns:
            prices = src[["symbol", "ts", "close"]]
        self.rules = rule_signals(src, target=self.target, horizon=self.horizon, prices=prices)
        self.keys = {(str(s), t): i for i, (s, t) in enumerate(zip(src["symbol"], src["ts"], strict=True))}

    def _positions(self, rows: pd.DataFrame) -> np.ndarray:
        import pandas as pd

        ts = pd.to_datetime(rows["ts"], utc=True)
        pos = [self.keys.get((str(s), t), -1) for s, t in zip(rows["symbol"], ts, strict=True)]
        arr = np.asarray(pos, dtype=np.int64)
        if (arr < 0).any():
            raise ValueError("baselines: rows not in the frame they were fit with; pass frame=")
        return arr

    def predict(self, rows: pd.DataFrame, *, frame: pd.DataFrame | None = None) -> dict[str, np.ndarray]:
        """{baseline: (n, 3) probabilities} for ``rows`` (``frame``: context holding them, when they are not
        in the frame the baselines were fit with)."""
        out = self.predict_full(rows, frame=frame)
        return {k: v.proba for k, v in out.items()}

    def predict_full(self, rows: pd.DataFrame, *, frame: pd.DataFrame | None = None) -> dict[str, Any]:
        """{baseline: BaselineOutput(proba, pred)}: the class a rule predicts, beside its probabilities."""
        import pandas as pd

        ts = pd.to_datetime(rows["ts"], utc=True)
        if frame is not None and any((str(s), t) not in self.keys for s, t in zip(rows["symbol"], ts, strict=True)):
            self._index(frame)
        pos = self._positions(rows)
        return dict(self.fold.predict(rows["symbol"].astype(str).to_numpy(),
                                      self.rules.iloc[pos].reset_index(drop=True)))


def compare(model_metrics: Mapping[str, Any], baseline_metrics: Mapping[str, Mapping[str, Any]]
            ) -> dict[str, Any]:
    """The honesty summary stored as model-version tags: :func:`entasis.backtest.evaluation.beats_baseline`
    (log-loss decides; accuracy and balanced accuracy beside it)."""
    return beats_baseline(model_metrics, baseline_metrics)


def regression_metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² (NaN pairs dropped); R² is against the mean of ``y`` on the same rows."""
    ok = ~(np.isnan(pred) | np.isnan(y))
    if not ok.any():
        return {"n": 0.0}
    e = pred[ok] - y[ok]
    ss_tot = float(np.sum((y[ok] - y[ok].mean()) ** 2))
    return {"n": float(ok.sum()), "rmse": float(np.sqrt(np.mean(e ** 2))), "mae": float(np.mean(np.abs(e))),
            "r2": float(1 - np.sum(e ** 2) / ss_tot) if ss_tot > 0 else float("nan")}
