"""Writing backtest results and promotion decisions to PostgreSQL (through ``upsert_frame`` only).

Keys are natural: a run's ``run_id`` hashes its configuration and data, so re-recording the same run
changes no row; ``created_at`` is set on first insert and never updated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.backtest.walkforward import scalar_metrics
from entasis.domain import PROBA_COLUMNS
from entasis.store.upsert import UpsertResult, upsert_frame

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

    from entasis.backtest.walkforward import WalkForwardResult

RUNS = "ml.backtest_runs"
METRICS = "ml.backtest_metrics"
PREDICTIONS = "ml.backtest_predictions"
DECISIONS = "ml.promotion_decisions"
DECISION_KEY = ["model_name", "decided_at", "action"]


def run_row(result: WalkForwardResult, *, exchange: str | None = None, report_path: str | None = None,
            mlflow_run_id: str | None = None) -> dict[str, Any]:
    import pandas as pd

    cfg = result.config
    scored = result.predictions[result.predictions["scored"]]
    folds = result.folds
    n_ran = int(folds["skipped"].isna().sum()) if "skipped" in folds.columns else len(folds)
    lk = result.leakage
    status = "off" if lk.get("mode") == "off" else ("warned" if lk.get("problems") else "ok")
    return {
        "run_id": result.run_id, "exchange": exchange, "timeframe": result.timeframe,
        "assets": list(cfg["symbols"]), "horizon": result.horizon,
        "start_ts": pd.Timestamp(cfg["start"]), "end_ts": pd.Timestamp(cfg["end"]),
        "models": list(result.models), "window_kind": cfg["window"], "refit_days": int(cfg["refit_days"]),
        "train_days": cfg["train_days"], "purge_days": int(cfg["purge_days"]),
        "embargo_days": int(cfg["embargo_days"]), "n_folds": n_ran,
        "n_scored": int(len(scored) // max(1, len(result.models) + len(result.baselines))),
        "first_test_ts": scored["ts"].min() if len(scored) else None,
        "last_test_ts": scored["ts"].max() if len(scored) else None,
        "best_baseline": result.best_baseline("accuracy") if result.baselines else None,
        "leakage_status": status, "data_hash": result.data_hash,
        "config": _jsonable(cfg), "report_path": report_path, "mlflow_run_id": mlflow_run_id,
        "duration_s": float(result.timings.get("total", np.nan)),
    }


def _jsonable(v: Any) -> Any:
    import json

    return json.loads(json.dumps(v, default=str))


def record_backtest(conn: psycopg.Connection, result: WalkForwardResult, *, exchange: str | None = None,
                    report_path: str | None = None, mlflow_run_id: str | None = None,
                    predictions: bool = True) -> dict[str, UpsertResult]:
    """Upsert the run, its long-format metrics and (optionally) every out-of-sample forecast."""
    import pandas as pd

    row = run_row(result, exchange=exchange, report_path=report_path, mlflow_run_id=mlflow_run_id)
    runs = pd.DataFrame([row])
    for c in ("start_ts", "end_ts", "first_test_ts", "last_test_ts"):
        runs[c] = pd.to_datetime(runs[c], utc=True)
    runs["train_days"] = runs["train_days"].astype("Int64")
    out = {"runs": upsert_frame(conn, RUNS, runs, ["run_id"],
                                update_columns=[c for c in runs.columns if c != "created_at"])}
    met = pd.DataFrame(scalar_metrics(result))
    met.insert(0, "run_id", result.run_id)
    met["value"] = met["value"].astype("float64").where(np.isfinite(met["value"].astype("float64")))
    out["metrics"] = upsert_frame(conn, METRICS, met, ["run_id", "model", "scope", "metric"])
    if predictions:
        p = result.predictions
        pr = pd.DataFrame({
            "run_id": result.run_id, "model": p["model"].astype(str), "symbol": p["symbol"].astype(str),
            "ts": p["ts"], "fold": p["fold"].astype("int32"),
            **{c: p[c] for c in PROBA_COLUMNS},
            "predicted_class": pd.array(p["predicted_class"].to_numpy(), dtype="Float64").astype("Int16"),
            "actual_class": pd.array(p["actual_class"].to_numpy(), dtype="Float64").astype("Int16"),
            "forward_return": p["forward_return"], "scored": p["scored"].astype(bool),
        })
        out["predictions"] = upsert_frame(conn, PREDICTIONS, pr, ["run_id", "model", "symbol", "ts"])
    return out


def record_decision(conn: psycopg.Connection, row: Mapping[str, Any]) -> UpsertResult:
    """Upsert one promotion / rollback decision row (keys: model_name, decided_at, action)."""
    import pandas as pd

    missing = [k for k in (*DECISION_KEY, "asset", "horizon", "promoted", "reason") if row.get(k) is None]
    if missing:
        raise ValueError(f"decision row lacks {missing}")
    df = pd.DataFrame([{k: v for k, v in row.items()}])
    for c in ("decided_at", "window_start", "window_end"):
        if c in df.columns:
            df[c] = pd.to_datetime(df[c], utc=True)
    if "details" in df.columns:
        df["details"] = [_jsonable(row.get("details") or {})]
    return upsert_frame(conn, DECISIONS, df, DECISION_KEY)


def read_decisions(conn: psycopg.Connection, model_name: str | None = None) -> pd.DataFrame:
    """Decisions, oldest first (all models, or one)."""
    import pandas as pd

    sql = "SELECT * FROM ml.promotion_decisions"
    params: list[Any] = []
    if model_name is not None:
        sql += " WHERE model_name = %s"
        params.append(model_name)
    with conn.cursor() as cur:
        cur.execute(sql + " ORDER BY decided_at, action", params)  # type: ignore[arg-type]
        cols = [d.name for d in cur.description or []]
        return pd.DataFrame(cur.fetchall(), columns=cols)
