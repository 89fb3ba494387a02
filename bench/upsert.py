"""Bulk upsert (COPY + INSERT ON CONFLICT) vs row-by-row executemany upsert, same server, same process.

Usage: python bench/upsert.py [--rows 1000000] [--sample 20000]
The slow path is measured on a sample and scaled to the full row count.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg

from entasis.store import embedded
from entasis.store.market import CANDLE_COLUMNS, CANDLE_KEY
from entasis.store.migrate import upgrade
from entasis.store.upsert import upsert_frame


def make_candles(n: int, offset_symbols: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n_sym = 100
    per = n // n_sym
    ts = pd.date_range("2015-01-01", periods=per, freq="1h", tz="UTC")
    frames = []
    for i in range(n_sym):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, per)))
        open_ = np.r_[close[0], close[:-1]]
        hi = np.maximum(open_, close) * (1 + rng.uniform(0, 0.005, per))
        lo = np.minimum(open_, close) * (1 - rng.uniform(0, 0.005, per))
        vol = rng.uniform(1, 100, per)
        frames.append(pd.DataFrame({
            "exchange": "binance", "symbol": f"S{i + offset_symbols}/USDT", "timeframe": "1h", "ts": ts,
            "open": open_, "high": hi, "low": lo, "close": close, "volume": vol, "quote_volume": vol * close,
        }))
    return pd.concat(frames, ignore_index=True)[CANDLE_COLUMNS]


def row_by_row(conn: psycopg.Connection, df: pd.DataFrame) -> None:
    cols = ", ".join(CANDLE_COLUMNS)
    ph = ", ".join(["%s"] * len(CANDLE_COLUMNS))
    upd = ", ".join(f"{c} = EXCLUDED.{c}" for c in CANDLE_COLUMNS if c not in CANDLE_KEY)
    sql = (f"INSERT INTO market.candles ({cols}) VALUES ({ph}) "
           f"ON CONFLICT ({', '.join(CANDLE_KEY)}) DO UPDATE SET {upd}")
    rows = list(df.itertuples(index=False, name=None))
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(sql, rows)  # type: ignore[arg-type]


def per_row_execute(conn: psycopg.Connection, df: pd.DataFrame) -> None:
    """The naive loop: one statement and one round trip per row."""
    cols = ", ".join(CANDLE_COLUMNS)
    ph = ", ".join(["%s"] * len(CANDLE_COLUMNS))
    upd = ", ".join(f"{c} = EXCLUDED.{c}" for c in CANDLE_COLUMNS if c not in CANDLE_KEY)
    sql = (f"INSERT INTO market.candles ({cols}) VALUES ({ph}) "
           f"ON CONFLICT ({', '.join(CANDLE_KEY)}) DO UPDATE SET {upd}")
    with conn.transaction(), conn.cursor() as cur:
        for row in df.itertuples(index=False, name=None):
            cur.execute(sql, row)  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--sample", type=int, default=20_000)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="entasis_bench_"))
    server = embedded.ensure_running(home, preferred_port=0)
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            upgrade(conn)
        df = make_candles(args.rows)
        sample = make_candles(args.sample, offset_symbols=1000)
        with psycopg.connect(server.url) as conn:
            t0 = time.perf_counter()
            r = upsert_frame(conn, "market.candles", df, CANDLE_KEY)
            bulk_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            r2 = upsert_frame(conn, "market.candles", df, CANDLE_KEY)
            reapply_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            row_by_row(conn, sample)
            slow_sample_s = time.perf_counter() - t0
            loop_sample = make_candles(args.sample // 4, offset_symbols=2000)
            t0 = time.perf_counter()
            per_row_execute(conn, loop_sample)
            loop_s = (time.perf_counter() - t0) * len(df) / len(loop_sample)
        slow_s = slow_sample_s * len(df) / len(sample)
        print(f"rows: {len(df):,} (inserted {r.inserted:,}); re-apply unchanged: {r2.unchanged:,}")
        print(f"bulk upsert:        {bulk_s:8.2f} s  {len(df) / bulk_s:12,.0f} rows/s")
        print(f"bulk re-apply:      {reapply_s:8.2f} s  {len(df) / reapply_s:12,.0f} rows/s (no-op)")
        print(f"row-by-row (scaled from {len(sample):,}): {slow_s:8.2f} s  {len(sample) / slow_sample_s:12,.0f} rows/s")
        print(f"per-row execute loop (scaled from {len(loop_sample):,}): {loop_s:8.2f} s  "
              f"{len(df) / loop_s:12,.0f} rows/s")
        print(f"ratio bulk vs executemany (psycopg 3 pipelines it): {slow_s / bulk_s:.1f}x")
        print(f"ratio bulk vs per-row execute loop: {loop_s / bulk_s:.1f}x (target >= 20x, >= 100k rows/s)")
    finally:
        embedded.stop(home)


if __name__ == "__main__":
    main()
