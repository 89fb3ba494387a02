"""Train, evaluate beside baselines, track in MLflow and register: the library entry the DAG calls.

``train_and_register(conn_or_frame, horizons=..., assets=..., models=...)`` trains, per horizon, one
pooled ensemble across the assets (``train.pooled``) or one per asset, on a purged / embargoed
70/15/15 time split of features.bars. Every unit gets one MLflow run with params, per-epoch losses,
validation and test metrics of the ensemble, of each member and of the naive baselines, confusion
matrices, calibration error, the feature list, a hash of the training snapshot and the code version;
the ensemble (with its scalers, feature spec and the volatility model) is registered as a pyfunc
version with the alias ``@challenger`` and honesty tags (test accuracy / log-loss, best baseline,
``beats_baseline``), then retention prunes old versions.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.config import Settings, get_settings
from entasis.domain import POOLED, PROBA_COLUMNS, target_column
from entasis.features.store import load_bars
from entasis.models.base import ModelError, default_features, label_array
from entasis.models.ensemble import EnsembleModel
from entasis.models.scoring import Baselines, classification_metrics, compare, scalar_metrics
from entasis.models.volatility import VolatilityModel, evaluate_vol
from entasis.registry import models as reg
from entasis.registry.tracking import client, code_version, ensure_experiment, package_version

if TYPE_CHECKING:
    import pandas as pd

    from entasis.models.datasets import Split
    from entasis.models.ensemble import EnsembleModel

log = logging.getLogger(__name__)
Progress = Callable[[str, dict[str, Any]], None]
SUSPICIOUS_EDGE = 0.05


def is_edge_suspicious(comparison: Mapping[str, Any]) -> bool:
    """True when the test accuracy beats the best naive baseline by more than ``SUSPICIOUS_EDGE``
    (strictly): on real data a competent model wins by about a point, so far more is a leak (a feature
    that sees the label) until proven otherwise. The promotion rule refuses such a challenger."""
    edge = comparison.get("accuracy_edge")
    try:
        return edge is not None and float(edge) > SUSPICIOUS_EDGE
    except (TypeError, ValueError):
        return False


@dataclass
class TrainResult:
    """What one (asset or pooled, horizon) training produced."""

    asset: str | None
    horizon: int
    model_name: str
    run_id: str | None
    version: str | None
    members: list[str]
    split: dict[str, Any]
    metrics: dict[str, dict[str, Any]]                       # split -> ensemble metrics
    member_metrics: dict[str, dict[str, dict[str, Any]]]     # member -> split -> metrics
    baselines: dict[str, dict[str, dict[str, Any]]]          # split -> baseline -> metrics
    comparison: dict[str, Any]
    vol: dict[str, dict[str, float]] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    data_hash: str = ""
    duration_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """A small JSON-safe digest (for Airflow XCom and logs): identity, test figures, the comparison."""
        test = self.metrics.get("test", {})
        return {"model_name": self.model_name, "asset": self.asset, "horizon": self.horizon,
                "version": self.version, "run_id": self.run_id,
                "test_accuracy": test.get("accuracy"), "test_log_loss": test.get("log_loss"),
                "test_ece": test.get("ece"), "comparison": dict(self.comparison),
                "vol_rmse": {k: v.get("rmse") for k, v in self.vol.items()},
                "duration_s": round(self.duration_s, 1)}


def member_params_from_settings(settings: Settings, overrides: Mapping[str, Mapping[str, Any]] | None = None
                                ) -> dict[str, dict[str, Any]]:
    """LSTM window and epochs from ``train`` settings, then any explicit per-member overrides."""
    out: dict[str, dict[str, Any]] = {"lstm": {"seq_len": settings.train.seq_len,
                                               "max_epochs": settings.train.max_epochs}}
    for member, params in settings.train.member_params.items():
        out.setdefault(member, {}).update(params)
    for k, v in (overrides or {}).items():
        out.setdefault(k, {}).update(v)
    return out


def load_frame(conn_or_frame: Any, *, assets: Sequence[str] | None, timeframe: str,
               exchange: str | None, settings: Settings) -> pd.DataFrame:
    """features.bars rows for the request (from a DataFrame or a database connection), one exchange."""
    import pandas as pd

    if isinstance(conn_or_frame, pd.DataFrame):
        frame = conn_or_frame
    else:
        frame = load_bars(conn_or_frame, exchange=exchange, symbols=list(assets) if assets else None,
                          timeframe=timeframe)
    if "timeframe" in frame.columns:
        frame = frame[frame["timeframe"] == timeframe]
    if assets:
        missing = sorted(set(assets) - set(frame["symbol"].unique()))
        if missing:
            raise ModelError(f"no features.bars rows for asset(s) {missing} on timeframe {timeframe}")
        frame = frame[frame["symbol"].isin(list(assets))]
    if "exchange" in frame.columns:
        exchanges = sorted(frame["exchange"].dropna().unique())
        if exchange is not None:
            frame = frame[frame["exchange"] == exchange]
        elif len(exchanges) > 1:
            pick = settings.universe.exchange
            if pick not in exchanges:
                raise ModelError(f"features.bars holds several exchanges {exchanges}; pass exchange=")
            frame = frame[frame["exchange"] == pick]
    if frame.empty:
        raise ModelError(f"no features.bars rows for timeframe {timeframe}"
                         + (f", exchange {exchange}" if exchange else "") + (f", assets {list(assets)}" if assets
                                                                             else ""))
    return frame.reset_index(drop=True)


def train_and_register(conn_or_frame: Any, *, horizons: Sequence[int] | None = None,
                       assets: Sequence[str] | None = None, models: Sequence[str] | None = None,
                       timeframe: str = "1d", exchange: str | None = None, pooled: bool | None = None,
                       weights: str | Mapping[str, float] = "default",
                       member_params: Mapping[str, Mapping[str, Any]] | None = None,
                       features: Sequence[str] | None = None, fractions: Sequence[float] = (0.7, 0.15, 0.15),
                       embargo_days: int | None = None, vol: bool = True, vol_kind: str = "lgbm",
                       vol_params: Mapping[str, Any] | None = None, register: bool = True,
                       settings: Settings | None = None,
                       progress: Progress | None = None) -> list[TrainResult]:
    """Train one ensemble per (pooled or asset, horizon), log to MLflow, register as ``@challenger``.

    ``member_params`` overrides member constructor parameters (``{"lgbm": {"n_estimators": 200}}``);
    the LSTM's ``seq_len`` / ``max_epochs`` default to ``train`` settings. The volatility model takes
    ``vol_params`` (default: the LightGBM member's size and thread settings, or the LSTM's for
    ``vol_kind="lstm"``).
    """
    s = settings or get_settings()
    hs = sorted({int(h) for h in (horizons or s.labels.horizons)})
    members = list(models or s.train.models)
    is_pooled = s.train.pooled if pooled is None else pooled
    frame = load_frame(conn_or_frame, assets=assets, timeframe=timeframe, exchange=exchange, settings=s)
    missing = [target_column(h) for h in hs if target_column(h) not in frame.columns]
    if missing:
        raise ModelError(f"features.bars lacks label column(s) {missing}; build features for these horizons")
    feats = list(features or default_features(frame))
    empty = [c for c in feats if c not in frame.columns or frame[c].isna().all()]
    if empty and not features:
        log.info("leaving out feature(s) with no data: %s", ", ".join(empty))
        feats = [c for c in feats if c not in empty]
    if not feats:
        raise ModelError("no usable feature columns (all missing or entirely NULL)")
    all_params = member_params_from_settings(s, member_params)
    params = {k: v for k, v in all_params.items() if k in members}
    units: list[tuple[str | None, pd.DataFrame]]
    if is_pooled:
        units = [(None, frame)]
    else:
        units = [(str(sym), g.reset_index(drop=True)) for sym, g in frame.groupby("symbol", sort=True)]
    results = []
    for h in hs:
        for asset, unit in units:
            results.append(_train_unit(unit, asset=asset, horizon=h, members=members, weights=weights,
                                       member_params=params, features=feats, fractions=fractions,
                                       embargo_days=embargo_days, vol=vol, vol_kind=vol_kind,
                                       vol_params=_vol_params(vol_kind, all_params, vol_params),
                                       register=register, timeframe=timeframe, settings=s, progress=progress))
    return results


def _vol_params(kind: str, members: Mapping[str, Mapping[str, Any]], given: Mapping[str, Any] | None
                ) -> dict[str, Any]:
    if given is not None:
        return dict(given)
    if kind == "lstm":
        return {"lstm_params": dict(members.get("lstm", {}))}
    lgbm = members.get("lgbm", {})
    return {k: lgbm[k] for k in ("n_estimators", "num_leaves", "learning_rate", "n_jobs", "lags", "roll")
            if k in lgbm}


def _eval_split(ens: EnsembleModel, part: pd.DataFrame, sp: Split, target: str, baselines: Any
                ) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, dict[str, Any]], np.ndarray]:
    """Ensemble, member and baseline metrics on the rows that are labelled and eligible."""
    proba = ens.predict_proba(part, history=sp.frame).to_numpy()
    members = ens.member_proba(part, history=sp.frame)
    y = label_array(part[target])
    ok = ~np.isnan(y) & ~np.isnan(proba).any(axis=1)
    yv = y[ok].astype(int)
    m = classification_metrics(proba[ok], yv)
    mm = {name: classification_metrics(p[ok], yv) for name, p in members.items()}

    bp = baselines.predict_full(part[ok])
    bm = {name: classification_metrics(o.proba, yv, o.pred) for name, o in bp.items()}
    return m, mm, bm, ok


def _train_unit(frame: pd.DataFrame, *, asset: str | None, horizon: int, members: list[str],
                weights: str | Mapping[str, float], member_params: Mapping[str, Mapping[str, Any]],
                features: list[str], fractions: Sequence[float], embargo_days: int | None, vol: bool,
                vol_kind: str, vol_params: dict[str, Any], register: bool, timeframe: str, settings: Settings,
                progress: Progress | None) -> TrainResult:
    from entasis.models.datasets import data_hash, split_frame
    from entasis.registry.models import model_name

    t0 = time.perf_counter()
    name = model_name(asset, horizon)
    target = target_column(horizon)
    emit = progress or (lambda event, info: None)
    emit("unit_start", {"asset": asset, "horizon": horizon, "name": name, "members": members})
    sp = split_frame(frame, horizon, fractions=fractions, embargo_days=embargo_days)
    ens = EnsembleModel(members=members, weights=weights, member_params=member_params, features=features,
                        pooled=asset is None, seed=settings.train.seed)
    ens.fit(sp.train, target, valid=sp.valid, history=sp.frame,
            on_member=lambda m, st: emit(f"member_{st}", {"name": name, "member": m}))
    base = Baselines.fit(sp.train, target, horizon, frame=sp.frame)
    metrics: dict[str, dict[str, Any]] = {}
    member_metrics: dict[str, dict[str, dict[str, Any]]] = {}
    baselines: dict[str, dict[str, dict[str, Any]]] = {}
    for split_name in ("valid", "test"):
        m, mm, bm, _ = _eval_split(ens, getattr(sp, split_name), sp, target, base)
        metrics[split_name] = m
        baselines[split_name] = bm
        for k, v in mm.items():
            member_metrics.setdefault(k, {})[split_name] = v
    comparison = compare(metrics["test"], baselines["test"])
    # On real data a competent model beats the best naive baseline by about a point; far more is a leak
    # until proven otherwise, so the registry carries the flag for the promotion rule to see.
    comparison["edge_suspicious"] = is_edge_suspicious(comparison)
    if comparison["edge_suspicious"]:
        log.warning("%s: test accuracy beats the best baseline by %.1f points; check for leakage before promoting",
                    name, 100 * comparison["accuracy_edge"])
    vol_model, vol_metrics = None, {}
    vt = f"y_vol_{horizon}d"
    if vol and vt in frame.columns and frame[vt].notna().any():
        emit("member_start", {"name": name, "member": f"vol-{vol_kind}"})

        vol_model = VolatilityModel(kind=vol_kind, features=features, pooled=asset is None,
                                    seed=settings.train.seed, **vol_params)
        vol_model.fit(sp.train, vt, valid=sp.valid, history=sp.frame)
        vol_metrics = evaluate_vol(vol_model, sp.frame, sp.train, sp.test, horizon)
        emit("member_done", {"name": name, "member": f"vol-{vol_kind}"})
    dhash = data_hash(sp.train, [*features, target])
    result = TrainResult(asset=asset, horizon=horizon, model_name=name, run_id=None, version=None,
                         members=members, split=sp.describe(), metrics=metrics, member_metrics=member_metrics,
                         baselines=baselines, comparison=comparison, vol=vol_metrics, weights=dict(ens.weights),
                         data_hash=dhash)
    _track(result, ens, vol_model, sp, features=features, timeframe=timeframe, register=register,
           settings=settings, weights_config=weights)
    result.duration_s = time.perf_counter() - t0
    emit("unit_done", {"name": name, "result": result})
    return result


def _track(result: TrainResult, ens: EnsembleModel, vol_model: Any, sp: Split, *, features: list[str],
           timeframe: str, register: bool, settings: Settings, weights_config: Any) -> None:
    """One MLflow run: params, per-epoch losses, metrics, artifacts; then register and tag the version."""
    import mlflow
    from mlflow.entities import Metric

    from entasis.registry.pyfunc import log_pyfunc

    exp = ensure_experiment(settings=settings)
    c = client(settings)
    cv = code_version()
    asset_tag = result.asset or POOLED
    with mlflow.start_run(experiment_id=exp, run_name=f"{result.model_name}") as run:
        result.run_id = run.info.run_id
        params: dict[str, Any] = {
            "asset": asset_tag, "horizon": result.horizon, "timeframe": timeframe, "members": ",".join(ens.members),
            "weights_config": json.dumps(weights_config) if not isinstance(weights_config, str) else weights_config,
            "calibrate": ens.calibrate, "pooled": ens.pooled, "seed": ens.seed, "n_features": len(features),
            "min_history": ens.min_history, **{f"split.{k}": v for k, v in result.split.items()},
        }
        for mname, model in ens.models.items():
            for k, v in model.get_params().items():
                if k != "features":
                    params[f"{mname}.{k}"] = json.dumps(v) if isinstance(v, list | dict) else v
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        run_tags = {"entasis.asset": asset_tag, "entasis.horizon": str(result.horizon),
                    "entasis.data_hash": result.data_hash, "entasis.code_version": cv,
                    "entasis.package_version": package_version()}
        if len(cv) == 40:
            run_tags["mlflow.source.git.commit"] = cv
        mlflow.set_tags(run_tags)
        now = int(time.time() * 1000)
        epoch_metrics = [Metric(key.replace(".", "_"), float(v), now, step)
                         for key, series in ens.history_.items() if key.endswith(("_loss", ".lr"))
                         for step, v in enumerate(series) if np.isfinite(v)]
        for i in range(0, len(epoch_metrics), 900):
            c.log_batch(run.info.run_id, metrics=epoch_metrics[i:i + 900])
        flat: dict[str, float] = {}
        for split_name, m in result.metrics.items():
            flat.update({f"{split_name}_{k}": v for k, v in scalar_metrics(m).items()})
        for mname, per in result.member_metrics.items():
            for split_name, m in per.items():
                flat.update({f"{mname}_{split_name}_{k}": v for k, v in scalar_metrics(m).items()
                             if k in ("accuracy", "log_loss", "ece", "f1_macro")})
        for split_name, per in result.baselines.items():
            for bname, m in per.items():
                flat.update({f"baseline_{bname}_{split_name}_{k}": v for k, v in scalar_metrics(m).items()
                             if k in ("accuracy", "log_loss", "ece", "f1_macro")})
        for who, m in result.vol.items():
            flat.update({f"vol_{who}_{k}": v for k, v in m.items() if np.isfinite(v)})
        flat.update({f"weight_{k}": v for k, v in ens.weights.items()})
        flat.update({f"stack_weight_{k.replace(':', '_')}": v for k, v in ens.stacked_weights().items()})
        flat.update({f"temperature_{k}": v for k, v in ens.temperatures.items()})
        mlflow.log_metrics(flat)
        mlflow.log_dict({"features": features}, "features.json")
        mlflow.log_dict({s: m.get("confusion") for s, m in result.metrics.items()}, "confusion_matrix.json")
        mlflow.log_dict({"ensemble": result.metrics, "members": result.member_metrics,
                         "baselines": result.baselines, "comparison": result.comparison, "vol": result.vol,
                         "split": result.split, "class_columns": list(PROBA_COLUMNS)}, "evaluation.json")
        if not register:
            return
        spec = {"horizon": result.horizon, "asset": asset_tag, "timeframe": timeframe, "run_id": run.info.run_id,
                "data_hash": result.data_hash, "code_version": cv}
        info = log_pyfunc(ens, spec=spec, vol=vol_model, registered_model_name=result.model_name)
    version = str(info.registered_model_version)
    result.version = version
    tags: dict[str, Any] = {**result.comparison, "horizon": result.horizon, "asset": asset_tag,
                            "timeframe": timeframe, "run_id": result.run_id, "data_hash": result.data_hash,
                            "code_version": cv, "members": ",".join(ens.members),
                            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
                            "valid_accuracy": round(float(result.metrics["valid"].get("accuracy", np.nan)), 6),
                            "test_ece": round(float(result.metrics["test"].get("ece", np.nan)), 6)}
    for who in ("model", "naive", "garch"):
        rmse = result.vol.get(who, {}).get("rmse")
        if rmse is not None:
            tags[f"vol_{who}_rmse"] = round(float(rmse), 6)
    reg.set_version_tags(result.model_name, version, tags, settings)
    reg.set_alias(result.model_name, reg.CHALLENGER, version, settings)
    reg.apply_retention(result.model_name, settings=settings)
