"""One function per Airflow task: read the configured universe, call the stage, return a JSON summary.

DAG files stay thin (each task calls one function here) and every time here is passed in by the
caller, normally the end of the DAG run's data interval; nothing reads the wall clock. The
summaries are small dicts so they travel as XCom and show in the task log.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)


def _use_airflow_store() -> None:
    """Inside Airflow, prefer the ``entasis_db`` connection when one is configured."""
    try:
        from entasis_airflow.hooks import use_airflow_connection
    except ImportError:  # not running under Airflow (CLI, tests)
        return
    use_airflow_connection()


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
    from entasis.collect.candles import collect_candles
    from entasis.config import get_settings

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
    from entasis.collect.derivatives import collect_funding
    from entasis.config import get_settings

    _use_airflow_store()
    end = _require(until, "until")
    u = get_settings().universe
    return _series_summary(collect_funding(u.perp_exchange, u.perp_symbols, until=end))


def ingest_open_interest(*, until: datetime | None) -> dict[str, Any]:
    """Hourly open interest of the configured perpetuals (venues keep only recent history)."""
    from entasis.collect.derivatives import collect_open_interest
    from entasis.config import get_settings

    _use_airflow_store()
    end = _require(until, "until")
    u = get_settings().universe
    return _series_summary(collect_open_interest(u.perp_exchange, u.perp_symbols, "1h", until=end))


def ingest_options(*, now: datetime | None) -> dict[str, Any]:
    """Snapshot every listed option per configured currency at ``now``, then fit and store its surface."""
    from entasis.collect.options import collect_options
    from entasis.config import get_settings
    from entasis.options.store import build_and_store_surface
    from entasis.store.db import connect

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
        return obj.item()
    return obj


def publish(*, as_of: datetime | None) -> dict[str, Any]:
    """Predictions of every @champion for the latest bar complete at ``as_of`` (the run's logical time)."""
    from entasis.config import get_settings
    from entasis.publish.predictions import publish_predictions
    from entasis.store.db import connect

    _use_airflow_store()
    at = _require(as_of, "as_of")
    with connect() as conn:
        summary = publish_predictions(conn, as_of=at, timeframe=get_settings().universe.model_timeframe)
    out = summary.as_dict()
    log.info("published %s", out)
    return _plain(out)


def reconcile(*, now: datetime | None) -> int:
    """Fill outcomes of predictions whose target date has passed by ``now``."""
    from entasis.config import get_settings
    from entasis.publish.reconcile import reconcile_outcomes
    from entasis.store.db import connect

    _use_airflow_store()
    at = _require(now, "now")
    with connect() as conn:
        n = reconcile_outcomes(conn, now=at, timeframe=get_settings().universe.model_timeframe)
    log.info("reconciled %d prediction(s)", n)
    return n


def monitor(*, now: datetime | None) -> dict[str, Any]:
    """Live accuracy, drift and stale data as of ``now``; rolls back failing champions; says if a retrain is due."""
    from entasis.backtest.promotion import check_live_accuracy_and_rollback
    from entasis.config import get_settings
    from entasis.monitor.checks import run_checks
    from entasis.monitor.drift_log import record_feature_drift
    from entasis.store.db import connect

    _use_airflow_store()
    at = _require(now, "now")
    s = get_settings()
    with connect() as conn:
        report = run_checks(conn, at, s.monitor, timeframe=s.universe.model_timeframe)
        record_feature_drift(conn, at, s.universe.model_timeframe, report.feature_psi)
        champions = conn.execute("SELECT DISTINCT asset, horizon FROM ml.champions").fetchall()
    for asset, horizon in champions:
        d = check_live_accuracy_and_rollback(
            None if asset == "pooled" else asset, int(horizon), threshold=s.monitor.min_live_accuracy,
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
    from entasis.features.spark_job import run_features_job

    _use_airflow_store()
    summary = run_features_job(full=full)
    out = _plain(summary)
    log.info("features: %s", {k: v for k, v in out.items() if not isinstance(v, list | dict)})
    return out


def train(*, until: datetime | None) -> list[dict[str, Any]]:
    """Train and register (@challenger) one ensemble per horizon on features known by ``until``."""
    from entasis.backtest.runner import blank_unknown_labels
    from entasis.config import get_settings
    from entasis.features.store import load_bars
    from entasis.models.train import train_and_register
    from entasis.store.db import connect

    _use_airflow_store()
    end = _require(until, "until")
    s = get_settings()
    tf = s.universe.model_timeframe
    with connect() as conn:
        frame = load_bars(conn, exchange=s.universe.exchange, symbols=s.universe.symbols, timeframe=tf, end=end)
    frame = frame[frame["ts"] < end]
    frame = blank_unknown_labels(frame, end, tf)  # outcomes not yet known at ``until`` stay unlabelled
    results = train_and_register(frame, horizons=s.labels.horizons, timeframe=tf)
    out = []
    for r in results:
        row = _plain(r.summary())
        row.update({"asset": r.asset, "horizon": r.horizon, "model_name": r.model_name, "version": r.version,
                    "run_id": r.run_id})
        out.append(row)
        log.info("trained %s v%s: %s", r.model_name, r.version, r.comparison)
    return out


def backtest(trained: list[dict[str, Any]], *, until: datetime | None) -> list[dict[str, Any]]:
    """Walk-forward of the tree models beside every baseline over the lookback ending at ``until``."""
    from datetime import timedelta

    from entasis.backtest.runner import run_walk_forward
    from entasis.config import get_settings

    _use_airflow_store()
    end = _require(until, "until")
    s = get_settings()
    b = s.backtest
    out = []
    for h in sorted({int(t["horizon"]) for t in trained}):
        res = run_walk_forward(horizon=h, start=end - timedelta(days=b.lookback_days), end=end,
                               assets=s.universe.symbols, models=b.models, timeframe=s.universe.model_timeframe,
                               exchange=s.universe.exchange, refit_days=b.refit_days, known_by=end)
        out.append({"horizon": h, "report": str(res.report_path) if res.report_path else None,
                    "run_id": getattr(res, "run_id", None)})
        log.info("walk-forward %dd: report %s", h, res.report_path)
    return [{**t, "backtest": next((o for o in out if o["horizon"] == int(t["horizon"])), None)} for t in trained]


def promote(evaluated: list[dict[str, Any]], *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Apply the promotion rule to each new @challenger; every decision is logged, stored and tagged."""
    from entasis.backtest.promotion import evaluate_and_promote
    from entasis.config import get_settings

    _use_airflow_store()
    b = get_settings().backtest
    decisions = []
    for t in evaluated:
        d = evaluate_and_promote(t["asset"], int(t["horizon"]), challenger_version=t["version"],
                                 window_days=b.promotion_window_days, refit_days=b.promotion_refit_days,
                                 margin=b.promotion_margin, now=now)
        msg = f"{d.model_name} v{t['version']}: {d.action.upper()} — {d.reason}"
        log.warning("promotion decision: %s", msg)  # warning level: stands out in the task log
        decisions.append({"model": d.model_name, "version": t["version"], "action": d.action,
                          "promoted": d.promoted, "unproven": d.unproven, "reason": d.reason})
    return decisions
