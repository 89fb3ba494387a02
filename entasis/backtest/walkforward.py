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
from collections import Counter
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
from entasis.domain import POOLED, PROBA_COLUMNS, label_column, target_column
from entasis.models.base import ModelError, default_features
from entasis.models.factory import build_model
from entasis.models.stacking import OOF
from entasis.risk.metrics import periods_per_year

if TYPE_CHECKING:
    import pandas as pd

    from entasis.models.base import Model

log = logging.getLogger(__name__)

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
    dup = sorted(x for x, n in Counter(s.label for s in specs).items() if n > 1)
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


@dataclass
class _Data:
    """The frame prepared once for every fold: sorted rows, labels and time as arrays, feature-only view."""

    f: pd.DataFrame
    xf: pd.DataFrame                 # features only: what predict_proba may see
    keep_cols: list[str]
    feats: list[str]
    target: str
    horizon: int
    ts_ns: np.ndarray
    y: np.ndarray
    fwd: np.ndarray
    symbols: np.ndarray
    rules: pd.DataFrame
    context_days: int

    def frames(self, plan: _FoldPlan) -> _FoldFrames:
        """Training / validation rows, their backward-only context, and the test block with its history."""
        import pandas as pd

        fold, ts_ns = plan.fold, self.ts_ns
        fit_cols = [*self.keep_cols, self.target]
        used = np.zeros(len(self.f), dtype=bool)
        used[plan.tr_in] = True
        used[plan.tr_va] = True
        ctx_lo = np.datetime64((fold.train_start or pd.Timestamp(ts_ns.min(), tz="UTC")).tz_convert(None)
                               .to_datetime64()) - np.timedelta64(self.context_days, "D")
        hist_fit_mask = (ts_ns < np.datetime64(fold.train_end.tz_convert(None).to_datetime64())) & ~used \
            & (ts_ns >= ctx_lo)
        t_lo = np.datetime64(fold.test_start.tz_convert(None).to_datetime64())
        return _FoldFrames(
            train=self.f.loc[plan.tr_in, fit_cols],
            valid=self.f.loc[plan.tr_va, fit_cols] if len(plan.tr_va) else None,
            hist_fit=self.xf.loc[hist_fit_mask] if hist_fit_mask.any() else None,
            hist_pred=self.xf.loc[(ts_ns < t_lo) & (ts_ns >= t_lo - np.timedelta64(self.context_days, "D"))],
            test=self.xf.loc[plan.te])


@dataclass
class _FoldPlan:
    fold: Any
    info: dict[str, Any]
    te: np.ndarray
    tr: np.ndarray
    tr_in: np.ndarray
    tr_va: np.ndarray


@dataclass
class _FoldFrames:
    train: pd.DataFrame
    valid: pd.DataFrame | None
    hist_fit: pd.DataFrame | None
    hist_pred: pd.DataFrame
    test: pd.DataFrame


@dataclass
class _Fit:
    """What a fit job returns: the fitted model, its test-block probabilities, and (ensembles) raw members'."""

    model: Any
    proba: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    raw: dict[str, np.ndarray] | None = None
    oof: Any = None
    seconds: float = 0.0


def _prepare_data(f: pd.DataFrame, *, target: str, horizon: int, features: Sequence[str] | None,
                  px: pd.DataFrame | None, momentum_days: int, context_days: int) -> _Data:
    """Features chosen and checked, labels and times as arrays, the baselines' rule signals (once)."""
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
    ret_col = label_column("ret", horizon)
    keep_cols = ["symbol", "ts", *(["warmup"] if "warmup" in f.columns else []), *feats]
    return _Data(f=f, xf=f[keep_cols], keep_cols=keep_cols, feats=feats, target=target, horizon=int(horizon),
                 ts_ns=f["ts"].dt.tz_convert(None).to_numpy(dtype="datetime64[ns]"), y=_labels(f[target]),
                 fwd=_labels(f[ret_col]) if ret_col in f.columns else np.full(len(f), np.nan),
                 symbols=f["symbol"].astype(str).to_numpy(),
                 rules=rule_signals(f, target=target, horizon=horizon, prices=px, momentum_days=momentum_days),
                 context_days=context_days)


