"""Realized-volatility forecasts over h days, with honest baselines beside them.

The model is a LightGBM regressor on the same tabular view as the trees (``kind="lgbm"``) or the
stacked LSTM with one linear output (``kind="lstm"``), trained on ``log(y_vol_{h}d)`` (vol is positive
and right-skewed) and reported on the raw scale. Baselines on the same out-of-sample rows:

* ``naive``: the last realized vol, i.e. ``y_vol_{h}d`` of the same symbol h days earlier (that label's
  window ends at t, so it is known at t).
* ``garch``: GARCH(1,1) (``arch`` package) fit per symbol on daily returns of the training window only,
  then filtered forward with those fixed parameters; the h-day forecast is ``sqrt(mean of the h
  variance forecasts)``, converted to the label's units by the median ratio between ``y_vol`` and the
  realized std of the same forward returns on the training window (the label may be annualised).
  Needs a daily-return feature column (``returns_col``); without one the GARCH row is reported as
  unavailable with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.models.base import ModelError, check_frame, default_features, label_array
from entasis.models.datasets import (
    Prepared,
    Standardizer,
    asset_onehot,
    prepare_fit,
    prepare_predict,
    tabular_matrix,
    tabular_min_history,
)
from entasis.models.device import lightgbm_device, torch_device
from entasis.models.lstm import TorchSeqTrainer, build_net, torch_threads
from entasis.models.scoring import lagged_label, regression_metrics

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
# Daily-return feature names to look for (features.registry: log_ret_1), in order of preference.
RETURN_CANDIDATES = ("log_ret_1", "ret_1", "ret_1d", "log_ret_1d", "log_return_1d", "return_1d", "log_return")
SPEC = "vol_spec.json"


def vol_target(horizon: int) -> str:
    return f"y_vol_{int(horizon)}d"


class VolatilityModel:
    """Forecasts ``y_vol_{h}d``; same input contract as the direction models (see ``models.base``)."""

    def __init__(self, *, kind: str = "lgbm", features: Sequence[str] | None = None, pooled: bool = True,
                 seed: int = 42, lags: Sequence[int] = (1, 3, 7), roll: Sequence[int] = (7, 30),
                 n_estimators: int = 400, num_leaves: int = 15, learning_rate: float = 0.05,
                 n_jobs: int = -1, lstm_params: dict[str, Any] | None = None) -> None:
        if kind not in ("lgbm", "lstm"):
            raise ModelError(f"volatility model kind must be 'lgbm' or 'lstm'; got {kind!r}")
        self.kind = kind
        self.features = list(features) if features is not None else None
        self.pooled = pooled
        self.seed = seed
        self.lags = list(lags)
        self.roll = list(roll)
        self.n_estimators = n_estimators
        self.num_leaves = num_leaves
        self.learning_rate = learning_rate
        self.n_jobs = n_jobs
        self.lstm_params = dict(lstm_params or {})
        self.scaler = Standardizer()
        self.assets: list[str] = []
        self.target: str | None = None
        self.y_mean = 0.0
        self.y_std = 1.0
        self.est: Any = None
        self.fitted = False

    @property
    def seq_len(self) -> int:
        return int(self.lstm_params.get("seq_len", 90))

    @property
    def min_history(self) -> int:
        if self.kind == "lstm":
            return self.seq_len
        return tabular_min_history(self.lags, self.roll)

    def _x(self, prep: Prepared, pos: np.ndarray) -> np.ndarray:
        return tabular_matrix(prep, pos, lags=self.lags, roll=self.roll, assets=self.assets)

    def fit(self, train: pd.DataFrame, target: str, *, valid: pd.DataFrame | None = None,
            history: pd.DataFrame | None = None) -> VolatilityModel:
        self.features = list(self.features or default_features(train))
        for name, df in (("train", train), ("valid", valid)):
            if df is not None:
                check_frame(df, self.features, what=name)
                if target not in df.columns:
                    raise ModelError(f"{name} is missing the volatility target column {target}")
        # Regression target: log vol; make_context treats it as a label column.
        tr = train.assign(**{target: np.log(np.clip(train[target].astype(float), 1e-8, None))})
        va = None if valid is None else valid.assign(
            **{target: np.log(np.clip(valid[target].astype(float), 1e-8, None))})
        self.scaler = Standardizer()
        prep = prepare_fit(features=self.features, scaler=self.scaler, min_history=self.min_history,
                           train=tr, target=target, valid=va, history=history, classes=False)
        assert prep.ctx.target is not None
        s = prep.samples["train"]
        self.assets = sorted(set(prep.ctx.symbols[s])) if self.pooled else []
        y = prep.ctx.target[s]
        self.y_mean, self.y_std = float(y.mean()), float(y.std() or 1.0)
        vs = prep.samples.get("valid")
        self.target = target
        if self.kind == "lgbm":
            self._fit_lgbm(prep, s, y, vs)
        else:
            self._fit_lstm(prep, s, y, vs)
        self.fitted = True
        return self

    def _fit_lgbm(self, prep: Prepared, s: np.ndarray, y: np.ndarray, vs: np.ndarray | None) -> None:
        import lightgbm as lgb

        params = {"objective": "regression", "num_leaves": self.num_leaves, "learning_rate": self.learning_rate,
                  "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "min_data_in_leaf": 20,
                  "seed": self.seed, "deterministic": True, "verbose": -1,
                  "num_threads": self.n_jobs if self.n_jobs > 0 else 0, "device_type": lightgbm_device("auto")}
        dtrain = lgb.Dataset(self._x(prep, s), label=y)
        valid_sets: list[Any] = []
        cbs: list[Any] = []
        if vs is not None and len(vs):
            assert prep.ctx.target is not None
            valid_sets = [lgb.Dataset(self._x(prep, vs), label=prep.ctx.target[vs], reference=dtrain)]
            cbs = [lgb.early_stopping(50, verbose=False)]
        self.est = lgb.train(params, dtrain, num_boost_round=self.n_estimators, valid_sets=valid_sets,
                             callbacks=cbs)

    def _fit_lstm(self, prep: Prepared, s: np.ndarray, y: np.ndarray, vs: np.ndarray | None) -> None:
        import torch

        p = {"hidden": (128, 64, 32), "dropout": 0.2, "dense": 16, "lr": 1e-3, "weight_decay": 1e-5,
             "batch_size": 32, "max_epochs": 100, "patience": 10, "lr_patience": 5, "lr_factor": 0.5,
             "min_lr": 1e-6, "grad_clip": 1.0, "device": "auto", **self.lstm_params}
        p["seq_len"] = self.seq_len
        threads = p.pop("num_threads", None)
        torch.manual_seed(self.seed)
        assert self.features is not None
        self.est = build_net(len(self.features), len(self.assets), 1, p["hidden"], p["dropout"], p["dense"])
        trainer = self._trainer(p)
        yz = ((y - self.y_mean) / self.y_std).astype(np.float32)[:, None]
        oh = (lambda q: asset_onehot(prep.ctx.symbols[q], self.assets)) if self.assets else (lambda q: None)
        has_v = vs is not None and len(vs) > 0
        assert prep.ctx.target is not None
        yv = (((prep.ctx.target[vs] - self.y_mean) / self.y_std).astype(np.float32)[:, None]
              if has_v and vs is not None else None)
        with torch_threads(threads):
            trainer.fit(self.est, prep.z, train_ends=s, train_y=yz, train_assets=oh(s),
                        valid_ends=vs if has_v else None, valid_y=yv, valid_assets=oh(vs) if has_v else None,
                        loss_fn=lambda out, yb: torch.nn.functional.mse_loss(out, yb))
        self.est.to("cpu")

    def _trainer(self, p: dict[str, Any]) -> Any:
        return TorchSeqTrainer(seq_len=self.seq_len, batch_size=p["batch_size"], max_epochs=p["max_epochs"],
                               lr=p["lr"], weight_decay=p["weight_decay"], patience=p["patience"],
                               lr_patience=p["lr_patience"], lr_factor=p["lr_factor"], min_lr=p["min_lr"],
                               grad_clip=p["grad_clip"], device=p["device"], seed=self.seed)

    def predict(self, rows: pd.DataFrame, *, history: pd.DataFrame | None = None) -> np.ndarray:
        """Forecast vol for each row of ``rows`` (NaN where the row lacks history)."""
        if not self.fitted:
            raise ModelError("volatility model is not fitted")
        assert self.features is not None
        prep = prepare_predict(features=self.features, scaler=self.scaler, min_history=self.min_history,
                               rows=rows, history=history)
        s = prep.samples["rows"]
        out = np.full(len(rows), np.nan)
        if not len(s):
            return out
        if self.kind == "lgbm":
            logv = np.asarray(self.est.predict(self._x(prep, s)), dtype=np.float64)
        else:
            import torch

            dev = torch_device(self.lstm_params.get("device", "auto"))
            self.est.to(dev)
            oh = torch.from_numpy(asset_onehot(prep.ctx.symbols[s], self.assets)) if self.assets else None
            trainer = self._trainer({"batch_size": 32, "max_epochs": 1, "lr": 0.0, "weight_decay": 0.0,
                                     "patience": 1, "lr_patience": 1, "lr_factor": 0.5, "min_lr": 0.0,
                                     "grad_clip": 0.0, "device": "auto"})

            with torch_threads(self.lstm_params.get("num_threads")):
                z = trainer.forward(self.est, torch.from_numpy(prep.z), s, oh, dev).cpu().numpy()[:, 0]
            logv = z.astype(np.float64) * self.y_std + self.y_mean
        out[prep.ctx.positions_of("rows", rows.index, s)] = np.exp(logv)
        return out

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        import json

        if not self.fitted:
            raise ModelError("cannot save an unfitted volatility model")
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        self.scaler.save(p / "scaler.npz")
        if self.kind == "lgbm":
            self.est.save_model(str(p / "vol_lgbm.txt"), num_iteration=self.est.best_iteration or None)
        else:
            import torch

            torch.save({k: v.detach().cpu() for k, v in self.est.state_dict().items()}, p / "vol_lstm.pt")
        spec = {"kind": self.kind, "features": self.features, "pooled": self.pooled, "seed": self.seed,
                "lags": self.lags, "roll": self.roll, "n_estimators": self.n_estimators,
                "num_leaves": self.num_leaves, "learning_rate": self.learning_rate, "n_jobs": self.n_jobs,
                "lstm_params": self.lstm_params, "assets": self.assets, "target": self.target,
                "y_mean": self.y_mean, "y_std": self.y_std}
        (p / SPEC).write_text(json.dumps(spec, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> VolatilityModel:
        import json

        p = Path(path)
        if not (p / SPEC).exists():
            raise ModelError(f"{p} is not a saved volatility model (no {SPEC})")
        spec = json.loads((p / SPEC).read_text())
        state = {k: spec.pop(k) for k in ("assets", "target", "y_mean", "y_std")}
        m = cls(**spec)
        m.assets, m.target = list(state["assets"]), state["target"]
        m.y_mean, m.y_std = float(state["y_mean"]), float(state["y_std"])
        m.scaler = Standardizer.load(p / "scaler.npz")
        if m.kind == "lgbm":
            import lightgbm as lgb

            m.est = lgb.Booster(model_file=str(p / "vol_lgbm.txt"))
        else:
            import torch

            hp = {"hidden": (128, 64, 32), "dropout": 0.2, "dense": 16, **m.lstm_params}
            assert m.features is not None
            m.est = build_net(len(m.features), len(m.assets), 1, hp["hidden"], hp["dropout"], hp["dense"])
            m.est.load_state_dict(torch.load(p / "vol_lstm.pt", map_location="cpu", weights_only=True))
            m.est.eval()
        m.fitted = True
        return m


# -- baselines -------------------------------------------------------------------------------------
def naive_vol(frame: pd.DataFrame, rows: pd.DataFrame, horizon: int) -> np.ndarray:
    """Last realized vol: the same symbol's y_vol_{h}d h days earlier (its window ends at t)."""
    return lagged_label(frame, rows, vol_target(horizon), horizon)


