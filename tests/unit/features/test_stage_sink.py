"""The Spark workers' stage writer (``spark_job.copy_to_stage``), run in this process on a real
PostgreSQL: the rows it COPies are the rows ``compute`` makes, and a second attempt of the same
task (Spark retries and speculation) writes no series twice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa

from entasis.features import catalog
from entasis.features.compute import LabelParams, compute
from entasis.features.spark_job import copy_to_stage, create_stage, job_input_frame

from ._data import synthetic

P = LabelParams(horizons=(7, 14, 30))


def test_worker_copy_equals_compute_and_a_retry_writes_nothing_twice(db_url: str) -> None:
    c = pd.concat([synthetic(300, "1d", symbol="A/USDT", seed=1), synthetic(200, "1d", symbol="B/USDT", seed=2)],
                  ignore_index=True)
    keys = [("sim", "A/USDT", "1d"), ("sim", "B/USDT", "1d")]
    batches = pa.Table.from_pandas(job_input_frame(c, None, keys), preserve_index=False).to_batches(max_chunksize=97)
    wf = {keys[0]: None, keys[1]: pd.Timestamp(c.loc[c["symbol"] == "B/USDT", "ts"].iloc[50]).value}
    with psycopg.connect(db_url) as conn:
        sink = create_stage(conn, "_stage_bars_unit", P.horizons, db_url)
    first = list(copy_to_stage(iter(batches), dict(enumerate(keys)), P, wf, sink))
    again = list(copy_to_stage(iter(batches), dict(enumerate(keys)), P, wf, sink))
    assert [(b.column("sid")[0].as_py(), b.column("rows")[0].as_py()) for b in first] == [(0, 300), (1, 150)]
    assert again == []  # both series claimed by the first attempt: skipped, nothing written twice
    cols = catalog.series_columns(P.horizons)
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(f"SELECT {', '.join(c if c != 'ts' else 'ts_us' for c in cols)} "
                            "FROM features._stage_bars_unit ORDER BY symbol, ts_us").fetchall()
        claims = conn.execute("SELECT sid, rows FROM features._stage_bars_unit_claims ORDER BY sid").fetchall()
    assert claims == [(0, 300), (1, 150)]
    got = pd.DataFrame(rows, columns=cols)
    want = pd.concat([compute(c[c["symbol"] == s], labels=P, exchange="sim", timeframe="1d") for s in ("A/USDT",
                                                                                                     "B/USDT")])
    want = want[(want["symbol"] == "A/USDT") | (want["ts"] >= c.loc[c["symbol"] == "B/USDT", "ts"].iloc[50])]
    want = want.reset_index(drop=True)
    assert len(got) == len(want) == 450
    assert (got["ts"].to_numpy(dtype=np.int64) == pd.DatetimeIndex(want["ts"]).as_unit("us").asi8).all()
    assert list(got["symbol"]) == list(want["symbol"]) and (got["warmup"] == want["warmup"]).all()
    for col in cols[4:]:
        if col == "warmup":
            continue
        a = pd.to_numeric(got[col]).to_numpy(dtype=float, na_value=np.nan)
        b = want[col].to_numpy(dtype=float, na_value=np.nan)
        assert np.array_equal(a, b, equal_nan=True), col  # bit for bit: binary COPY of the same doubles


def test_cross_pass_writer_equals_cross_sectional_and_a_retry_writes_nothing(db_url: str) -> None:
    from entasis.features.compute import compute_many
    from entasis.features.cross import INPUTS, cross_sectional
    from entasis.features.spark_job import create_cross_stage, cross_to_stage

    c = pd.concat([synthetic(200, "1d", symbol=s, seed=i) for i, s in enumerate(["BTC/USDT", "ETH/USDT", "X/USDT"])],
                  ignore_index=True)
    frame = compute_many(c, labels=P)[[*catalog.KEY_COLUMNS, *INPUTS]]
    group = pa.Table.from_pandas(frame.assign(_bucket=7), preserve_index=False)  # one (exchange, timeframe, bucket)
    with psycopg.connect(db_url) as conn:
        sink = create_cross_stage(conn, "_stage_bars_unit_xs", db_url)
    first = cross_to_stage(group, sink)
    again = cross_to_stage(group, sink)
    assert first.to_pylist() == again.to_pylist() == [{"exchange": "sim", "timeframe": "1d", "bucket": 7, "rows": 600}]
    cols = catalog.CROSS_FEATURES
    with psycopg.connect(db_url) as conn:
        got = pd.DataFrame(conn.execute(f"SELECT symbol, ts_us, {', '.join(cols)} FROM features._stage_bars_unit_xs "
                                        "ORDER BY symbol, ts_us").fetchall(), columns=["symbol", "ts_us", *cols])
    want = cross_sectional(frame).sort_values(["symbol", "ts"]).reset_index(drop=True)
    assert len(got) == len(want) == 600  # the retry added nothing
    assert want["xs_rank_ret_7d"].notna().sum() > 300
    for col in cols:
        a = pd.to_numeric(got[col]).to_numpy(dtype=float, na_value=np.nan)
        assert np.array_equal(a, want[col].to_numpy(dtype=float, na_value=np.nan), equal_nan=True), col
