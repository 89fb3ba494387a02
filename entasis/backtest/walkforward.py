"""The walk-forward backtest: refit on a schedule, predict the next block, keep every forecast.

:func:`walk_forward` is pure (frames in, :class:`WalkForwardResult` out); :func:`run_walk_forward` in
:mod:`entasis.backtest.runner` adds loading, the database record, the report and MLflow.

Per fold (see :mod:`entasis.backtest.folds` for the purge): the labelled training rows are split into an
inner-training part and the last ``valid_fraction`` of days for validation (early stopping, ensemble
calibration), with a purge of h days between them; rows dropped by either purge still serve as
backward-only *context* for lags and windows, never as samples. Models predict the test block from
feature columns only (labels are stripped before ``predict_proba`` sees a row), with the
``context_days`` before the block as history. Baselines (:mod:`entasis.backtest.baselines`) are refit
on the same training window of the same fold.

Scoring is on the *common* rows: labelled test rows that every model and baseline forecast (a row a
model cannot score for lack of history is dropped for all), so every number in a table is on the same
rows. The trading simulation uses every common forecast row, labelled or not.

Models are named by spec: ``"lgbm"`` or ``{"name": "lgbm", "n_estimators": 200, "label": "lgbm_small"}``.
A bare ``"ensemble"`` averages the other listed models (with their parameters); base models that are
members of a listed ensemble are not fit twice — their forecasts are the ensemble members' raw
(uncalibrated) forecasts, which are exactly what a separate fit with the same seed would give.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.backtest.baselines import BASELINES, FoldBaselines, baseline_name, is_baseline, rule_signals
from entasis.backtest.folds import (
    BacktestError,
    LeakageError,
    Window,
    check_purge,
    fold_table,
    make_folds,
    split_valid,
    utc,
)
from entasis.backtest.metrics import (
    accuracy_over_time,
    block_bootstrap_diff,
    classification_metrics,
    default_block,
    row_log_loss,
    scalar,
)
from entasis.backtest.simulate import (
    PORTFOLIO,
    TradingConfig,
    as_arrays,
    portfolio_returns,
    simulate_models,
    trading_metrics,
)

if TYPE_CHECKING:
    import pandas as pd

    from entasis.models.base import Model

log = logging.getLogger(__name__)

PROBA = ["p_bearish", "p_neutral", "p_bullish"]
POOLED = "pooled"
BUY_AND_HOLD = "buy_and_hold"
SHUFFLED = "shuffled:"
FIXED_SUFFIX = ":fixed"          # the specification's fixed 0.4/0.2/0.2/0.2 preset of a stacked ensemble
BASE_RATE_SUFFIX = ":base_rate"  # the stacked ensemble's probabilities, classes by argmax p / base rate
PRICE_COLUMNS = ("close", "open", "high", "low", "volume", "quote_volume")
DEFAULT_MODELS: tuple[str, ...] = ("rf", "xgb", "lgbm")
ModelSpec = str | Mapping[str, Any]
Progress = Callable[[int, int, dict[str, Any]], None]


# -- specs -----------------------------------------------------------------------------------------
@dataclass
class _Spec:
    label: str
    name: str
    params: dict[str, Any]
    shared_from: str | None = None      # label of the ensemble whose member supplies the forecasts
    shuffled: bool = False


def resolve_specs(models: Sequence[ModelSpec]) -> list[_Spec]:
    """Normalise model specs, expand a bare ensemble and mark members taken from an ensemble."""
    if not models:
        raise BacktestError("models is empty; give at least one model, e.g. ['lgbm']")
    specs: list[_Spec] = []
    for m in models:
        if isinstance(m, str):
            specs.append(_Spec(m, m, {}))
        elif isinstance(m, Mapping):
            d = dict(m)
            name = d.pop("name", None) or d.pop("kind", None)
            if not name:
                raise BacktestError(f"model spec {dict(m)!r} needs a 'name'")
            label = str(d.pop("label", name))
            specs.append(_Spec(label, str(name), d))
        else:
            raise BacktestError(f"model spec must be a name or a mapping; got {type(m).__name__}")
    labels = [s.label for s in specs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise BacktestError(f"duplicate model label(s) {dup}; give each spec a distinct 'label'")
    for s in specs:
        if s.label.startswith(("baseline:", SHUFFLED)) or s.label in (BUY_AND_HOLD, POOLED):
            raise BacktestError(f"model label {s.label!r} is reserved")
    base = [s for s in specs if s.name != "ensemble"]
    for s in specs:
        if s.name != "ensemble":
            continue
        if "members" not in s.params and base:
            s.params["members"] = [b.name for b in base]
            s.params.setdefault("member_params", {b.name: dict(b.params) for b in base if b.params})
        members = list(s.params.get("members", ("lstm", "rf", "xgb", "lgbm")))
        mparams = s.params.get("member_params") or {}
        for b in base:
            if b.shared_from is None and b.name in members and b.label == b.name \
                    and dict(mparams.get(b.name, {})) == b.params:
                b.shared_from = s.label
    return specs


def _build(spec: _Spec, features: list[str]) -> Model:
    from entasis.models.base import ModelError
    from entasis.models.factory import build_model

    params = dict(spec.params)
    params.setdefault("features", features)
    try:
        return build_model(spec.name, **params)
    except ModelError as e:
        raise BacktestError(f"model {spec.label!r}: {e}") from None


# -- result ----------------------------------------------------------------------------------------
@dataclass
class WalkForwardResult:
    """Everything a walk-forward produced; ``predictions`` holds every out-of-sample forecast."""

    horizon: int
    target: str
    timeframe: str
    config: dict[str, Any]
    folds: pd.DataFrame
    predictions: pd.DataFrame
    models: list[str]
    baselines: list[str]
    metrics: dict[str, dict[str, dict[str, Any]]]
    comparisons: pd.DataFrame
    trading: dict[str, dict[str, dict[str, float]]]
    equity: pd.DataFrame
    leakage: dict[str, Any]
    run_id: str
    data_hash: str
    timings: dict[str, float] = field(default_factory=dict)
    report_path: Path | None = None

    @property
    def scopes(self) -> list[str]:
        """'pooled' then each asset that has scored rows."""
        return [POOLED] + sorted({k for m in self.metrics.values() for k in m if k != POOLED})

    def best_baseline(self, metric: str = "accuracy", scope: str = POOLED) -> str:
        """The baseline with the best ``metric`` (highest accuracy, lowest log-loss) on ``scope``."""
        vals = {b: self.metrics[b][scope][metric] for b in self.baselines if scope in self.metrics[b]}
        if not vals:
            raise BacktestError(f"no baseline scored on scope {scope!r}")
        return (max if metric == "accuracy" else min)(vals, key=lambda k: vals[k])

    def comparison(self, model: str, baseline: str, metric: str, scope: str = POOLED) -> dict[str, float]:
        c = self.comparisons
        row = c[(c["model"] == model) & (c["baseline"] == baseline) & (c["metric"] == metric) & (c["scope"] == scope)]
        if row.empty:
            raise BacktestError(f"no comparison of {model} vs {baseline} on {metric}/{scope}")
        return {k: float(row.iloc[0][k]) for k in ("estimate", "lo", "hi", "p_le_0")}

    def summary(self, scope: str = POOLED) -> pd.DataFrame:
        """One row per model and baseline: scores, (model − best baseline) with CIs, and trading."""
        import pandas as pd

        rows = []
        tscope = PORTFOLIO if scope == POOLED else scope
        best_acc = self.best_baseline("accuracy", scope)
        best_ll = self.best_baseline("log_loss", scope)
        for m in [*self.models, *self.baselines]:
            met = self.metrics[m].get(scope)
            if met is None:
                continue
            r: dict[str, Any] = {"model": m, "n": met["n"], "accuracy": met["accuracy"],
                                 "balanced_accuracy": met["balanced_accuracy"], "log_loss": met["log_loss"],
                                 "brier": met["brier"], "ece": met["ece"], "f1_macro": met["f1_macro"]}
            if not is_baseline(m):
                a = self.comparison(m, best_acc, "accuracy", scope)
                ll = self.comparison(m, best_ll, "log_loss", scope)
                r.update({"d_acc_vs_best": a["estimate"], "d_acc_lo": a["lo"], "d_acc_hi": a["hi"],
                          "d_ll_vs_best": ll["estimate"], "d_ll_lo": ll["lo"], "d_ll_hi": ll["hi"]})
            tr = self.trading.get(m, {}).get(tscope)
            if tr:
                r.update({"total_return": tr["total_return"], "sharpe": tr["sharpe"],
                          "max_drawdown": tr["max_drawdown"]})
            rows.append(r)
        bh = self.trading.get(BUY_AND_HOLD, {}).get(tscope)
        if bh:
            rows.append({"model": BUY_AND_HOLD, "total_return": bh["total_return"], "sharpe": bh["sharpe"],
                         "max_drawdown": bh["max_drawdown"]})
        return pd.DataFrame(rows)

    def to_json(self, scope: str = POOLED) -> dict[str, Any]:
        """Machine-readable scores: per model and baseline n, accuracy, balanced accuracy, log-loss,
        Brier, ECE, and for models the Δ vs the best baseline (log-loss: the lowest-log-loss baseline;
        accuracy / balanced accuracy: the highest) with the 95% moving-block bootstrap CI."""
        best = {"log_loss": self.best_baseline("log_loss", scope), "accuracy": self.best_baseline("accuracy", scope)}
        bal = {b: self.metrics[b][scope]["balanced_accuracy"] for b in self.baselines if scope in self.metrics[b]}
        best["balanced_accuracy"] = max(bal, key=lambda k: bal[k])
        out: dict[str, Any] = {"horizon": self.horizon, "scope": scope, "run_id": self.run_id,
                               "start": self.config["start"], "end": self.config["end"],
                               "symbols": self.config["symbols"], "refit_days": self.config["refit_days"],
                               "best_baseline": best, "models": {}, "baselines": {}}
        for m in [*self.models, *self.baselines]:
            met = self.metrics[m].get(scope)
            if met is None:
                continue
            row: dict[str, Any] = {k: met.get(k) for k in ("n", "accuracy", "balanced_accuracy", "log_loss",
                                                             "brier", "ece")}
            if not is_baseline(m):
                for metric in ("log_loss", "accuracy", "balanced_accuracy"):
                    c = self.comparison(m, best[metric], metric, scope)
                    row[f"d_{metric}_vs_best"] = {"baseline": best[metric], **c}
            out["baselines" if is_baseline(m) else "models"][m.removeprefix("baseline:")] = row
        weights = self.folds.filter(like="w[")
        if len(weights.columns):
            out["stacked_weights_mean"] = {c: float(weights[c].mean()) for c in weights.columns}
        return out

    def accuracy_over_time(self, freq: str = "MS") -> pd.DataFrame:
        """Accuracy per period (month) for every model and baseline, on the common scored rows."""
        import pandas as pd

        p = self.predictions[self.predictions["scored"]]
        cols = {}
        for m, g in p.groupby("model", sort=False):
            hit = (g["predicted_class"].to_numpy() == g["actual_class"].to_numpy())
            cols[str(m)] = accuracy_over_time(g["ts"], hit, freq)
        return pd.DataFrame(cols)


# -- the walk-forward ------------------------------------------------------------------------------
def _labels(values: Any) -> np.ndarray:
    import pandas as pd

    return np.asarray(pd.to_numeric(pd.Series(values), errors="coerce").astype("Float64")
                      .to_numpy(dtype=np.float64, na_value=np.nan))


def _prepare_frame(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    import pandas as pd

    missing = [c for c in ("symbol", "ts", target) if c not in frame.columns]
    if missing:
        raise BacktestError(f"frame is missing column(s) {missing} (need symbol, ts and the label {target})")
    if "timeframe" in frame.columns and frame["timeframe"].nunique() > 1:
        raise BacktestError(f"frame mixes timeframes {sorted(frame['timeframe'].unique())}; pass one")
    if "exchange" in frame.columns and frame["exchange"].nunique() > 1:
        raise BacktestError(f"frame mixes exchanges {sorted(frame['exchange'].unique())}; pass one")
    f = frame.copy()
    f["ts"] = pd.to_datetime(f["ts"], utc=True)
    f = f.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
    dup = f.duplicated(["symbol", "ts"])
    if dup.any():
        r = f[dup].iloc[0]
        raise BacktestError(f"frame has duplicate (symbol, ts) = ({r['symbol']}, {r['ts']})")
    return f


def _prepare_prices(prices: pd.DataFrame | None, frame: pd.DataFrame) -> pd.DataFrame | None:
    import pandas as pd

    if prices is None:
        if "close" not in frame.columns:
            return None
        prices = frame[["symbol", "ts", "close"]]
    missing = [c for c in ("symbol", "ts", "close") if c not in prices.columns]
    if missing:
        raise BacktestError(f"prices is missing column(s) {missing}")
    p = prices[["symbol", "ts", "close"]].copy()
    p["ts"] = pd.to_datetime(p["ts"], utc=True)
    p["close"] = pd.to_numeric(p["close"], errors="coerce").astype("float64")
    bad = p["close"].isna() | (p["close"] <= 0)
    if bad.any():
        r = p[bad].iloc[0]
        raise BacktestError(f"prices: close must be a positive number; got {r['close']!r} for {r['symbol']} "
                            f"at {r['ts']}")
    return p.drop_duplicates(["symbol", "ts"], keep="last").sort_values(["symbol", "ts"]).reset_index(drop=True)


def walk_forward(frame: pd.DataFrame, *, horizon: int, start: object, end: object,
                 models: Sequence[ModelSpec] = DEFAULT_MODELS, prices: pd.DataFrame | None = None,
                 funding: pd.DataFrame | None = None, timeframe: str = "1d", refit_days: int = 7,
                 window: Window = "expanding", train_days: int | None = None, embargo_days: int = 0,
                 valid_fraction: float = 0.15, min_train_rows: int = 200, context_days: int = 400,
                 features: Sequence[str] | None = None, baselines: Sequence[str] = BASELINES,
                 momentum_days: int = 50, trading: TradingConfig | None = None,
                 leak_threshold: float | None = 0.10, leakage: str = "raise",
                 permutation_check: bool = False, permutation_tolerance: float = 0.05,
                 n_boot: int = 2000, seed: int = 42, progress: Progress | None = None) -> WalkForwardResult:
    """Walk forward over ``[start, end]`` with refits every ``refit_days`` (see the module docstring).

    ``leakage``: ``'raise'`` (default) raises :class:`LeakageError` when a model beats the best baseline
    by more than ``leak_threshold`` accuracy, or when the shuffled-label model (``permutation_check``)
    beats it by more than ``permutation_tolerance``; ``'warn'`` only records it; ``'off'`` skips both.
    The purge check of every fold always raises.
    """
    import pandas as pd

    from entasis.models.base import default_features
    from entasis.models.datasets import data_hash

    t_start = time.perf_counter()
    if leakage not in ("raise", "warn", "off"):
        raise BacktestError(f"leakage must be 'raise', 'warn' or 'off'; got {leakage!r}")
    unknown_bl = [b for b in baselines if b not in BASELINES]
    if unknown_bl:
        raise BacktestError(f"unknown baseline(s) {unknown_bl}; expected {', '.join(BASELINES)}")
    if min_train_rows < 1:
        raise BacktestError(f"min_train_rows must be >= 1; got {min_train_rows}")
    from entasis.risk.metrics import periods_per_year

    ppy = periods_per_year(timeframe)
    step = pd.Timedelta(timeframe)
    bars_per_day = max(1, int(pd.Timedelta(days=1) / step))
    target = f"y_cls_{int(horizon)}d"
    ret_col = f"y_ret_{int(horizon)}d"
    trading = trading or TradingConfig()
    f = _prepare_frame(frame, target)
    px = _prepare_prices(prices, f)
    if features is not None:
        feats = list(features)
    else:  # the registry's features present in the frame, minus columns with no value at all
        feats = default_features(f.drop(columns=[c for c in PRICE_COLUMNS if c in f.columns]))
        feats = [c for c in feats if c in f.columns and f[c].notna().any()]
        if not feats:
            raise BacktestError("the frame has no usable feature column (every candidate is missing or all NULL)")
    missing = [c for c in feats if c not in f.columns]
    if missing:
        raise BacktestError(f"frame is missing feature column(s) {missing}")
    bl_names = [b for b in baselines if b != "momentum" or px is not None]
    specs = resolve_specs(models)
    if permutation_check:
        first = specs[0]
        specs.append(_Spec(SHUFFLED + first.label, first.name, dict(first.params), shuffled=True))
    labels_all = [s.label for s in specs]
    stacked_specs = [s.label for s in specs if s.name == "ensemble" and not s.shuffled
                     and s.params.get("weights", "stacked") == "stacked"]
    for lab in stacked_specs:  # the fixed preset and the other decision rule, from the same fit
        labels_all += [lab + FIXED_SUFFIX, lab + BASE_RATE_SUFFIX]
    folds = make_folds(start, end, horizon=horizon, refit_days=refit_days, window=window, train_days=train_days,
                       embargo_days=embargo_days)
    ts = f["ts"]
    ts_ns = ts.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    y = _labels(f[target])
    fwd = _labels(f[ret_col]) if ret_col in f.columns else np.full(len(f), np.nan)
    symbols = f["symbol"].astype(str).to_numpy()
    keep_cols = ["symbol", "ts", *(["warmup"] if "warmup" in f.columns else []), *feats]
    xf = f[keep_cols]                                   # features only: what predict_proba may see
    rules = rule_signals(f, target=target, horizon=horizon, prices=px, momentum_days=momentum_days)
    rng = np.random.default_rng(seed)

    test_idx: list[np.ndarray] = []
    test_fold: list[np.ndarray] = []
    probs: dict[str, list[np.ndarray]] = {s: [] for s in labels_all + [baseline_name(b) for b in bl_names]}
    preds: dict[str, list[np.ndarray]] = {s: [] for s in probs}
    fold_rows = []
    fit_time: dict[str, float] = {s: 0.0 for s in labels_all}
    # members' out-of-sample forecasts of earlier folds: the stacker's out-of-fold rows
    oof_idx: dict[str, list[np.ndarray]] = {lab: [] for lab in stacked_specs}
    oof_p: dict[str, dict[str, list[np.ndarray]]] = {lab: {} for lab in stacked_specs}
    for k, fold in enumerate(folds):
        info: dict[str, Any] = {"fold": fold.index, "test_start": fold.test_start, "test_end": fold.test_end,
                                "train_start": fold.train_start, "train_end": fold.train_end}
        te = np.flatnonzero(fold.test_mask(ts_ns))
        tr = np.flatnonzero(fold.train_mask(ts_ns) & ~np.isnan(y))
        if "warmup" in f.columns:
            tr_eff = tr[~f["warmup"].to_numpy(dtype=bool)[tr]]
        else:
            tr_eff = tr
        info.update(n_train=len(tr_eff), n_test=len(te))
        if len(te) == 0 or len(tr_eff) < min_train_rows:
            info["skipped"] = "no test rows" if len(te) == 0 else f"{len(tr_eff)} training rows < {min_train_rows}"
            fold_rows.append(info)
            if progress:
                progress(k + 1, len(folds), info)
            continue
        check_purge(fold, ts_ns[tr], horizon)
        inner, valid = split_valid(ts_ns[tr], horizon, valid_fraction)
        tr_in, tr_va = tr[inner], tr[valid]
        info.update(n_inner=len(tr_in), n_valid=len(tr_va), train_max_ts=pd.Timestamp(ts_ns[tr].max(), tz="UTC"))
        fit_cols = [*keep_cols, target]
        train_df = f.loc[tr_in, fit_cols]
        valid_df = f.loc[tr_va, fit_cols] if len(tr_va) else None
        used = np.zeros(len(f), dtype=bool)
        used[tr_in] = True
        used[tr_va] = True
        ctx_lo = np.datetime64((fold.train_start or pd.Timestamp(ts_ns.min(), tz="UTC")).tz_convert(None)
                               .to_datetime64()) - np.timedelta64(context_days, "D")
        hist_fit_mask = (ts_ns < np.datetime64(fold.train_end.tz_convert(None).to_datetime64())) & ~used \
            & (ts_ns >= ctx_lo)
        hist_fit = xf.loc[hist_fit_mask] if hist_fit_mask.any() else None
        t_lo = np.datetime64(fold.test_start.tz_convert(None).to_datetime64())
        hist_pred = xf.loc[(ts_ns < t_lo) & (ts_ns >= t_lo - np.timedelta64(context_days, "D"))]
        test_df = xf.loc[te]
        fitted: dict[str, Model] = {}
        raw_members: dict[str, dict[str, np.ndarray]] = {}
        for s in specs:
            t0 = time.perf_counter()
            if s.shared_from is not None:
                continue
            model = _build(s, feats)
            tdf, vdf = train_df, valid_df
            if s.shuffled:
                tdf = train_df.assign(**{target: rng.permutation(train_df[target].to_numpy())})
                if vdf is not None:
                    vdf = vdf.assign(**{target: rng.permutation(vdf[target].to_numpy())})
            kw: dict[str, Any] = {}
            if s.label in oof_idx:
                kw["oof"] = _oof_before(oof_idx[s.label], oof_p[s.label], ts_ns, y, symbols, fold.train_end)
            try:
                with warnings.catch_warnings():
                    # all-NaN feature columns (e.g. no funding data) make numpy warn inside the scalers
                    warnings.simplefilter("ignore", RuntimeWarning)
                    model.fit(tdf, target, valid=vdf, history=hist_fit, **kw)
                    if s.name == "ensemble":
                        raw = model.member_proba(test_df, history=hist_pred, calibrated=False)  # type: ignore[attr-defined]
                        raw_members[s.label] = raw
                        p = model.combine(test_df, raw)  # type: ignore[attr-defined]
                    else:
                        p = model.predict_proba(test_df, history=hist_pred).to_numpy(dtype=np.float64)
            except Exception as e:
                raise BacktestError(f"fold {fold.index} (test from {fold.test_start.date()}): model {s.label!r} "
                                    f"failed: {e}") from e
            fitted[s.label] = model
            if s.name == "ensemble":
                ens_m: Any = model
                _append(probs, preds, s.label, p, ens_m.classes(p))
                if s.label in oof_idx:
                    _append(probs, preds, s.label + FIXED_SUFFIX, ens_m.preset_proba(test_df, parts=raw))
                    _append(probs, preds, s.label + BASE_RATE_SUFFIX, p, ens_m.classes(p, "base_rate"))
                    oof_idx[s.label].append(te)
                    for mname, mp in raw.items():
                        oof_p[s.label].setdefault(mname, []).append(mp)
                    for mname, w in ens_m.stacked_weights().items():
                        info[f"w[{s.label}].{mname}"] = round(w, 4)
                    info[f"oof[{s.label}]"] = ens_m.oof_source
            else:
                _append(probs, preds, s.label, p)
            fit_time[s.label] += time.perf_counter() - t0
        for s in specs:
            if s.shared_from is None:
                continue
            t0 = time.perf_counter()
            if s.shared_from in raw_members:
                p = raw_members[s.shared_from][s.name]
            else:
                member = fitted[s.shared_from].models[s.name]  # type: ignore[attr-defined]
                p = member.predict_proba(test_df, history=hist_pred).to_numpy(dtype=np.float64)
            _append(probs, preds, s.label, p)
            fit_time[s.label] += time.perf_counter() - t0
        fb = FoldBaselines(symbols[tr], y[tr], rules.iloc[tr])
        bo = fb.predict(symbols[te], rules.iloc[te])
        for b in bl_names:
            probs[baseline_name(b)].append(bo[b].proba)
            preds[baseline_name(b)].append(bo[b].pred.astype(np.float64))
        test_idx.append(te)
        test_fold.append(np.full(len(te), fold.index))
        fold_rows.append(info)
        if progress:
            progress(k + 1, len(folds), info)
    if not test_idx:
        raise BacktestError(f"no fold could be run between {utc(start, what='start').date()} and "
                            f"{utc(end, what='end').date()}: no test rows, or fewer than {min_train_rows} "
                            "labelled training rows before each block (extend the data or lower min_train_rows)")
    idx = np.concatenate(test_idx)
    fold_of = np.concatenate(test_fold)
    all_names = list(probs)
    P = {m: np.vstack(probs[m]) for m in all_names}
    C = {m: np.concatenate(preds[m]) for m in all_names}
    actual = y[idx]
    forecast_ok = np.all([~np.isnan(P[m]).any(axis=1) for m in all_names], axis=0)
    scored = forecast_ok & ~np.isnan(actual)
    pieces = []
    for m in all_names:
        conf = np.nanmax(np.where(np.isnan(P[m]), -np.inf, P[m]), axis=1)
        conf[np.isnan(P[m]).any(axis=1)] = np.nan
        pieces.append(pd.DataFrame({
            "symbol": symbols[idx], "ts": pd.DatetimeIndex(ts_ns[idx]).tz_localize("UTC"), "fold": fold_of, "model": m,
            "p_bearish": P[m][:, 0], "p_neutral": P[m][:, 1], "p_bullish": P[m][:, 2],
            "predicted_class": C[m], "confidence": conf, "actual_class": actual, "forward_return": fwd[idx],
            "forecast": forecast_ok, "scored": scored}))
    predictions = pd.concat(pieces, ignore_index=True)

    # -- classification metrics, per asset and pooled, on the common rows
    sy = symbols[idx]
    scopes = {POOLED: scored, **{s: scored & (sy == s) for s in sorted(set(sy))}}
    metrics: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in all_names}
    for m in all_names:
        for sc, mask in scopes.items():
            if mask.sum() == 0:
                continue
            metrics[m][sc] = classification_metrics(P[m][mask], actual[mask].astype(np.int64),
                                                    C[m][mask].astype(np.int64))
    # -- paired block bootstrap of model − each baseline
    day = (ts_ns[idx].astype("datetime64[D]").astype(np.int64))
    comp_rows = []
    n_days_total = len(np.unique(day[scored]))
    block = default_block(horizon, n_days_total)
    bl_full = [baseline_name(b) for b in bl_names]
    for m in labels_all:
        hit_m = (C[m] == actual).astype(np.float64)
        for b in bl_full:
            hit_b = (C[b] == actual).astype(np.float64)
            for sc, mask in scopes.items():
                if mask.sum() == 0:
                    continue
                ll_m = row_log_loss(P[m][mask], actual[mask])
                ll_b = row_log_loss(P[b][mask], actual[mask])
                pairs = [("accuracy", hit_m[mask] - hit_b[mask]), ("log_loss", ll_m - ll_b)]
                if sc == POOLED:
                    # balanced accuracy = mean over rows of hit · N / (K · n_class): the same weights for
                    # both, so its difference is a row mean the bootstrap can resample
                    ya = actual[mask].astype(np.int64)
                    cnt = np.bincount(ya, minlength=3).astype(np.float64)
                    wrow = ya.size / (np.count_nonzero(cnt) * cnt[ya])
                    pairs.append(("balanced_accuracy", (hit_m[mask] - hit_b[mask]) * wrow))
                for metric, diff in pairs:
                    bs = block_bootstrap_diff(day[mask], diff, block=block, n_boot=n_boot, seed=seed)
                    comp_rows.append({"model": m, "baseline": b, "scope": sc, "metric": metric, **bs,
                                      "block_days": block})
    comparisons = pd.DataFrame(comp_rows, columns=["model", "baseline", "scope", "metric", "estimate", "lo", "hi",
                                                   "p_le_0", "block_days"])

    # -- trading simulation on every common forecast row
    trade: dict[str, dict[str, dict[str, float]]] = {}
    eq_pieces = []
    if px is not None:
        fr = predictions.loc[predictions["forecast"], ["model", "symbol", "ts", "predicted_class", "confidence"]]
        bh = fr[fr["model"] == all_names[0]].assign(model=BUY_AND_HOLD)
        sim = simulate_models(pd.concat([fr, bh], ignore_index=True), px, cfg=trading,
                              horizon_bars=int(horizon) * bars_per_day, bar=timeframe, funding=funding,
                              always_long=(BUY_AND_HOLD,))
        for name, per in sim.groupby("model", sort=False):
            name = str(name)
            trade[name] = {}
            for sym, g in per.groupby("symbol", sort=True):
                trade[name][str(sym)] = trading_metrics(as_arrays(g), ppy)
                eq_pieces.append(pd.DataFrame({"strategy": name, "scope": str(sym), "ts": g["earned_ts"].to_numpy(),
                                               "net": g["net"].to_numpy(), "weight": g["weight"].to_numpy()}))
            port = portfolio_returns(per)
            trade[name][PORTFOLIO] = trading_metrics(as_arrays(port), ppy)
            eq_pieces.append(pd.DataFrame({"strategy": name, "scope": PORTFOLIO, "ts": port["earned_ts"].to_numpy(),
                                           "net": port["net"].to_numpy(), "weight": port["weight"].to_numpy()}))
    equity = pd.concat(eq_pieces, ignore_index=True) if eq_pieces else pd.DataFrame(
        columns=["strategy", "scope", "ts", "net", "weight"])
    if len(equity):
        equity["ts"] = pd.to_datetime(equity["ts"], utc=True)

    config = {
        "horizon": int(horizon), "target": target, "timeframe": timeframe,
        "start": str(utc(start, what="start")), "end": str(utc(end, what="end")),
        "models": [{"label": s.label, "name": s.name, "params": s.params, "shared_from": s.shared_from}
                   for s in specs],
        "refit_days": refit_days, "window": window, "train_days": train_days, "purge_days": int(horizon),
        "embargo_days": embargo_days, "valid_fraction": valid_fraction, "min_train_rows": min_train_rows,
        "context_days": context_days, "features": feats, "baselines": bl_names, "momentum_days": momentum_days,
        "trading": {k: v for k, v in trading.__dict__.items() if k != "extra"},
        "leak_threshold": leak_threshold, "leakage": leakage, "permutation_check": permutation_check,
        "n_boot": n_boot, "seed": seed, "symbols": sorted(set(symbols.tolist())),
        "funding": funding is not None and len(funding) > 0,
    }
    dh = data_hash(f, [target, *feats])
    run_id = "bt-" + hashlib.sha256((json.dumps(config, sort_keys=True, default=str) + dh).encode()).hexdigest()[:16]
    result = WalkForwardResult(
        horizon=int(horizon), target=target, timeframe=timeframe, config=config, folds=pd.DataFrame(fold_rows),
        predictions=predictions, models=labels_all, baselines=bl_full, metrics=metrics, comparisons=comparisons,
        trading=trade, equity=equity, leakage={}, run_id=run_id, data_hash=dh,
        timings={**{f"fit_{k}": v for k, v in fit_time.items()}, "total": time.perf_counter() - t_start})
    result.leakage = leakage_checks(result, threshold=leak_threshold, tolerance=permutation_tolerance,
                                    mode=leakage)
    if len(fold_table(folds)) and log.isEnabledFor(logging.INFO):
        log.info("walk-forward %s: %d folds, %d scored rows, %.1fs", run_id, len(folds), int(scored.sum()),
                 result.timings["total"])
    return result


def _append(probs: dict[str, list[np.ndarray]], preds: dict[str, list[np.ndarray]], label: str,
            p: np.ndarray, classes: np.ndarray | None = None) -> None:
    probs[label].append(p)
    bad = np.isnan(p).any(axis=1)
    c = np.nan_to_num(p).argmax(axis=1) if classes is None else np.asarray(classes)
    cls = np.where(bad, np.nan, c.astype(np.float64))
    preds[label].append(cls)


def _oof_before(idx: list[np.ndarray], parts: dict[str, list[np.ndarray]], ts_ns: np.ndarray, y: np.ndarray,
                symbols: np.ndarray, train_end: pd.Timestamp) -> Any:
    """Earlier folds' member forecasts whose labels are known before this fold's training cut-off
    (``ts < train_end``: the same purge as the training rows), as the stacker's out-of-fold rows."""
    from entasis.models.stacking import OOF

    if not idx:
        return None
    allidx = np.concatenate(idx)
    keep = (ts_ns[allidx] < np.datetime64(train_end.tz_convert(None).to_datetime64())) & ~np.isnan(y[allidx])
    return OOF(symbols[allidx][keep], y[allidx][keep], {m: np.vstack(v)[keep] for m, v in parts.items()},
               ts_ns[allidx][keep])


