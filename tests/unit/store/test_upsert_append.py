"""The append fast path (rows past their series' stored maximum COPied straight into the table)
gives the same table and the same counts as sending every row through the merge."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from entasis.store.market import CANDLE_COLUMNS, CANDLE_KEY, table_checksum
from entasis.store.upsert import UpsertResult, dedupe_sorted, upsert_frame


def candles(symbols: list[str], n: int, start: str = "2024-01-01", seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, periods=n, freq="1h", tz="UTC")
    frames = []
    for s in symbols:
        c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        frames.append(pd.DataFrame({"exchange": "binance", "symbol": s, "timeframe": "1h", "ts": ts, "open": c,
                                    "high": c * 1.01, "low": c * 0.99, "close": c, "volume": rng.uniform(1, 9, n),
                                    "quote_volume": c}))
    return pd.concat(frames, ignore_index=True)[CANDLE_COLUMNS]


def _twin(db_url: str, name: str) -> str:
    """A fresh copy of the test's (still empty) database, for the reference run."""
    base = conninfo_to_dict(db_url)["dbname"]
    twin = f"{base}_{name}"
    with psycopg.connect(make_conninfo(db_url, dbname="postgres"), autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(twin), sql.Identifier(str(base))))
    return make_conninfo(db_url, dbname=twin)


def _apply(url: str, batches: list[pd.DataFrame], *, binary: bool = True,
           append_fast_path: bool = True) -> tuple[list[UpsertResult], str]:
    with psycopg.connect(url) as conn:
        res = [upsert_frame(conn, "market.candles", b, CANDLE_KEY, binary=binary, append_fast_path=append_fast_path)
               for b in batches]
        conn.commit()
        return res, table_checksum(conn, "market.candles", CANDLE_KEY)


def test_fast_path_equals_merge_only_over_a_history_of_batches(db_url: str) -> None:
    """First load, an append with overlap and revisions, a backfill before the stored rows, a new
    series, duplicate keys inside one batch, a re-apply: table and counts equal the merge-only run."""
    first = candles(["BTC/USDT", "ETH/USDT"], 300)
    tail = candles(["BTC/USDT", "ETH/USDT"], 120, start="2024-01-12", seed=1)  # overlaps the last 36 bars
    backfill = candles(["BTC/USDT"], 50, start="2023-12-20", seed=2)
    new_series = candles(["SOL/USDT"], 80, seed=3)
    dup = pd.concat([candles(["XRP/USDT"], 10, seed=4), candles(["XRP/USDT"], 10, seed=5)], ignore_index=True)
    batches = [first, tail, backfill, pd.concat([new_series, tail.iloc[::7]]), dup, first]
    merge_url = _twin(db_url, "merge_only")
    fast, fast_sum = _apply(db_url, batches)
    slow, slow_sum = _apply(merge_url, batches, append_fast_path=False)
    assert fast == slow and fast_sum == slow_sum
    assert fast[0] == UpsertResult(600, 0, 0)
    assert fast[1] == UpsertResult(2 * 84, 2 * 36, 0)  # 84 new bars each, 36 revised
    assert fast[2] == UpsertResult(50, 0, 0) and fast[3] == UpsertResult(80, 0, 35)
    assert fast[-1] == UpsertResult(0, 2 * 36, 600 - 2 * 36)  # the revised bars revised back
    with psycopg.connect(db_url) as conn:  # the last row of a duplicated key won
        v = conn.execute("SELECT volume FROM market.candles WHERE symbol = 'XRP/USDT' ORDER BY ts LIMIT 1").fetchone()
    assert v is not None and v[0] == dup["volume"].iloc[10]


def test_fast_path_equals_csv_reference(db_url: str) -> None:
    batch = candles(["A/USDT", "B/USDT", "C/USDT"], 200)
    csv_url = _twin(db_url, "csv_ref")
    fast, fast_sum = _apply(db_url, [batch, batch.iloc[50:]])
    ref, ref_sum = _apply(csv_url, [batch, batch.iloc[50:]], binary=False)
    assert fast == ref and fast_sum == ref_sum


def test_a_concurrent_writer_of_a_new_key_sends_the_batch_through_the_merge(db_url: str) -> None:
    """Another transaction inserts a key past the stored maximum while this batch COPies it: the
    unique violation rolls back the savepoint and the merge updates that row; nothing is lost."""
    base = candles(["BTC/USDT"], 100)
    with psycopg.connect(db_url) as conn:
        upsert_frame(conn, "market.candles", base, CANDLE_KEY)
        conn.commit()
    batch = candles(["BTC/USDT"], 110, seed=9).iloc[100:]  # 10 new bars past the stored maximum
    other = psycopg.connect(db_url)
    try:
        row = batch.iloc[0]
        other.execute("INSERT INTO market.candles VALUES (%s, %s, %s, %s, 1, 1, 1, 1, 1, 1)",
                      (row["exchange"], row["symbol"], row["timeframe"], row["ts"].to_pydatetime()))
        out: dict[str, UpsertResult] = {}

        def write() -> None:
            with psycopg.connect(db_url) as conn:
                out["r"] = upsert_frame(conn, "market.candles", batch, CANDLE_KEY)
                conn.commit()

        t = threading.Thread(target=write)
        t.start()
        time.sleep(1.0)  # the COPY now waits on the other transaction's uncommitted key
        other.commit()
        t.join(timeout=60)
        assert not t.is_alive()
    finally:
        other.close()
    assert out["r"] == UpsertResult(inserted=9, updated=1, unchanged=0)
    with psycopg.connect(db_url) as conn:
        got = conn.execute("SELECT close FROM market.candles WHERE symbol = 'BTC/USDT' AND ts = %s",
                           (batch["ts"].iloc[0].to_pydatetime(),)).fetchone()
        n = conn.execute("SELECT count(*) FROM market.candles").fetchone()
    assert got is not None and got[0] == pytest.approx(batch["close"].iloc[0], rel=0, abs=0)
    assert n == (110,)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dedupe_sorted_equals_drop_duplicates_then_stable_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 2000
    df = pd.DataFrame({"exchange": rng.choice(["b", "a", "ü"], n), "symbol": rng.choice(["X/Y", "A/B", "Z"], n),
                       "ts": pd.to_datetime(rng.integers(0, 300, n), unit="h", utc=True), "v": np.arange(n)})
    keys = ["exchange", "symbol", "ts"]
    want = df.drop_duplicates(keys, keep="last").sort_values(keys, kind="stable")
    pd.testing.assert_frame_equal(dedupe_sorted(df, keys), want)
    s = want.reset_index(drop=True)
    assert dedupe_sorted(s, keys) is s  # sorted and unique: no copy
    with pytest.raises(ValueError, match="lacks key column"):
        dedupe_sorted(df, ["nope"])
