"""Task entry points of the signals stage: the 5-minute flash-crash run and levels for publishing.

Every time here comes from the caller (the DAG's data interval); nothing reads the wall clock. Each
crash is reported exactly once however the intervals fall: the alert by the run whose interval
(start, end] holds the close of the first bar that met the rule (``detected_at``), the final event
row by the run whose interval holds ``final_at``. Both are pure functions of the closed 1-minute bars
before the interval end, so re-running an interval rewrites identical rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from entasis.collect.candles import collect_candles
from entasis.config import get_settings
from entasis.features.catalog import timeframe_seconds
from entasis.signals.flashcrash import CrashRule, detect_many, in_interval
from entasis.signals.store import write_alerts, write_events, write_levels
from entasis.store.db import connect

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

    from entasis.collect.client import ExchangeClient
    from entasis.config import Settings
    from entasis.signals.flashcrash import CrashRule

log = logging.getLogger(__name__)

FLASH_TIMEFRAME = "1m"


def crash_rule(settings: Settings | None = None) -> CrashRule:
    return CrashRule.from_config((settings or get_settings()).signals.flash_crash)


def watched(settings: Settings | None = None) -> tuple[str, list[str]]:
    """(exchange, symbols) the flash-crash DAG watches: signals.* or else the universe's."""
    s = settings or get_settings()
    return s.signals.exchange or s.universe.exchange, list(s.signals.symbols or s.universe.symbols)


def load_candles(conn: psycopg.Connection, *, exchange: str, symbols: Sequence[str], timeframe: str,
                 start: datetime | None, end: datetime) -> pd.DataFrame:
    """Stored candles with start <= ts and ts + timeframe <= end (closed by ``end``), sorted."""
    import pandas as pd

    last_open = end - timedelta(seconds=timeframe_seconds(timeframe))
    rows = conn.execute(
        "SELECT exchange, symbol, ts, open, high, low, close, volume FROM market.candles "
        "WHERE exchange = %s AND symbol = ANY(%s) AND timeframe = %s AND ts <= %s "
        "AND (%s::timestamptz IS NULL OR ts >= %s::timestamptz) ORDER BY symbol, ts",
        (exchange, list(symbols), timeframe, last_open, start, start),
    ).fetchall()
    df = pd.DataFrame(rows, columns=["exchange", "symbol", "ts", "open", "high", "low", "close", "volume"])
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    for c in ("open", "high", "low", "close", "volume"):
        df[c] = df[c].astype("float64")
    return df


