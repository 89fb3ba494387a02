"""Spark computes exactly what pandas computes, and the Spark job writes features.bars idempotently.

One Spark session for the module (start-up takes seconds); few, small tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from entasis.features import catalog
from entasis.features.build import build_features
from entasis.features.compute import Extras, LabelParams, compute_many
from entasis.features.plan import EXTRA_COLUMNS
from entasis.features.store import load_sentiment_csv
from entasis.store.db import connect
from entasis.store.market import table_checksum, write_candles, write_funding
from tests.unit.features._data import candles, fear_greed_csv, funding

pytestmark = pytest.mark.spark
P = LabelParams(horizons=(7, 14, 30))


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    pytest.importorskip("pyspark")
    from entasis.config import load_settings
    from entasis.features.spark_job import spark_session

    s = load_settings()
    if not Path(s.spark.jdbc_jar).exists():
        pytest.skip(f"PostgreSQL JDBC jar not at {s.spark.jdbc_jar}")
    session = spark_session(s, master="local[2]", extra_conf={"spark.sql.shuffle.partitions": "2"})
    yield session
    session.stop()


def _assert_frames_equal(a: pd.DataFrame, b: pd.DataFrame) -> None:
    key = catalog.KEY_COLUMNS
    a = a.sort_values(key).reset_index(drop=True)
    b = b.sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) and list(a.columns) == list(b.columns)
    assert (a["ts"].to_numpy() == b["ts"].to_numpy()).all()
    for c in a.columns:
        if c in key:
            assert list(a[c].astype(str)) == list(b[c].astype(str)), c
        elif c == "warmup":
            assert (a[c].to_numpy(dtype=bool) == b[c].to_numpy(dtype=bool)).all()
        else:
            np.testing.assert_allclose(a[c].to_numpy(dtype=float, na_value=np.nan),
                                       b[c].to_numpy(dtype=float, na_value=np.nan),
                                       rtol=1e-9, atol=1e-12, err_msg=c)


def _from_stage(df: pd.DataFrame) -> pd.DataFrame:
    """Stage rows (ts as epoch microseconds) back into a computed frame's shape."""
    df = df.copy()
    df.insert(3, "ts", pd.to_datetime(df.pop("ts_us"), unit="us", utc=True))
    return df


