"""Tabular direction classifiers: RandomForest, XGBoost and LightGBM on one shared row view.

Each row becomes its last-bar (scaled) features, optionally lagged copies (``lags``) and rolling mean /
std (``roll``), plus a one-hot asset id for pooled models (``datasets.tabular``; ``asset_id=False``
leaves it out, and an asset unseen in training gets all zeros either way). The default view is the
last bar only: the features already summarise windows (RSI, MACD, Bollinger, realized vol...), and
lags + rolling stats turned ~34 features into ~270 columns for a few thousand daily rows per asset,
which made the forests slow (the walk-forward profile: the random forest took ~75% of the time) and
gave them more room to fit noise. Class weights are off by default: they move probabilities away from
the base rates, which costs log-loss.
XGBoost and LightGBM run their GPU tree methods when CUDA is present (LightGBM only when its GPU build
works) and stop early on the validation set when one is given. Saved in native formats: XGBoost UBJ,
LightGBM text, scikit-learn through skops (loaded only after checking every type is trusted).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.models.base import N_CLASSES, Model, ModelError, default_features, proba_frame
from entasis.models.datasets import (
    Prepared,
    Standardizer,
    asset_onehot,
    class_weights,
    prepare_fit,
    prepare_predict,
    tabular,
    tabular_names,
)
from entasis.models.device import lightgbm_device, xgb_device

if TYPE_CHECKING:
    import pandas as pd

SCALER_FILE = "scaler.npz"


class TabularModel(Model):
    """Shared view-building for the tree models; subclasses only fit / predict matrices."""

    def __init__(self, *, features: Sequence[str] | None = None, pooled: bool = True, seed: int = 42,
                 lags: Sequence[int] = (), roll: Sequence[int] = (),
                 use_class_weights: bool = False, n_jobs: int = -1, asset_id: bool = True) -> None:
        super().__init__(features=features, pooled=pooled, seed=seed)
        if any(k < 1 for k in lags) or any(w < 2 for w in roll):
            raise ModelError(f"lags must be >= 1 and rolling windows >= 2; got {tuple(lags)}, {tuple(roll)}")
        self.lags = sorted({int(k) for k in lags})
        self.roll = sorted({int(w) for w in roll})
        self.use_class_weights = use_class_weights
        self.n_jobs = n_jobs
        self.asset_id = bool(asset_id)
        self.scaler = Standardizer()

    @property
    def min_history(self) -> int:
        return max([1] + [k + 1 for k in self.lags] + list(self.roll))

    def base_params(self) -> dict[str, Any]:
        return {"features": self.features, "pooled": self.pooled, "seed": self.seed, "lags": list(self.lags),
                "roll": list(self.roll), "use_class_weights": self.use_class_weights, "n_jobs": self.n_jobs,
                "asset_id": self.asset_id}

    def column_names(self) -> list[str]:
        assert self.features is not None
        return tabular_names(self.features, lags=self.lags, roll=self.roll) + [f"asset={a}" for a in self.assets]

    def _matrix(self, prep: Prepared, pos: np.ndarray) -> np.ndarray:
        x = tabular(prep.z, pos, lags=self.lags, roll=self.roll)
        if self.assets:
            x = np.hstack([x, asset_onehot(prep.ctx.symbols[pos], self.assets)])
        return x

    def fit(self, train: pd.DataFrame, target: str, *, valid: pd.DataFrame | None = None,
            history: pd.DataFrame | None = None) -> TabularModel:
        self.features = list(self.features or default_features(train))
        self.scaler = Standardizer()
        prep = prepare_fit(features=self.features, scaler=self.scaler, min_history=self.min_history,
                           train=train, target=target, valid=valid, history=history)
        assert prep.ctx.target is not None
        tr = prep.samples["train"]
        self.assets = sorted(set(prep.ctx.symbols[tr])) if self.pooled and self.asset_id else []
        x, y = self._matrix(prep, tr), prep.ctx.target[tr].astype(np.int64)
        w = class_weights(y)[y] if self.use_class_weights else np.ones(len(y))
        va = prep.samples.get("valid")
        xv = yv = None
        if va is not None and len(va):
            xv, yv = self._matrix(prep, va), prep.ctx.target[va].astype(np.int64)
        self.target = target
        self._fit_xy(x, y, w, xv, yv)
        self.fitted = True
        return self

    def predict_proba(self, rows: pd.DataFrame, *, history: pd.DataFrame | None = None) -> pd.DataFrame:
        self._require_fitted()
        assert self.features is not None
        if self.min_history <= 1:
            history = None   # the last-bar view looks at no earlier bar: context rows would only cost time
        prep = prepare_predict(features=self.features, scaler=self.scaler, min_history=self.min_history,
                               rows=rows, history=history)
        s = prep.samples["rows"]
        if not len(s):
            return proba_frame(rows.index, s, np.zeros((0, N_CLASSES)))
        p = self._predict_x(self._matrix(prep, s))
        p = np.clip(p, 1e-9, None)
        p = p / p.sum(axis=1, keepdims=True)
        return proba_frame(rows.index, prep.ctx.positions_of("rows", rows.index, s), p)

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for an already-built tabular matrix (used by explainers such as SHAP)."""
        self._require_fitted()
        return self._predict_x(x)

    def _save_state(self, path: Path) -> None:
        self.scaler.save(path / SCALER_FILE)
        self._save_estimator(path)

    def _load_state(self, path: Path, state: dict[str, Any]) -> None:
        self.scaler = Standardizer.load(path / SCALER_FILE)
        self._load_estimator(path, state)

    # subclasses
    def _fit_xy(self, x: np.ndarray, y: np.ndarray, w: np.ndarray, xv: np.ndarray | None,
                yv: np.ndarray | None) -> None:
        raise NotImplementedError

    def _predict_x(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _save_estimator(self, path: Path) -> None:
        raise NotImplementedError

    def _load_estimator(self, path: Path, state: dict[str, Any]) -> None:
        raise NotImplementedError


# -- RandomForest ----------------------------------------------------------------------------------
RF_FILE = "rf.skops"
# Types a saved forest may contain; anything else in the file refuses to load.
_RF_TRUSTED_PREFIXES = ("sklearn.", "numpy.")


class RandomForestModel(TabularModel):
    """scikit-learn's forest; each tree on a bootstrap draw of a quarter of the rows (``max_samples=0.25``).

    The quarter draw was chosen on the 2019-2021 window only (16 assets, 7 d, quarterly refits): log-loss
    1.0555 vs 1.0637 with full-size draws (paired Δ −0.0082 [−0.0121, −0.0052]), ECE 0.081 vs 0.088,
    accuracy 38.0 % vs 38.5 %, and 2.6× less fit time; ``max_samples=None`` gives the old forest.
    """

    kind = "rf"

    def __init__(self, *, n_estimators: int = 200, max_depth: int | None = 8, min_samples_leaf: int = 50,
                 max_features: str | float = "sqrt", max_samples: float | None = 0.25, **kw: Any) -> None:
        super().__init__(**kw)
        if max_samples is not None and not 0 < max_samples <= 1:
            raise ModelError(f"max_samples must be in (0, 1] or None; got {max_samples}")
        self.n_estimators = int(n_estimators)
        self.max_depth = max_depth
        self.min_samples_leaf = int(min_samples_leaf)
        self.max_features = max_features
        self.max_samples = max_samples
        self.est: Any = None

    def get_params(self) -> dict[str, Any]:
        return {**self.base_params(), "n_estimators": self.n_estimators, "max_depth": self.max_depth,
                "min_samples_leaf": self.min_samples_leaf, "max_features": self.max_features,
                "max_samples": self.max_samples}

    def _fit_xy(self, x: np.ndarray, y: np.ndarray, w: np.ndarray, xv: np.ndarray | None,
                yv: np.ndarray | None) -> None:
        from sklearn.ensemble import RandomForestClassifier

        self.est = RandomForestClassifier(
            n_estimators=self.n_estimators, max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features, max_samples=self.max_samples, n_jobs=self.n_jobs,
            random_state=self.seed)
        self.est.fit(x, y, sample_weight=w)

    def _predict_x(self, x: np.ndarray) -> np.ndarray:
        p = self.est.predict_proba(x)
        out = np.zeros((len(x), N_CLASSES))
        out[:, self.est.classes_.astype(int)] = p
        return out

    def _save_estimator(self, path: Path) -> None:
        import skops.io as sio

        sio.dump(self.est, path / RF_FILE)

    def _load_estimator(self, path: Path, state: dict[str, Any]) -> None:
        import skops.io as sio

        f = path / RF_FILE
        untrusted = sio.get_untrusted_types(file=f)
        bad = [t for t in untrusted if not t.startswith(_RF_TRUSTED_PREFIXES)]
        if bad:
            raise ModelError(f"{f} contains types outside scikit-learn/numpy, refusing to load: {bad}")
        self.est = sio.load(f, trusted=untrusted)
        self.est.n_jobs = self.n_jobs


# -- XGBoost ---------------------------------------------------------------------------------------
XGB_FILE = "xgb.ubj"


class XGBoostModel(TabularModel):
    kind = "xgb"

    def __init__(self, *, n_estimators: int = 400, max_depth: int = 4, learning_rate: float = 0.05,
                 subsample: float = 0.8, colsample_bytree: float = 0.8, min_child_weight: float = 5.0,
                 reg_lambda: float = 1.0, early_stopping_rounds: int = 50, device: str = "auto",
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.n_estimators = int(n_estimators)
        self.max_depth = int(max_depth)
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = int(early_stopping_rounds)
        self.device = device
        self.booster: Any = None
        self.best_iteration: int | None = None

    def get_params(self) -> dict[str, Any]:
        return {**self.base_params(), "n_estimators": self.n_estimators, "max_depth": self.max_depth,
                "learning_rate": self.learning_rate, "subsample": self.subsample,
                "colsample_bytree": self.colsample_bytree, "min_child_weight": self.min_child_weight,
                "reg_lambda": self.reg_lambda, "early_stopping_rounds": self.early_stopping_rounds,
                "device": self.device}

    def _xgb_params(self) -> dict[str, Any]:
        return {"objective": "multi:softprob", "num_class": N_CLASSES, "eval_metric": "mlogloss",
                "max_depth": self.max_depth, "eta": self.learning_rate, "subsample": self.subsample,
                "colsample_bytree": self.colsample_bytree, "min_child_weight": self.min_child_weight,
                "lambda": self.reg_lambda, "tree_method": "hist", "device": xgb_device(self.device),
                "seed": self.seed, "nthread": self.n_jobs if self.n_jobs > 0 else 0}

    def _fit_xy(self, x: np.ndarray, y: np.ndarray, w: np.ndarray, xv: np.ndarray | None,
                yv: np.ndarray | None) -> None:
        import xgboost as xgb

        dtrain = xgb.DMatrix(x, label=y, weight=w)
        evals = []
        es = None
        if xv is not None and yv is not None:
            evals = [(xgb.DMatrix(xv, label=yv), "valid")]
            es = self.early_stopping_rounds or None
        self.booster = xgb.train(self._xgb_params(), dtrain, num_boost_round=self.n_estimators,
                                 evals=evals, early_stopping_rounds=es, verbose_eval=False)
        self.best_iteration = int(self.booster.best_iteration) if es else self.n_estimators - 1
        self.history_ = {"best_iteration": [float(self.best_iteration)]}

    def _predict_x(self, x: np.ndarray) -> np.ndarray:
        import xgboost as xgb

        it = (0, (self.best_iteration or 0) + 1)
        return np.asarray(self.booster.predict(xgb.DMatrix(x), iteration_range=it), dtype=np.float64)

    def _save_estimator(self, path: Path) -> None:
        self.booster.save_model(str(path / XGB_FILE))

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "best_iteration": self.best_iteration}

    def _load_estimator(self, path: Path, state: dict[str, Any]) -> None:
        import xgboost as xgb

        self.booster = xgb.Booster()
        self.booster.load_model(str(path / XGB_FILE))
        self.booster.set_param({"device": "cpu" if self.device == "auto" else self.device})
        self.best_iteration = state.get("best_iteration")


# -- LightGBM --------------------------------------------------------------------------------------
LGBM_FILE = "lgbm.txt"


class LightGBMModel(TabularModel):
    kind = "lgbm"

    def __init__(self, *, n_estimators: int = 400, num_leaves: int = 15, learning_rate: float = 0.05,
                 feature_fraction: float = 0.8, bagging_fraction: float = 0.8, min_data_in_leaf: int = 20,
                 lambda_l2: float = 1.0, early_stopping_rounds: int = 50, device: str = "auto",
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.n_estimators = int(n_estimators)
        self.num_leaves = int(num_leaves)
        self.learning_rate = learning_rate
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.min_data_in_leaf = int(min_data_in_leaf)
        self.lambda_l2 = lambda_l2
        self.early_stopping_rounds = int(early_stopping_rounds)
        self.device = device
        self.booster: Any = None

    def get_params(self) -> dict[str, Any]:
        return {**self.base_params(), "n_estimators": self.n_estimators, "num_leaves": self.num_leaves,
                "learning_rate": self.learning_rate, "feature_fraction": self.feature_fraction,
                "bagging_fraction": self.bagging_fraction, "min_data_in_leaf": self.min_data_in_leaf,
                "lambda_l2": self.lambda_l2, "early_stopping_rounds": self.early_stopping_rounds,
                "device": self.device}

    def _lgb_params(self) -> dict[str, Any]:
        return {"objective": "multiclass", "num_class": N_CLASSES, "num_leaves": self.num_leaves,
                "learning_rate": self.learning_rate, "feature_fraction": self.feature_fraction,
                "bagging_fraction": self.bagging_fraction, "bagging_freq": 1,
                "min_data_in_leaf": self.min_data_in_leaf, "lambda_l2": self.lambda_l2, "seed": self.seed,
                "deterministic": True, "num_threads": self.n_jobs if self.n_jobs > 0 else 0,
                "device_type": lightgbm_device(self.device), "verbose": -1}

    def _fit_xy(self, x: np.ndarray, y: np.ndarray, w: np.ndarray, xv: np.ndarray | None,
                yv: np.ndarray | None) -> None:
        import lightgbm as lgb

        dtrain = lgb.Dataset(x, label=y, weight=w, free_raw_data=True)
        valid_sets: list[Any] = []
        callbacks: list[Any] = []
        if xv is not None and yv is not None and self.early_stopping_rounds:
            valid_sets = [lgb.Dataset(xv, label=yv, reference=dtrain)]
            callbacks = [lgb.early_stopping(self.early_stopping_rounds, verbose=False)]
        self.booster = lgb.train(self._lgb_params(), dtrain, num_boost_round=self.n_estimators,
                                 valid_sets=valid_sets, callbacks=callbacks)
        best = self.booster.best_iteration or self.n_estimators
        self.history_ = {"best_iteration": [float(best)]}

    def _predict_x(self, x: np.ndarray) -> np.ndarray:
        best = self.booster.best_iteration or None
        return np.asarray(self.booster.predict(x, num_iteration=best), dtype=np.float64)

    def _save_estimator(self, path: Path) -> None:
        self.booster.save_model(str(path / LGBM_FILE), num_iteration=self.booster.best_iteration or None)

    def _load_estimator(self, path: Path, state: dict[str, Any]) -> None:
        import lightgbm as lgb

        self.booster = lgb.Booster(model_file=str(path / LGBM_FILE))