def _plan_folds(folds: Sequence[Any], d: _Data, *, min_train_rows: int, valid_fraction: float) -> list[_FoldPlan]:
    """Which rows each fold trains, validates and tests on (purge checked); skipped folds say why."""
    import pandas as pd

    warm = d.f["warmup"].to_numpy(dtype=bool) if "warmup" in d.f.columns else None
    plans = []
    for fold in folds:
        info: dict[str, Any] = {"fold": fold.index, "test_start": fold.test_start, "test_end": fold.test_end,
                                "train_start": fold.train_start, "train_end": fold.train_end}
        te = np.flatnonzero(fold.test_mask(d.ts_ns))
        tr = np.flatnonzero(fold.train_mask(d.ts_ns) & ~np.isnan(d.y))
        tr_eff = tr[~warm[tr]] if warm is not None else tr
        info.update(n_train=len(tr_eff), n_test=len(te))
        empty = np.zeros(0, dtype=np.int64)
        if len(te) == 0 or len(tr_eff) < min_train_rows:
            info["skipped"] = "no test rows" if len(te) == 0 else f"{len(tr_eff)} training rows < {min_train_rows}"
            plans.append(_FoldPlan(fold, info, te, tr, empty, empty))
            continue
        check_purge(fold, d.ts_ns[tr], d.horizon)
        inner, valid = split_valid(d.ts_ns[tr], d.horizon, valid_fraction)
        info.update(n_inner=int(inner.sum()), n_valid=int(valid.sum()),
                    train_max_ts=pd.Timestamp(d.ts_ns[tr].max(), tz="UTC"))
        plans.append(_FoldPlan(fold, info, te, tr, tr[inner], tr[valid]))
    return plans


def _needs_inner_oof(plans: Sequence[_FoldPlan], k: int, d: _Data, min_oof_rows: int) -> bool:
    """Whether fold ``k``'s stacker falls back to inner folds: fewer than ``min_oof_rows`` labelled forecasts
    of earlier folds end before its training cut-off (the count :func:`_oof_before` will hand over)."""
    earlier = [p.te for p in plans[:k] if "skipped" not in p.info]
    if not earlier:
        return True
    idx = np.concatenate(earlier)
    cut = np.datetime64(plans[k].fold.train_end.tz_convert(None).to_datetime64())
    return int(((d.ts_ns[idx] < cut) & ~np.isnan(d.y[idx])).sum()) < min_oof_rows


def _fit_job(model: Any, fr: _FoldFrames, target: str, *, ensemble: bool = False, inner_oof: bool = False,
             labels: tuple[np.ndarray, np.ndarray | None] | None = None) -> _Fit:
    """One model fit and its test-block forecast (run in this process or a worker; pure)."""
    t0 = time.perf_counter()
    train, valid = fr.train, fr.valid
    if labels is not None:   # the shuffled-label control: labels permuted by the caller
        train = train.assign(**{target: labels[0]})
        if valid is not None and labels[1] is not None:
            valid = valid.assign(**{target: labels[1]})
    with warnings.catch_warnings():
        # all-NaN feature columns (e.g. no funding data) make numpy warn inside the scalers
        warnings.simplefilter("ignore", RuntimeWarning)
        if inner_oof:
            return _Fit(None, oof=model.inner_oof(train, target, valid=valid, history=fr.hist_fit),
                        seconds=time.perf_counter() - t0)
        model.fit(train, target, valid=valid, history=fr.hist_fit)
        if ensemble:
            raw = model.member_proba(fr.test, history=fr.hist_pred, calibrated=False)
            return _Fit(model, model.combine(fr.test, raw), raw, seconds=time.perf_counter() - t0)
        p = model.predict_proba(fr.test, history=fr.hist_pred).to_numpy(dtype=np.float64)
    return _Fit(model, p, seconds=time.perf_counter() - t0)


@dataclass
class _Job:
    fold: int
    label: str
    kind: str                 # "model" (whole fit), "member" (one ensemble member), "inner_oof"
    member: str | None = None


