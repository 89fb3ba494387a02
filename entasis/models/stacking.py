"""The stacker: non-negative log-linear pooling of member probabilities and the prior.

``p_k ∝ exp(b_k + Σ_j w_j · log p_jk)`` over inputs ``j`` = the members' out-of-fold probabilities and
the probabilistic baselines (the training class frequencies per asset and pooled, and the per-asset
Laplace-smoothed trailing-365-day frequencies of the labels known at ``t``: :class:`LabelHistory`). The
weights are non-negative; ``w_prior = 1`` with every other weight and ``b`` at 0 *is* the prior, and the fit
starts there, so when the members carry no skill the ensemble stays at the base rates instead of becoming
something worse. A weight below 1 on a member also acts as its temperature (calibration), so no separate
temperature is fit on a single validation slice. Fit only on out-of-fold rows (members' forecasts for
rows they were not trained on, purged), by L-BFGS-B on the mean log-loss with an L2 penalty of strength
``l2 + l2_rows / n`` (strong on few rows, slight on many).

The penalty (``prior_pull``): ``"sum"`` (default) pulls the members' weights to 0 and the *sum* of the
prior weights to 1 but leaves their split free, so with no-skill members the pool converges to the best
mix of the priors (e.g. the trailing frequencies when the base rates drift); ``"point"`` (the first
version) pulled every weight towards the asset frequencies. The class offsets ``b`` (``offsets``):
``"shrunk"`` (default) penalises them with the fixed strength ``l2_offsets`` (1.0: about a tenth of the
unpenalised shift), ``"none"`` fixes them at 0, ``"free"`` (the first version) gives them the same
row-shrinking L2 as the weights — offsets learned on earlier out-of-fold rows (2021's bull market) shifted
the base rates the wrong way in 2022. ``"shrunk"`` was chosen over ``"none"`` on the 2020–2021 window
only (lower log-loss at 7, 14 and 30 days; docs/model_quality.md).

:class:`OOF` carries those rows: symbols, labels, times and each member's raw probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EPS = 1e-9
PRIOR_ASSET = "prior:asset_freq"
PRIOR_POOLED = "prior:pooled_freq"
PRIOR_TRAILING = "prior:trailing_freq"
PRIORS = (PRIOR_ASSET, PRIOR_POOLED)
TRAILING_DAYS = 365
OFFSETS = ("none", "shrunk", "free")
PRIOR_PULLS = ("sum", "point")


@dataclass
class OOF:
    """Out-of-fold member forecasts: ``probas[member]`` is (n, 3); rows with NaN in any member are dropped
    by the stacker."""

    symbols: np.ndarray
    y: np.ndarray
    probas: dict[str, np.ndarray] = field(default_factory=dict)
    ts: np.ndarray | None = None   # the rows' times (needed for the trailing-frequency input)

    def __len__(self) -> int:
        return int(len(self.y))

    def concat(self, other: OOF) -> OOF:
        keys = [k for k in self.probas if k in other.probas]
        ts = None if self.ts is None or other.ts is None else np.concatenate([self.ts, other.ts])
        return OOF(np.concatenate([self.symbols, other.symbols]), np.concatenate([self.y, other.y]),
                   {k: np.vstack([self.probas[k], other.probas[k]]) for k in keys}, ts)


def _ns(ts: object) -> np.ndarray:
    """Times as int64 nanoseconds since the epoch (UTC; naive times are taken as UTC)."""
    import pandas as pd

    t = pd.to_datetime(pd.Series(np.asarray(ts)), utc=True)
    return np.asarray(t.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]").astype(np.int64))


@dataclass
class LabelHistory:
    """The labels a model was fit on, per symbol, giving the Laplace-smoothed trailing frequencies known at t.

    A label at ``s`` is known at ``t`` when ``s + h <= t`` (as the ``trailing_freq`` baseline); the window
    keeps ``t − h − window < s``. Its end is also capped at the symbol's last stored label, so after the
    training cut-off (where later labels are not stored) the window is the latest ``window`` days the model
    has: known before ``t``, never after it.
    """

    horizon: int
    ts: dict[str, np.ndarray]      # sorted int64 ns per symbol
    cum: dict[str, np.ndarray]     # (n + 1, 3) cumulative one-hot counts
    window: int = TRAILING_DAYS

    @classmethod
    def from_labels(cls, symbols: np.ndarray, ts: object, y: np.ndarray, horizon: int,
                    window: int = TRAILING_DAYS) -> LabelHistory:
        if horizon <= 0 or window <= 0:
            raise ValueError(f"horizon and window must be positive; got {horizon}, {window}")
        syms = np.asarray(symbols).astype(str)
        t = _ns(ts)
        yf = np.asarray(y, dtype=np.float64)
        if not (syms.size == t.size == yf.size):
            raise ValueError(f"symbols, ts and y differ in length: {syms.size}, {t.size}, {yf.size}")
        ok = ~np.isnan(yf)
        out_t, out_c = {}, {}
        for s in np.unique(syms[ok]):
            pos = np.flatnonzero(ok & (syms == s))
            order = pos[np.argsort(t[pos], kind="stable")]
            c = np.zeros((order.size + 1, 3))
            c[1:] = np.cumsum(np.eye(3)[yf[order].astype(np.int64)], axis=0)
            out_t[str(s)], out_c[str(s)] = t[order], c
        return cls(int(horizon), out_t, out_c, int(window))

    def frequencies(self, symbols: np.ndarray, ts: object, fallback: np.ndarray) -> np.ndarray:
        """(n, 3) ``(count + 1) / (n + 3)`` of each row's symbol's labels known at its t; ``fallback`` for
        a symbol without stored labels."""
        syms = np.asarray(symbols).astype(str)
        out = np.tile(np.asarray(fallback, dtype=np.float64), (syms.size, 1))
        if not syms.size:
            return out
        t = _ns(ts)
        day = 86_400_000_000_000
        h, w = self.horizon * day, self.window * day
        for s in np.unique(syms):
            if s not in self.ts:
                continue
            pos = np.flatnonzero(syms == s)
            lt, c = self.ts[s], self.cum[s]
            end = np.minimum(t[pos] - h, lt[-1])
            cnt = c[np.searchsorted(lt, end, side="right")] - c[np.searchsorted(lt, end - w, side="right")]
            out[pos] = (cnt + 1.0) / (cnt.sum(axis=1, keepdims=True) + 3.0)
        return out

    def state(self) -> dict[str, Any]:
        return {"horizon": self.horizon, "window": self.window,
                "labels": {s: [self.ts[s].tolist(), np.diff(self.cum[s], axis=0).argmax(axis=1).tolist()]
                           for s in self.ts}}

    @classmethod
    def from_state(cls, st: Mapping[str, Any]) -> LabelHistory:
        syms, ts, y = [], [], []
        for s, (t, lab) in st["labels"].items():
            syms += [s] * len(t)
            ts += list(t)
            y += list(lab)
        return cls.from_labels(np.asarray(syms, dtype=object), np.asarray(ts, dtype="datetime64[ns]"),
                               np.asarray(y, dtype=np.float64), int(st["horizon"]), int(st["window"]))


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


def prior_inputs(symbols: np.ndarray, freq: Mapping[str, np.ndarray], pooled: np.ndarray, *,
                 labels: LabelHistory | None = None, ts: object | None = None) -> dict[str, np.ndarray]:
    """The probabilistic baselines as stacker inputs; an unseen asset gets the pooled frequencies. With
    ``labels`` and the rows' ``ts``, also the trailing frequencies known at each row's t."""
    syms = np.asarray(symbols).astype(str)
    n = syms.size
    asset = np.vstack([freq.get(s, pooled) for s in syms]) if n else np.zeros((0, 3))
    out = {PRIOR_ASSET: asset, PRIOR_POOLED: np.tile(pooled, (n, 1))}
    if labels is not None and ts is not None:
        out[PRIOR_TRAILING] = labels.frequencies(syms, ts, pooled)
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


class LogLinearPool:
    """Non-negative log-linear pooling fit on out-of-fold rows (see the module docstring)."""

    def __init__(self, names: Sequence[str], *, l2: float = 1e-3, l2_rows: float = 100.0,
                 max_weight: float = 3.0, offsets: str = "shrunk", l2_offsets: float = 1.0,
                 prior_pull: str = "sum") -> None:
        if not names:
            raise ValueError("the stacker needs at least one input")
        if offsets not in OFFSETS:
            raise ValueError(f"offsets must be one of {OFFSETS}; got {offsets!r}")
        if prior_pull not in PRIOR_PULLS:
            raise ValueError(f"prior_pull must be one of {PRIOR_PULLS}; got {prior_pull!r}")
        self.names = list(names)
        self.l2 = float(l2)
        self.l2_rows = float(l2_rows)
        self.max_weight = float(max_weight)
        self.offsets = offsets
        self.l2_offsets = float(l2_offsets)
        self.prior_pull = prior_pull
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
        lam_b = lam if self.offsets == "free" else self.l2_offsets
        is_prior = np.array([nm.startswith("prior:") for nm in self.names])
        if not is_prior.any():
            is_prior = w0 > 0

        def penalty(w: np.ndarray) -> tuple[float, np.ndarray]:
            if self.prior_pull == "point":
                return float(np.sum((w - w0) ** 2)), 2 * (w - w0)
            excess = float(w[is_prior].sum()) - 1.0       # the priors' split is left to the data
            return (float(np.sum(w[~is_prior] ** 2)) + excess ** 2,
                    np.where(is_prior, 2 * excess, 2 * w))

        def obj(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:k], theta[k:]
            z = np.tensordot(w, logs, axes=1) + b
            zm = z - z.max(axis=1, keepdims=True)
            lse = np.log(np.exp(zm).sum(axis=1))
            loss = float(np.mean(lse - (zm * onehot).sum(axis=1)))
            g = (np.exp(zm - lse[:, None]) - onehot) / n   # dL/dz
            gw = np.tensordot(logs, g, axes=([1, 2], [0, 1]))
            gb = g.sum(axis=0)
            pw, gpw = penalty(w)
            loss += lam * pw + lam_b * float(np.sum(b ** 2))
            return loss, np.concatenate([gw + lam * gpw, gb + 2 * lam_b * b])

        theta0 = np.concatenate([w0, np.zeros(3)])
        blim = 0.0 if self.offsets == "none" else 5.0
        bounds = [(0.0, self.max_weight)] * k + [(-blim, blim)] * 3
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
                "l2_rows": self.l2_rows, "max_weight": self.max_weight, "n_fit": self.n_fit,
                "offsets": self.offsets, "l2_offsets": self.l2_offsets, "prior_pull": self.prior_pull}

    @classmethod
    def from_state(cls, st: Mapping[str, Any]) -> LogLinearPool:
        # a state without these keys is the first version's: free offsets, pulled to the asset prior
        p = cls(st["names"], l2=float(st.get("l2", 1e-3)), l2_rows=float(st.get("l2_rows", 100.0)),
                max_weight=float(st.get("max_weight", 3.0)), offsets=str(st.get("offsets", "free")),
                l2_offsets=float(st.get("l2_offsets", 1.0)), prior_pull=str(st.get("prior_pull", "point")))
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