# -- leakage ---------------------------------------------------------------------------------------
def leakage_checks(result: WalkForwardResult, *, threshold: float | None, tolerance: float,
                   mode: str = "raise") -> dict[str, Any]:
    """Implausibility and shuffled-label checks on pooled accuracy; raise or record per ``mode``."""
    out: dict[str, Any] = {"mode": mode, "threshold": threshold, "problems": [], "purge": "ok"}
    if mode == "off" or not result.baselines:
        return out
    best = result.best_baseline("accuracy")
    best_acc = float(result.metrics[best][POOLED]["accuracy"])
    out["best_baseline"] = best
    out["best_baseline_accuracy"] = best_acc
    problems: list[str] = []
    for m in result.models:
        acc = float(result.metrics[m][POOLED]["accuracy"])
        if m.startswith(SHUFFLED):
            out["shuffled_accuracy"] = acc
            if acc - best_acc > tolerance:
                problems.append(f"{m} (trained on shuffled labels) scores {acc:.3f} accuracy vs the best baseline "
                                f"{best} at {best_acc:.3f}: the pipeline leaks labels into features or folds")
        elif threshold is not None and acc - best_acc > threshold:
            problems.append(f"{m} scores {acc:.3f} accuracy vs the best baseline {best} at {best_acc:.3f} "
                            f"(+{acc - best_acc:.3f} > {threshold:.3f}): implausible out of sample; treat it as a "
                            "leak (a feature that sees the label, a bad purge) until proven otherwise")
    out["problems"] = problems
    if problems and mode == "raise":
        raise LeakageError("; ".join(problems))
    for p in problems:
        log.warning("leakage check: %s", p)
    return out


def scalar_metrics(result: WalkForwardResult) -> list[dict[str, Any]]:
    """Long rows (model, scope, kind, metric, value) of every numeric metric, for the metrics table."""
    rows: list[dict[str, Any]] = []
    for m, per in result.metrics.items():
        for sc, met in per.items():
            for k, v in scalar(met).items():
                rows.append({"model": m, "scope": sc, "kind": "classification", "metric": k, "value": v})
    for _, c in result.comparisons.iterrows():
        base = str(c["baseline"]).removeprefix("baseline:")
        for part in ("estimate", "lo", "hi", "p_le_0"):
            rows.append({"model": c["model"], "scope": c["scope"], "kind": "comparison",
                         "metric": f"d_{c['metric']}_vs_{base}_{part}", "value": float(c[part])})
    for strat, per in result.trading.items():
        for sc, met in per.items():
            for k, v in met.items():
                rows.append({"model": strat, "scope": sc, "kind": "trading", "metric": k, "value": float(v)})
    return rows
