"""The binary COPY path stores exactly what the CSV path stores, and falls back to CSV for the rest."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest

from entasis.store.market import CANDLE_KEY, table_checksum
from entasis.store.upsert import (
    MAX_COPY_LAYOUTS,
    frame_copy_stream,
    ident,
    table_ident,
    table_shape,
    upsert_frame,
)
from tests.bench_loader import load_bench

DDL = """CREATE TABLE public.kinds (
    k text NOT NULL, ts timestamptz NOT NULL, f double precision, i bigint, j integer, s smallint,
    b boolean, v varchar(20), doc jsonb, PRIMARY KEY (k, ts))"""
KEYS = ["k", "ts"]


def frame() -> pd.DataFrame:
    ts = pd.to_datetime(["2024-01-01 00:00:00.123456", "1999-12-31 23:59:59", "2000-01-01", "2262-04-01",
                         "1970-01-01"], utc=True, format="ISO8601")
    return pd.DataFrame({
        "k": ["a", "ünïcødé €", "", "quote \"and\" comma, new\nline", "a"],
        "ts": ts,
        "f": [1.5, np.nan, -0.0, 1e-300, np.inf],
        "i": np.array([0, -(2**63) + 1, 2**62, 7, -1], dtype=np.int64),
        "j": np.array([1, 2, -(2**31), 2**31 - 1, 0], dtype=np.int64),
        "s": np.array([1, -2, 3, 32767, -32768], dtype=np.int64),
        "b": [True, False, True, False, True],
        "v": ["x", None, "yy", np.nan, "z"],
    })


@pytest.fixture
def conn(db_url: str):  # type: ignore[no-untyped-def]
    with psycopg.connect(db_url) as c:
        c.execute(DDL)
        c.commit()
        yield c


def _sum(conn: psycopg.Connection) -> str:
    return table_checksum(conn, "public.kinds", KEYS)


def _one(conn: psycopg.Connection, query: str) -> Any:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def _binary(conn: psycopg.Connection, df: pd.DataFrame, table: str = "public.kinds") -> bool:
    return frame_copy_stream(df, table_shape(conn, table).types) is not None


def test_every_supported_type_goes_binary(conn: psycopg.Connection) -> None:
    assert _binary(conn, frame())


@pytest.mark.parametrize("cols", [["k", "ts", "f", "i", "j", "s", "b", "v"], ["k", "ts", "f", "v"]])
def test_binary_and_csv_store_identical_rows(conn: psycopg.Connection, cols: list[str]) -> None:
    df = frame()[cols]
    r1 = upsert_frame(conn, "public.kinds", df, KEYS, binary=False)
    csv_sum = _sum(conn)
    csv_rows = conn.execute("SELECT * FROM public.kinds ORDER BY k, ts").fetchall()
    conn.execute("TRUNCATE public.kinds")
    r2 = upsert_frame(conn, "public.kinds", df, KEYS, binary=True)
    assert (r1.inserted, r2.inserted) == (len(df), len(df))
    assert _sum(conn) == csv_sum
    assert conn.execute("SELECT * FROM public.kinds ORDER BY k, ts").fetchall() == csv_rows
    # re-applying through the other path changes nothing
    r3 = upsert_frame(conn, "public.kinds", df, KEYS, binary=False)
    assert (r3.inserted, r3.updated, r3.unchanged) == (0, 0, len(df))


def test_nulls_and_special_floats_round_trip(conn: psycopg.Connection) -> None:
    upsert_frame(conn, "public.kinds", frame()[["k", "ts", "f", "v"]], KEYS)
    rows: dict[str, float | None] = dict(
        conn.execute("SELECT k || '@' || extract(epoch FROM ts)::text, f FROM public.kinds").fetchall())
    got = sorted((v for v in rows.values() if v is not None), key=repr)
    assert any(v == float("inf") for v in got)
    assert any(v == 0.0 and np.signbit(v) for v in got)
    assert 1e-300 in got
    assert _one(conn, "SELECT count(*) FROM public.kinds WHERE f IS NULL") == 1
    assert _one(conn, "SELECT count(*) FROM public.kinds WHERE v IS NULL") == 2
    assert _one(conn, "SELECT count(*) FROM public.kinds WHERE k = ''") == 1


def test_microseconds_and_pre_2000_timestamps_exact(conn: psycopg.Connection) -> None:
    df = frame()[["k", "ts"]]
    upsert_frame(conn, "public.kinds", df, KEYS)
    got = sorted(pd.Timestamp(r[0]).tz_convert("UTC") for r in conn.execute("SELECT ts FROM public.kinds"))
    assert got == sorted(df["ts"])


def test_jsonb_and_mixed_objects_fall_back_to_csv(conn: psycopg.Connection) -> None:
    df = frame()[["k", "ts"]].assign(doc=[{"a": 1}, [1, 2], None, {"z": "é"}, {}])
    assert not _binary(conn, df)
    upsert_frame(conn, "public.kinds", df, KEYS)
    assert _one(conn, "SELECT doc FROM public.kinds WHERE k = 'ünïcødé €'") == [1, 2]
    mixed = frame()[["k", "ts"]].assign(v=["x", 3, None, "y", "z"])  # not all strings
    assert not _binary(conn, mixed)


def test_out_of_range_int_falls_back_and_the_server_names_it(conn: psycopg.Connection) -> None:
    df = frame()[["k", "ts"]].assign(j=np.array([1, 2, 3, 2**40, 5], dtype=np.int64))
    assert not _binary(conn, df)
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        upsert_frame(conn, "public.kinds", df, KEYS)
    conn.rollback()
    assert _one(conn, "SELECT count(*) FROM public.kinds") == 0


def test_many_layouts_fall_back_to_csv_with_the_same_result(db_url: str) -> None:
    n = MAX_COPY_LAYOUTS + 50
    df = pd.DataFrame({"exchange": "binance", "symbol": [f"S{'x' * i}/USDT" for i in range(n)], "timeframe": "1h",
                       "ts": pd.Timestamp("2024-01-01", tz="UTC"), "open": 1.0, "high": 2.0, "low": 0.5,
                       "close": 1.5, "volume": 3.0, "quote_volume": np.nan})
    with psycopg.connect(db_url) as conn:
        assert _binary(conn, df.head(10), "market.candles")  # the types encode: the layouts are too many
        assert not _binary(conn, df, "market.candles")
        upsert_frame(conn, "market.candles", df, CANDLE_KEY)
        a = table_checksum(conn, "market.candles", CANDLE_KEY)
        conn.execute("TRUNCATE market.candles")
        upsert_frame(conn, "market.candles", df, CANDLE_KEY, binary=False)
        assert table_checksum(conn, "market.candles", CANDLE_KEY) == a


def test_identifiers_are_checked_and_quoted() -> None:
    assert ident("close").as_string(None) == '"close"'  # type: ignore[arg-type]
    assert table_ident("market.candles").as_string(None) == '"market"."candles"'  # type: ignore[arg-type]
    for bad in ['x"; DROP TABLE market.candles; --', "Upper", "a b", ""]:
        with pytest.raises(ValueError, match="invalid SQL identifier"):
            ident(bad)
    with pytest.raises(ValueError, match="schema-qualified"):
        table_ident("candles")


def test_bench_smoke_prints_a_met_flag_computed_from_figures(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench("upsert")
    assert bench.main(["--rows", "3000", "--sample", "300"]) == 0
    printed = capsys.readouterr().out
    assert "per-row execute loop" in printed and "merge-only" in printed
    out = json.loads(printed.strip().splitlines()[-1])  # the bench ends with its one JSON line
    assert {"bench", "metric", "reference", "ratio", "target", "met"} <= set(out)
    assert out["identical"] is True
    assert out["rows"] == 3000
    assert out["met"] == (out["metric"] >= bench.TARGET_ROWS_S and out["ratio"] >= bench.TARGET_RATIO)
