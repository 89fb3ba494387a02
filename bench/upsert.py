"""Bulk upsert speed: binary COPY + INSERT ON CONFLICT against the references, same server, same run.

References measured in this process on the same server: the same binary COPY with every row
through the merge (``append_fast_path=False``, the path before the append fast path), the CSV COPY
path (``binary=False``), psycopg ``executemany`` (pipelined) and the naive per-row ``execute`` loop.
The slow references run on a sample and are scaled to the full row count. The bulk paths must leave
byte-identical tables (checked here by checksum). CPU seconds (this process + the server backend,
from /proc) are printed beside wall seconds: on a shared machine the wall figure moves with the load.

Usage: python bench/upsert.py [--rows 1000000] [--sample 20000]
Target (issue 14): >= 100k rows/s and >= 20x the per-row execute loop.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from entasis.store import embedded
from entasis.store.market import CANDLE_COLUMNS, CANDLE_KEY, table_checksum
from entasis.store.migrate import upgrade
from entasis.store.upsert import idents, upsert_frame

TARGET_ROWS_S = 100_000
TARGET_RATIO = 20.0


def make_candles(n: int, offset_symbols: int = 0, n_sym: int = 100) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n_sym = max(1, min(n_sym, n))
    per = max(1, n // n_sym)
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


def _row_sql() -> sql.Composed:
    upd = [c for c in CANDLE_COLUMNS if c not in CANDLE_KEY]
    q = "INSERT INTO market.candles ({cols}) VALUES ({ph}) ON CONFLICT ({keys}) DO UPDATE SET {sets}"
    return sql.SQL(q).format(
        cols=idents(CANDLE_COLUMNS), ph=sql.SQL(", ").join(sql.Placeholder() * len(CANDLE_COLUMNS)),
        keys=idents(CANDLE_KEY),
        sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in upd),
    )


def executemany(conn: psycopg.Connection, df: pd.DataFrame) -> None:
    """psycopg 3 executemany (it pipelines the statements)."""
    rows = list(df.itertuples(index=False, name=None))
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(_row_sql(), rows)


def per_row_execute(conn: psycopg.Connection, df: pd.DataFrame) -> None:
    """The naive loop: one statement and one round trip per row."""
    q = _row_sql()
    with conn.transaction(), conn.cursor() as cur:
        for row in df.itertuples(index=False, name=None):
            cur.execute(q, row)


def _cpu(conn: psycopg.Connection) -> float:
    """CPU seconds so far of this process plus the connection's server backend (same machine)."""
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    fields = Path(f"/proc/{int(row[0])}/stat").read_text().rsplit(")", 1)[1].split()
    return time.process_time() + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _checkpoint(url: str) -> None:
    """Every timed bulk path starts from the same server state (no dirty pages left by the one before)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def run(rows: int, sample: int) -> dict[str, object]:
    home = Path(tempfile.mkdtemp(prefix="entasis_bench_"))
    server = embedded.ensure_running(home, preferred_port=0)
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            upgrade(conn)
            for db in ("bench_csv", "bench_merge", "bench_warm"):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(db)))
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE entasis").format(sql.Identifier(db)))
        csv_url = server.url.rsplit("/", 1)[0] + "/bench_csv"
        merge_url = server.url.rsplit("/", 1)[0] + "/bench_merge"
        df = make_candles(rows)
        # Warm-up, untimed: the first bulk write into a fresh server also creates its WAL segment files
        # (a full run measured the path that came first at 35 s wall on 4 CPU s); write the same volume
        # once into a scratch database, drop it, and checkpoint before every timed path.
        with psycopg.connect(server.url.rsplit("/", 1)[0] + "/bench_warm") as conn:
            upsert_frame(conn, "market.candles", df, CANDLE_KEY, append_fast_path=False)
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("DROP DATABASE bench_warm")
        timings: dict[str, float] = {}
        cpu: dict[str, float] = {}
        _checkpoint(server.url)
        with psycopg.connect(server.url) as conn:
            c0 = _cpu(conn)
            t0 = time.perf_counter()
            r = upsert_frame(conn, "market.candles", df, CANDLE_KEY)
            timings["binary"] = time.perf_counter() - t0
            cpu["binary"] = _cpu(conn) - c0
            t0 = time.perf_counter()
            r2 = upsert_frame(conn, "market.candles", df, CANDLE_KEY)
            timings["binary_reapply"] = time.perf_counter() - t0
            binary_sum = table_checksum(conn, "market.candles", CANDLE_KEY)
            many = make_candles(sample, offset_symbols=1000)
            t0 = time.perf_counter()
            executemany(conn, many)
            timings["executemany"] = (time.perf_counter() - t0) * len(df) / len(many)
            loop = make_candles(max(1, sample // 4), offset_symbols=2000)
            t0 = time.perf_counter()
            per_row_execute(conn, loop)
            timings["per_row"] = (time.perf_counter() - t0) * len(df) / len(loop)
        _checkpoint(server.url)
        with psycopg.connect(merge_url) as conn:
            c0 = _cpu(conn)
            t0 = time.perf_counter()
            rm = upsert_frame(conn, "market.candles", df, CANDLE_KEY, append_fast_path=False)
            timings["merge"] = time.perf_counter() - t0
            cpu["merge"] = _cpu(conn) - c0
            merge_sum = table_checksum(conn, "market.candles", CANDLE_KEY)
        _checkpoint(server.url)
        with psycopg.connect(csv_url) as conn:
            t0 = time.perf_counter()
            rc = upsert_frame(conn, "market.candles", df, CANDLE_KEY, binary=False)
            timings["csv"] = time.perf_counter() - t0
            csv_sum = table_checksum(conn, "market.candles", CANDLE_KEY)
    finally:
        embedded.stop(home)
    n = len(df)
    rate = n / timings["binary"]
    ratio = timings["per_row"] / timings["binary"]
    print(f"rows: {n:,} (inserted {r.inserted:,}); re-apply unchanged: {r2.unchanged:,}; "
          f"merge-only path inserted {rm.inserted:,}; CSV path inserted {rc.inserted:,}")
    print(f"{'path':<44}{'seconds':>10}{'rows/s':>14}{'binary is':>12}")
    for name, label in [("binary", "binary, append fast path (new)"),
                        ("binary_reapply", "binary, re-apply (all unchanged)"),
                        ("merge", "binary COPY + INSERT ON CONFLICT (before)"),
                        ("csv", "CSV COPY + INSERT ON CONFLICT (earlier)"),
                        ("executemany", f"psycopg executemany (scaled from {sample:,})"),
                        ("per_row", f"per-row execute loop (scaled from {max(1, sample // 4):,})")]:
        s = timings[name]
        print(f"{label:<44}{s:>10.2f}{n / s:>14,.0f}{s / timings['binary']:>11.1f}x")
    for name in ("binary", "merge"):
        print(f"{name}: {cpu[name]:.2f} CPU s (client + server backend) = {n / cpu[name]:,.0f} rows per CPU second")
    same = binary_sum == csv_sum == merge_sum
    print(f"fast path, merge-only and CSV paths leave identical tables: {same}")
    met = bool(same and rate >= TARGET_ROWS_S and ratio >= TARGET_RATIO)
    return {"bench": "upsert", "metric": round(rate), "reference": round(n / timings["per_row"]),
            "ratio": round(ratio, 1), "target": f">= {TARGET_ROWS_S} rows/s and >= {TARGET_RATIO:g}x per-row loop",
            "met": met, "vs_executemany": round(timings["executemany"] / timings["binary"], 1),
            "vs_merge_only": round(timings["merge"] / timings["binary"], 2),
            "rows_per_cpu_s": round(n / cpu["binary"]),
            "vs_csv": round(timings["csv"] / timings["binary"], 2), "identical": same, "rows": n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--sample", type=int, default=20_000)
    args = ap.parse_args(argv)
    out = run(args.rows, args.sample)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
