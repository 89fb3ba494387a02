"""Reading and writing the signals tables (migration 0800_signals.sql), through the one upsert path."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from entasis.store.upsert import upsert_frame

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

log = logging.getLogger(__name__)

EVENTS_TABLE = "signals.flash_crash_events"
ALERTS_TABLE = "signals.flash_crash_alerts"
LEVELS_TABLE = "ml.levels"
EVENT_KEY = ["exchange", "symbol", "start_ts"]
LEVEL_KEY = ["asset", "as_of", "side", "rank"]

_EVENT_COLS = ["exchange", "symbol", "start_ts", "trough_ts", "detected_at", "final_at", "peak_price",
               "trough_price", "depth", "volume_ratio", "recovery", "n_bars", "reported_in"]
_ALERT_COLS = ["exchange", "symbol", "start_ts", "detected_at", "depth", "volume_ratio", "peak_price",
               "trough_price", "raised_in"]


def write_events(conn: psycopg.Connection, events: pd.DataFrame, *, interval_end: datetime) -> int:
    """Upsert final events (one row per crash); returns rows inserted or changed."""
    import pandas as pd

    if events.empty:
        return 0
    df = events.copy()
    df["reported_in"] = pd.Timestamp(interval_end).tz_convert("UTC")
    df["n_bars"] = df["n_bars"].astype("int32")
    return upsert_frame(conn, EVENTS_TABLE, df[_EVENT_COLS], EVENT_KEY).written


def write_alerts(conn: psycopg.Connection, events: pd.DataFrame, *, interval_end: datetime) -> int:
    """Upsert alert rows for newly detected crashes; returns rows inserted or changed."""
    import pandas as pd

    if events.empty:
        return 0
    df = events.copy()
    df["raised_in"] = pd.Timestamp(interval_end).tz_convert("UTC")
    return upsert_frame(conn, ALERTS_TABLE, df[_ALERT_COLS], EVENT_KEY).written


def recent_flash_crash_events(conn: psycopg.Connection, *, since: datetime | None = None,
                              limit: int = 100) -> list[dict[str, Any]]:
    """Flash-crash alerts (newest first) with the final event's figures where it is final already.

    For the API's /metrics and dashboards: ``detected_at`` is when the rule first fired; ``final``
    says whether the event row (final depth, trough, recovery) exists yet.
    """
    if limit <= 0:
        raise ValueError(f"limit must be positive; got {limit}")
    rows = conn.execute(
        """SELECT a.exchange, a.symbol, a.start_ts, a.detected_at, coalesce(e.depth, a.depth),
                  coalesce(e.volume_ratio, a.volume_ratio), e.trough_ts, e.recovery, e.final_at IS NOT NULL
           FROM signals.flash_crash_alerts a
           LEFT JOIN signals.flash_crash_events e USING (exchange, symbol, start_ts)
           WHERE %(since)s::timestamptz IS NULL OR a.detected_at >= %(since)s::timestamptz
           ORDER BY a.detected_at DESC, a.exchange, a.symbol LIMIT %(limit)s""",
        {"since": since, "limit": limit},
    ).fetchall()
    keys = ["exchange", "symbol", "start_ts", "detected_at", "depth", "volume_ratio", "trough_ts", "recovery",
            "final"]
    return [dict(zip(keys, r, strict=True)) for r in rows]


def flash_crash_counts(conn: psycopg.Connection) -> dict[tuple[str, str], int]:
    """Alerts raised so far per (exchange, symbol): the counter a Prometheus exporter publishes."""
    rows = conn.execute(
        "SELECT exchange, symbol, count(*) FROM signals.flash_crash_alerts GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}


def write_levels(conn: psycopg.Connection, levels: pd.DataFrame) -> int:
    """Upsert level rows (asset, as_of, side, rank, exchange, timeframe, price, strength, touches,
    distance_atr, close, atr); returns rows inserted or changed."""
    if levels.empty:
        return 0
    df = levels.copy()
    df["rank"] = df["rank"].astype("int16")
    df["touches"] = df["touches"].astype("int32")
    cols = ["asset", "as_of", "side", "rank", "exchange", "timeframe", "price", "strength", "touches",
            "distance_atr", "close", "atr"]
    return upsert_frame(conn, LEVELS_TABLE, df[cols], LEVEL_KEY).written
