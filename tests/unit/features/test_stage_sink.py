"""The Spark workers' stage writer (``spark_job.copy_to_stage``), run in this process on a real
PostgreSQL: the rows it COPies are the rows ``compute`` makes, and a second attempt of the same
task (Spark retries and speculation) writes no series twice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pytest

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


def test_cross_pass_writer_equals_cross_sectional_one_connection_a_retry_writes_nothing(
    db_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A partition holding several groups (sorted by group, groups spanning batches, batches holding
    several groups): every row written once, over one connection for the partition."""
    from entasis.features.compute import compute_many
    from entasis.features.cross import INPUTS, cross_sectional
    from entasis.features.spark_job import create_cross_stage, cross_to_stage

    c = pd.concat([synthetic(200, "1d", symbol=s, seed=i) for i, s in enumerate(["BTC/USDT", "ETH/USDT", "X/USDT"])],
                  ignore_index=True)
    frame = compute_many(c, labels=P)[[*catalog.KEY_COLUMNS, *INPUTS]]
    bucket = pd.DatetimeIndex(frame["ts"]).as_unit("s").asi8 // (30 * 86_400)
    part = frame.assign(_bucket=bucket).sort_values(["exchange", "timeframe", "_bucket"], kind="stable")
    batches = pa.Table.from_pandas(part, preserve_index=False).to_batches(max_chunksize=77)
    groups = sorted(set(bucket.tolist()))
    assert len(groups) >= 7 and len(batches) > 7
    with psycopg.connect(db_url) as conn:
        sink = create_cross_stage(conn, "_stage_bars_unit_xs", db_url)
    real_connect, opened = psycopg.connect, []

    def counting_connect(*a: object, **kw: object) -> psycopg.Connection:
        opened.append(1)
        return real_connect(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(psycopg, "connect", counting_connect)
    first = [b.to_pylist()[0] for b in cross_to_stage(iter(batches), sink)]
    assert len(opened) == 1  # one connection for the whole partition, not one per group
    again = [b.to_pylist()[0] for b in cross_to_stage(iter(batches), sink)]
    monkeypatch.setattr(psycopg, "connect", real_connect)
    per_bucket = pd.Series(bucket).value_counts().sort_index()
    want_summary = [{"exchange": "sim", "timeframe": "1d", "bucket": b, "rows": int(per_bucket[b])} for b in groups]
    assert first == again == want_summary
    cols = catalog.CROSS_FEATURES
    with psycopg.connect(db_url) as conn:
        got = pd.DataFrame(conn.execute(f"SELECT symbol, ts_us, {', '.join(cols)} FROM features._stage_bars_unit_xs "
                                        "ORDER BY symbol, ts_us").fetchall(), columns=["symbol", "ts_us", *cols])
        claims = conn.execute("SELECT bucket, rows FROM features._stage_bars_unit_xs_claims ORDER BY bucket").fetchall()
    assert claims == [(d["bucket"], d["rows"]) for d in want_summary]
    want = cross_sectional(frame).sort_values(["symbol", "ts"]).reset_index(drop=True)
    assert len(got) == len(want) == 600  # the retry added nothing
    assert want["xs_rank_ret_7d"].notna().sum() > 300
    assert (got["ts_us"].to_numpy() == pd.DatetimeIndex(want["ts"]).as_unit("us").asi8).all()
    for col in cols:
        a = pd.to_numeric(got[col]).to_numpy(dtype=float, na_value=np.nan)
        assert np.array_equal(a, want[col].to_numpy(dtype=float, na_value=np.nan), equal_nan=True), col


def _row_by_row_cross_stage(conn: psycopg.Connection, stage: str, xs: pd.DataFrame) -> None:
    """The pandas build's stage writer before issue 14 (COPY text, one write_row per row): the reference."""
    cols = [*catalog.KEY_COLUMNS, *catalog.CROSS_FEATURES]
    conn.execute(f"CREATE TEMP TABLE {stage} (exchange text, symbol text, timeframe text, ts timestamptz, "
                 + ", ".join(f"{c} double precision" for c in catalog.CROSS_FEATURES) + ") ON COMMIT DROP")
    arr = xs[catalog.CROSS_FEATURES].to_numpy(dtype=np.float64)
    keys = xs[catalog.KEY_COLUMNS[:3]].astype(str).to_numpy()
    ts = xs["ts"].tolist()
    with conn.cursor() as cur, cur.copy(f"COPY {stage} ({', '.join(cols)}) FROM STDIN") as cp:
        for i in range(len(xs)):
            cp.write_row([*keys[i], ts[i], *[None if v != v else float(v) for v in arr[i]]])


def test_pandas_cross_stage_by_binary_copy_equals_the_row_by_row_writer(db_url: str) -> None:
    from entasis.features.build import write_cross_stage
    from entasis.features.compute import compute_many
    from entasis.features.cross import INPUTS, cross_sectional

    c = pd.concat([synthetic(200, "1d", symbol=s, seed=i) for i, s in enumerate(["BTC/USDT", "ETH/USDT", "Y/USDT"])],
                  ignore_index=True)
    xs = cross_sectional(compute_many(c, labels=P)[[*catalog.KEY_COLUMNS, *INPUTS]])
    assert xs[catalog.CROSS_FEATURES].isna().any().any() and xs[catalog.CROSS_FEATURES].notna().any().all()
    select = "SELECT * FROM {} ORDER BY symbol, ts"
    with psycopg.connect(db_url) as conn, conn.transaction():
        write_cross_stage(conn, "_xs_new", xs)
        _row_by_row_cross_stage(conn, "_xs_old", xs)
        new = conn.execute(select.format("_xs_new")).fetchall()
        old = conn.execute(select.format("_xs_old")).fetchall()
        nulls = conn.execute("SELECT count(*) FROM _xs_new WHERE xs_rank_ret_90d IS NULL").fetchone()
    assert len(new) == len(old) == 600
    assert new == old  # the same keys, instants and doubles, NULL where NaN
    assert nulls is not None and nulls[0] > 0