def _fold_jobs(specs: Sequence[_Spec], plans: Sequence[_FoldPlan], d: _Data, feats: list[str],
               rng: np.random.Generator, stacked: Sequence[str]) -> list[tuple[_Job, Any]]:
    """Every fit of the run, fold by fold, as independent jobs (model object and arguments).

    An ensemble's members are separate jobs (each fit exactly as the ensemble would fit it), and so is
    the inner out-of-fold fallback of a stacked ensemble in the folds that need it; the stacker itself is
    fit afterwards in order, on forecasts of earlier folds. The shuffled-label control draws its
    permutations here, in fold order, from the run's generator."""
    jobs: list[tuple[_Job, Any]] = []
    for k, plan in enumerate(plans):
        if "skipped" in plan.info:
            continue
        for s in specs:
            if s.shared_from is not None:
                continue
            if s.name == "ensemble" and not s.shuffled:
                ens: Any = _build(s, feats)
                if s.label in stacked and ens.stacked and _needs_inner_oof(plans, k, d, ens.min_oof_rows):
                    jobs.append((_Job(k, s.label, "inner_oof"), (ens, {"inner_oof": True})))
                for m in ens.members:
                    jobs.append((_Job(k, s.label, "member", m), (ens.build_member(m), {})))
                continue
            kw: dict[str, Any] = {"ensemble": s.name == "ensemble"}
            if s.shuffled:
                ytr = d.f.loc[plan.tr_in, d.target].to_numpy()
                yva = d.f.loc[plan.tr_va, d.target].to_numpy()
                kw["labels"] = (rng.permutation(ytr), rng.permutation(yva) if len(plan.tr_va) else None)
            jobs.append((_Job(k, s.label, "model"), (_build(s, feats), kw)))
    return jobs


def _run_jobs(jobs: list[tuple[_Job, Any]], plans: Sequence[_FoldPlan], d: _Data, n_workers: int) -> Any:
    """Yield (job, result) in job order; with ``n_workers > 1`` the fits run in loky worker processes
    (each model keeps its own ``n_jobs`` threads: give n_jobs=1 and n_workers=cores)."""
    frames: dict[int, _FoldFrames] = {}

    def fr(k: int) -> _FoldFrames:
        if k not in frames:
            frames.clear()   # jobs come in fold order: one fold's frames at a time
            frames[k] = d.frames(plans[k])
        return frames[k]

    def wrap(job: _Job, fn: Any) -> Any:
        try:
            return fn()
        except Exception as e:
            fold = plans[job.fold].fold
            raise BacktestError(f"fold {fold.index} (test from {fold.test_start.date()}): model {job.label!r}"
                                f"{f' member {job.member!r}' if job.member else ''} failed: {e}") from e

    if n_workers <= 1:
        for job, (model, kw) in jobs:
            yield job, wrap(job, lambda model=model, kw=kw, job=job: _fit_job(model, fr(job.fold), d.target, **kw))
        return
    from joblib import Parallel, delayed

    calls = (delayed(_fit_job)(model, fr(job.fold), d.target, **kw) for job, (model, kw) in jobs)
    out = Parallel(n_jobs=n_workers, backend="loky", return_as="generator", pre_dispatch="2*n_jobs")(calls)
    it = iter(out)
    for job, _ in jobs:
        yield job, wrap(job, lambda: next(it))


