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

Inference (issue 14's trees <= 20 us/sample): the last-bar view needs no context, so a predict call
reads the rows once into a :class:`RowView` (no sort, no concat, no per-member pandas work) that the
ensemble builds ONCE and hands to every tree member; each member turns it into its float32 matrix
(shared between members with the same features, scaler and assets) and predicts it with the fastest
call that gives the same numbers: XGBoost ``inplace_predict`` (no DMatrix), LightGBM on the numpy
array with its thread count set, and the forest summed tree by tree in tree order without joblib
(``tree_.apply`` + the leaves' class fractions: what scikit-learn's ``predict_proba`` adds up with
``n_jobs=1``). Lagged / rolling views keep the context path.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.domain import PROBA_COLUMNS
from entasis.models.base import N_CLASSES, Model, ModelError, check_frame, default_features, proba_frame
from entasis.models.datasets import (
    Prepared,
    Standardizer,
    asset_onehot,
    class_weights,
    make_context,
    prepare_fit,
    prepare_predict,
    tabular_matrix,
    tabular_min_history,
    tabular_names,
)
from entasis.models.device import lightgbm_device, xgb_device

if TYPE_CHECKING:
    import pandas as pd

SCALER_FILE = "scaler.npz"
# Rows per thread below which a predict call runs on one thread: thread start-up and joins cost more
# than they save on small batches (a day's forecasts are a few dozen rows).
ROWS_PER_THREAD = 2048


def predict_threads(n_jobs: int, n_rows: int) -> int:
    """Threads worth using for ``n_rows`` rows under the model's ``n_jobs`` (-1 / 0 = every core)."""
    import os

    cores = os.cpu_count() or 1
    limit = cores if n_jobs <= 0 else min(n_jobs, cores)
    return max(1, min(limit, n_rows // ROWS_PER_THREAD))


@dataclass
class RowView:
    """One predict call's rows as the last-bar tree view reads them: built once, shared by the members.

    Rows stay in input order (a last-bar row looks at no other row, so nothing is sorted); ``positions``
    are the eligible rows (not ``warmup``) in ``index``; ``values`` their raw ``features`` (float64).
    """

    index: pd.Index
    features: list[str]
    values: np.ndarray
    symbols: np.ndarray
    positions: np.ndarray
    _matrices: dict[tuple[Any, ...], np.ndarray] = field(default_factory=dict, repr=False)
    _codes: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.positions)

    def onehot(self, assets: Sequence[str]) -> np.ndarray:
        """The one-hot asset block of the eligible rows (one lookup per distinct symbol, not per row)."""
        import pandas as pd

        if self._codes is None:
            codes, uniq = pd.factorize(self.symbols)
            self._codes = (np.asarray(codes), np.asarray(uniq, dtype=object))
        codes, uniq = self._codes
        return asset_onehot(uniq, assets)[codes]


def row_view(rows: pd.DataFrame, features: Sequence[str]) -> RowView:
    """Read ``rows`` once for the last-bar view, with the same checks and errors as the context path."""
    import pandas as pd

    feats = list(features)
    check_frame(rows, feats, what="rows")
    dtypes = dict(zip(rows.columns, rows.dtypes, strict=True))
    plain = all(pd.api.types.is_numeric_dtype(dtypes[c]) and not pd.api.types.is_bool_dtype(dtypes[c]) for c in feats)
    if not plain or _has_duplicate_keys(rows):
        # rare: coerce odd columns / raise the duplicate-key error exactly as the context path does
        ctx = make_context({"rows": rows}, feats)
        s = ctx.samples("rows", 1)
        return RowView(rows.index, feats, ctx.values[s], ctx.symbols[s], ctx.positions_of("rows", rows.index, s))
    if "warmup" in rows.columns:
        pos = np.flatnonzero(~rows["warmup"].fillna(False).astype(bool).to_numpy())
    else:
        pos = np.arange(len(rows))
    values = rows[feats].to_numpy(dtype=np.float64, na_value=np.nan)
    symbols = rows["symbol"].astype(str).to_numpy(dtype=object)
    if len(pos) < len(rows):
        values, symbols = values[pos], symbols[pos]
    return RowView(rows.index, feats, values, symbols, pos)


def _has_duplicate_keys(rows: pd.DataFrame) -> bool:
    """Whether two rows share (symbol, ts) (the contract refuses them; ts compared as UTC instants)."""
    import pandas as pd

    sym = pd.factorize(rows["symbol"])[0]
    ts = pd.to_datetime(rows["ts"], utc=True).array.asi8
    order = np.lexsort((ts, sym))
    sym, ts = sym[order], ts[order]
    return bool(((sym[1:] == sym[:-1]) & (ts[1:] == ts[:-1])).any())


def union_features(models: Sequence[TabularModel]) -> list[str]:
    """Every feature the ``models`` read, in first-seen order (the columns of their shared view)."""
    return list(dict.fromkeys(f for m in models for f in (m.features or [])))


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
        return tabular_min_history(self.lags, self.roll)

    def base_params(self) -> dict[str, Any]:
        return {"features": self.features, "pooled": self.pooled, "seed": self.seed, "lags": list(self.lags),
                "roll": list(self.roll), "use_class_weights": self.use_class_weights, "n_jobs": self.n_jobs,
                "asset_id": self.asset_id}

    def column_names(self) -> list[str]:
        assert self.features is not None
        return tabular_names(self.features, lags=self.lags, roll=self.roll) + [f"asset={a}" for a in self.assets]

    def _matrix(self, prep: Prepared, pos: np.ndarray) -> np.ndarray:
        return tabular_matrix(prep, pos, lags=self.lags, roll=self.roll, assets=self.assets)

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

    @property
    def reads_rows_only(self) -> bool:
        """The last-bar view: a row's inputs are its own features (so a shared :class:`RowView` serves)."""
        return self.min_history <= 1

    def predict_proba(self, rows: pd.DataFrame, *, history: pd.DataFrame | None = None) -> pd.DataFrame:
        self._require_fitted()
        assert self.features is not None
        if self.reads_rows_only:   # history is context only, and this view looks at no earlier bar
            import pandas as pd

            return pd.DataFrame(self.view_proba(row_view(rows, self.features)), index=rows.index,
                                columns=list(PROBA_COLUMNS))
        pos, x = self._context_matrix(rows, history)
        p = self.predict_proba_matrix(x) if len(pos) else np.zeros((0, N_CLASSES))
        return proba_frame(rows.index, pos, p)

    def design_matrix(self, rows: pd.DataFrame, *, history: pd.DataFrame | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(positions in ``rows`` of the eligible rows, their matrix): exactly the matrix ``predict_proba``
        feeds the estimator, for callers that need it themselves (SHAP explainers, benchmarks). The last-bar
        view's rows stay in input order (:meth:`view_matrix`); a lagged / rolling view's are (symbol, ts)
        sorted, as its context builds them."""
        self._require_fitted()
        assert self.features is not None
        if self.reads_rows_only:
            view = row_view(rows, self.features)
            return view.positions, self.view_matrix(view)
        return self._context_matrix(rows, history)

    def _context_matrix(self, rows: pd.DataFrame, history: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
        assert self.features is not None
        prep = prepare_predict(features=self.features, scaler=self.scaler, min_history=self.min_history,
                               rows=rows, history=history)
        s = prep.samples["rows"]
        x = self._matrix(prep, s) if len(s) else np.zeros((0, len(self.column_names())), dtype=np.float32)
        return prep.ctx.positions_of("rows", rows.index, s), x

    def view_matrix(self, view: RowView) -> np.ndarray:
        """This model's float32 C-contiguous matrix of the view's eligible rows (scaled features, then the
        asset one-hot): exactly what the context path builds; cached on the view for members that share
        features, scaler and assets."""
        self._require_fitted()
        self._require_row_view()
        assert self.features is not None and self.scaler.mean is not None and self.scaler.std is not None
        key = (tuple(self.features), self.scaler.mean.tobytes(), self.scaler.std.tobytes(), tuple(self.assets))
        x = view._matrices.get(key)
        if x is None:
            raw = view.values
            if self.features != view.features:
                col = {f: j for j, f in enumerate(view.features)}
                raw = raw[:, [col[f] for f in self.features]]
            z = self.scaler.transform(raw).astype(np.float32)
            x = np.hstack([z, view.onehot(self.assets)]) if self.assets else z
            x = view._matrices[key] = np.ascontiguousarray(x, dtype=np.float32)
        return x

    def view_proba(self, view: RowView) -> np.ndarray:
        """(len(view.index), 3) probabilities for the view's rows; NaN rows where ineligible."""
        self._require_row_view()
        out = np.full((len(view.index), N_CLASSES), np.nan)
        if len(view):
            out[view.positions] = self.predict_proba_matrix(self.view_matrix(view))
        return out

    def _require_row_view(self) -> None:
        if not self.reads_rows_only:
            raise ModelError(f"{self.kind} with lags {self.lags} / rolling windows {self.roll} reads earlier "
                             "bars: use predict_proba with history, not a row view")

    def predict_proba_matrix(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (n, 3) of a built matrix, clipped at 1e-9 and renormalised as predict_proba gives."""
        self._require_fitted()
        p = np.clip(self._predict_x(x), 1e-9, None)
        return p / p.sum(axis=1, keepdims=True)

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """The estimator's raw probabilities for an already-built tabular matrix (explainers such as SHAP)."""
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
        self._leaves: tuple[Any, list[tuple[Any, np.ndarray]]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_leaves"] = None   # derived from est; rebuilt on first use
        return state

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

    def _tree_leaves(self) -> list[tuple[Any, np.ndarray]]:
        """Each tree with its (n_nodes, n_classes) class fractions (what a tree's predict_proba takes)."""
        cached = getattr(self, "_leaves", None)
        if cached is None or cached[0] is not self.est:
            cached = self._leaves = (self.est, [(e.tree_, np.ascontiguousarray(e.tree_.value[:, 0, :]))
                                                for e in self.est.estimators_])
        return cached[1]

    def _forest_proba(self, x: np.ndarray) -> np.ndarray:
        """The forest's mean class probabilities, summed tree by tree in tree order.

        The same additions, in the same order, as scikit-learn's ``predict_proba`` with ``n_jobs=1`` (its
        threads add trees in whatever order they finish), without joblib's per-tree dispatch and input
        checks, which cost more than the trees themselves on the batches we predict.
        """
        trees = self._tree_leaves()
        out = np.zeros((len(x), trees[0][1].shape[1]))
        tmp = np.empty_like(out)
        for tree, frac in trees:
            np.take(frac, tree.apply(x), axis=0, out=tmp)
            out += tmp
        out /= len(trees)
        return out

    def _predict_x(self, x: np.ndarray) -> np.ndarray:
        n_in = int(self.est.n_features_in_)
        if x.ndim != 2 or x.shape[1] != n_in:
            raise ModelError(f"the forest was fit on {n_in} columns; got a matrix of shape {x.shape}")
        x = np.ascontiguousarray(x, dtype=np.float32)   # the trees' own input type
        threads = predict_threads(self.n_jobs, len(x))
        if threads == 1:
            p = self._forest_proba(x)
        else:   # rows split over threads (tree_.apply and numpy release the GIL); each row's sum unchanged
            with ThreadPoolExecutor(threads) as pool:
                p = np.vstack(list(pool.map(self._forest_proba, np.array_split(x, threads))))
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


# -- gradient boosting -----------------------------------------------------------------------------
class BoostedModel(TabularModel):
    """What XGBoost and LightGBM share: boosting rounds, learning rate, early stopping, device, booster."""

    def __init__(self, *, n_estimators: int = 400, learning_rate: float = 0.05, early_stopping_rounds: int = 50,
                 device: str = "auto", **kw: Any) -> None:
        super().__init__(**kw)
        self.n_estimators = int(n_estimators)
        self.learning_rate = learning_rate
        self.early_stopping_rounds = int(early_stopping_rounds)
        self.device = device
        self.booster: Any = None

    def boosting_params(self, **own: Any) -> dict[str, Any]:
        """``get_params`` of a booster: the shared parameters plus the subclass's ``own``."""
        return {**self.base_params(), "n_estimators": self.n_estimators, "learning_rate": self.learning_rate,
                "early_stopping_rounds": self.early_stopping_rounds, "device": self.device, **own}

    def threads(self) -> int:
        """The booster's thread setting (0 = every core, as both libraries read it): XGBoost keeps it for prediction."""
        return self.n_jobs if self.n_jobs > 0 else 0


# -- XGBoost ---------------------------------------------------------------------------------------
XGB_FILE = "xgb.ubj"


class XGBoostModel(BoostedModel):
    kind = "xgb"

    def __init__(self, *, max_depth: int = 4, subsample: float = 0.8, colsample_bytree: float = 0.8,
                 min_child_weight: float = 5.0, reg_lambda: float = 1.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.max_depth = int(max_depth)
        self.subsample, self.colsample_bytree = subsample, colsample_bytree
        self.min_child_weight, self.reg_lambda = min_child_weight, reg_lambda
        self.best_iteration: int | None = None

    def get_params(self) -> dict[str, Any]:
        return self.boosting_params(max_depth=self.max_depth, subsample=self.subsample,
                                    colsample_bytree=self.colsample_bytree, min_child_weight=self.min_child_weight,
                                    reg_lambda=self.reg_lambda)

    def _xgb_params(self) -> dict[str, Any]:
        return {"objective": "multi:softprob", "num_class": N_CLASSES, "eval_metric": "mlogloss",
                "max_depth": self.max_depth, "eta": self.learning_rate, "subsample": self.subsample,
                "colsample_bytree": self.colsample_bytree, "min_child_weight": self.min_child_weight,
                "lambda": self.reg_lambda, "tree_method": "hist", "device": xgb_device(self.device),
                "seed": self.seed, "nthread": self.threads()}

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
        """``inplace_predict`` on the array itself: the same numbers as a ``DMatrix`` predict (missing = NaN
        in both) without copying the rows into one first."""
        it = (0, (self.best_iteration or 0) + 1)
        # threads: the booster's nthread (n_jobs), set at fit / load, never here: set_param reconfigures the
        # booster (~0.15 us/sample) and is not safe beside a predict in another thread; inplace_predict is,
        # and its CPU predictor works through the rows in blocks, so a small batch barely spreads
        return np.asarray(self.booster.inplace_predict(x, iteration_range=it), dtype=np.float64)

    def _save_estimator(self, path: Path) -> None:
        self.booster.save_model(str(path / XGB_FILE))

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "best_iteration": self.best_iteration}

    def _load_estimator(self, path: Path, state: dict[str, Any]) -> None:
        import xgboost as xgb

        self.booster = xgb.Booster()
        self.booster.load_model(str(path / XGB_FILE))
        self.booster.set_param({"device": "cpu" if self.device == "auto" else self.device, "nthread": self.threads()})
        self.best_iteration = state.get("best_iteration")


# -- LightGBM --------------------------------------------------------------------------------------
LGBM_FILE = "lgbm.txt"


class LightGBMModel(BoostedModel):
    kind = "lgbm"

    def __init__(self, *, num_leaves: int = 15, feature_fraction: float = 0.8, bagging_fraction: float = 0.8,
                 min_data_in_leaf: int = 20, lambda_l2: float = 1.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.num_leaves, self.min_data_in_leaf = int(num_leaves), int(min_data_in_leaf)
        self.feature_fraction, self.bagging_fraction = feature_fraction, bagging_fraction
        self.lambda_l2 = lambda_l2

    def get_params(self) -> dict[str, Any]:
        return self.boosting_params(num_leaves=self.num_leaves, feature_fraction=self.feature_fraction,
                                    bagging_fraction=self.bagging_fraction, min_data_in_leaf=self.min_data_in_leaf,
                                    lambda_l2=self.lambda_l2)

    def _lgb_params(self) -> dict[str, Any]:
        return {"objective": "multiclass", "num_class": N_CLASSES, "num_leaves": self.num_leaves,
                "learning_rate": self.learning_rate, "feature_fraction": self.feature_fraction,
                "bagging_fraction": self.bagging_fraction, "bagging_freq": 1,
                "min_data_in_leaf": self.min_data_in_leaf, "lambda_l2": self.lambda_l2, "seed": self.seed,
                "deterministic": True, "num_threads": self.threads(),
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
        """The numpy array straight in (float32 as built; no pandas, no copy), threads sized to the batch."""
        best = self.booster.best_iteration or None
        return np.asarray(self.booster.predict(x, num_iteration=best,
                                               num_threads=predict_threads(self.n_jobs, len(x))), dtype=np.float64)

    def _save_estimator(self, path: Path) -> None:
        self.booster.save_model(str(path / LGBM_FILE), num_iteration=self.booster.best_iteration or None)

    def _load_estimator(self, path: Path, state: dict[str, Any]) -> None:
        import lightgbm as lgb

        self.booster = lgb.Booster(model_file=str(path / LGBM_FILE))
