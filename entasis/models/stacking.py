"""The stacker: non-negative log-linear pooling of member probabilities and the prior.

``p_k ∝ exp(b_k + Σ_j w_j · log p_jk)`` over inputs ``j`` = the members' out-of-fold probabilities and
the probabilistic baselines (the training class frequencies per asset, and pooled). The weights are
non-negative; ``w_prior = 1`` with every other weight and ``b`` at 0 *is* the prior, and the fit starts
there, so when the members carry no skill the ensemble stays at the base rates instead of becoming
something worse. A weight below 1 on a member also acts as its temperature (calibration), so no separate
temperature is fit on a single validation slice. Fit only on out-of-fold rows (members' forecasts for
rows they were not trained on, purged), by L-BFGS-B on the mean log-loss with an L2 pull towards the prior of
strength ``l2 + l2_rows / n`` (strong on few rows, slight on many).

:class:`OOF` carries those rows: symbols, labels and each member's raw probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EPS = 1e-9
PRIOR_ASSET = "prior:asset_freq"
PRIOR_POOLED = "prior:pooled_freq"
PRIORS = (PRIOR_ASSET, PRIOR_POOLED)


@dataclass
class OOF:
    """Out-of-fold member forecasts: ``probas[member]`` is (n, 3); rows with NaN in any member are dropped
    by the stacker."""

    symbols: np.ndarray
    y: np.ndarray
    probas: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.y))

    def concat(self, other: OOF) -> OOF:
        keys = [k for k in self.probas if k in other.probas]
        return OOF(np.concatenate([self.symbols, other.symbols]), np.concatenate([self.y, other.y]),
                   {k: np.vstack([self.probas[k], other.probas[k]]) for k in keys})


def class_frequencies(symbols: np.ndarray, y: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Laplace-smoothed ``(count + 1) / (n + 3)`` class frequencies per symbol and pooled."""
    yi = np.asarray(y, dtype=np.int64)
    pooled = (np.bincount(yi, minlength=3) + 1.0) / (yi.size + 3.0)
    syms = np.asarray(symbols).astype(str)
    per = {}
    for s in np.unique(syms):
        c = np.bincount(yi[syms == s], minlength=3) + 1.0
        per[str(s)] = c / c.sum()
    return per, pooled


def prior_inputs(symbols: np.ndarray, freq: Mapping[str, np.ndarray], pooled: np.ndarray) -> dict[str, np.ndarray]:
    """The probabilistic baselines as stacker inputs; an unseen asset gets the pooled frequencies."""
    syms = np.asarray(symbols).astype(str)
    n = syms.size
    asset = np.vstack([freq.get(s, pooled) for s in syms]) if n else np.zeros((0, 3))
    return {PRIOR_ASSET: asset, PRIOR_POOLED: np.tile(pooled, (n, 1))}


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