def walk_forward(frame: pd.DataFrame, *, horizon: int, start: object, end: object,
                 models: Sequence[ModelSpec] = DEFAULT_MODELS, prices: pd.DataFrame | None = None,
                 funding: pd.DataFrame | None = None, timeframe: str = "1d", refit_days: int = 7,
                 window: Window = "expanding", train_days: int | None = None, embargo_days: int = 0,
                 valid_fraction: float = 0.15, min_train_rows: int = 200, context_days: int = 400,
                 features: Sequence[str] | None = None, baselines: Sequence[str] = BASELINES,
                 momentum_days: int = 50, trading: TradingConfig | None = None,
                 leak_threshold: float | None = 0.10, leakage: str = "raise",
                 permutation_check: bool = False, permutation_tolerance: float = 0.05,
                 n_boot: int = 2000, seed: int = 42, progress: Progress | None = None,
                 n_workers: int = 1) -> WalkForwardResult:
    """Walk forward over ``[start, end]`` with refits every ``refit_days`` (see the module docstring).

    ``leakage``: ``'raise'`` (default) raises :class:`LeakageError` when a model beats the best baseline
    by more than ``leak_threshold`` accuracy, or when the shuffled-label model (``permutation_check``)
    beats it by more than ``permutation_tolerance``; ``'warn'`` only records it; ``'off'`` skips both.
    The purge check of every fold always raises. ``n_workers``: processes fitting models in parallel
    (folds and ensemble members are independent fits; the forecasts are the same for any value).
    """
    import pandas as pd

    t_start = time.perf_counter()
    if leakage not in ("raise", "warn", "off"):
        raise BacktestError(f"leakage must be 'raise', 'warn' or 'off'; got {leakage!r}")
    unknown_bl = [b for b in baselines if b not in BASELINES]
    if unknown_bl:
        raise BacktestError(f"unknown baseline(s) {unknown_bl}; expected {', '.join(BASELINES)}")
    if min_train_rows < 1:
        raise BacktestError(f"min_train_rows must be >= 1; got {min_train_rows}")
    if n_workers < 1:
        raise BacktestError(f"n_workers must be >= 1; got {n_workers}")
    target = target_column(horizon)
    trading = trading or TradingConfig()
    f = _prepare_frame(frame, target)
    px = _prepare_prices(prices, f)
    d = _prepare_data(f, target=target, horizon=horizon, features=features, px=px, momentum_days=momentum_days,
                      context_days=context_days)
    bl_names = [b for b in baselines if b != "momentum" or px is not None]
    specs = resolve_specs(models)
    if permutation_check:
        first = specs[0]
        specs.append(_Spec(SHUFFLED + first.label, first.name, dict(first.params), shuffled=True))
    stacked = [s.label for s in specs if s.name == "ensemble" and not s.shuffled
               and s.params.get("weights", "stacked") == "stacked"]
    labels_all = [s.label for s in specs]
    for lab in stacked:  # the fixed preset and the other decision rule, from the same fit
        labels_all += [lab + FIXED_SUFFIX, lab + BASE_RATE_SUFFIX]
    folds = make_folds(start, end, horizon=horizon, refit_days=refit_days, window=window, train_days=train_days,
                       embargo_days=embargo_days)
    plans = _plan_folds(folds, d, min_train_rows=min_train_rows, valid_fraction=valid_fraction)
    fc = _Forecasts(labels_all + [baseline_name(b) for b in bl_names], stacked)
    jobs = _fold_jobs(specs, plans, d, d.feats, np.random.default_rng(seed), stacked)
    results = _run_jobs(jobs, plans, d, n_workers)
    pending: dict[tuple[int, str, str | None], _Fit] = {}
    job_iter = iter(results)
    per_fold = Counter(j.fold for j, _ in jobs)
    for k, plan in enumerate(plans):
        if "skipped" not in plan.info:
            for _ in range(per_fold[k]):
                job, res = next(job_iter)
                pending[(job.fold, job.label, job.member if job.kind == "member" else job.kind)] = res
            _combine_fold(k, plan, specs, d, fc, pending, bl_names)
            pending.clear()
        if progress:
            progress(k + 1, len(folds), plan.info)
    if not fc.test_idx:
        raise BacktestError(f"no fold could be run between {utc(start, what='start').date()} and "
                            f"{utc(end, what='end').date()}: no test rows, or fewer than {min_train_rows} "
                            "labelled training rows before each block (extend the data or lower min_train_rows)")
    predictions, P, C, idx, scored = _predictions_frame(fc, d)
    all_names = list(P)
    sy = d.symbols[idx]
    actual = d.y[idx]
    scopes = {POOLED: scored, **{s: scored & (sy == s) for s in sorted(set(sy))}}
    metrics = _score(P, C, actual, scopes)
    bl_full = [baseline_name(b) for b in bl_names]
    comparisons = _compare(labels_all, bl_full, P, C, actual, scopes, d.ts_ns[idx], horizon=horizon,
                           n_boot=n_boot, seed=seed)
    trade, equity = _trade(predictions, all_names, px, trading, funding, horizon=horizon, timeframe=timeframe,
                           ppy=periods_per_year(timeframe))
    config = _config(specs, d, bl_names, trading, funding, horizon=horizon, timeframe=timeframe, start=start,
                     end=end, refit_days=refit_days, window=window, train_days=train_days, embargo_days=embargo_days,
                     valid_fraction=valid_fraction, min_train_rows=min_train_rows, momentum_days=momentum_days,
                     leak_threshold=leak_threshold, leakage=leakage, permutation_check=permutation_check,
                     n_boot=n_boot, seed=seed)
    from entasis.models.datasets import data_hash

    dh = data_hash(d.f, [target, *d.feats])
    run_id = "bt-" + hashlib.sha256((json.dumps(config, sort_keys=True, default=str) + dh).encode()).hexdigest()[:16]
    result = WalkForwardResult(
        horizon=int(horizon), target=target, timeframe=timeframe, config=config,
        folds=pd.DataFrame([p.info for p in plans]), predictions=predictions, models=labels_all,
        baselines=bl_full, metrics=metrics, comparisons=comparisons, trading=trade, equity=equity, leakage={},
        run_id=run_id, data_hash=dh,
        timings={**{f"fit_{k}": v for k, v in fc.fit_time.items()}, "total": time.perf_counter() - t_start})
    result.leakage = leakage_checks(result, threshold=leak_threshold, tolerance=permutation_tolerance,
                                    mode=leakage)
    if len(fold_table(folds)) and log.isEnabledFor(logging.INFO):
        log.info("walk-forward %s: %d folds, %d scored rows, %.1fs", run_id, len(folds), int(scored.sum()),
                 result.timings["total"])
    return result


