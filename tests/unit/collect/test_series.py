"""The watermarked collection loop against a real PostgreSQL, with the exchange replaced by a table.

The source here is a plain in-memory bar table served window by window (what an exchange's
klines endpoint does); the HTTP path through ccxt is covered by the integration tests. These
tests pin the engine's own rules: watermark, look-back, incomplete bars, gaps, quarantine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg
import pytest

from entasis.collect.client import ohlcv_frame
from entasis.collect.quality import CONTEXT_BARS, check_candles
from entasis.collect.series import SeriesSpec, keyed_rows, run_bounds, run_series
from entasis.collect.state import SeriesKey
from entasis.store.market import register_instruments, table_checksum, write_candles

H = 3_600_000
T0 = 1_672_531_200_000  # 2023-01-01
KEY = SeriesKey("candles", "binance", "BTC/USDT", "1h")


class Source:
    """A bar table served like a klines endpoint: [since, until) windows, at most ``limit`` rows."""

    def __init__(self, n: int = 250, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        close = np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.01, n))), 2)
        open_ = np.r_[100.0, close[:-1]]
        self.rows = [[T0 + i * H, open_[i], max(open_[i], close[i]) + 0.1, min(open_[i], close[i]) - 0.1, close[i],
                      float(i + 1)] for i in range(n)]
        self.missing: set[int] = set()
        self.calls: list[tuple[int, int]] = []

    def fetch(self, lo: int, hi: int) -> pd.DataFrame:
        self.calls.append((lo, hi))
        rows = [r for r in self.rows if lo <= r[0] < hi and r[0] not in self.missing][:100]
        return ohlcv_frame(rows, None)


def _spec(src: Source) -> SeriesSpec:
    def rows(good: pd.DataFrame) -> pd.DataFrame:
        out = good[["ts", "open", "high", "low", "close", "volume", "quote_volume"]].copy()
        return out.assign(exchange="binance", symbol="BTC/USDT", timeframe="1h")

    return SeriesSpec(table="market.candles", filters={"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"},
                      step_ms=H, window_ms=100 * H, fetch=src.fetch,
                      check=lambda df, ctx: check_candles(df, H, "1h", ctx), rows=rows,
                      write=lambda conn, df: write_candles(conn, df), lookback=2, context_col="close",
                      context_rows=CONTEXT_BARS)


@pytest.fixture
def db(db_url: str) -> str:
    with psycopg.connect(db_url) as conn:
        register_instruments(conn, pd.DataFrame([{"exchange": "binance", "symbol": "BTC/USDT", "market_type": "spot",
                                                  "base": "BTC", "quote": "USDT", "active": True}]))
    return db_url


def _q(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


def test_incremental_runs_continue_from_the_watermark(db: str) -> None:
    src = Source()
    r1 = run_series(_spec(src), KEY, until=T0 + 120 * H + H // 2, since=T0)
    assert r1.new == 120 and r1.incomplete_skipped == 1  # bar 120 is still open at until
    assert _q(db, "SELECT count(*), max(ts) FROM market.candles")[0][0] == 120
    assert r1.watermark == T0 + 119 * H
    src.calls.clear()
    r2 = run_series(_spec(src), KEY, until=T0 + 250 * H)
    assert src.calls[0][0] == T0 + 118 * H  # watermark + 1 bar - 2 bars of look-back
    assert r2.new == 130 and r2.unchanged == 2 and r2.updated == 0
    assert _q(db, "SELECT watermark, status FROM market.ingest_state")[0][1] == "ok"
    got = _q(db, "SELECT extract(epoch FROM ts)::bigint * 1000, open, high, low, close, volume "
                 "FROM market.candles ORDER BY ts")
    assert [list(r) for r in got] == [[float(x) if i else x for i, x in enumerate(r)] for r in src.rows]


def test_gap_recorded_never_zero_filled_then_resolved(db: str) -> None:
    src = Source()
    src.missing = {T0 + 50 * H, T0 + 51 * H, T0 + 52 * H}
    r1 = run_series(_spec(src), KEY, until=T0 + 250 * H, since=T0)
    assert r1.gaps_new == 1 and r1.new == 247
    lo, hi = (T0 + 50 * H) // 1000, (T0 + 52 * H) // 1000
    assert _q(db, f"SELECT count(*) FROM market.candles WHERE ts BETWEEN to_timestamp({lo}) AND to_timestamp({hi})"
              )[0][0] == 0
    gap = _q(db, "SELECT extract(epoch FROM gap_start)::bigint * 1000, extract(epoch FROM gap_end)::bigint * 1000, "
                 "missing_bars, resolved_at FROM market.gaps")
    assert gap == [(T0 + 50 * H, T0 + 52 * H, 3, None)]
    # still missing on the next run: the gap stays open, no duplicate gap row
    r2 = run_series(_spec(src), KEY, until=T0 + 250 * H)
    assert r2.gaps_new == 0 and r2.gaps_resolved == 0
    assert _q(db, "SELECT count(*) FROM market.gaps WHERE resolved_at IS NULL")[0][0] == 1
    # the venue fills it: the next incremental run re-fetches the gap and closes it
    src.missing = set()
    r3 = run_series(_spec(src), KEY, until=T0 + 250 * H)
    assert r3.gaps_resolved == 1 and r3.new == 3
    assert _q(db, "SELECT count(*) FROM market.gaps WHERE resolved_at IS NOT NULL")[0][0] == 1
    assert _q(db, "SELECT count(*) FROM market.candles")[0][0] == 250


def test_leading_bars_before_listing_are_not_a_gap(db: str) -> None:
    src = Source()
    run_series(_spec(src), KEY, until=T0 + 250 * H, since=T0 - 500 * H)
    assert _q(db, "SELECT count(*) FROM market.gaps")[0][0] == 0
    assert _q(db, "SELECT count(*) FROM market.candles")[0][0] == 250


def test_bad_rows_quarantined_good_rows_land_same_transaction(db: str) -> None:
    src = Source()
    src.rows[10][2] = src.rows[10][3] - 1  # high below low
    src.rows[20][5] = -5.0  # negative volume
    r = run_series(_spec(src), KEY, until=T0 + 250 * H, since=T0)
    assert r.new == 248 and r.quarantined == 2
    q = _q(db, "SELECT extract(epoch FROM ts)::bigint * 1000, reason, payload->>'volume' FROM market.quarantine "
               "ORDER BY ts, reason")
    assert [(t, reason) for t, reason, _ in q] == [(T0 + 10 * H, "high < max(open, close)"),
                                                   (T0 + 20 * H, "negative volume")]
    assert float(q[1][2]) == -5.0
    # a quarantined bar is missing from the store: a gap (one per bar here), which later runs re-fetch
    assert _q(db, "SELECT count(*) FROM market.gaps WHERE resolved_at IS NULL")[0][0] == 2


def test_failure_leaves_watermark_and_rerun_is_identical(db: str) -> None:
    src = Source()
    run_series(_spec(src), KEY, until=T0 + 100 * H, since=T0)
    wm_before = _q(db, "SELECT watermark FROM market.ingest_state")[0][0]

    class Boom(RuntimeError):
        pass

    def failing(lo: int, hi: int) -> pd.DataFrame:
        if lo > T0 + 150 * H:
            raise Boom("venue down")
        return src.fetch(lo, hi)

    spec = _spec(src)
    spec.fetch = failing
    with pytest.raises(Boom):
        run_series(spec, KEY, until=T0 + 250 * H)
    state = _q(db, "SELECT watermark, status, message FROM market.ingest_state")[0]
    assert state[0] == wm_before and state[1] == "failed" and "venue down" in state[2]
    assert _q(db, "SELECT count(*) FROM market.candles")[0][0] == 100  # the batch in flight rolled back
    run_series(_spec(src), KEY, until=T0 + 250 * H)
    with psycopg.connect(db) as conn:
        after = table_checksum(conn, "market.candles", ["exchange", "symbol", "timeframe", "ts"])
    run_series(_spec(Source()), SeriesKey("candles", "binance", "BTC/USDT", "1h"), until=T0 + 250 * H, since=T0)
    with psycopg.connect(db) as conn:
        again = table_checksum(conn, "market.candles", ["exchange", "symbol", "timeframe", "ts"])
    assert after == again
    assert _q(db, "SELECT status FROM market.ingest_state")[0][0] == "ok"


def test_duplicates_overflowing_a_page_are_all_seen_and_the_first_served_wins(db: str) -> None:
    src = Source()
    dups = []
    for i in range(60, 160):  # 100 hours served twice, the second version slightly different
        again = list(src.rows[i])
        again[1] = round(again[1] * 1.0001, 4)
        again[2] = max(again[2], again[1])
        dups.append((i, again))
    for k, (i, again) in enumerate(dups):
        src.rows.insert(i + k + 1, again)
    r = run_series(_spec(src), KEY, until=T0 + 250 * H, since=T0)
    assert r.new == 250 and r.gaps_new == 0
    assert r.quarantined == 100  # every second version, with its reason
    assert _q(db, "SELECT DISTINCT reason FROM market.quarantine") == [
        ("timestamp served twice with different values (the first served is kept)",)]
    kept: dict[int, list] = {}
    for row in src.rows:
        kept.setdefault(row[0], row)
    got = _q(db, "SELECT open FROM market.candles ORDER BY ts")
    assert [g[0] for g in got] == [kept[t][1] for t in sorted(kept)]
    assert len(src.calls) > 3  # pages that stopped short of their window were continued


@pytest.mark.parametrize(("since", "until", "want"), [
    (None, "2024-01-01T00:00Z", (None, 1_704_067_200_000)),
    ("2023-12-31T23:59:59.999Z", "2024-01-01T00:00Z", (1_704_067_199_999, 1_704_067_200_000)),  # 1 ms before
    ("2024-01-01T00:00Z", "2024-01-01T00:00Z", "must be before"),  # equal: an empty run is refused
    ("2024-01-02", "2024-01-01", "must be before"),
    ("2024-01-01 12:00", "2024-01-02", "2024-01-01 12:00"),  # naive: refused, named
])
def test_run_bounds_table(since: str | None, until: str, want: object) -> None:
    if isinstance(want, str):
        with pytest.raises(ValueError, match=want):
            run_bounds(since, until)
    else:
        assert run_bounds(since, until) == want


def test_keyed_rows_puts_the_series_key_first() -> None:
    good = pd.DataFrame({"ts": [1, 2], "x": [0.5, 0.25], "junk": ["a", "b"]})
    out = keyed_rows(good, ["ts", "x"], {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"})
    assert list(out.columns) == ["exchange", "symbol", "timeframe", "ts", "x"]
    assert out.values.tolist() == [["binance", "BTC/USDT", "1h", 1, 0.5], ["binance", "BTC/USDT", "1h", 2, 0.25]]
    assert list(good.columns) == ["ts", "x", "junk"]  # the checked frame is left as it was
