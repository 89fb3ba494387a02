"""One function per Airflow task: read the configured universe, call the stage, return a JSON summary.

DAG files stay thin (each task calls one function here) and every time here is passed in by the
caller, normally the end of the DAG run's data interval; nothing reads the wall clock. The
summaries are small dicts so they travel as XCom and show in the task log.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any

from entasis.backtest.metrics import scalar
from entasis.backtest.promotion import evaluate_and_promote, spec_of_version
from entasis.backtest.runner import Inputs, blank_unknown_labels, load_db_inputs, run_walk_forward
from entasis.backtest.store import record_backtest
from entasis.backtest.walkforward import WalkForwardResult
from entasis.collect.candles import collect_candles
from entasis.collect.derivatives import collect_funding, collect_open_interest
from entasis.collect.options import collect_options
from entasis.config import get_settings
from entasis.deploy.production import ProductionConfigError, require
from entasis.domain import POOLED, target_column, utc_datetime
from entasis.features.build import run_features_job
from entasis.features.store import load_bars
from entasis.models.train import train_and_register
from entasis.monitor.checks import run_checks
from entasis.monitor.drift_log import record_feature_drift
from entasis.monitor.rollback import check_live_accuracy_and_rollback
from entasis.publish.predictions import publish_predictions
from entasis.publish.reconcile import reconcile_outcomes
from entasis.registry import models as reg
from entasis.registry.tracking import code_version, configure, ensure_experiment, package_version
from entasis.store.db import connect

log = logging.getLogger(__name__)


ML = ("database", "mlflow", "artifacts")


def _use_airflow_store(*needs: str) -> None:
    """Inside Airflow, prefer the ``entasis_db`` connection when one is configured; then, with
    ``ENTASIS_DEPLOYMENT=production``, fail at once (no retries) when ``needs`` (default: the
    database) lack a shared server, naming the missing setting, instead of falling back to local state."""
    use_airflow_connection: Callable[..., bool] | None
    try:
        from entasis_airflow.hooks import use_airflow_connection
    except ImportError:  # not running under Airflow (CLI, tests)
        use_airflow_connection = None
    if use_airflow_connection is not None:
        use_airflow_connection()
    try:
        require(*(needs or ("database",)))
    except ProductionConfigError as e:
        if use_airflow_connection is None:
            raise
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(e)) from e  # a configuration error: retrying cannot fix it


def _require(value: datetime | None, what: str) -> datetime:
    if value is None:
        raise ValueError(f"{what} is required (the DAG passes its data interval); refusing to guess the time")
    return value


def _series_summary(results: list[Any]) -> dict[str, Any]:
    rows = []
    for r in results:
        rows.append({
            "series": f"{r.key.exchange} {r.key.symbol} {r.key.timeframe}".strip(),
            "new": r.new, "updated": r.updated, "quarantined": r.quarantined,
            "gaps_new": r.gaps_new, "gaps_resolved": r.gaps_resolved, "status": r.status,
        })
    total = {k: sum(int(x[k]) for x in rows) for k in ("new", "updated", "quarantined", "gaps_new")}
    log.info("collected %s", total)
    return {"series": rows, **total}


def ingest_candles(*, until: datetime | None) -> dict[str, Any]:
    """Spot and perpetual candles for every configured symbol and timeframe, closed bars before ``until``.

    The perpetuals' candles (``universe.perp_symbols`` on ``universe.perp_exchange``) are what
    ``perp_basis`` (perp close / spot close - 1) is computed from.
    """
    _use_airflow_store()
    end = _require(until, "until")
    u = get_settings().universe
    # a series never collected starts at universe.backfill_since; the others continue from their watermark
    results: list[Any] = []
    for tf in u.timeframes:
        results += collect_candles(u.exchange, u.symbols, tf, until=end)
        if u.perp_symbols:
            results += collect_candles(u.perp_exchange, u.perp_symbols, tf, until=end)
    return _series_summary(results)


def ingest_funding(*, until: datetime | None) -> dict[str, Any]:
    """Funding-rate history of the configured perpetuals settled before ``until``."""
    _use_airflow_store()
    end = _require(until, "until")
    u = get_settings().universe
    return _series_summary(collect_funding(u.perp_exchange, u.perp_symbols, until=end))


def ingest_open_interest(*, until: datetime | None) -> dict[str, Any]:
    """Hourly open interest of the configured perpetuals (venues keep only recent history)."""
    _use_airflow_store()
    end = _require(until, "until")
    u = get_settings().universe
    return _series_summary(collect_open_interest(u.perp_exchange, u.perp_symbols, "1h", until=end))


def ingest_options(*, now: datetime | None) -> dict[str, Any]:
    """Snapshot every listed option per configured currency at ``now``, then fit and store its surface."""
    from entasis.options.store import build_and_store_surface

    _use_airflow_store()
    at = _require(now, "now")
    currencies = get_settings().universe.option_currencies
    out = _series_summary(collect_options(currencies, now=at))
    expiries = {}
    with connect() as conn:
        for cur in currencies:
            expiries[cur] = build_and_store_surface(conn, cur)
    out["surface_expiries"] = expiries
    return out


def _plain(obj: Any) -> Any:
    """Dataclasses and timestamps into JSON-friendly values for XCom."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return _plain(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, datetime):
        return obj.isoformat()
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _plain(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # XCom is JSON, which has no NaN/inf: a NaN in a summary failed the whole task
    return obj


def publish(*, as_of: datetime | None) -> dict[str, Any]:
    """Predictions of every @champion for the latest bar complete at ``as_of`` (the run's logical time)."""
    _use_airflow_store(*ML)
    at = _require(as_of, "as_of")
    with connect() as conn:
        summary = publish_predictions(conn, as_of=at, timeframe=get_settings().universe.model_timeframe)
    out = summary.as_dict()
    log.info("published %s", out)
    return _plain(out)


def reconcile(*, now: datetime | None) -> int:
    """Fill outcomes of predictions whose target date has passed by ``now``."""
    _use_airflow_store()
    at = _require(now, "now")
    with connect() as conn:
        n = reconcile_outcomes(conn, now=at, timeframe=get_settings().universe.model_timeframe)
    log.info("reconciled %d prediction(s)", n)
    return n


def monitor(*, now: datetime | None) -> dict[str, Any]:
    """Live accuracy, drift and stale data as of ``now``; rolls back failing champions; says if a retrain is due."""
    _use_airflow_store(*ML)
    at = _require(now, "now")
    s = get_settings()
    with connect() as conn:
        report = run_checks(conn, at, s.monitor, timeframe=s.universe.model_timeframe)
        record_feature_drift(conn, at, s.universe.model_timeframe, report.feature_psi)
        champions = conn.execute("SELECT DISTINCT asset, horizon FROM ml.champions").fetchall()
    for asset, horizon in champions:
        d = check_live_accuracy_and_rollback(
            None if asset == POOLED else asset, int(horizon), threshold=s.monitor.min_live_accuracy,
            window_days=s.monitor.live_window_days, min_predictions=s.monitor.min_reconciled, now=at,
        )
        if d.action == "rollback":
            report.rollbacks.append({"model": d.model_name, "to_version": str(d.new_champion_version),
                                     "reason": d.reason})
            report.reasons.append(f"rolled back {d.model_name}: {d.reason}")
    for r in report.reasons:
        log.warning("monitor: %s", r)
    out = report.to_dict()
    log.info("monitor: retrain=%s", out["retrain"])
    return _plain(out)


def build_features(*, full: bool = False) -> dict[str, Any]:
    """Bring features.bars up to date with the Spark job (incremental from the feature watermark).

    The same entry function ``spark_jobs/build_features.py`` runs, so the DAG runs that job.
    """
    _use_airflow_store()
    # only the configured timeframes: the flash-crash DAG stores 1m candles that get no features
    summary = run_features_job(full=full, timeframes=get_settings().universe.timeframes)
    out = _plain(summary)
    log.info("features: %s", {k: v for k, v in out.items() if not isinstance(v, list | dict)})
    return out


def cutoff(conf: dict[str, Any] | None, data_interval_end: datetime | None) -> datetime:
    """The training cut-off: ``conf["until"]`` when ``entasis_monitor`` asked for the run (its own data
    interval end), else this run's data interval end. Never the wall clock; a naive time is refused."""
    given = (conf or {}).get("until")
    if given:
        return utc_datetime(given if isinstance(given, datetime) else str(given), "conf['until']")
    return _require(data_interval_end, "data_interval_end (or conf['until'])")


def horizons() -> list[int]:
    """The label horizons to train, one mapped ``train`` task each."""
    return list(get_settings().labels.horizons)


def _train_key(until: datetime, horizon: int) -> str:
    """Identity of one training: the data interval end plus every setting that shapes the model."""
    import hashlib
    import json

    s = get_settings()
    cfg = {"until": until.isoformat(), "horizon": int(horizon), "train": s.train.model_dump(mode="json"),
           "labels": s.labels.model_dump(mode="json"), "universe": s.universe.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def _already_trained(key: str, horizon: int) -> list[dict[str, Any]] | None:
    """The versions an earlier attempt registered for ``key`` (every unit of the horizon), else None."""
    s = get_settings()
    names = [reg.model_name(None, horizon)] if s.train.pooled else [reg.model_name(a, horizon)
                                                                      for a in s.universe.symbols]
    out = []
    for name in names:
        try:
            found = [mv for mv in reg.versions(name) if (mv.tags or {}).get(TRAIN_KEY_TAG) == key]
        except reg.RegistryError:  # no such registered model yet
            return None
        if not found:
            return None
        mv = found[0]
        asset, _ = reg.parse_model_name(name)
        out.append({"model_name": name, "asset": None if asset is None else mv.tags.get("asset", asset),
                    "horizon": int(horizon), "version": str(mv.version), "run_id": mv.tags.get("run_id"),
                    "reused": True})
    return out


TRAIN_KEY_TAG = "entasis.train_key"


def train(*, until: datetime | None, horizon: int | None = None) -> list[dict[str, Any]]:
    """Train and register (@challenger) one ensemble per horizon (or only ``horizon``) on features known by ``until``.

    Each registered version carries the tag ``entasis.train_key`` (interval end + settings): a retry of
    the same horizon for the same interval finds it and registers nothing new.
    """
    _use_airflow_store(*ML)
    end = _require(until, "until")
    s = get_settings()
    tf = s.universe.model_timeframe
    hs = [int(horizon)] if horizon is not None else list(s.labels.horizons)
    out: list[dict[str, Any]] = []
    todo = []
    for h in hs:
        done = _already_trained(_train_key(end, h), h)
        if done is not None:
            log.warning("horizon %dd: already trained for this interval (%s); registering nothing new",
                        h, ", ".join(f"{d['model_name']} v{d['version']}" for d in done))
            out += done
        else:
            todo.append(h)
    if not todo:
        return out
    with connect() as conn:
        frame = load_bars(conn, exchange=s.universe.exchange, symbols=s.universe.symbols, timeframe=tf, end=end)
    frame = frame[frame["ts"] < end]
    frame = blank_unknown_labels(frame, end, tf)  # outcomes not yet known at ``until`` stay unlabelled
    for h in todo:
        for r in train_and_register(frame, horizons=[h], timeframe=tf):
            if r.version is not None:
                reg.set_version_tags(r.model_name, r.version, {TRAIN_KEY_TAG: _train_key(end, h)})
            row = _plain(r.summary())
            row.update({"asset": r.asset, "horizon": r.horizon, "model_name": r.model_name, "version": r.version,
                        "run_id": r.run_id, "reused": False})
            out.append(row)
            log.info("trained %s v%s: %s", r.model_name, r.version, r.comparison)
    return out


def _evidence(result: Any, labels: dict[str, str]) -> dict[str, Any]:
    """The pooled figures of a walk-forward that the promotion rule reads, small enough for XCom."""
    keep = [*result.models, *result.baselines]
    comps = result.comparisons
    comps = comps[comps["scope"] == POOLED] if len(comps) else comps
    return json_safe({"run_id": result.run_id, "horizon": result.horizon, "target": result.target,
                      "timeframe": result.timeframe, "config": result.config,
                      "models": list(result.models), "baselines": list(result.baselines),
                      "metrics": {m: {POOLED: scalar(result.metrics[m][POOLED])} for m in keep
                                  if POOLED in result.metrics.get(m, {})},
                      "comparisons": comps.to_dict("records"), "data_hash": result.data_hash,
                      "leakage": {"problems": list(result.leakage.get("problems") or [])}, "labels": labels})


def json_safe(obj: Any) -> Any:
    """JSON-compatible for XCom: non-finite floats become None (``_rebuild`` turns them back into NaN)."""
    import json
    import math

    def fix(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): fix(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [fix(x) for x in v]
        return v

    return fix(json.loads(json.dumps(_plain(obj), default=str)))


def _nan(obj: Any) -> Any:
    """The inverse of ``json_safe`` for metric dicts: None back to NaN."""
    if obj is None:
        return float("nan")
    if isinstance(obj, dict):
        return {k: _nan(v) for k, v in obj.items()}
    return obj


def _rebuild(ev: dict[str, Any]) -> Any:
    """A WalkForwardResult carrying only the recorded evidence (no per-row forecasts)."""
    import pandas as pd

    return WalkForwardResult(horizon=int(ev["horizon"]), target=ev["target"], timeframe=ev["timeframe"],
                             config=ev["config"], folds=pd.DataFrame(), predictions=pd.DataFrame(),
                             models=list(ev["models"]), baselines=list(ev["baselines"]), metrics=_nan(ev["metrics"]),
                             comparisons=pd.DataFrame(ev["comparisons"]).fillna(float("nan")), trading={},
                             equity=pd.DataFrame(),
                             leakage=ev["leakage"], run_id=ev["run_id"], data_hash=ev["data_hash"])


def backtest(trained: list[dict[str, Any]], *, until: datetime | None) -> list[dict[str, Any]]:
    """One walk-forward per trained unit: the new @challenger's configuration, the @champion's, the
    configured tree models and every baseline on the same folds over the last
    ``backtest.promotion_window_days`` of outcomes known by ``until``. The report goes to the artifact
    store (its URI, never a worker path, is what ml.backtest_runs and XCom hold) and the pooled figures
    travel on to ``promote`` as its evidence: promotion runs no second walk-forward."""
    import tempfile
    from datetime import timedelta

    import mlflow
    import pandas as pd

    _use_airflow_store(*ML)
    end = _require(until, "until")
    s = get_settings()
    b = s.backtest
    tf = s.universe.model_timeframe
    configure()
    experiment = ensure_experiment("entasis-backtest")
    out = []
    for t in trained:
        h, name, ch_v = int(t["horizon"]), str(t["model_name"]), str(t["version"])
        champ_v = reg.alias_version(name, reg.CHAMPION)
        labels = {"challenger": f"challenger_v{ch_v}", "champion_version": champ_v or ""}
        specs: list[Any] = [{**spec_of_version(name, ch_v), "label": labels["challenger"]}]
        if champ_v is not None and champ_v != ch_v:
            labels["champion"] = f"champion_v{champ_v}"
            champ = {**spec_of_version(name, champ_v), "label": labels["champion"]}
            same = {k: v for k, v in champ.items() if k != "label"} == {k: v for k, v in specs[0].items()
                                                                          if k != "label"}
            if not same:  # identical configurations: one evaluation serves both (as the promotion rule expects)
                specs.append(champ)
        assets = [t["asset"]] if t.get("asset") else list(specs[0].get("_assets") or s.universe.symbols)
        specs = [{k: v for k, v in sp.items() if not k.startswith("_")} for sp in specs] + list(b.models)
        with connect() as conn:
            got = load_db_inputs(conn, assets=assets, timeframe=tf, end=pd.Timestamp(end),
                                 exchange=s.universe.exchange)
        frame = blank_unknown_labels(got.frame, end, tf)  # only outcomes known at ``until``
        target = target_column(h)
        known = pd.to_datetime(frame.loc[pd.to_numeric(frame[target], errors="coerce").notna(), "ts"], utc=True)
        if known.empty:
            raise ValueError(f"{name}: no {target} outcome known by {end:%Y-%m-%d %H:%M}; nothing to evaluate")
        w_end = known.max()
        w_start = w_end - timedelta(days=b.promotion_window_days - 1)
        with tempfile.TemporaryDirectory() as tmp, \
                mlflow.start_run(experiment_id=experiment, run_name=f"backtest {name} v{ch_v}") as run:
            mlflow.set_tags({"entasis.model_name": name, "entasis.challenger_version": ch_v,
                             "entasis.until": end.isoformat(), "entasis.code_version": code_version(),
                             "entasis.package_version": package_version()})
            res = run_walk_forward(horizon=h, start=w_start, end=w_end, models=specs, timeframe=tf,
                                   inputs=Inputs(frame, got.prices, got.funding, got.exchange, got.source),
                                   refit_days=b.promotion_refit_days, record=False, report=True,
                                   report_dir=tmp, log_mlflow=True, leakage="warn")
            report_uri = f"{run.info.artifact_uri}/backtest/{res.run_id}/report.html"
            mlflow_run = run.info.run_id
        with connect() as conn:
            record_backtest(conn, res, exchange=got.exchange, report_path=report_uri, mlflow_run_id=mlflow_run)
        log.info("walk-forward %s (%dd): report %s", name, h, report_uri)
        out.append({**t, "backtest": {"run_id": res.run_id, "report": report_uri, "mlflow_run_id": mlflow_run,
                                      "evidence": _evidence(res, labels)}})
    return out


def promote(evaluated: list[dict[str, Any]], *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Apply the promotion rule to each new @challenger on the backtest task's evidence (no second
    walk-forward); every decision is logged, stored and tagged. ``changed`` says whether @champion moved."""
    _use_airflow_store(*ML)
    b = get_settings().backtest
    decisions = []
    for t in evaluated:
        before = reg.alias_version(str(t["model_name"]), reg.CHAMPION)
        ev = (t.get("backtest") or {}).get("evidence")
        if ev is None:
            raise ValueError(f"{t['model_name']} v{t['version']}: no backtest evidence to decide on")
        if (before or "") != ev["labels"].get("champion_version", ""):
            raise ValueError(f"{t['model_name']}: @champion is v{before} but the backtest {ev['run_id']} compared "
                             f"against v{ev['labels'].get('champion_version') or '(none)'}; clear the backtest task")
        d = evaluate_and_promote(t["asset"], int(t["horizon"]), challenger_version=t["version"],
                                 result=_rebuild(ev), margin=b.promotion_margin, now=now)
        after = reg.alias_version(str(t["model_name"]), reg.CHAMPION)
        msg = f"{d.model_name} v{t['version']}: {d.action.upper()} — {d.reason}"
        log.warning("promotion decision: %s", msg)  # warning level: stands out in the task log
        decisions.append({"model": d.model_name, "version": t["version"], "action": d.action,
                          "promoted": d.promoted, "unproven": d.unproven, "reason": d.reason,
                          "changed": before != after, "backtest_run_id": ev["run_id"]})
    return decisions