def _config(specs: Sequence[_Spec], d: _Data, bl_names: Sequence[str], trading: TradingConfig,
            funding: pd.DataFrame | None, *, horizon: int, timeframe: str, start: object, end: object,
            **params: Any) -> dict[str, Any]:
    """What defines the run (hashed into its id with the data); ``n_workers`` is not part of it: the
    forecasts do not depend on it."""
    return {
        "horizon": int(horizon), "target": d.target, "timeframe": timeframe,
        "start": str(utc(start, what="start")), "end": str(utc(end, what="end")),
        "models": [{"label": s.label, "name": s.name, "params": s.params, "shared_from": s.shared_from}
                   for s in specs],
        "refit_days": params["refit_days"], "window": params["window"], "train_days": params["train_days"],
        "purge_days": int(horizon), "embargo_days": params["embargo_days"],
        "valid_fraction": params["valid_fraction"], "min_train_rows": params["min_train_rows"],
        "context_days": d.context_days, "features": d.feats, "baselines": list(bl_names),
        "momentum_days": params["momentum_days"],
        "trading": {k: v for k, v in trading.__dict__.items() if k != "extra"},
        "leak_threshold": params["leak_threshold"], "leakage": params["leakage"],
        "permutation_check": params["permutation_check"], "n_boot": params["n_boot"], "seed": params["seed"],
        "symbols": sorted(set(d.symbols.tolist())), "funding": funding is not None and len(funding) > 0,
    }


class _Forecasts:
    """Every fold's forecasts per model and baseline, and the stacked ensembles' out-of-fold rows."""

    def __init__(self, names: Sequence[str], stacked: Sequence[str]) -> None:
        self.probs: dict[str, list[np.ndarray]] = {s: [] for s in names}
        self.preds: dict[str, list[np.ndarray]] = {s: [] for s in names}
        self.fit_time: dict[str, float] = {s: 0.0 for s in names if not is_baseline(s)}
        self.test_idx: list[np.ndarray] = []
        self.test_fold: list[np.ndarray] = []
        # members' out-of-sample forecasts of earlier folds: the stacker's out-of-fold rows
        self.oof_idx: dict[str, list[np.ndarray]] = {lab: [] for lab in stacked}
        self.oof_p: dict[str, dict[str, list[np.ndarray]]] = {lab: {} for lab in stacked}

    def add(self, label: str, p: np.ndarray, classes: np.ndarray | None = None) -> None:
        _append(self.probs, self.preds, label, p, classes)


