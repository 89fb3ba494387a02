"""Bulk upsert against a real PostgreSQL server: idempotent, atomic, dedupes, revises in place."""

from __future__ import annotations

import pandas as pd
import psycopg
import pytest

from entasis.store.db import connect
from entasis.store.market import CANDLE_KEY, table_checksum, write_candles
from entasis.store.upsert import upsert_frame


def candles(n: int = 50, symbol: str = "BTC/USDT", start: str = "2024-01-01", scale: float = 1.0) -> pd.DataFrame:
    ts = pd.date_range(start, periods=n, freq="1h", tz="UTC")
    close = 100 + pd.Series(range(n), dtype=float) * scale
    return pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": symbol,
            "timeframe": "1h",
            "ts": ts,
            "open": close - 0.5,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": 10.0,
            "quote_volume": close * 10.0,
        }
    )


def count(conn: psycopg.Connection, table: str = "market.candles") -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def checksum(conn: psycopg.Connection) -> str:
    return table_checksum(conn, "market.candles", CANDLE_KEY)


def test_same_batch_twice_gives_identical_table(db_url: str) -> None:
    df = candles()
    with connect() as conn:
        r1 = write_candles(conn, df)
        c1 = checksum(conn)
        ctid1 = conn.execute("SELECT string_agg(ctid::text, ',' ORDER BY ts) FROM market.candles").fetchone()[0]
    with connect() as conn:
        r2 = write_candles(conn, df)
        c2 = checksum(conn)
        ctid2 = conn.execute("SELECT string_agg(ctid::text, ',' ORDER BY ts) FROM market.candles").fetchone()[0]
    assert (r1.inserted, r1.updated) == (50, 0)
    assert (r2.inserted, r2.updated, r2.unchanged) == (0, 0, 50)
    assert c1 == c2
    # unchanged rows are not rewritten at all (no new row versions)
    assert ctid1 == ctid2


def test_duplicate_keys_inside_batch_last_wins(db_url: str) -> None:
    df = candles(10)
    dup = df.iloc[[3]].copy()
    dup["close"] = dup["close"] + 0.25
    batch = pd.concat([df, dup], ignore_index=True)
    with connect() as conn:
        r = write_candles(conn, batch)
        assert r.inserted == 10
        assert count(conn) == 10
        got = conn.execute("SELECT close FROM market.candles WHERE ts = %s", (df["ts"].iloc[3],)).fetchone()[0]
    assert got == pytest.approx(float(df["close"].iloc[3]) + 0.25)


def test_revised_row_updates_in_place(db_url: str) -> None:
    df = candles(20)
    with connect() as conn:
        write_candles(conn, df)
    rev = df.iloc[[5]].copy()
    rev["close"] = rev["close"] * 1.01
    rev["high"] = rev["close"] + 2
    with connect() as conn:
        r = write_candles(conn, rev)
        assert (r.inserted, r.updated) == (0, 1)
        assert count(conn) == 20
        got = conn.execute("SELECT close FROM market.candles WHERE ts = %s", (df["ts"].iloc[5],)).fetchone()[0]
    assert got == pytest.approx(float(rev["close"].iloc[0]))


def test_failure_mid_batch_rolls_back_everything(db_url: str) -> None:
    base = candles(10)
    with connect() as conn:
        write_candles(conn, base)
        before = checksum(conn)
    # second batch: revises existing rows and adds new ones, but one row violates NOT NULL in the
    # database itself (a failure inside the INSERT, after COPY has run)
    batch = candles(30, scale=2.0)
    batch.loc[25, "open"] = None
    with pytest.raises(psycopg.errors.NotNullViolation):
        with psycopg.connect(db_url) as conn:
            upsert_frame(conn, "market.candles", batch, CANDLE_KEY)
    with connect() as conn:
        assert count(conn) == 10
        assert checksum(conn) == before


def test_failure_in_enclosing_transaction_rolls_back(db_url: str) -> None:
    with pytest.raises(RuntimeError):
        with connect() as conn:
            write_candles(conn, candles(10))
            raise RuntimeError("boom after the write")
    with connect() as conn:
        assert count(conn) == 0


def test_naive_timestamps_refused_by_upsert(db_url: str) -> None:
    df = candles(3)
    df["ts"] = df["ts"].dt.tz_localize(None)
    with psycopg.connect(db_url) as conn, pytest.raises(ValueError, match="naive"):
        upsert_frame(conn, "market.candles", df, CANDLE_KEY)


def test_jsonb_and_nulls_round_trip(db_url: str) -> None:
    row = pd.DataFrame(
        {
            "source": ["candles"],
            "exchange": ["binance"],
            "symbol": ["BTC/USDT"],
            "timeframe": ["1h"],
            "ts": [pd.Timestamp("2024-01-01", tz="UTC")],
            "reason": ["negative volume"],
            "payload": [{"volume": -1.0, "note": 'quote " and, comma'}],
        }
    )
    with connect() as conn:
        upsert_frame(conn, "market.quarantine", row, ["source", "exchange", "symbol", "timeframe", "ts", "reason"])
        got = conn.execute("SELECT payload FROM market.quarantine").fetchone()[0]
    assert got == {"volume": -1.0, "note": 'quote " and, comma'}


def test_float_precision_preserved(db_url: str) -> None:
    df = candles(3)
    df.loc[1, "close"] = 0.1 + 0.2  # 0.30000000000000004
    df.loc[1, "low"] = 0.3
    df.loc[1, "open"] = 0.3
    with connect() as conn:
        write_candles(conn, df)
        got = conn.execute("SELECT close FROM market.candles WHERE ts = %s", (df["ts"].iloc[1],)).fetchone()[0]
    assert got == 0.1 + 0.2
