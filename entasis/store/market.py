"""Writers for the market.* tables: validate at the boundary, then one bulk upsert."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from entasis.config import get_settings
from entasis.store.upsert import UpsertResult, idents, table_ident, upsert_frame
from entasis.store.validate import (
    CANDLE_RULES,
    FUNDING_RULES,
    OPEN_INTEREST_RULES,
    OPTION_RULES,
    require_valid,
)

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

CANDLE_COLUMNS = ["exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "quote_volume"]
CANDLE_KEY = ["exchange", "symbol", "timeframe", "ts"]
FUNDING_COLUMNS = ["exchange", "symbol", "ts", "funding_rate", "mark_price"]
FUNDING_KEY = ["exchange", "symbol", "ts"]
OI_COLUMNS = ["exchange", "symbol", "ts", "open_interest", "open_interest_value"]
OI_KEY = ["exchange", "symbol", "ts"]
OPTION_COLUMNS = [
    "exchange", "instrument", "snapshot_ts", "underlying", "expiry", "strike", "kind", "bid", "ask",
    "mark_price", "mark_iv", "delta", "gamma", "vega", "theta", "underlying_price", "open_interest",
]
OPTION_KEY = ["exchange", "instrument", "snapshot_ts"]


def _frame(df: pd.DataFrame, columns: list[str], table: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in df.columns]
    optional = {"quote_volume", "mark_price", "open_interest_value"}
    hard = [c for c in missing if c not in optional]
    if hard:
        raise ValueError(f"{table}: batch lacks column(s) {hard}")
    out = df.copy()
    for c in missing:
        out[c] = None
    return out[columns]


def known_symbols(conn: psycopg.Connection, exchange: str, extra: Iterable[str] = ()) -> set[str]:
    """Symbols a writer accepts: those registered in market.instruments plus the configured universe."""
    rows = conn.execute("SELECT symbol FROM market.instruments WHERE exchange = %s", (exchange,)).fetchall()
    s = get_settings().universe.symbols
    return {r[0] for r in rows} | set(s) | {f"{x}:USDT" for x in s} | set(extra)


def register_instruments(conn: psycopg.Connection, df: pd.DataFrame) -> UpsertResult:
    """Record instruments the exchange lists (exchange, symbol, market_type, base, quote, active)."""
    cols = ["exchange", "symbol", "market_type", "base", "quote", "active"]
    return upsert_frame(conn, "market.instruments", df[cols], ["exchange", "symbol"])


def _symbols_for(conn: psycopg.Connection, df: pd.DataFrame, known: Iterable[str] | None) -> set[str] | None:
    if known is not None:
        return set(known)
    out: set[str] = set()
    for ex in df["exchange"].dropna().unique():
        out |= known_symbols(conn, str(ex))
    return out


def write_candles(conn: psycopg.Connection, df: pd.DataFrame, *, known: Iterable[str] | None = None) -> UpsertResult:
    """Validate then upsert candles; any bad row rejects the batch with a message naming it."""
    batch = _frame(df, CANDLE_COLUMNS, "market.candles")
    require_valid(batch, CANDLE_RULES, "market.candles", key_cols=("symbol", "timeframe", "ts"),
                  known_symbols=_symbols_for(conn, batch, known))
    return upsert_frame(conn, "market.candles", batch, CANDLE_KEY)


def write_funding(conn: psycopg.Connection, df: pd.DataFrame, *, known: Iterable[str] | None = None) -> UpsertResult:
    batch = _frame(df, FUNDING_COLUMNS, "market.funding_rates")
    require_valid(batch, FUNDING_RULES, "market.funding_rates", known_symbols=_symbols_for(conn, batch, known))
    return upsert_frame(conn, "market.funding_rates", batch, FUNDING_KEY)


def write_open_interest(
    conn: psycopg.Connection, df: pd.DataFrame, *, known: Iterable[str] | None = None
) -> UpsertResult:
    batch = _frame(df, OI_COLUMNS, "market.open_interest")
    require_valid(batch, OPEN_INTEREST_RULES, "market.open_interest", known_symbols=_symbols_for(conn, batch, known))
    return upsert_frame(conn, "market.open_interest", batch, OI_KEY)


def write_option_quotes(conn: psycopg.Connection, df: pd.DataFrame) -> UpsertResult:
    batch = _frame(df, OPTION_COLUMNS, "market.option_quotes")
    require_valid(batch, OPTION_RULES, "market.option_quotes", key_cols=("instrument", "snapshot_ts"))
    return upsert_frame(conn, "market.option_quotes", batch, OPTION_KEY)


def table_checksum(conn: psycopg.Connection, table: str, order_by: Iterable[str]) -> str:
    """md5 over every row in key order: equal checksums mean identical contents."""
    from psycopg import sql

    row = conn.execute(
        sql.SQL("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY {order}), '')) FROM {table} t").format(
            order=idents(list(order_by)), table=table_ident(table))
    ).fetchone()
    return str(row[0]) if row else ""