def _combine_fold(k: int, plan: _FoldPlan, specs: Sequence[_Spec], d: _Data, fc: _Forecasts,
                  fits: Mapping[tuple[int, str, str | None], _Fit], bl_names: Sequence[str]) -> None:
    """One fold, in order: ensembles assembled from their fitted members (stacker on earlier folds'
    forecasts), each model's forecasts kept, baselines refit on the same training rows."""
    fold, info, te = plan.fold, plan.info, plan.te
    fr: _FoldFrames | None = None
    fitted: dict[str, Any] = {}
    raw_members: dict[str, dict[str, np.ndarray]] = {}
    raw: dict[str, np.ndarray] | None
    for s in specs:
        if s.shared_from is not None:
            continue
        t0 = time.perf_counter()
        if s.name == "ensemble" and not s.shuffled:
            fr = fr or d.frames(plan)
            ens: Any = _build(s, d.feats)
            members = {m: fits[(k, s.label, m)] for m in ens.members}
            inner = fits.get((k, s.label, "inner_oof"))
            oof = inner.oof if inner is not None else None
            if s.label in fc.oof_idx and oof is None:
                oof = _oof_before(fc.oof_idx[s.label], fc.oof_p[s.label], d.ts_ns, d.y, d.symbols, fold.train_end)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    ens.fit(fr.train, d.target, valid=fr.valid, history=fr.hist_fit, oof=oof,
                            prefit={m: f.model for m, f in members.items()})
                    raw = {m: members[m].proba for m in ens.members}
                    p = ens.combine(fr.test, raw)
            except Exception as e:
                raise BacktestError(f"fold {fold.index} (test from {fold.test_start.date()}): model {s.label!r} "
                                    f"failed: {e}") from e
            if inner is not None and ens.oof_source == "given":
                ens.oof_source = f"inner:{ens.oof_folds}"
            fc.fit_time[s.label] += sum(f.seconds for f in members.values()) + (inner.seconds if inner else 0.0)
        else:
            res = fits[(k, s.label, "model")]
            ens, p, raw = res.model, res.proba, res.raw
            fc.fit_time[s.label] += res.seconds
        fitted[s.label] = ens
        if s.name == "ensemble":
            assert raw is not None
            raw_members[s.label] = raw
            fc.add(s.label, p, ens.classes(p))
            if s.label in fc.oof_idx:
                fr = fr or d.frames(plan)
                fc.add(s.label + FIXED_SUFFIX, ens.preset_proba(fr.test, parts=raw))
                fc.add(s.label + BASE_RATE_SUFFIX, p, ens.classes(p, "base_rate"))
                fc.oof_idx[s.label].append(te)
                for mname, mp in raw.items():
                    fc.oof_p[s.label].setdefault(mname, []).append(mp)
                for mname, w in ens.stacked_weights().items():
                    info[f"w[{s.label}].{mname}"] = round(w, 4)
                info[f"oof[{s.label}]"] = ens.oof_source
        else:
            fc.add(s.label, p)
        fc.fit_time[s.label] += time.perf_counter() - t0
    for s in specs:
        if s.shared_from is None:
            continue
        t0 = time.perf_counter()
        if s.shared_from in raw_members:
            p = raw_members[s.shared_from][s.name]
        else:
            fr = fr or d.frames(plan)
            p = fitted[s.shared_from].models[s.name].predict_proba(fr.test, history=fr.hist_pred).to_numpy(
                dtype=np.float64)
        fc.add(s.label, p)
        fc.fit_time[s.label] += time.perf_counter() - t0
    fb = FoldBaselines(d.symbols[plan.tr], d.y[plan.tr], d.rules.iloc[plan.tr])
    bo = fb.predict(d.symbols[te], d.rules.iloc[te])
    for b in bl_names:
        fc.probs[baseline_name(b)].append(bo[b].proba)
        fc.preds[baseline_name(b)].append(bo[b].pred.astype(np.float64))
    fc.test_idx.append(te)
    fc.test_fold.append(np.full(len(te), fold.index))


