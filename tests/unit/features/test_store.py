"""features.bars schema, load_bars, and the sentiment loader on a real PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from entasis.features import catalog
from entasis.features.compute import LabelParams
from entasis.features.store import (
    load_bars,
    load_sentiment_csv,
    read_sentiment_csv,
    require_label_columns,
    table_columns,
)
from entasis.store.db import connect
from entasis.store.market import table_checksum
from entasis.store.upsert import upsert_frame

from ._data import fear_greed_csv, synthetic


def test_table_matches_the_catalog(db_url: str) -> None:
    with connect() as conn:
        cols = table_columns(conn, "features.bars")
        # same columns; later migrations append theirs at the end of the table
        assert sorted(cols) == sorted(catalog.output_columns([7, 14, 30]))
        pk = conn.execute(
            "SELECT array_agg(a.attname ORDER BY array_position(i.indkey, a.attnum)) FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = 'features.bars'::regclass AND i.indisprimary").fetchone()
        assert pk is not None and list(pk[0]) == catalog.KEY_COLUMNS
        typ = conn.execute("SELECT data_type FROM information_schema.columns WHERE table_schema = 'features' "
                           "AND table_name = 'bars' AND column_name = 'ts'").fetchone()
        assert typ == ("timestamp with time zone",)
        require_label_columns(conn, [7, 14, 30])
        require_label_columns(conn, [14])
        # no schema change at run time: an unmigrated horizon is an error naming the columns, table unchanged
        with pytest.raises(ValueError, match="y_cls_60d, y_ret_60d, y_vol_60d.*migration"):
            require_label_columns(conn, [7, 60])
        assert table_columns(conn, "features.bars") == cols


def _store(conn: object) -> pd.DataFrame:
    from entasis.features.compute import compute_universe

    c = pd.concat([synthetic(150, "1d", symbol="B/USDT", seed=1), synthetic(150, "1d", symbol="A/USDT", seed=2),
                   synthetic(60, "4h", symbol="A/USDT", seed=3)])
    out = compute_universe(c, labels=LabelParams())
    upsert_frame(conn, "features.bars", out, catalog.KEY_COLUMNS)  # type: ignore[arg-type]
    return out


def test_load_bars_filters_sorts_and_keeps_nulls(db_url: str) -> None:
    with connect() as conn:
        out = _store(conn)
        df = load_bars(conn, exchange="sim", timeframe="1d")
        assert len(df) == 300 and list(df["symbol"].unique()) == ["A/USDT", "B/USDT"]
        assert df.groupby("symbol")["ts"].apply(lambda s: s.is_monotonic_increasing).all()
        assert list(df.columns) == catalog.output_columns([7, 14, 30])
        assert str(df["y_cls_7d"].dtype) == "Int16" and df["y_cls_7d"].isna().sum() == 14
        assert str(df["ts"].dtype).startswith("datetime64") and str(df["ts"].dt.tz) == "UTC"
        ref = out[(out["timeframe"] == "1d")].sort_values(["symbol", "ts"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(df, ref, check_dtype=False, check_exact=True)
        some = load_bars(conn, symbols=["B/USDT"], start="2021-02-01", end=pd.Timestamp("2021-02-10", tz="UTC"),
                         columns=["rsi_14", "y_cls_30d"])
        assert list(some.columns) == [*catalog.KEY_COLUMNS, "rsi_14", "y_cls_30d"]
        assert len(some) == 10 and some["ts"].min() == pd.Timestamp("2021-02-01", tz="UTC")
        assert len(load_bars(conn, timeframe="4h")) == 60
        with pytest.raises(ValueError, match=r"no column\(s\) \['nope'\]"):
            load_bars(conn, columns=["nope"])
        with pytest.raises(ValueError, match="start='soon' is not a timestamp"):
            load_bars(conn, start="soon")


def test_fear_greed_loader_is_idempotent(db_url: str, shared_data: Path) -> None:
    path = fear_greed_csv(shared_data)
    n = len(pd.read_csv(path))
    with connect() as conn:
        r = load_sentiment_csv(conn, path)
        assert r.inserted == n
        before = table_checksum(conn, "market.sentiment", ["source", "ts"])
        again = load_sentiment_csv(conn, path)
        assert (again.inserted, again.updated, again.unchanged) == (0, 0, n)
        assert table_checksum(conn, "market.sentiment", ["source", "ts"]) == before
        row = conn.execute("SELECT ts, value FROM market.sentiment WHERE source = 'fear_greed' ORDER BY ts "
                           "LIMIT 1").fetchone()
    assert row is not None and row[1] == 30.0 and row[0].isoformat() == "2018-02-01T00:00:00+00:00"


def test_sentiment_csv_errors_and_lag(tmp_path: Path) -> None:
    p = tmp_path / "s.csv"
    p.write_text("date,fng\n2020-01-01,10\n2020-01-02,x\n")
    with pytest.raises(ValueError, match="row 3 has a bad date or fng"):
        read_sentiment_csv(p)
    p.write_text("date,a,b\n2020-01-01,1,2\n")
    with pytest.raises(ValueError, match="several value columns"):
        read_sentiment_csv(p)
    assert read_sentiment_csv(p, value_column="b")["value"].iloc[0] == 2.0
    lagged = read_sentiment_csv(p, value_column="a", publish_lag=timedelta(hours=6))
    assert lagged["ts"].iloc[0] == pd.Timestamp("2020-01-01 06:00", tz="UTC")
    with pytest.raises(FileNotFoundError):
        read_sentiment_csv(tmp_path / "missing.csv")
