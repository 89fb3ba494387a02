"""The top factors behind one prediction: feature values and how much each moved it.

Method (tree models and the tree members of an ensemble): SHAP ``TreeExplainer`` on each tree
member's own design matrix (``TabularModel.design_matrix``: the row's scaled features, their lags and
rolling mean / std where the member has them, the asset one-hot).
SHAP values are exact and additive in the member's output space: probability for a random forest,
the per-class margin for XGBoost / LightGBM, which we bring to probability points with the softmax's
first-order expansion ``dp_c = p_c (dz_c - sum_k p_k dz_k)``. A member's contributions are weighted by
its ensemble weight, so for an ensemble they add up (to first order) to the part of the predicted
class's probability the tree members account for; the LSTM member is not attributed and member
temperature scaling is ignored (it rescales, it does not reorder). Derived columns are summed back
onto their base feature (``rsi_14``, ``rsi_14_lag3``, ``rsi_14_mean7`` ... all count as ``rsi_14``), and
the one-hot columns onto ``asset``.

Fallback (a model without tree members, e.g. a lone LSTM): occlusion. A feature's contribution is
``p_c(row) - p_c(row with that feature unknown)``, the feature set to NaN over the row and its history,
which every model imputes with its training mean.

Each factor is ``{"feature", "value", "contribution"}``: ``value`` is the raw feature value at the bar
(the asset symbol for ``asset``; null when missing), ``contribution`` is in probability points of the
predicted class (positive = pushed towards it). Sorted by |contribution|, largest first.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.domain import PROBA_COLUMNS
from entasis.models.base import default_features
from entasis.models.ensemble import EnsembleModel
from entasis.models.trees import TabularModel

if TYPE_CHECKING:
    import pandas as pd

    from entasis.models.base import Model

ASSET_FACTOR = "asset"
DEFAULT_TOP_K = 8
_DIGITS = 8
_SHAP_KINDS = frozenset({"rf", "xgb", "lgbm"})


def tree_members(model: Model) -> list[tuple[str, TabularModel, float]]:
    """(name, tree model, weight in the final probability) for every tree model inside ``model``."""
    if isinstance(model, TabularModel) and model.kind in _SHAP_KINDS:
        return [(model.kind, model, 1.0)]
    if isinstance(model, EnsembleModel):
        return [(name, m, float(model.weights.get(name, 0.0))) for name, m in model.models.items()
                if isinstance(m, TabularModel) and m.kind in _SHAP_KINDS and model.weights.get(name, 0.0) > 0]
    return []


class Explainer:
    """Top factors for single rows of one model; SHAP explainers are built once and reused."""

    def __init__(self, model: Model, *, top_k: int = DEFAULT_TOP_K, method: str = "auto") -> None:
        """``method``: ``auto`` (SHAP when the model has tree members, else occlusion), ``shap`` or
        ``occlusion``."""
        if top_k <= 0:
            raise ValueError(f"top_k must be positive; got {top_k}")
        if method not in ("auto", "shap", "occlusion"):
            raise ValueError(f"method must be 'auto', 'shap' or 'occlusion'; got {method!r}")
        self.model = model
        self.top_k = top_k
        self.members = tree_members(model) if method != "occlusion" else []
        if method == "shap" and not self.members:
            raise ValueError(f"a {model.kind} model has no tree member SHAP can explain; use method='occlusion'")
        self._shap: dict[str, Any] = {}

    @property
    def method(self) -> str:
        return "shap" if self.members else "occlusion"

    def factors(self, row: pd.DataFrame, history: pd.DataFrame | None, predicted_class: int) -> list[dict[str, Any]]:
        """The top factors for the single row ``row`` (its context in ``history``)."""
        if len(row) != 1:
            raise ValueError(f"factors explain one row at a time; got {len(row)} rows")
        if predicted_class not in (0, 1, 2):
            raise ValueError(f"predicted_class must be 0, 1 or 2; got {predicted_class!r}")
        if self.members:
            contrib = self._shap_contributions(row, history, predicted_class)
        else:
            contrib = self._occlusion(row, history, predicted_class)
        return self._top(row, contrib)

    # -- SHAP over tree members ----------------------------------------------------------------------
    def _explainer(self, name: str, m: TabularModel) -> Any:
        if name not in self._shap:
            import shap

            mm: Any = m
            est: Any
            if m.kind == "xgb":
                best = getattr(mm, "best_iteration", None)
                est = mm.booster[: int(best) + 1] if best is not None else mm.booster
            elif m.kind == "lgbm":
                est = mm.booster  # SHAP dumps the best iteration, as predict uses
            elif m.kind == "rf":
                est = mm.est
            else:
                raise ValueError(f"no SHAP explainer for tree model kind {m.kind!r}")
            self._shap[name] = shap.TreeExplainer(est)
        return self._shap[name]

    def _shap_contributions(self, row: pd.DataFrame, history: pd.DataFrame | None,
                            c: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, m, weight in self.members:
            pos, x = m.design_matrix(row, history=history)  # the exact matrix predict_proba feeds the estimator
            if not len(pos):
                continue  # this member cannot see the row (not enough history / warmup): nothing to attribute
            phi = np.asarray(self._explainer(name, m).shap_values(x), dtype=np.float64)
            if phi.ndim != 3 or phi.shape[2] != 3:
                raise ValueError(f"unexpected SHAP output shape {phi.shape} for member {name}")
            phi = phi[0]  # (n_columns, 3)
            if m.kind == "rf":
                dp = phi[:, c]
            else:
                p = m.predict_matrix(x)[0]
                p = p / p.sum()
                dp = p[c] * (phi[:, c] - phi @ p)
            for col, v in zip(self._base_names(m), dp, strict=True):
                out[col] = out.get(col, 0.0) + weight * float(v)
        return out

    @staticmethod
    def _base_names(m: TabularModel) -> list[str]:
        """The base feature (or ``asset``) of every column of the member's design matrix."""
        feats = list(m.features or [])
        names = m.column_names()
        n_tab = len(names) - len(m.assets)
        base = [feats[i % len(feats)] for i in range(n_tab)]
        return base + [ASSET_FACTOR] * len(m.assets)

    # -- occlusion fallback --------------------------------------------------------------------------
    def _occlusion(self, row: pd.DataFrame, history: pd.DataFrame | None, c: int) -> dict[str, float]:
        feats = list(self.model.features or default_features(row))
        col = PROBA_COLUMNS[c]
        p0 = float(self.model.predict_proba(row, history=history)[col].iloc[0])
        out: dict[str, float] = {}
        for f in feats:
            r = row.assign(**{f: np.nan})
            h = history.assign(**{f: np.nan}) if history is not None and f in history.columns else history
            p = float(self.model.predict_proba(r, history=h)[col].iloc[0])
            if math.isfinite(p):
                out[f] = p0 - p
        return out

    # -- presentation --------------------------------------------------------------------------------
    def _top(self, row: pd.DataFrame, contrib: dict[str, float]) -> list[dict[str, Any]]:
        items = [(f, v) for f, v in contrib.items() if math.isfinite(v) and round(v, _DIGITS) != 0.0]
        items.sort(key=lambda kv: (-abs(kv[1]), kv[0]))
        out: list[dict[str, Any]] = []
        for f, v in items[: self.top_k]:
            out.append({"feature": f, "value": _value(row, f), "contribution": round(v, _DIGITS)})
        return out


def _value(row: pd.DataFrame, feature: str) -> float | str | None:
    if feature == ASSET_FACTOR:
        return str(row["symbol"].iloc[0])
    if feature not in row.columns:
        return None
    v = row[feature].iloc[0]
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None