def find_returns_col(frame: pd.DataFrame, returns_col: str | None = None) -> str | None:
    if returns_col is not None:
        if returns_col not in frame.columns:
            raise ModelError(f"returns column {returns_col!r} not in the frame")
        return returns_col
    return next((c for c in RETURN_CANDIDATES if c in frame.columns), None)


def garch_vol(frame: pd.DataFrame, train: pd.DataFrame, rows: pd.DataFrame, horizon: int, *,
              returns_col: str | None = None) -> tuple[np.ndarray, str | None]:
    """GARCH(1,1) h-day vol forecasts for ``rows``: (forecasts, None) or (NaNs, reason unavailable)."""
    import pandas as pd
    from arch import arch_model

    out = np.full(len(rows), np.nan)
    col = find_returns_col(frame, returns_col)
    if col is None:
        return out, f"no daily-return column (looked for {', '.join(RETURN_CANDIDATES)})"
    target = vol_target(horizon)
    train_end = pd.to_datetime(train["ts"], utc=True).max()
    f = frame[["symbol", "ts", col, *([target] if target in frame.columns else [])]].copy()
    f["ts"] = pd.to_datetime(f["ts"], utc=True)
    ratios: list[float] = []
    fc_by_key: dict[tuple[str, pd.Timestamp], float] = {}
    for sym, g in f.sort_values("ts").groupby("symbol"):
        g = g.reset_index(drop=True)
        r = g[col].astype(float).fillna(0.0).to_numpy() * 100.0
        n_train = int((g["ts"] <= train_end).sum())
        if n_train < 100:
            continue
        # units: label vs realized std of the same forward returns, on training rows whose window ended
        if target in g.columns:
            rr = pd.Series(g[col].astype(float).to_numpy())
            fwd_sd = rr.rolling(horizon, min_periods=horizon).std(ddof=0).shift(-horizon).to_numpy()
            y = pd.to_numeric(g[target], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            ends = g["ts"].shift(-horizon)
            ok = (np.isfinite(y) & np.isfinite(fwd_sd) & (fwd_sd > 0)
                  & (ends <= train_end).fillna(False).to_numpy(dtype=bool))
            ratios.extend((y[ok] / fwd_sd[ok]).tolist())
        am = arch_model(r, mean="Constant", vol="GARCH", p=1, q=1, dist="normal", rescale=False)
        res = am.fit(last_obs=n_train, disp="off", show_warning=False)
        fc = res.forecast(horizon=horizon, start=0, reindex=True)
        var = fc.variance.to_numpy()  # row t: forecasts made with data up to t, params from train only
        sd_h = np.sqrt(np.nanmean(var, axis=1)) / 100.0
        for t, ts in enumerate(g["ts"]):
            fc_by_key[(str(sym), ts)] = float(sd_h[t])
    if not ratios:
        return out, "not enough training history per symbol (need 100 bars) or no labels to fix units"
    k = float(np.median(ratios))
    keys = zip(rows["symbol"].astype(str), pd.to_datetime(rows["ts"], utc=True), strict=True)
    out = np.array([fc_by_key.get((s, t), np.nan) * k for s, t in keys], dtype=np.float64)
    return out, None


def evaluate_vol(model: VolatilityModel | None, frame: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame,
                 horizon: int, *, returns_col: str | None = None) -> dict[str, dict[str, float]]:
    """RMSE / MAE / R² of the model, naive and GARCH on the test rows where the model has a forecast."""
    y = label_array(test[vol_target(horizon)])
    pred = model.predict(test, history=frame) if model is not None else np.full(len(test), np.nan)
    naive = naive_vol(frame, test, horizon)
    garch, why = garch_vol(frame, train, test, horizon, returns_col=returns_col)
    rows = ~np.isnan(y)
    if model is not None:
        rows &= ~np.isnan(pred)
    out = {"model": regression_metrics(pred[rows], y[rows]) if model is not None else {"n": 0.0},
           "naive": regression_metrics(naive[rows], y[rows])}
    if why is None:
        out["garch"] = regression_metrics(garch[rows], y[rows])
    else:
        log.info("GARCH baseline unavailable: %s", why)
        out["garch"] = {"n": 0.0}
    return out
