"""Read-side helpers: ml.model_status and the most recent predictions, as frames for the CLI and DAGs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

STATUS_COLUMNS = [
    "asset", "horizon", "champion_scope", "model_name", "champion_version", "run_id", "trained_at",
    "promoted_at", "unproven", "test_accuracy", "best_baseline", "best_baseline_accuracy", "beats_baseline",
    "live_accuracy_30d", "live_log_loss_30d", "live_reconciled_30d", "live_window_end", "n_predictions", "n_reconciled",
    "last_as_of", "last_published",
]
PREDICTION_COLUMNS = [
    "asset", "horizon", "as_of", "model_version", "predicted_class", "p_bearish", "p_neutral", "p_bullish",
    "confidence", "confidence_level", "target_date", "factors", "run_id", "data_hash", "published_at",
    "actual_class", "realized_return", "correct",
]


def _frame(conn: psycopg.Connection, sql: str, params: Sequence[object], columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    rows = conn.execute(sql, params).fetchall()  # type: ignore[arg-type]  # fixed SQL built from constants
    return pd.DataFrame(rows, columns=columns)


def model_status(conn: psycopg.Connection) -> pd.DataFrame:
    """ml.model_status ordered by asset and horizon. Its live columns come from ``ml.live_scores``, the
    one live aggregation the monitor and rollback use too (``entasis.backtest.evaluation.live_scores``)."""
    cols = ", ".join(STATUS_COLUMNS)
    return _frame(conn, f"SELECT {cols} FROM ml.model_status ORDER BY asset, horizon", (), STATUS_COLUMNS)


def recent_predictions(conn: psycopg.Connection, *, limit: int = 20, asset: str | None = None,
                       horizon: int | None = None) -> pd.DataFrame:
    """The newest predictions (by as_of, then asset and horizon), optionally for one asset / horizon."""
    if limit <= 0:
        raise ValueError(f"limit must be positive; got {limit}")
    where: list[str] = []
    params: list[object] = []
    if asset is not None:
        where.append("asset = %s")
        params.append(asset)
    if horizon is not None:
        where.append("horizon = %s")
        params.append(int(horizon))
    sql = (f"SELECT {', '.join(PREDICTION_COLUMNS)} FROM ml.predictions "
           f"{'WHERE ' + ' AND '.join(where) if where else ''} "
           "ORDER BY as_of DESC, asset, horizon, model_version LIMIT %s")
    return _frame(conn, sql, [*params, int(limit)], PREDICTION_COLUMNS)
