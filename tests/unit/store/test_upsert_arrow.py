"""``arrow_copy_stream`` (the Spark workers' COPY of stage rows) stores what the pandas upsert stores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pytest

from entasis.store.market import table_checksum
from entasis.store.upsert import arrow_copy_stream, upsert_frame

DDL = """CREATE TABLE public.{name} (k text NOT NULL, ts timestamptz NOT NULL, n bigint, f double precision,
    c smallint, b boolean, PRIMARY KEY (k, ts))"""


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    f = rng.normal(size=n)
    f[rng.random(n) < 0.3] = np.nan  # NULLs in many patterns
    return pd.DataFrame({
        "k": rng.choice(["BTC/USDT", "ünï €", ""], n),
        "ts": pd.Timestamp("1999-12-31 23:00", tz="UTC") + pd.to_timedelta(np.arange(n), unit="h"),
        "n": rng.integers(-(2**62), 2**62, n), "f": f,
        "c": pd.Series(rng.integers(0, 3, n), dtype="Int16").mask(rng.random(n) < 0.2),
        "b": rng.random(n) < 0.5,
    })


def _arrow(df: pd.DataFrame) -> pa.Table:
    return pa.table({
        "k": pa.array(df["k"].tolist(), pa.string()),
        "ts": pa.array(df["ts"].dt.as_unit("us"), pa.timestamp("us", tz="UTC")),
        "n": pa.array(df["n"].to_numpy(), pa.int64()),
        "f": pa.array(df["f"].to_numpy(), mask=np.isnan(df["f"].to_numpy())),
        "c": pa.array(df["c"], pa.int16()),
        "b": pa.array(df["b"].to_numpy()),
    })


@pytest.mark.parametrize("seed", [0, 1])
def test_arrow_copy_equals_the_csv_upsert(db_url: str, seed: int) -> None:
    df = _frame(3000, seed).drop_duplicates(["k", "ts"])
    with psycopg.connect(db_url) as conn:
        for name in ("via_arrow", "via_csv"):
            conn.execute(DDL.format(name=name))
        stream = arrow_copy_stream(_arrow(df))
        assert stream is not None
        copy = "COPY public.via_arrow (k, ts, n, f, c, b) FROM STDIN WITH (FORMAT binary)"
        with conn.cursor() as cur, cur.copy(copy) as cp:
            for chunk in stream:
                cp.write(chunk)
        upsert_frame(conn, "public.via_csv", df, ["k", "ts"], binary=False)
        a = table_checksum(conn, "public.via_arrow", ["k", "ts"])
        b = table_checksum(conn, "public.via_csv", ["k", "ts"])
        nulls = conn.execute("SELECT count(*) FILTER (WHERE f IS NULL), count(*) FILTER (WHERE c IS NULL) "
                             "FROM public.via_arrow").fetchone()
    assert a == b
    assert nulls is not None and nulls[0] > 500 and nulls[1] > 300


def test_unsupported_arrow_type_says_none() -> None:
    assert arrow_copy_stream(pa.table({"d": pa.array([1.5], pa.float32())})) is None


def test_wide_rows_with_warm_up_null_patterns(db_url: str) -> None:
    """30 float columns NULL over prefixes of different lengths (as indicators in warm-up): too many
    varying fields for one packed integer key, grouped by identical rows of lengths instead."""
    n, w = 400, 30
    cols = {f"x{j}": np.where(np.arange(n) < 10 * j, np.nan, np.arange(n) * 0.5 + j) for j in range(w)}
    df = pd.DataFrame({"k": "A", "ts": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(n), unit="h"),
                       **cols})
    ddl = ", ".join(f"x{j} double precision" for j in range(w))
    table = pa.table({"k": pa.array(["A"] * n), "ts": pa.array(df["ts"].dt.as_unit("us"), pa.timestamp("us", tz="UTC")),
                      **{c: pa.array(v, mask=np.isnan(v)) for c, v in cols.items()}})
    with psycopg.connect(db_url) as conn:
        for name in ("wide_arrow", "wide_csv"):
            conn.execute(f"CREATE TABLE public.{name} (k text, ts timestamptz, {ddl}, PRIMARY KEY (k, ts))")
        stream = arrow_copy_stream(table)
        assert stream is not None
        names = ", ".join(table.schema.names)
        with conn.cursor() as cur, cur.copy(f"COPY public.wide_arrow ({names}) FROM STDIN WITH (FORMAT binary)") as cp:
            for chunk in stream:
                cp.write(chunk)
        upsert_frame(conn, "public.wide_csv", df, ["k", "ts"], binary=False)
        assert table_checksum(conn, "public.wide_arrow", ["k", "ts"]) == table_checksum(conn, "public.wide_csv",
                                                                                         ["k", "ts"])
        row = conn.execute("SELECT count(*) FILTER (WHERE x29 IS NULL), count(*) FILTER (WHERE x0 IS NULL) "
                           "FROM public.wide_arrow").fetchone()
    assert row == (290, 0)
