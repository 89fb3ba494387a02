"""Reading features.bars for the models and backtest, and loading sentiment into market.sentiment."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from entasis.domain import LABEL_PREFIXES, utc_datetime
from entasis.features import catalog
from entasis.store.upsert import UpsertResult, idents, upsert_frame

if TYPE_CHECKING:
    import pandas as pd
    import psycopg


log = logging.getLogger(__name__)

BARS_TABLE = "features.bars"
OPTION_FEATURES_TABLE = "features.option_features"
DEFAULT_SENTIMENT_SOURCE = "fear_greed"


def table_exists(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def table_columns(conn: psycopg.Connection, table: str) -> list[str]:
    schema, name = table.split(".")
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
        "ORDER BY ordinal_position",
        (schema, name),
    ).fetchall()
    return [str(r[0]) for r in rows]


def require_label_columns(conn: psycopg.Connection, horizons: Iterable[int]) -> None:
    """Fail before any work when features.bars has no columns for a configured label horizon.

    The table's shape changes only through migrations (never at run time), so a horizon beyond the
    migrated ones (7, 14, 30 days) needs a new migration in the features range (0300-0399).
    """
    have = set(table_columns(conn, BARS_TABLE))
    if not have:
        raise RuntimeError("features.bars does not exist; run `entasis db upgrade`")
    missing = [c for c in catalog.label_columns(horizons) if c not in have]
    if missing:
        raise ValueError(
            f"features.bars has no column(s) {', '.join(missing)} for the configured label horizons; "
            "add them with a migration in entasis/store/migrations (features range 0300-0399) or "
            "configure only the migrated horizons (ENTASIS_LABELS__HORIZONS)"
        )


def _ts_param(v: datetime | str | pd.Timestamp | None, what: str) -> datetime | None:
    return None if v is None else utc_datetime(v, what)


def load_bars(
    conn: psycopg.Connection,
    *,
    exchange: str | None = None,
    symbols: Sequence[str] | None = None,
    timeframe: str = "1d",
    start: datetime | str | pd.Timestamp | None = None,
    end: datetime | str | pd.Timestamp | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rows of features.bars, sorted by (symbol, ts): features, ``warmup``, labels (NULL = unknown).

    ``start`` / ``end`` bound ``ts`` inclusively (naive = UTC). ``y_cls_*`` come back as Int16 so
    NULL stays NULL; timestamps are tz-aware UTC.
    """
    import pandas as pd

    catalog.timeframe_seconds(timeframe)
    all_cols = table_columns(conn, BARS_TABLE)
    if not all_cols:
        raise RuntimeError("features.bars does not exist; run `entasis db upgrade`")
    if columns is None:  # catalogue order (migrations append columns to the table), then the rest
        lead = [*catalog.KEY_COLUMNS, *catalog.FEATURE_COLUMNS, catalog.WARMUP_COLUMN]
        cols = [c for c in lead if c in all_cols] + [c for c in all_cols if c not in lead]
    else:
        cols = list(columns)
    unknown = [c for c in cols if c not in all_cols]
    if unknown:
        raise ValueError(f"features.bars has no column(s) {unknown}")
    for k in catalog.KEY_COLUMNS:
        if k not in cols:
            cols.insert(catalog.KEY_COLUMNS.index(k), k)
    where = ["timeframe = %s"]
    params: list[Any] = [timeframe]
    if exchange is not None:
        where.append("exchange = %s")
        params.append(exchange)
    if symbols is not None:
        where.append("symbol = ANY(%s)")
        params.append(list(symbols))
    s, e = _ts_param(start, "start"), _ts_param(end, "end")
    if s is not None:
        where.append("ts >= %s")
        params.append(s)
    if e is not None:
        where.append("ts <= %s")
        params.append(e)
    from psycopg import sql

    query = sql.SQL("SELECT {} FROM features.bars WHERE {} ORDER BY symbol, ts, exchange").format(
        idents(cols), sql.SQL(" AND ").join(sql.SQL(w) for w in where))  # where: fixed text, values as params
    with conn.cursor() as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
    df = pd.DataFrame(rows, columns=cols)
    if "ts" in df.columns:
        df["ts"] = pd.to_datetime(df["ts"], utc=True)
    for c in df.columns:
        if c.startswith(LABEL_PREFIXES[0]):  # y_cls_*
            df[c] = df[c].astype("Int16")
        elif c == "warmup":
            df[c] = df[c].astype(bool)
        elif c not in catalog.KEY_COLUMNS:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    return df


def read_sentiment_csv(
    path: str | Path, *, value_column: str | None = None, publish_lag: timedelta = timedelta(0)
) -> pd.DataFrame:
    """A dated sentiment CSV (e.g. date,fng) as (ts, value); ts = date 00:00 UTC + ``publish_lag``.

    The Crypto Fear & Greed index for day D is published at 00:00 UTC of D, so the default lag is 0;
    give a lag for a source published later in its day, or bars would see it too early.
    """
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"sentiment CSV {p} does not exist")
    df = pd.read_csv(p)
    df.columns = [c.strip().lower() for c in df.columns]
    tcol = next((c for c in ("ts", "timestamp", "date", "time") if c in df.columns), None)
    if tcol is None:
        raise ValueError(f"{p}: no date column (expected one of ts, timestamp, date, time)")
    if value_column is None:
        others = [c for c in df.columns if c != tcol]
        if "value" in others:
            value_column = "value"
        elif len(others) == 1:
            value_column = others[0]
        else:
            raise ValueError(f"{p}: several value columns {others}; pass value_column=")
    if value_column not in df.columns:
        raise ValueError(f"{p}: no column {value_column!r}")
    ts = pd.to_datetime(df[tcol], utc=True, errors="coerce")
    val = pd.to_numeric(df[value_column], errors="coerce")
    bad = ts.isna() | val.isna()
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise ValueError(f"{p}: row {i + 2} has a bad date or {value_column} ({df.iloc[i].to_dict()})")
    return pd.DataFrame({"ts": ts + pd.Timedelta(publish_lag), "value": val.astype("float64")})


def upsert_sentiment(conn: psycopg.Connection, df: pd.DataFrame, source: str) -> UpsertResult:
    """Idempotently write (ts, value) rows for one source into market.sentiment."""
    if not source or not source.replace("_", "").isalnum():
        raise ValueError(f"sentiment source must be a word like 'fear_greed', got {source!r}")
    out = df[["ts", "value"]].copy()
    out.insert(0, "source", source)
    return upsert_frame(conn, "market.sentiment", out, ["source", "ts"])


def load_sentiment_csv(
    conn: psycopg.Connection,
    path: str | Path,
    *,
    source: str = DEFAULT_SENTIMENT_SOURCE,
    value_column: str | None = None,
    publish_lag: timedelta = timedelta(0),
) -> UpsertResult:
    """Read a sentiment CSV and upsert it (re-running changes nothing)."""
    df = read_sentiment_csv(path, value_column=value_column, publish_lag=publish_lag)
    return upsert_sentiment(conn, df, source)