def detect_flash_crashes(
    *, interval_start: datetime | None, interval_end: datetime | None, collect: bool = True,
    client: ExchangeClient | None = None, settings: Settings | None = None,
) -> dict[str, Any]:
    """Collect the watched symbols' 1-minute candles up to ``interval_end``, detect crashes, raise an
    alert row for each newly detected one and store each event once it is final."""
    if interval_start is None or interval_end is None:
        raise ValueError("interval_start and interval_end are required (the DAG passes its data interval)")
    if interval_end <= interval_start:
        raise ValueError(f"interval_end ({interval_end}) must be after interval_start ({interval_start})")
    s = settings or get_settings()
    rule = crash_rule(s)
    exchange, symbols = watched(s)
    history = timedelta(minutes=rule.history_minutes) + (interval_end - interval_start)
    since = interval_end - history
    collected = 0
    if collect:
        for r in collect_candles(exchange, symbols, FLASH_TIMEFRAME, since=since, until=interval_end, client=client):
            collected += int(r.new) + int(r.updated)
    with connect(s) as conn:
        candles = load_candles(conn, exchange=exchange, symbols=symbols, timeframe=FLASH_TIMEFRAME, start=since,
                               end=interval_end)
        events = detect_many(candles, rule) if not candles.empty else None
        if events is None or events.empty:
            alerts = final = events.iloc[0:0] if events is not None else None
        else:
            alerts = in_interval(events, "detected_at", interval_start, interval_end)
            final = in_interval(events, "final_at", interval_start, interval_end)
        n_alerts = write_alerts(conn, alerts, interval_end=interval_end) if alerts is not None else 0
        n_final = write_events(conn, final, interval_end=interval_end) if final is not None else 0
    for _, a in (alerts.iterrows() if alerts is not None else iter(())):
        log.warning("FLASH CRASH %s %s: -%.1f%% from %s, volume %.1fx its trailing average (detected %s)",
                    a["exchange"], a["symbol"], 100 * a["depth"], a["start_ts"], a["volume_ratio"], a["detected_at"])
    for _, e in (final.iterrows() if final is not None else iter(())):
        log.warning("flash crash final %s %s: start %s, trough %s, depth %.1f%%, recovery %.0f%%, volume %.1fx",
                    e["exchange"], e["symbol"], e["start_ts"], e["trough_ts"], 100 * e["depth"],
                    100 * e["recovery"] if e["recovery"] == e["recovery"] else float("nan"), e["volume_ratio"])
    out = {
        "interval_start": interval_start.isoformat(), "interval_end": interval_end.isoformat(),
        "symbols": symbols, "bars": int(len(candles)), "collected": collected,
        "alerts": [] if alerts is None else [f"{r.symbol} {r.start_ts.isoformat()}" for r in alerts.itertuples()],
        "final_events": [] if final is None else [f"{r.symbol} {r.start_ts.isoformat()}" for r in final.itertuples()],
        "rows_written": n_alerts + n_final,
    }
    log.info("flash crash run: %s", out)
    return out


def levels_frame(candles: pd.DataFrame, *, asset: str, exchange: str, timeframe: str, as_of: Sequence[datetime],
                 settings: Settings | None = None) -> pd.DataFrame:
    """ml.levels rows for ``asset`` as of each bar close in ``as_of`` (bars closing later are ignored)."""
    import pandas as pd

    from entasis.signals.levels import LevelParams, levels_at

    p = LevelParams.from_config((settings or get_settings()).signals.levels)
    step = pd.Timedelta(seconds=timeframe_seconds(timeframe))
    parts = []
    for t in as_of:
        at = pd.Timestamp(t).tz_convert("UTC") - step  # the bar that closes at t
        if candles.empty or candles["ts"].min() > at:
            continue
        lv = levels_at(candles[candles["ts"] <= at], params=p)
        if lv.empty:
            continue
        lv.insert(0, "as_of", pd.Timestamp(t).tz_convert("UTC"))
        lv.insert(0, "asset", asset)
        lv["exchange"], lv["timeframe"] = exchange, timeframe
        lv["close"], lv["atr"] = lv.attrs["close"], lv.attrs["atr"]
        parts.append(lv)
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts, ignore_index=True)


def publish_levels(conn: psycopg.Connection, keys: Sequence[tuple[str, datetime]], *, exchange: str,
                   timeframe: str, settings: Settings | None = None) -> int:
    """Nearest support/resistance for each published (asset, as_of) into ml.levels (joins ml.predictions)."""
    from entasis.signals.levels import LevelParams

    p = LevelParams.from_config((settings or get_settings()).signals.levels)
    step = timedelta(seconds=timeframe_seconds(timeframe))
    written = 0
    by_asset: dict[str, set[datetime]] = {}
    for asset, as_of in keys:
        by_asset.setdefault(asset, set()).add(as_of)
    for asset, times in sorted(by_asset.items()):
        first = min(times) - step * (p.lookback_bars + 2)
        candles = load_candles(conn, exchange=exchange, symbols=[asset], timeframe=timeframe, start=first,
                               end=max(times))
        frame = levels_frame(candles, asset=asset, exchange=exchange, timeframe=timeframe, as_of=sorted(times),
                             settings=settings)
        written += write_levels(conn, frame)
    return written
