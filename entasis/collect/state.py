"""Bookkeeping tables of a collection: watermarks, quarantined rows and gaps.

All functions take the caller's connection so that they join the caller's transaction: the rows
of a batch, its quarantined rows, its gaps and the watermark move commit together or not at all.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import sql

from entasis.collect.grid import Gap, missing_runs
from entasis.domain import from_ms, to_ms
from entasis.store.db import connect
from entasis.store.upsert import upsert_frame

if TYPE_CHECKING:
    import pandas as pd
    import psycopg


@dataclass(frozen=True)
class SeriesKey:
    """One collected series: the primary key of market.ingest_state."""

    source: str
    exchange: str
    symbol: str
    timeframe: str = ""

    def __str__(self) -> str:
        tf = f" {self.timeframe}" if self.timeframe else ""
        return f"{self.source} {self.exchange} {self.symbol}{tf}"


_WHERE = sql.SQL("source = %s AND exchange = %s AND symbol = %s AND timeframe = %s")


def _where(key: SeriesKey) -> tuple[sql.SQL, tuple[str, ...]]:
    return _WHERE, (key.source, key.exchange, key.symbol, key.timeframe)


def read_watermark(conn: psycopg.Connection, key: SeriesKey) -> int | None:
    """Epoch ms of the newest row known complete for ``key``, or None before the first run."""
    where, args = _where(key)
    row = conn.execute(sql.SQL("SELECT watermark FROM market.ingest_state WHERE {}").format(where), args).fetchone()
    return to_ms(row[0]) if row and row[0] is not None else None


def save_state(conn: psycopg.Connection, key: SeriesKey, watermark_ms: int | None, status: str,
               message: str | None = None, *, run_at_ms: int | None = None) -> None:
    """Record a run; the watermark only ever moves forward (a backfill never rewinds it).

    ``last_run`` is the time the run collected up to (its ``until``, the DAG's data interval end), so
    re-running the same interval leaves the row identical; only a failure, which has no interval
    to speak of, stamps the wall clock.
    """
    wm = from_ms(watermark_ms) if watermark_ms is not None else None
    run_at = from_ms(run_at_ms) if run_at_ms is not None else None
    conn.execute(
        """
        INSERT INTO market.ingest_state AS s (source, exchange, symbol, timeframe, watermark, last_run, status, message)
        VALUES (%s, %s, %s, %s, %s, coalesce(%s, now()), %s, %s)
        ON CONFLICT (source, exchange, symbol, timeframe) DO UPDATE SET
            watermark = CASE WHEN s.watermark IS NULL THEN EXCLUDED.watermark
                             WHEN EXCLUDED.watermark IS NULL THEN s.watermark
                             ELSE greatest(s.watermark, EXCLUDED.watermark) END,
            last_run = EXCLUDED.last_run, status = EXCLUDED.status, message = EXCLUDED.message
        """,
        (key.source, key.exchange, key.symbol, key.timeframe, wm, run_at, status, message),
    )


def mark_failed(key: SeriesKey, message: str) -> None:
    """Note a failed run in its own transaction, leaving the watermark where it was."""
    with connect() as conn:
        save_state(conn, key, None, "failed", message[:2000])


def open_gaps(conn: psycopg.Connection, key: SeriesKey) -> list[Gap]:
    where, args = _where(key)
    rows = conn.execute(
        sql.SQL("SELECT gap_start, gap_end, missing_bars FROM market.gaps WHERE {} AND resolved_at IS NULL "
                "ORDER BY gap_start").format(where), args,
    ).fetchall()
    return [Gap(to_ms(r[0]), to_ms(r[1]), int(r[2])) for r in rows]


def record_gaps(conn: psycopg.Connection, key: SeriesKey, gaps: list[Gap]) -> int:
    """Insert newly seen gaps (or reopen one seen before); returns how many rows changed."""
    import pandas as pd

    if not gaps:
        return 0
    df = pd.DataFrame({
        "source": key.source, "exchange": key.exchange, "symbol": key.symbol, "timeframe": key.timeframe,
        "gap_start": pd.to_datetime([g.start for g in gaps], unit="ms", utc=True),
        "gap_end": pd.to_datetime([g.end for g in gaps], unit="ms", utc=True),
        "missing_bars": [g.bars for g in gaps],
        "resolved_at": pd.Series([None] * len(gaps), dtype="datetime64[us, UTC]"),
    })
    res = upsert_frame(conn, "market.gaps", df, ["source", "exchange", "symbol", "timeframe", "gap_start"])
    return res.written


def refresh_gaps(conn: psycopg.Connection, key: SeriesKey, gaps: list[Gap], present: set[int], step: int) -> int:
    """Close gaps whose every bar is now present; shrink the count of partly filled ones.

    Returns how many gaps were resolved. ``present`` holds every bar time known to exist
    (stored, or received in this batch and not quarantined: a quarantined bar stays missing, so a
    later run re-fetches it).
    """
    where, args = _where(key)
    resolved = 0
    for g in gaps:
        remaining = sum(r.bars for r in missing_runs(present, g.start, g.end, step))
        if remaining == 0:
            conn.execute(
                sql.SQL("UPDATE market.gaps SET resolved_at = now() WHERE {} AND gap_start = %s").format(where),
                (*args, from_ms(g.start)),
            )
            resolved += 1
        elif remaining != g.bars:
            conn.execute(
                sql.SQL("UPDATE market.gaps SET missing_bars = %s WHERE {} AND gap_start = %s").format(where),
                (remaining, *args, from_ms(g.start)),
            )
    return resolved


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if hasattr(v, "item"):
        return _json_safe(v.item())
    return v


def quarantine(conn: psycopg.Connection, key: SeriesKey, bad: pd.DataFrame, ts_col: str = "ts") -> int:
    """Store rejected rows with the reason; ``bad`` has the row's columns plus ``reason``.

    Re-quarantining the same row for the same reason changes nothing (idempotent reruns).
    """
    import pandas as pd

    if bad.empty:
        return 0
    payload_cols = [c for c in bad.columns if c not in {"reason", ts_col}]
    payloads = [json.loads(json.dumps({c: _json_safe(r[c]) for c in payload_cols}, sort_keys=True))
                for r in bad.to_dict("records")]
    df = pd.DataFrame({
        "source": key.source, "exchange": key.exchange, "symbol": key.symbol, "timeframe": key.timeframe,
        "ts": bad[ts_col].to_numpy(), "reason": bad["reason"].to_numpy(), "payload": payloads,
    })
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    res = upsert_frame(conn, "market.quarantine", df, ["source", "exchange", "symbol", "timeframe", "ts", "reason"],
                       update_columns=["payload"])
    return res.written
