"""Collector throughput: candles per second from the simulated exchange into PostgreSQL, and where it goes.

Workload: 20 symbols x 2 years of hourly candles (about 350k candles, 360 Binance pages), backfilled
by ``collect_candles`` exactly as production runs it (ccxt over HTTP on loopback, validation,
quarantine/gap bookkeeping, one upsert transaction per symbol). References measured in the same run:

* HTTP floor: the same pages fetched with a bare ``requests`` session and ``json.loads`` (no ccxt,
  no validation, no database): the most a collector could do against this server;
* DB floor: the same candles written again with ``upsert_frame`` alone (into emptied tables).

The simulated market is generated before timing, so the HTTP figures measure serving, not synthesis.
It starts its own embedded PostgreSQL in a temporary ENTASIS_HOME and stops it at the end.

    .venv/bin/python bench/collect.py [--symbols 20] [--years 2] [--database-url URL] [--smoke]

The last line is the JSON summary: metric = the collector's candles/s, reference = the HTTP floor's
candles/s, ratio = metric / reference (the share of the floor the collector reaches); target (ours: no
specification figure): at least a quarter of the floor, every candle stored.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

SYMBOLS = ["BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE", "LTC", "TRX", "XLM", "XMR", "ETC", "BCH", "MATIC",
           "DOT", "AVAX", "LINK", "ATOM", "UNI", "FIL"]


TARGET_SHARE = 0.25


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=20)
    ap.add_argument("--years", type=int, default=2)
    ap.add_argument("--database-url", help="an empty migrated database to use (its market.candles is emptied); "
                    "default: a temporary embedded server")
    ap.add_argument("--smoke", action="store_true", help="2 symbols x 1 year: checks the bench runs")
    args = ap.parse_args()
    if args.smoke:
        args.symbols, args.years = 2, 1
    if not (1 <= args.symbols <= len(SYMBOLS) and args.years >= 1):
        ap.error(f"--symbols must be in 1..{len(SYMBOLS)} and --years >= 1")

    home = Path(tempfile.mkdtemp(prefix="entasis-bench-collect-"))
    os.environ["ENTASIS_HOME"] = str(home)
    if args.database_url:
        os.environ["ENTASIS_DATABASE_URL"] = args.database_url
        return _run(args.symbols, args.years)
    from entasis.store import embedded

    server = embedded.ensure_running(home, preferred_port=0)
    os.environ["ENTASIS_DATABASE_URL"] = server.url
    try:
        return _run(args.symbols, args.years)
    finally:
        embedded.stop(home)


def _run(n_symbols: int, years: int) -> int:
    import pandas as pd
    import psycopg
    import requests

    from entasis.collect.candles import collect_candles
    from entasis.collect.client import ExchangeClient
    from entasis.config import get_settings
    from entasis.sim.exchange import start_server
    from entasis.sim.market import MarketSim
    from entasis.store.db import connect
    from entasis.store.market import CANDLE_KEY
    from entasis.store.upsert import upsert_frame

    symbols = [f"{b}/USDT" for b in SYMBOLS[:n_symbols]]
    start = pd.Timestamp("2022-01-01", tz="UTC")
    end = start + pd.DateOffset(years=years)
    market = MarketSim(seed=7, symbols=symbols, start=start, end=end)
    t = time.perf_counter()
    for s in symbols:
        market.candles(s, "1h")
    print(f"simulated market generated in {time.perf_counter() - t:.1f}s (not timed below)")

    with start_server(market=market) as ex:
        os.environ["ENTASIS_SIM_URL"] = ex.url
        get_settings.cache_clear()
        with connect():
            pass  # migrations, outside the timing

        # -- reference 1: the HTTP floor ----------------------------------------------------------
        step = 3_600_000
        lo, hi = int(start.value // 1_000_000), int(end.value // 1_000_000)
        sess = requests.Session()
        t = time.perf_counter()
        raw_rows = 0
        for s in symbols:
            for a in range(lo, hi, 1000 * step):
                params: dict[str, str | int] = {"symbol": s.replace("/", ""), "interval": "1h", "startTime": a,
                                                 "endTime": min(hi, a + 1000 * step) - 1, "limit": 1000}
                resp = sess.get(f"{ex.url}/binance/api/v3/klines", params=params)
                raw_rows += len(json.loads(resp.text))
        http_floor = time.perf_counter() - t

        # -- the collector ------------------------------------------------------------------------
        client = ExchangeClient("binance")
        t = time.perf_counter()
        results = collect_candles("binance", symbols, "1h", since=start.isoformat(), until=end.isoformat(),
                                  client=client)
        total = time.perf_counter() - t
        n = sum(r.new for r in results)
        assert n == raw_rows, (n, raw_rows)
        timings: dict[str, float] = {}
        for r in results:
            for k, v in r.timings.items():
                timings[k] = timings.get(k, 0.0) + v

        t = time.perf_counter()
        again = collect_candles("binance", symbols, "1h", until=end.isoformat(), client=client)
        incremental = time.perf_counter() - t
        assert sum(r.new for r in again) == 0

        # -- reference 2: the DB floor ------------------------------------------------------------
        with connect() as conn:
            frame = pd.DataFrame(conn.execute(
                "SELECT exchange, symbol, timeframe, ts, open, high, low, close, volume, quote_volume "
                "FROM market.candles").fetchall(),
                columns=["exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume",
                         "quote_volume"])
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        url = os.environ["ENTASIS_DATABASE_URL"]
        with psycopg.connect(url) as conn:
            conn.execute("TRUNCATE market.candles")
        t = time.perf_counter()
        with psycopg.connect(url) as conn:
            for _, part in frame.groupby("symbol", sort=False):
                with conn.transaction():
                    upsert_frame(conn, "market.candles", part, CANDLE_KEY)
        db_floor = time.perf_counter() - t

    st = client.stats
    http, ccxt_parse, frame_s = st.http_s, st.ccxt_parse_s, st.frame_s
    validate, db = timings.get("validate", 0.0), timings.get("db", 0.0)
    other = max(0.0, total - (http + st.throttle_s + ccxt_parse + frame_s + validate + db))
    print(f"\n{len(symbols)} symbols x {years}y hourly: {n:,} candles, {st.requests} HTTP requests")
    print(f"collector:     {total:7.2f}s  {n / total:10,.0f} candles/s")
    print(f"HTTP floor:    {http_floor:7.2f}s  {raw_rows / http_floor:10,.0f} candles/s  "
          f"(collector reaches {http_floor / total:.2f}x of it)")
    print(f"DB floor:      {db_floor:7.2f}s  {n / db_floor:10,.0f} candles/s  "
          f"(upsert alone is {total / db_floor:.1f}x faster than the whole collector)")
    print(f"incremental rerun, nothing new: {incremental:.2f}s")
    print("\nwhere the collector's time went:")
    for name, v in [("HTTP round trips (server + json decode)", http), ("ccxt throttle", st.throttle_s),
                    ("ccxt parsing", ccxt_parse), ("our frame building", frame_s),
                    ("validation (store rules + pandera)", validate), ("database (reads, upsert, commit)", db),
                    ("other (planning, bookkeeping)", other)]:
        print(f"  {name:42s} {v:7.2f}s  {100 * v / total:5.1f}%")
    rate, floor = n / total, raw_rows / http_floor
    print(json.dumps({"bench": "collect", "metric": round(rate, 1), "reference": round(floor, 1),
                      "ratio": round(rate / floor, 4), "target": f">= {TARGET_SHARE} of the HTTP floor's candles/s",
                      "met": bool(rate / floor >= TARGET_SHARE and n == raw_rows), "unit": "candles/s",
                      "candles": n, "db_floor_candles_s": round(n / db_floor, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
