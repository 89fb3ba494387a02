"""The ensemble: members stacked with the prior on out-of-fold rows, or a fixed weighted average.

``weights="stacked"`` (the default, what the product publishes): the members' purged out-of-fold
probabilities and the probabilistic baselines (training class frequencies per asset and pooled, and the
trailing-365-day frequencies of the labels known at t, from the labels the ensemble was fit on) feed a
non-negative log-linear pool (:mod:`entasis.models.stacking`) fit on out-of-fold rows only, so when the
members carry no skill the ensemble *is* the base rate. The out-of-fold rows come from the caller
(``fit(..., oof=...)``: the walk-forward passes its earlier folds' forecasts whose labels are known) or
from ``oof_folds`` purged inner folds of the training window (each member refit on the rows whose label
windows end before the fold starts, predicting the fold). Members are then refit on the whole window.

``weights="default"`` is the specification's fixed preset (LSTM 0.4, RF / XGBoost / LightGBM 0.2
each, renormalised over the members present) over temperature-scaled members; a stacked ensemble also
exposes this preset (:meth:`EnsembleModel.preset_proba`, temperatures fit on the out-of-fold rows, not
on one slice) so reports show both. ``"learned"`` fits linear weights on the validation slice (kept for
comparison); a mapping gives explicit weights.

The class decision (``decision``) is explicit: ``"argmax"`` of the calibrated probabilities (best
expected accuracy, the default) or ``"base_rate"``: argmax of p / training base rate (favours classes
above their prior: balanced accuracy). Reports evaluate both.

The ensemble is itself a :class:`~entasis.models.base.Model`: same input contract, and a row is
eligible only when every member is (``min_history`` is the members' maximum).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.backtest.folds import split_valid
from entasis.domain import CLASS_NAMES, PROBA_COLUMNS, confidence, horizon_of
from entasis.models.base import (
    Model,
    ModelError,
    construct,
    default_features,
    label_array,
    proba_frame,
)
from entasis.models.lstm import LSTMModel
from entasis.models.stacking import (
    OOF,
    PRIOR_TRAILING,
    PRIORS,
    LabelHistory,
    LogLinearPool,
    class_frequencies,
    decide,
    prior_inputs,
)
from entasis.models.trees import (
    LightGBMModel,
    RandomForestModel,
    TabularModel,
    XGBoostModel,
    row_view,
    union_features,
)
from entasis.models.weights import apply_temperature, fit_temperature, fit_weights

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS: dict[str, float] = {"lstm": 0.4, "rf": 0.2, "xgb": 0.2, "lgbm": 0.2}
MEMBER_DIR = "member_{}"


def resolve_weights(members: Sequence[str], weights: str | Mapping[str, float]) -> dict[str, float]:
    """Fixed weights for ``members`` renormalised to sum to 1 (``learned`` starts from equal weights)."""
    if isinstance(weights, str):
        if weights == "stacked":
            weights = "default" if all(m in DEFAULT_WEIGHTS for m in members) else "learned"
        if weights == "learned":
            return {m: 1.0 / len(members) for m in members}
        if weights != "default":
            raise ModelError(f"weights must be 'stacked', 'default', 'learned' or a mapping; got {weights!r}")
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


# The models an ensemble can hold (the factory, above this module, builds the ensemble itself).
MEMBER_CLASSES: dict[str, type[Model]] = {
    cls.kind: cls for cls in (LSTMModel, RandomForestModel, XGBoostModel, LightGBMModel)}


def member_class(name: str) -> type[Model]:
    """The class of an ensemble member by name (a clear error naming the known ones otherwise)."""
    try:
        return MEMBER_CLASSES[name]
    except KeyError:
        raise ModelError(f"unknown ensemble member {name!r}; expected one of {', '.join(sorted(MEMBER_CLASSES))}"
                         ) from None


class EnsembleModel(Model):
    kind = "ensemble"

    def __init__(self, *, members: Sequence[str] = ("lstm", "rf", "xgb", "lgbm"),
                 weights: str | Mapping[str, float] = "stacked", calibrate: bool = True,
                 member_params: Mapping[str, Mapping[str, Any]] | None = None,
                 features: Sequence[str] | None = None, pooled: bool = True, seed: int = 42,
                 decision: str = "argmax", oof_folds: int = 1, min_oof_rows: int = 300,
                 stack_offsets: str = "shrunk") -> None:
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
        if decision not in ("argmax", "base_rate"):
            raise ModelError(f"decision must be 'argmax' or 'base_rate'; got {decision!r}")
        if oof_folds < 1:
            raise ModelError(f"oof_folds must be >= 1; got {oof_folds}")
        self.decision = decision
        self.oof_folds = int(oof_folds)
        self.min_oof_rows = int(min_oof_rows)
        if stack_offsets not in ("none", "shrunk", "free"):
            raise ModelError(f"stack_offsets must be 'none', 'shrunk' or 'free'; got {stack_offsets!r}")
        self.stack_offsets = stack_offsets
        self.labels: LabelHistory | None = None
        self.weights: dict[str, float] = resolve_weights(self.members, self.weights_config)
        self.temperatures: dict[str, float] = {m: 1.0 for m in self.members}
        self.models: dict[str, Model] = {}
        self.stacker: LogLinearPool | None = None
        self.freq: dict[str, np.ndarray] = {}
        self.base_rate = np.full(3, 1.0 / 3.0)
        self.oof_source = ""

    @property
    def stacked(self) -> bool:
        return self.weights_config == "stacked"

    @property
    def min_history(self) -> int:
        if self.models:
            return max(m.min_history for m in self.models.values())
        return max(self._build(m).min_history for m in self.members)

    def get_params(self) -> dict[str, Any]:
        return {"members": list(self.members), "weights": self.weights_config, "calibrate": self.calibrate,
                "member_params": self.member_params, "features": self.features, "pooled": self.pooled,
                "seed": self.seed, "decision": self.decision, "oof_folds": self.oof_folds,
                "min_oof_rows": self.min_oof_rows, "stack_offsets": self.stack_offsets}

    def build_member(self, name: str) -> Model:
        """A fresh member exactly as :meth:`fit` builds it (for fitting members elsewhere; see ``prefit``)."""
        return self._build(name)

    def inner_oof(self, train: pd.DataFrame, target: str, *, valid: pd.DataFrame | None = None,
                  history: pd.DataFrame | None = None) -> OOF:
        """The purged inner out-of-fold rows :meth:`fit` falls back to (computable ahead, elsewhere)."""
        self.features = list(self.features or default_features(train))
        return self._inner_oof(train, target, valid=valid, history=history)

    def _build(self, name: str) -> Model:
        params = {"features": self.features, "pooled": self.pooled, "seed": self.seed,
                  **self.member_params.get(name, {})}
        return construct(member_class(name), params, what=f"member {name!r}")

    def fit(self, train: pd.DataFrame, target: str, *, valid: pd.DataFrame | None = None,
            history: pd.DataFrame | None = None,
            on_member: Callable[[str, str], None] | None = None, oof: OOF | None = None,
            prefit: Mapping[str, Model] | None = None) -> EnsembleModel:
        """Fit every member on ``train`` (early stopping on ``valid``), then combine them.

        ``prefit``: members already fit on exactly these frames (``build_member(name).fit(train, target,
        valid=valid, history=history)``, e.g. in another process); they are used as they are.

        Stacked: the pool is fit on ``oof`` when it has ``min_oof_rows`` usable rows, else on purged inner
        folds of ``train`` + ``valid``. Fixed / learned: temperatures and weights on ``valid``.
        """
        stacked = self.stacked
        needs_valid = not stacked and (self.calibrate or self.weights_config == "learned")
        if needs_valid and (valid is None or valid.empty):
            raise ModelError("the ensemble needs a validation frame for calibration / learned weights")
        self.features = list(self.features or default_features(train))
        if stacked:
            usable = 0 if oof is None else int((~np.isnan(np.asarray(oof.y, dtype=np.float64))).sum())
            if oof is None or usable < self.min_oof_rows or any(m not in oof.probas for m in self.members):
                oof = self._inner_oof(train, target, valid=valid, history=history)
                self.oof_source = f"inner:{self.oof_folds}"
            else:
                self.oof_source = "given"
        self.models = {}
        for name in self.members:
            if prefit is not None and name in prefit:
                self.models[name] = prefit[name]
                continue
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
        lab = [d for d in (train, valid) if d is not None and len(d)]
        import pandas as pd

        cols = ["symbol", target, *(["ts"] if all("ts" in d.columns for d in lab) else [])]
        labelled = pd.concat([d[cols] for d in lab]).dropna(subset=[target])
        ylab = label_array(labelled[target]).astype(int)
        self.freq, self.base_rate = class_frequencies(labelled["symbol"].to_numpy(), ylab)
        self.labels = None
        if stacked and "ts" in labelled.columns:
            self.labels = LabelHistory.from_labels(labelled["symbol"].to_numpy(), labelled["ts"].to_numpy(), ylab,
                                                   _horizon(target))
        if stacked:
            assert oof is not None
            y = np.asarray(oof.y, dtype=np.float64)
            ok = ~np.isnan(y) & np.all([~np.isnan(oof.probas[m]).any(axis=1) for m in self.members], axis=0)
            inputs = {m: oof.probas[m][ok] for m in self.members}
            labels = self.labels if oof.ts is not None else None   # trailing input only with the rows' times
            inputs.update(prior_inputs(oof.symbols[ok], self.freq, self.base_rate, labels=labels,
                                       ts=None if oof.ts is None else oof.ts[ok]))
            names = [*self.members, *PRIORS, *([PRIOR_TRAILING] if PRIOR_TRAILING in inputs else [])]
            self.stacker = LogLinearPool(names, offsets=self.stack_offsets).fit(inputs, y[ok])
            yv = y[ok].astype(int)
            if self.calibrate and ok.sum() >= 10:   # for the fixed preset shown beside the stack
                self.temperatures = {m: fit_temperature(oof.probas[m][ok], yv) for m in self.members}
            self.history_["stacker.n_oof"] = [float(ok.sum())]
        elif valid is not None and not valid.empty and needs_valid:
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

    def _inner_oof(self, train: pd.DataFrame, target: str, *, valid: pd.DataFrame | None,
                   history: pd.DataFrame | None) -> OOF:
        """Members' purged out-of-fold forecasts over the last part of the training window.

        The labelled rows' distinct days are cut at ``oof_folds`` points spread over the second half;
        for fold i the members are refit on rows whose label windows end before the cut (``ts + h <
        cut``; early stopping on their last 15% of days, purged) and predict the rows up to the next cut.
        """
        import pandas as pd

        h = _horizon(target)
        parts = [d for d in (train, valid) if d is not None and len(d)]
        rows = pd.concat(parts).dropna(subset=[target])
        keep = ["symbol", "ts", *(["warmup"] if "warmup" in rows.columns else []), *(self.features or [])]
        ctx = [history[[c for c in keep if c in history.columns]]] if history is not None and len(history) else []
        ts = pd.to_datetime(rows["ts"], utc=True).dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
        uniq = np.unique(ts)
        if uniq.size < 20:
            raise ModelError(f"only {uniq.size} labelled days: too few for out-of-fold stacking")
        qs = [0.5 + 0.5 * i / self.oof_folds for i in range(self.oof_folds)]
        cuts = [uniq[int(q * uniq.size)] for q in qs] + [uniq[-1] + np.timedelta64(1, "D")]
        hd = np.timedelta64(h, "D")
        syms, ys, tss, probas = [], [], [], {m: [] for m in self.members}  # type: ignore[var-annotated]
        for c0, c1 in zip(cuts[:-1], cuts[1:], strict=True):
            fit_pos = np.flatnonzero(ts + hd < c0)
            pred_pos = np.flatnonzero((ts >= c0) & (ts < c1))
            if fit_pos.size < 50 or pred_pos.size == 0:
                continue
            inner, val = split_valid(ts[fit_pos], h, 0.15)
            tr_df = rows.iloc[fit_pos[inner]]
            va_df = rows.iloc[fit_pos[val]] if val.any() else None
            used = np.zeros(len(rows), dtype=bool)
            used[fit_pos[inner]] = True
            if va_df is not None:
                used[fit_pos[val]] = True
            hist_fit = pd.concat([*ctx, rows.loc[~used, keep]], ignore_index=True)
            hist_pred = pd.concat([*ctx, rows.loc[ts < c0, keep]], ignore_index=True)
            pr_df = rows.iloc[pred_pos][keep]
            for name in self.members:
                m = self._build(name).fit(tr_df, target, valid=va_df, history=hist_fit)
                probas[name].append(m.predict_proba(pr_df, history=hist_pred).to_numpy(dtype=np.float64))
            syms.append(rows["symbol"].astype(str).to_numpy()[pred_pos])
            ys.append(label_array(rows[target].iloc[pred_pos]))
            tss.append(ts[pred_pos])
        if not ys:
            raise ModelError("no inner fold had enough training rows for out-of-fold stacking")
        return OOF(np.concatenate(syms), np.concatenate(ys), {m: np.vstack(v) for m, v in probas.items()},
                   np.concatenate(tss))

    def preset_proba(self, rows: pd.DataFrame, *, history: pd.DataFrame | None = None,
                     parts: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """The fixed-weight preset (specification weights over temperature-scaled members), (n, 3)."""
        self._require_fitted()
        raw = parts if parts is not None else self.member_proba(rows, history=history, calibrated=False)
        w = resolve_weights(self.members, "default" if self.stacked else self.weights_config) if self.stacked \
            else self.weights
        mix = np.zeros((len(rows), len(PROBA_COLUMNS)))
        for name, p in raw.items():
            mix = mix + w[name] * apply_temperature(p, self.temperatures[name])
        ok = ~np.isnan(mix).any(axis=1)
        mix[ok] = mix[ok] / mix[ok].sum(axis=1, keepdims=True)
        return mix

    def combine(self, rows: pd.DataFrame, raw: Mapping[str, np.ndarray]) -> np.ndarray:
        """The ensemble's (n, 3) probabilities from members' raw probabilities for ``rows``."""
        if self.stacked:
            assert self.stacker is not None
            inputs = dict(raw)
            trailing = PRIOR_TRAILING in self.stacker.names
            if trailing and (self.labels is None or "ts" not in rows.columns):
                raise ModelError("the stacker takes the trailing frequencies: rows need a 'ts' column")
            inputs.update(prior_inputs(rows["symbol"].to_numpy(), self.freq, self.base_rate,
                                       labels=self.labels if trailing else None,
                                       ts=rows["ts"].to_numpy() if trailing else None))
            return self.stacker.predict(inputs)
        mix = np.zeros((len(rows), len(PROBA_COLUMNS)))
        for name, p in raw.items():
            mix = mix + self.weights[name] * apply_temperature(p, self.temperatures[name])
        ok = ~np.isnan(mix).any(axis=1)
        mix[ok] = mix[ok] / mix[ok].sum(axis=1, keepdims=True)
        return mix

    def classes(self, p: np.ndarray, rule: str | None = None) -> np.ndarray:
        """Predicted classes under the decision rule (``self.decision`` by default); -1 for NaN rows."""
        return decide(p, rule or self.decision, self.base_rate)

    def stacked_weights(self) -> dict[str, float]:
        return self.stacker.weights() if self.stacker is not None else {}

    def member_proba(self, rows: pd.DataFrame, *, history: pd.DataFrame | None = None,
                     calibrated: bool = True, members: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Each member's (n, 3) probabilities for ``rows`` (NaN rows where that member is ineligible).

        The tree members on the last-bar view read the rows once between them (one :class:`RowView`, one
        matrix where their features, scaler and assets agree) instead of each building its own context;
        the forecasts are those of each member's own ``predict_proba``. ``members``: a subset, in order.
        """
        names = list(self.models) if members is None else list(members)
        unknown = [n for n in names if n not in self.models]
        if unknown:
            raise ModelError(f"no fitted member(s) {unknown}; this ensemble holds {list(self.models)}")
        shared = [m for n in names if isinstance(m := self.models[n], TabularModel) and m.reads_rows_only]
        view = row_view(rows, union_features(shared)) if shared else None
        out = {}
        for name in names:
            m = self.models[name]
            if view is not None and isinstance(m, TabularModel) and m.reads_rows_only:
                p = m.view_proba(view)
            else:
                p = m.predict_proba(rows, history=history).to_numpy(dtype=np.float64)
            out[name] = apply_temperature(p, self.temperatures[name]) if calibrated else p
        return out

    def predict_proba(self, rows: pd.DataFrame, *, history: pd.DataFrame | None = None) -> pd.DataFrame:
        self._require_fitted()
        return self._proba_frame(rows, self.combine(rows, self.member_proba(rows, history=history, calibrated=False)))

    @staticmethod
    def _proba_frame(rows: pd.DataFrame, mix: np.ndarray) -> pd.DataFrame:
        ok = ~np.isnan(mix).any(axis=1)
        return proba_frame(rows.index, np.flatnonzero(ok), mix[ok])

    def predict(self, rows: pd.DataFrame, *, history: pd.DataFrame | None = None,
                members: bool = False) -> pd.DataFrame:
        """Probabilities plus predicted_class (0/1/2), class name, confidence and confidence_level.

        The members predict once: the same raw probabilities feed the ensemble and, with ``members``, the
        per-member (temperature-scaled) columns."""
        self._require_fitted()
        raw = self.member_proba(rows, history=history, calibrated=False)
        proba = self._proba_frame(rows, self.combine(rows, raw))
        extra = {m: apply_temperature(p, self.temperatures[m]) for m, p in raw.items()} if members else None
        return describe_proba(proba, rows, extra=extra, classes=self.classes(proba.to_numpy(dtype=np.float64)))

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "weights_fitted": self.weights, "temperatures": self.temperatures,
                "stacker": self.stacker.state() if self.stacker is not None else None,
                "freq": {k: v.tolist() for k, v in self.freq.items()}, "base_rate": self.base_rate.tolist(),
                "oof_source": self.oof_source,
                "labels": self.labels.state() if self.labels is not None else None}

    def _save_state(self, path: Path) -> None:
        for name, m in self.models.items():
            m.save(path / MEMBER_DIR.format(name))

    def _load_state(self, path: Path, state: dict[str, Any]) -> None:
        self.models = {name: member_class(name).load(path / MEMBER_DIR.format(name)) for name in self.members}
        self.weights = {k: float(v) for k, v in state["weights_fitted"].items()}
        self.temperatures = {k: float(v) for k, v in state["temperatures"].items()}
        st = state.get("stacker")
        self.stacker = LogLinearPool.from_state(st) if st else None
        self.freq = {k: np.asarray(v, dtype=np.float64) for k, v in state.get("freq", {}).items()}
        self.base_rate = np.asarray(state.get("base_rate", [1 / 3] * 3), dtype=np.float64)
        self.oof_source = str(state.get("oof_source", ""))
        lab = state.get("labels")
        self.labels = LabelHistory.from_state(lab) if lab else None


def _horizon(target: str) -> int:
    try:
        return horizon_of(target)
    except ValueError:
        raise ModelError(f"cannot read the horizon from target {target!r} (expected y_cls_<h>d)") from None


def describe_proba(proba: pd.DataFrame, rows: pd.DataFrame, *,
                   extra: Mapping[str, np.ndarray] | None = None, classes: np.ndarray | None = None
                   ) -> pd.DataFrame:
    """symbol, ts, probabilities, predicted class and confidence for each row (NaN where ineligible).

    ``classes`` gives the decided class per row (default: argmax of the probabilities)."""
    import pandas as pd

    p = proba.to_numpy(dtype=np.float64)
    conf, level = confidence(p)
    ok = ~np.isnan(p).any(axis=1)
    cls = np.where(ok, np.nan_to_num(p).argmax(axis=1), -1) if classes is None else np.asarray(classes)
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