def test_spark_and_pandas_give_identical_frames_on_real_candles(spark: Any, shared_data: Path) -> None:
    from entasis.features.cross import INPUTS, cross_sectional
    from entasis.features.spark_job import apply_compute, apply_cross, job_input_frame

    c = pd.concat([candles(shared_data, p, "1d") for p in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT")]
                  + [candles(shared_data, "XMRUSDT", "1d", rows=30)], ignore_index=True)
    fund = funding(shared_data)
    # extras as the job ships them: long rows keyed to the series that uses them
    ext = pd.DataFrame({"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1d", "kind": "funding",
                        "ts": fund["ts"], "v1": fund["funding_rate"]})
    for col in EXTRA_COLUMNS[6:]:
        ext[col] = np.nan
    ext = ext[EXTRA_COLUMNS]
    keys = sorted({(str(a), str(b), str(t)) for a, b, t in zip(c["exchange"], c["symbol"], c["timeframe"],
                                                                strict=True)})
    sdf = spark.createDataFrame(job_input_frame(c, ext, keys))  # arbitrary partitions: apply_compute regroups
    got = _from_stage(apply_compute(sdf, dict(enumerate(keys)), P).toPandas())
    want = compute_many(c, {("binance", "BTC/USDT", "1d"): Extras(funding=fund[["ts", "funding_rate"]])},
                        labels=P)
    _assert_frames_equal(got, want)
    assert want.loc[want["symbol"] == "BTC/USDT", "funding_rate"].notna().sum() > 1000
    # without extras too, and with a write_from cut (the incremental path)
    cut = pd.Timestamp("2022-01-01", tz="UTC")
    wf = {k: (cut.value if k[1] == "ETH/USDT" else None) for k in keys}
    plain = _from_stage(apply_compute(spark.createDataFrame(job_input_frame(c, None, keys)),
                                      dict(enumerate(keys)), P, wf).toPandas())
    ref = compute_many(c, labels=P)
    ref = ref[(ref["symbol"] != "ETH/USDT") | (ref["ts"] >= cut)]
    _assert_frames_equal(plain, ref)

    # the second pass: Spark's grouping by timestamp bucket == the pandas function on everything
    inputs = want[[*catalog.KEY_COLUMNS, *INPUTS]]
    xs = _from_stage(apply_cross(spark.createDataFrame(inputs)).toPandas())
    want_xs = cross_sectional(inputs)
    assert want_xs["xs_rank_ret_30d"].notna().sum() > 3000
    _assert_frames_equal(xs, want_xs)


def _checksum() -> str:
    with connect() as conn:
        return table_checksum(conn, "features.bars", catalog.KEY_COLUMNS)


def test_spark_job_incremental_equals_full_and_is_idempotent(spark: Any, db_url: str, shared_data: Path) -> None:
    frames = [candles(shared_data, "BTCUSDT", "1d"), candles(shared_data, "ETHUSDT", "1d"),
              candles(shared_data, "SOLUSDT", "1h", rows=12_000)]
    perp = candles(shared_data, "BTCUSDT", "1d", exchange="binanceusdm", symbol="BTC/USDT:USDT")
    perp[["open", "high", "low", "close"]] *= 1.0005  # a perp leg, so the basis join runs
    frames.append(perp.iloc[800:])
    t1 = pd.Timestamp("2021-09-01", tz="UTC")
    with connect() as conn:
        for df in frames:
            write_candles(conn, df[df["ts"] <= t1], known=set(df["symbol"]))
        write_funding(conn, funding(shared_data), known={"BTC/USDT:USDT"})
        load_sentiment_csv(conn, fear_greed_csv(shared_data))
        conn.execute(
            "INSERT INTO features.option_features (underlying, snapshot_ts, atm_iv_7d, atm_iv_30d, rr25_30d, "
            "bf25_30d, term_slope, pc_oi_ratio) VALUES ('BTC', '2021-06-01T12:00:00Z', 0.6, 0.7, 0.01, 0.005, "
            "0.1, 0.8), ('ETH', '2021-06-01T12:00:00Z', 0.9, 0.95, 0.02, 0.006, 0.05, 0.7)")
    first = build_features(spark=spark, labels=P)
    assert first.engine == "spark" and first.groups == 4 and first.inserted == first.rows_computed > 0
    with connect() as conn:
        for df in frames:
            write_candles(conn, df[df["ts"] > t1], known=set(df["symbol"]))
    inc = build_features(spark=spark, labels=P)
    assert inc.groups == 4 and inc.inserted > 0 and inc.updated > 0
    after_inc = _checksum()

    # the pandas engine's full rebuild gives the same table, bit for bit
    full = build_features(engine="pandas", full=True, labels=P)
    assert full.rows_written == 0 and full.deleted == 0 and _checksum() == after_inc
    # and a Spark full rebuild changes nothing either
    again = build_features(spark=spark, full=True, labels=P)
    assert again.rows_written == 0 and again.unchanged == sum(len(f) for f in frames)
    assert _checksum() == after_inc

    with connect() as conn:
        row = conn.execute(
            "SELECT perp_basis, atm_iv_30d, sentiment, funding_rate FROM features.bars WHERE symbol = 'BTC/USDT' "
            "AND timeframe = '1d' AND ts = '2021-06-02T00:00:00Z'").fetchone()
        eth = conn.execute("SELECT atm_iv_30d FROM features.bars WHERE symbol = 'ETH/USDT' "
                           "AND ts = '2021-06-02T00:00:00Z'").fetchone()
        early = conn.execute("SELECT atm_iv_30d FROM features.bars WHERE symbol = 'BTC/USDT' "
                             "AND ts = '2021-05-31T00:00:00Z'").fetchone()
        stages = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'features' "
                              "AND tablename LIKE '\\_stage%'").fetchone()
        xs = conn.execute("SELECT count(*), count(xs_rank_ret_7d), count(mkt_breadth_50), count(btc_qv_share) "
                          "FROM features.bars WHERE timeframe = '1d' AND symbol NOT LIKE '%:%' "
                          "AND NOT warmup").fetchone()
        perp_xs = conn.execute("SELECT count(xs_rank_ret_7d) FROM features.bars WHERE symbol LIKE '%:%'").fetchone()
    assert xs is not None and xs[0] > 2000 and xs[1] == xs[2] == xs[3] > 2000  # BTC and ETH spot daily
    assert perp_xs == (0,)
    assert row is not None and row[0] == pytest.approx(0.0005, rel=1e-9)
    assert row[1] == 0.7 and eth == (0.95,) and early == (None,)  # by underlying, as of the close
    assert row[2] is not None and row[3] is not None
    assert stages == (0,)
