"""The ensemble: a weighted average of temperature-calibrated member probabilities.

Default weights follow the specification (LSTM 0.4, RF / XGBoost / LightGBM 0.2 each); members left
out by config have their weight renormalised away. ``weights="learned"`` fits non-negative weights
summing to 1 on validation log-loss instead; a mapping gives explicit weights. The ensemble is itself
a :class:`~entasis.models.base.Model`: same input contract, and a row is eligible only when every
member is (``min_history`` is the members' maximum).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.models.base import (
    CLASS_NAMES,
    PROBA_COLUMNS,
    Model,
    ModelError,
    build_model,
    default_features,
    label_array,
    load_model,
    proba_frame,
    register_model,
)
from entasis.models.calibration import apply_temperature, confidence, fit_temperature, fit_weights

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS: dict[str, float] = {"lstm": 0.4, "rf": 0.2, "xgb": 0.2, "lgbm": 0.2}
MEMBER_DIR = "member_{}"


def resolve_weights(members: Sequence[str], weights: str | Mapping[str, float]) -> dict[str, float]:
    """Fixed weights for ``members`` renormalised to sum to 1 (``learned`` starts from equal weights)."""
    if isinstance(weights, str):
        if weights == "learned":
            return {m: 1.0 / len(members) for m in members}
        if weights != "default":
            raise ModelError(f"weights must be 'default', 'learned' or a mapping; got {weights!r}")
        unknown = [m for m in members if m not in DEFAULT_WEIGHTS]
        if unknown:
            raise ModelError(f"no default weight for member(s) {unknown}; pass weights explicitly")
        raw = {m: DEFAULT_WEIGHTS[m] for m in members}
    else:
        missing = [m for m in members if m not in weights]
        if missing:
            raise ModelError(f"weights mapping lacks member(s) {missing}")
        raw = {m: float(weights[m]) for m in members}
        if any(v < 0 for v in raw.values()):
            raise ModelError(f"weights must be non-negative; got {raw}")
    total = sum(raw.values())
    if total <= 0:
        raise ModelError(f"weights sum to {total}; at least one must be positive")
    return {m: v / total for m, v in raw.items()}


@register_model
class EnsembleModel(Model):
    kind = "ensemble"

    def __init__(self, *, members: Sequence[str] = ("lstm", "rf", "xgb", "lgbm"),
                 weights: str | Mapping[str, float] = "default", calibrate: bool = True,
                 member_params: Mapping[str, Mapping[str, Any]] | None = None,
                 features: Sequence[str] | None = None, pooled: bool = True, seed: int = 42) -> None:
        super().__init__(features=features, pooled=pooled, seed=seed)
        if not members:
            raise ModelError("an ensemble needs at least one member")
        if len(set(members)) != len(members):
            raise ModelError(f"duplicate ensemble members: {list(members)}")
        self.members = list(members)
        self.weights_config: str | dict[str, float] = weights if isinstance(weights, str) else dict(weights)
        self.calibrate = calibrate
        self.member_params = {k: dict(v) for k, v in (member_params or {}).items()}
        unknown = set(self.member_params) - set(self.members)
        if unknown:
            raise ModelError(f"member_params for model(s) not in members: {sorted(unknown)}")
        self.weights: dict[str, float] = resolve_weights(self.members, self.weights_config)
        self.temperatures: dict[str, float] = {m: 1.0 for m in self.members}
        self.models: dict[str, Model] = {}

    @property
    def min_history(self) -> int:
        if self.models:
            return max(m.min_history for m in self.models.values())
        return max(self._build(m).min_history for m in self.members)

    def get_params(self) -> dict[str, Any]:
        return {"members": list(self.members), "weights": self.weights_config, "calibrate": self.calibrate,
                "member_params": self.member_params, "features": self.features, "pooled": self.pooled,
                "seed": self.seed}

    def _build(self, name: str) -> Model:
        params = {"features": self.features, "pooled": self.pooled, "seed": self.seed,
                  **self.member_params.get(name, {})}
        return build_model(name, **params)

    def fit(self, train: pd.DataFrame, target: str, *, valid: pd.DataFrame | None = None,
            history: pd.DataFrame | None = None,
            on_member: Callable[[str, str], None] | None = None) -> EnsembleModel:
        """Fit every member on ``train`` (early stopping on ``valid``), then calibrate and weight on ``valid``."""
        needs_valid = self.calibrate or self.weights_config == "learned"
        if needs_valid and (valid is None or valid.empty):
            raise ModelError("the ensemble needs a validation frame for calibration / learned weights")
        self.features = list(self.features or default_features(train))
        self.models = {}
        for name in self.members:
            if on_member:
                on_member(name, "start")
            self.models[name] = self._build(name).fit(train, target, valid=valid, history=history)
            if on_member:
                on_member(name, "done")
        self.target = target
        self.assets = sorted({a for m in self.models.values() for a in m.assets})
        self.history_ = {f"{n}.{k}": v for n, m in self.models.items() for k, v in m.history_.items()}
        self.weights = resolve_weights(self.members, self.weights_config)
        self.temperatures = {m: 1.0 for m in self.members}
        if valid is not None and not valid.empty and needs_valid:
            raw = self.member_proba(valid, history=history, calibrated=False)
            y = label_array(valid[target])
            ok = ~np.isnan(y) & np.all([~np.isnan(p).any(axis=1) for p in raw.values()], axis=0)
            if ok.sum() < 10:
                raise ModelError(f"only {int(ok.sum())} validation rows are labelled and eligible for every "
                                 f"member (need 10; min_history={self.min_history})")
            yv = y[ok].astype(int)
            if self.calibrate:
                self.temperatures = {m: fit_temperature(p[ok], yv) for m, p in raw.items()}
            if self.weights_config == "learned":
                cal = [apply_temperature(raw[m][ok], self.temperatures[m]) for m in self.members]
                w = fit_weights(cal, yv)
                self.weights = dict(zip(self.members, (float(x) for x in w), strict=True))
        self.fitted = True
        return self

    def member_proba(self, rows: pd.DataFrame, *, history: pd.DataFrame | None = None,
                     calibrated: bool = True) -> dict[str, np.ndarray]:
        """Each member's (n, 3) probabilities for ``rows`` (NaN rows where that member is ineligible)."""
        out = {}
        for name, m in self.models.items():
            p = m.predict_proba(rows, history=history).to_numpy(dtype=np.float64)
            out[name] = apply_temperature(p, self.temperatures[name]) if calibrated else p
        return out

    def predict_proba(self, rows: pd.DataFrame, *, history: pd.DataFrame | None = None) -> pd.DataFrame:
        self._require_fitted()
        parts = self.member_proba(rows, history=history)
        mix = np.zeros((len(rows), len(PROBA_COLUMNS)))
        for name, p in parts.items():
            mix = mix + self.weights[name] * p  # NaN in any member -> NaN row
        ok = ~np.isnan(mix).any(axis=1)
        mix[ok] = mix[ok] / mix[ok].sum(axis=1, keepdims=True)
        pos = np.flatnonzero(ok)
        return proba_frame(rows.index, pos, mix[ok])

    def predict(self, rows: pd.DataFrame, *, history: pd.DataFrame | None = None,
                members: bool = False) -> pd.DataFrame:
        """Probabilities plus predicted_class (0/1/2), class name, confidence and confidence_level."""
        proba = self.predict_proba(rows, history=history)
        return describe_proba(proba, rows, extra=self.member_proba(rows, history=history) if members else None)

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "weights_fitted": self.weights, "temperatures": self.temperatures}

    def _save_state(self, path: Path) -> None:
        for name, m in self.models.items():
            m.save(path / MEMBER_DIR.format(name))

    def _load_state(self, path: Path, state: dict[str, Any]) -> None:
        self.models = {name: load_model(path / MEMBER_DIR.format(name)) for name in self.members}
        self.weights = {k: float(v) for k, v in state["weights_fitted"].items()}
        self.temperatures = {k: float(v) for k, v in state["temperatures"].items()}


def describe_proba(proba: pd.DataFrame, rows: pd.DataFrame, *,
                   extra: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """symbol, ts, probabilities, predicted class and confidence for each row (NaN where ineligible)."""
    import pandas as pd

    p = proba.to_numpy(dtype=np.float64)
    conf, level = confidence(p)
    ok = ~np.isnan(p).any(axis=1)
    cls = np.where(ok, np.nan_to_num(p).argmax(axis=1), -1)
    out = pd.DataFrame(index=rows.index)
    for c in ("symbol", "ts"):
        if c in rows.columns:
            out[c] = rows[c]
    for c in PROBA_COLUMNS:
        out[c] = proba[c]
    out["predicted_class"] = pd.array(np.where(ok, cls, 0), dtype="Int64")
    out.loc[~ok, "predicted_class"] = pd.NA
    out["predicted_label"] = [CLASS_NAMES[int(c)] if o else None for c, o in zip(cls, ok, strict=True)]
    out["confidence"] = conf
    out["confidence_level"] = level
    for name, mp in (extra or {}).items():
        for j, c in enumerate(PROBA_COLUMNS):
            out[f"{name}_{c}"] = mp[:, j]
    return out
