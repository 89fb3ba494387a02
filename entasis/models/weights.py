"""Ensemble weights and temperature scaling (was models/calibration.py; the confidence scale is entasis.domain's).

Temperature scaling keeps a model's ranking and only sharpens or softens its probabilities, so it can
be fit on a small validation set without overfitting: one scalar ``T`` per member minimising the
validation log-loss of ``softmax(log p / T)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EPS = 1e-12


def apply_temperature(p: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row-wise; NaN rows stay NaN."""
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p).any(axis=1)
    logp = np.log(np.clip(p[ok], EPS, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    e = np.exp(logp)
    out[ok] = e / e.sum(axis=1, keepdims=True)
    return out


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (labels 0..k-1)."""
    if len(y) == 0:
        return float("nan")
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y.astype(int)], EPS, 1.0))))


def fit_temperature(p: np.ndarray, y: np.ndarray, *, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The T > 0 minimising validation log-loss (1.0 when there is nothing to fit on)."""
    from scipy.optimize import minimize_scalar

    if len(y) < 2:
        return 1.0
    res = minimize_scalar(lambda lt: log_loss(apply_temperature(p, float(np.exp(lt))), y),
                          bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-4})
    t = float(np.exp(res.x))
    # Keep T = 1 unless scaling actually helps (guards against flat objectives).
    return t if log_loss(apply_temperature(p, t), y) < log_loss(p, y) - 1e-9 else 1.0


def fit_weights(probas: Sequence[np.ndarray], y: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 that minimise the validation log-loss of the weighted mix."""
    from scipy.optimize import minimize

    k = len(probas)
    if k == 1 or len(y) == 0:
        return np.full(k, 1.0 / k)
    stack = np.stack(probas)  # (k, n, c)

    def obj(w: np.ndarray) -> float:
        return log_loss(np.tensordot(w, stack, axes=1), y)

    res = minimize(obj, np.full(k, 1.0 / k), method="SLSQP", bounds=[(0.0, 1.0)] * k,
                   constraints=[{"type": "eq", "fun": lambda w: float(np.sum(w) - 1.0)}],
                   options={"maxiter": 200, "ftol": 1e-10})
    w = np.clip(np.asarray(res.x, dtype=np.float64), 0.0, None)
    if not np.isfinite(w).all() or w.sum() <= 0:
        return np.full(k, 1.0 / k)
    return np.asarray(w / w.sum())


def expected_calibration_error(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> float:
    """ECE of the top-class probability: Σ_bins |accuracy − confidence| · share of rows."""
    if len(y) == 0:
        return float("nan")
    conf = p.max(axis=1)
    pred = p.argmax(axis=1)
    correct = (pred == y).astype(float)
    bins = np.clip((conf * n_bins).astype(int), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += abs(correct[m].mean() - conf[m].mean()) * m.mean()
    return float(ece)