class LogLinearPool:
    """Non-negative log-linear pooling fit on out-of-fold rows (see the module docstring)."""

    def __init__(self, names: Sequence[str], *, l2: float = 1e-3, l2_rows: float = 100.0,
                 max_weight: float = 3.0) -> None:
        if not names:
            raise ValueError("the stacker needs at least one input")
        self.names = list(names)
        self.l2 = float(l2)
        self.l2_rows = float(l2_rows)
        self.max_weight = float(max_weight)
        self.w = np.array([1.0 if n == PRIOR_ASSET else 0.0 for n in self.names])
        if not self.w.any():
            self.w[0] = 1.0
        self.b = np.zeros(3)
        self.n_fit = 0

    def _logs(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        missing = [n for n in self.names if n not in inputs]
        if missing:
            raise ValueError(f"stacker inputs lack {missing}")
        return np.stack([np.log(np.clip(np.asarray(inputs[n], dtype=np.float64), EPS, 1.0)) for n in self.names])

    def fit(self, inputs: Mapping[str, np.ndarray], y: np.ndarray) -> LogLinearPool:
        from scipy.optimize import minimize

        logs = self._logs(inputs)                      # (k, n, 3)
        ok = ~np.isnan(logs).any(axis=(0, 2)) & ~np.isnan(np.asarray(y, dtype=np.float64))
        logs, yi = logs[:, ok], np.asarray(y)[ok].astype(np.int64)
        n = yi.size
        self.n_fit = int(n)
        if n < 10:
            return self
        onehot = np.eye(3)[yi]
        k = len(self.names)
        w0 = self.w.copy()
        # The pull towards the prior shrinks with the rows: few out-of-fold rows (whose overlapping
        # h-day labels are far from independent) cannot move the pool far from the base rates.
        lam = self.l2 + self.l2_rows / n

        def obj(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:k], theta[k:]
            z = np.tensordot(w, logs, axes=1) + b
            zm = z - z.max(axis=1, keepdims=True)
            lse = np.log(np.exp(zm).sum(axis=1))
            loss = float(np.mean(lse - (zm * onehot).sum(axis=1)))
            g = (np.exp(zm - lse[:, None]) - onehot) / n   # dL/dz
            gw = np.tensordot(logs, g, axes=([1, 2], [0, 1]))
            gb = g.sum(axis=0)
            loss += lam * (float(np.sum((w - w0) ** 2)) + float(np.sum(b ** 2)))
            return loss, np.concatenate([gw + 2 * lam * (w - w0), gb + 2 * lam * b])

        theta0 = np.concatenate([w0, np.zeros(3)])
        bounds = [(0.0, self.max_weight)] * k + [(-5.0, 5.0)] * 3
        res = minimize(obj, theta0, jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": 500, "ftol": 1e-12, "gtol": 1e-9})
        theta = np.asarray(res.x, dtype=np.float64)
        if np.isfinite(theta).all() and obj(theta)[0] <= obj(theta0)[0]:
            self.w, self.b = theta[:k], theta[k:]
        return self

    def predict(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """(n, 3) pooled probabilities; NaN rows where any input is NaN."""
        logs = self._logs(inputs)
        bad = np.isnan(logs).any(axis=(0, 2))
        z = np.tensordot(self.w, np.nan_to_num(logs), axes=1) + self.b
        p = _softmax(z)
        p[bad] = np.nan
        return p

    def weights(self) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.names, self.w, strict=True)}

    def state(self) -> dict[str, Any]:
        return {"names": self.names, "w": self.w.tolist(), "b": self.b.tolist(), "l2": self.l2,
                "l2_rows": self.l2_rows, "max_weight": self.max_weight, "n_fit": self.n_fit}

    @classmethod
    def from_state(cls, st: Mapping[str, Any]) -> LogLinearPool:
        p = cls(st["names"], l2=float(st.get("l2", 1e-3)), l2_rows=float(st.get("l2_rows", 100.0)),
                max_weight=float(st.get("max_weight", 3.0)))
        p.w = np.asarray(st["w"], dtype=np.float64)
        p.b = np.asarray(st["b"], dtype=np.float64)
        p.n_fit = int(st.get("n_fit", 0))
        return p


def decide(p: np.ndarray, rule: str = "argmax", base_rate: np.ndarray | None = None) -> np.ndarray:
    """The class decision: ``argmax`` of the calibrated probabilities (maximises expected accuracy) or
    ``base_rate``: argmax of p / base rate (favours classes above their prior: balanced accuracy).
    NaN rows give -1."""
    p = np.asarray(p, dtype=np.float64)
    bad = np.isnan(p).any(axis=1)
    if rule == "argmax":
        q = p
    elif rule == "base_rate":
        if base_rate is None:
            raise ValueError("decision 'base_rate' needs the base rates")
        q = p / np.clip(np.asarray(base_rate, dtype=np.float64), EPS, None)
    else:
        raise ValueError(f"decision must be 'argmax' or 'base_rate'; got {rule!r}")
    out = np.nan_to_num(q, nan=-1.0).argmax(axis=1)
    out[bad] = -1
    return np.asarray(out)
