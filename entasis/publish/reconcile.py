"""Outcome reconciliation: once a prediction's horizon has passed, record what actually happened.

A prediction made at ``as_of`` (the close of bar ``as_of - timeframe``) for ``target_date`` is settled by
the first candle of ``market.candles`` that closes at or after ``target_date`` and has closed by ``now``:
``realized_return = close(target) / close(as_of bar) - 1`` and ``actual_class`` follows the labels' rule
exactly (:mod:`entasis.features.compute`): bullish if the return is above the neutral band, bearish if
below minus the band, neutral otherwise (a return exactly at the band edge is neutral). The band is
``labels.neutral_band`` (fixed mode) or ``vol_scale x rvol_20 x sqrt(h / 365)`` at the prediction's bar
(vol_scaled mode). ``correct = (predicted_class = actual_class)``.

Idempotent: only rows still missing their outcome (or whose stored outcome no longer matches the
computation, e.g. after a revised candle) are written; re-running changes nothing. ``now`` is passed in.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from entasis.config import get_settings
from entasis.domain import BandRule, classify_return, timeframe_seconds, utc_datetime

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

    from entasis.config import Settings

log = logging.getLogger(__name__)


def _due(conn: psycopg.Connection, *, now: datetime, exchange: str, timeframe: str, step: timedelta,
         max_delay: timedelta, recheck: timedelta) -> list[tuple]:
    """Predictions due at ``now`` with both prices available (and the bar's rvol_20): the open ones, and
    settled ones whose target date is within ``recheck`` of now (a revised candle may change them)."""
    return conn.execute(
        """
        SELECT p.asset, p.horizon, p.as_of, p.model_version, p.predicted_class,
               p.actual_class, p.realized_return, p.correct, p.target_date,
               b.close AS base_close, e.close AS end_close, e.ts AS end_ts, f.rvol_20
        FROM ml.predictions p
        JOIN market.candles b
          ON b.exchange = %(ex)s AND b.symbol = p.asset AND b.timeframe = %(tf)s AND b.ts = p.as_of - %(step)s
        JOIN LATERAL (
            SELECT c.close, c.ts FROM market.candles c
            WHERE c.exchange = %(ex)s AND c.symbol = p.asset AND c.timeframe = %(tf)s
              AND c.ts >= p.target_date - %(step)s AND c.ts <= %(now)s - %(step)s
            ORDER BY c.ts LIMIT 1
        ) e ON true
        LEFT JOIN features.bars f
          ON f.exchange = %(ex)s AND f.symbol = p.asset AND f.timeframe = %(tf)s AND f.ts = b.ts
        WHERE p.target_date <= %(now)s
          AND (p.actual_class IS NULL OR p.correct IS NULL OR p.target_date > %(now)s - %(recheck)s
               OR p.correct IS DISTINCT FROM (p.predicted_class = p.actual_class))
          AND e.ts + %(step)s <= p.target_date + %(max_delay)s
        ORDER BY p.asset, p.horizon, p.as_of, p.model_version
        """,
        {"ex": exchange, "tf": timeframe, "step": step, "now": now, "max_delay": max_delay, "recheck": recheck},
    ).fetchall()


def reconcile_outcomes(
    conn: psycopg.Connection,
    *,
    now: datetime | str | pd.Timestamp,
    exchange: str | None = None,
    timeframe: str = "1d",
    max_delay_bars: int = 3,
    recheck_days: int = 30,
    settings: Settings | None = None,
) -> int:
    """Fill actual_class, realized_return and correct for predictions settled by ``now``; returns rows written.

    Prices come from ``exchange`` (default ``universe.exchange``) ``timeframe`` candles. A target candle
    closing more than ``max_delay_bars`` bars after the target date (a gap in the data) does not settle
    a prediction; it stays open and is logged. Outcomes whose target date lies within ``recheck_days``
    of ``now`` are recomputed on every run (a revised candle or a re-published prediction corrects
    them); older outcomes are final, which keeps a run's cost bounded however long the history.
    """
    s = settings or get_settings()
    t_now = utc_datetime(now, "now")
    if max_delay_bars < 1:
        raise ValueError(f"max_delay_bars must be >= 1; got {max_delay_bars}")
    if recheck_days < 0:
        raise ValueError(f"recheck_days must be >= 0; got {recheck_days}")
    rule = BandRule.from_labels(s.labels)
    exchange = exchange or s.universe.exchange
    step = timedelta(seconds=timeframe_seconds(timeframe))
    rows = _due(conn, now=t_now, exchange=exchange, timeframe=timeframe, step=step,
                max_delay=max_delay_bars * step, recheck=timedelta(days=recheck_days))
    updates = []
    for (asset, h, as_of, mv, pred, act0, ret0, ok0, _target, base, end, _end_ts, rvol) in rows:
        if base is None or end is None or not base > 0:
            continue
        r = float(end) / float(base) - 1.0
        band = rule.band(int(h), None if rvol is None else float(rvol))
        if band is None:
            continue  # vol-scaled band undefined at this bar: the label is NULL there too
        actual = classify_return(r, band)
        correct = int(pred) == actual
        if act0 == actual and ret0 == r and ok0 is correct:
            continue
        updates.append((asset, int(h), as_of, mv, actual, r, correct))
    if updates:
        cols = list(zip(*updates, strict=True))
        with conn.transaction():
            conn.execute(
                """
                UPDATE ml.predictions p
                SET actual_class = u.act, realized_return = u.r, correct = u.ok
                FROM unnest(%s::text[], %s::int[], %s::timestamptz[], %s::text[], %s::smallint[],
                            %s::double precision[], %s::boolean[]) AS u(a, h, t, v, act, r, ok)
                WHERE p.asset = u.a AND p.horizon = u.h AND p.as_of = u.t AND p.model_version = u.v
                """,
                [list(c) for c in cols],
            )
    pending = conn.execute(
        "SELECT count(*) FROM ml.predictions WHERE target_date <= %s AND actual_class IS NULL", (t_now,)
    ).fetchone()
    waiting = int(pending[0]) if pending else 0
    if waiting:
        log.info("reconcile: %d prediction(s) past their target date still wait for a candle", waiting)
    log.info("reconcile: %d prediction(s) settled or corrected at %s", len(updates), t_now)
    return len(updates)