def _predictions_frame(fc: _Forecasts, d: _Data) -> tuple[pd.DataFrame, dict[str, np.ndarray],
                                                           dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Every forecast as long rows; ``scored`` marks the common labelled rows every model forecast."""
    import pandas as pd

    idx = np.concatenate(fc.test_idx)
    fold_of = np.concatenate(fc.test_fold)
    P = {m: np.vstack(fc.probs[m]) for m in fc.probs}
    C = {m: np.concatenate(fc.preds[m]) for m in fc.preds}
    actual = d.y[idx]
    forecast_ok = np.all([~np.isnan(P[m]).any(axis=1) for m in P], axis=0)
    scored = forecast_ok & ~np.isnan(actual)
    ts = pd.DatetimeIndex(d.ts_ns[idx]).tz_localize("UTC")
    pieces = []
    for m in P:
        conf = np.nanmax(np.where(np.isnan(P[m]), -np.inf, P[m]), axis=1)
        conf[np.isnan(P[m]).any(axis=1)] = np.nan
        pieces.append(pd.DataFrame({
            "symbol": d.symbols[idx], "ts": ts, "fold": fold_of, "model": m,
            **{c: P[m][:, j] for j, c in enumerate(PROBA_COLUMNS)},
            "predicted_class": C[m], "confidence": conf, "actual_class": actual, "forward_return": d.fwd[idx],
            "forecast": forecast_ok, "scored": scored}))
    return pd.concat(pieces, ignore_index=True), P, C, idx, scored


def _score(P: Mapping[str, np.ndarray], C: Mapping[str, np.ndarray], actual: np.ndarray,
           scopes: Mapping[str, np.ndarray]) -> dict[str, dict[str, dict[str, Any]]]:
    """Classification metrics per model and baseline, pooled and per asset, on the common rows."""
    metrics: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in P}
    for m in P:
        for sc, mask in scopes.items():
            if mask.sum() == 0:
                continue
            metrics[m][sc] = classification_metrics(P[m][mask], actual[mask].astype(np.int64),
                                                    C[m][mask].astype(np.int64))
    return metrics


def _compare(models: Sequence[str], baselines: Sequence[str], P: Mapping[str, np.ndarray],
             C: Mapping[str, np.ndarray], actual: np.ndarray, scopes: Mapping[str, np.ndarray], ts_ns: np.ndarray,
             *, horizon: int, n_boot: int, seed: int) -> pd.DataFrame:
    """Paired moving-block bootstrap of model − each baseline (accuracy, log-loss, balanced accuracy)."""
    import pandas as pd

    day = ts_ns.astype("datetime64[D]").astype(np.int64)
    block = default_block(horizon, len(np.unique(day[scopes[POOLED]])))
    rows = []
    for m in models:
        hit_m = (C[m] == actual).astype(np.float64)
        for b in baselines:
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
                    rows.append({"model": m, "baseline": b, "scope": sc, "metric": metric, **bs, "block_days": block})
    return pd.DataFrame(rows, columns=["model", "baseline", "scope", "metric", "estimate", "lo", "hi", "p_le_0",
                                       "block_days"])


def _trade(predictions: pd.DataFrame, names: Sequence[str], px: pd.DataFrame | None, trading: TradingConfig,
           funding: pd.DataFrame | None, *, horizon: int, timeframe: str, ppy: float
           ) -> tuple[dict[str, dict[str, dict[str, float]]], pd.DataFrame]:
    """The trading simulation on every common forecast row (and buy-and-hold beside it)."""
    import pandas as pd

    trade: dict[str, dict[str, dict[str, float]]] = {}
    eq_pieces = []
    if px is not None:
        bars_per_day = max(1, int(pd.Timedelta(days=1) / pd.Timedelta(timeframe)))
        fr = predictions.loc[predictions["forecast"], ["model", "symbol", "ts", "predicted_class", "confidence"]]
        bh = fr[fr["model"] == names[0]].assign(model=BUY_AND_HOLD)
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
    return trade, equity


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
