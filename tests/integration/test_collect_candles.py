"""Candle collection end to end: real ccxt over HTTP to the simulated exchange, real PostgreSQL.

One simulated market (2023-01-01 .. 2023-05-01, hourly: 2,880 bars, three Binance pages) serves
every test; each test gets a fresh database and a clean fault list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import psycopg
import pytest

from entasis.collect.candles import collect_candles
from entasis.collect.client import ExchangeClient, FatalExchangeError, RetriesExhausted
from entasis.config import get_settings
from entasis.sim.exchange import SimExchangeServer, start_server
from entasis.sim.market import MarketSim
from entasis.store.market import table_checksum

START, END = "2023-01-01", "2023-05-01"
KLINES = "binance:/api/v3/klines"
CANDLE_KEY = ["exchange", "symbol", "timeframe", "ts"]
VALUES = ["open", "high", "low", "close", "volume", "quote_volume"]


@pytest.fixture(scope="module")
def market() -> MarketSim:
    return MarketSim(seed=7, symbols=["BTC/USDT", "ETH/USDT"], start=START, end=END)


@pytest.fixture(scope="module")
def exchange(market: MarketSim) -> Iterator[SimExchangeServer]:
    with start_server(market=market) as server:
        yield server


@pytest.fixture
def sim(db_url: str, exchange: SimExchangeServer, market: MarketSim,
        sim_env: Callable[..., SimExchangeServer]) -> Iterator[SimExchangeServer]:
    """The exchange with no faults and zeroed counters; short backoff; ccxt pointed at it."""
    now = market.now
    yield sim_env(exchange, retries=3)
    market.now = now


def source(market: MarketSim, symbol: str, timeframe: str = "1h", kind: str = "spot") -> pd.DataFrame:
    """What the exchange holds: every complete bar before now."""
    df = market.candles(symbol, timeframe, kind=kind)
    step = pd.Timedelta(timeframe)
    return df[df["ts"] + step <= market.now].reset_index(drop=True)


def stored(url: str, exchange: str, symbol: str, timeframe: str = "1h") -> pd.DataFrame:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT ts, open, high, low, close, volume, quote_volume FROM market.candles "
            "WHERE exchange = %s AND symbol = %s AND timeframe = %s ORDER BY ts", (exchange, symbol, timeframe),
        ).fetchall()
    return pd.DataFrame(rows, columns=["ts", *VALUES])


def assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Equal bar for bar at the precision the exchange prints (8 decimals)."""
    assert len(got) == len(want)
    assert (pd.to_datetime(got["ts"], utc=True).to_numpy() == want["ts"].to_numpy()).all()
    for c in VALUES:
        a, b = got[c].astype(float).to_numpy(), want[c].astype(float).to_numpy()
        assert np.array_equal(np.round(a, 8), np.round(b, 8)), c


def one(url: str, sql: str, *args: object) -> tuple:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, args).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return tuple(row)


def checksum(url: str) -> str:
    with psycopg.connect(url) as conn:
        return table_checksum(conn, "market.candles", CANDLE_KEY)


def test_full_backfill_equals_the_source(sim: SimExchangeServer, db_url: str, market: MarketSim) -> None:
    [r] = collect_candles("binance", ["BTC/USDT"], "1h", since=START, until=END)
    want = source(market, "BTC/USDT")
    assert len(want) == 2880
    assert (r.new, r.updated, r.quarantined, r.gaps_new) == (2880, 0, 0, 0)
    assert sim.calls(KLINES) == 3
    assert_same(stored(db_url, "binance", "BTC/USDT"), want)
    assert one(db_url, "SELECT count(*) FROM market.gaps") == (0,)
    assert one(db_url, "SELECT count(*) FROM market.quarantine") == (0,)
    wm, status = one(db_url, "SELECT watermark, status FROM market.ingest_state WHERE source = 'candles'")
    assert wm == want["ts"].iloc[-1] and status == "ok"
    sql = "SELECT market_type FROM market.instruments WHERE exchange = 'binance' AND symbol = 'BTC/USDT'"
    assert one(db_url, sql) == ("spot",)


def test_perpetuals_and_bybit_equal_their_sources(sim: SimExchangeServer, db_url: str, market: MarketSim,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTASIS_EXCHANGE__API_KEY", "public-data-needs-no-key")  # must not trigger private calls
    monkeypatch.setenv("ENTASIS_EXCHANGE__API_SECRET", "s3cret")
    get_settings.cache_clear()
    collect_candles("binanceusdm", ["BTC/USDT:USDT"], "1h", since=START, until=END)
    assert_same(stored(db_url, "binanceusdm", "BTC/USDT:USDT"), source(market, "BTC/USDT", kind="perp"))
    collect_candles("bybit", ["ETH/USDT", "ETH/USDT:USDT"], "4h", since=START, until=END)
    assert_same(stored(db_url, "bybit", "ETH/USDT", "4h"), source(market, "ETH/USDT", "4h"))
    assert_same(stored(db_url, "bybit", "ETH/USDT:USDT", "4h"), source(market, "ETH/USDT", "4h", kind="perp"))


def test_429_on_a_page_is_retried_and_the_table_is_identical(sim: SimExchangeServer, db_url: str) -> None:
    collect_candles("binance", ["BTC/USDT"], "1h", since=START, until=END)
    clean = checksum(db_url)
    with psycopg.connect(db_url) as conn:
        conn.execute("TRUNCATE market.candles, market.ingest_state")
    sim.reset_calls()
    sim.faults.add(KLINES, "429", after=1, retry_after=0)  # the second page is rate limited once
    client = ExchangeClient("binance")
    [r] = collect_candles("binance", ["BTC/USDT"], "1h", since=START, until=END, client=client)
    assert client.stats.retries == 1 and sim.calls(KLINES) == 4
    assert r.new == 2880
    assert checksum(db_url) == clean


def test_retries_exhausted_fails_with_the_watermark_unchanged_then_rerun_completes(
        sim: SimExchangeServer, db_url: str, market: MarketSim) -> None:
    collect_candles("binance", ["BTC/USDT"], "1h", since=START, until="2023-03-01")
    wm_before = one(db_url, "SELECT watermark FROM market.ingest_state")[0]
    rows_before = checksum(db_url)
    sim.reset_calls()
    sim.faults.add(KLINES, "503", after=1, times=None)  # every page after the first: 503
    with pytest.raises(RetriesExhausted, match=r"binance fetch_ohlcv\(BTC/USDT 1h .*gave up after 4 attempts.*"
                                               r"ExchangeNotAvailable"):
        collect_candles("binance", ["BTC/USDT"], "1h", until=END)
    assert sim.calls(KLINES) == 1 + 4
    wm, status, message = one(db_url, "SELECT watermark, status, message FROM market.ingest_state")
    assert wm == wm_before and status == "failed" and "RetriesExhausted" in message
    assert checksum(db_url) == rows_before  # the batch in flight rolled back
    sim.faults.clear()
    collect_candles("binance", ["BTC/USDT"], "1h", until=END)
    assert_same(stored(db_url, "binance", "BTC/USDT"), source(market, "BTC/USDT"))
    assert one(db_url, "SELECT status FROM market.ingest_state") == ("ok",)


@pytest.mark.parametrize(("kind", "message"), [("auth", "authentication failed"),
                                               ("bad_symbol", "does not know this symbol")])
def test_fatal_errors_make_exactly_one_call_and_fail_clearly(sim: SimExchangeServer, db_url: str, kind: str,
                                                             message: str) -> None:
    sim.faults.add(KLINES, kind, times=None)
    with pytest.raises(FatalExchangeError, match=message):
        collect_candles("binance", ["BTC/USDT"], "1h", since=START, until=END)
    assert sim.calls(KLINES) == 1
    assert one(db_url, "SELECT status, watermark FROM market.ingest_state") == ("failed", None)
    assert one(db_url, "SELECT count(*) FROM market.candles") == (0,)


def test_unknown_symbol_fails_before_any_data_call(sim: SimExchangeServer) -> None:
    with pytest.raises(FatalExchangeError, match="unknown symbol 'DOGE/USDT'"):
        collect_candles("binance", ["DOGE/USDT"], "1h", since=START, until=END)
    assert sim.calls(KLINES) == 0


def test_overlapping_pages_are_deduplicated(sim: SimExchangeServer, db_url: str, market: MarketSim) -> None:
    sim.faults.add(KLINES, "overlap", n=7, times=None)  # every page repeats 7 bars of the one before
    [r] = collect_candles("binance", ["BTC/USDT"], "1h", since=START, until=END)
    assert r.new == 2880 and r.quarantined == 0 and r.gaps_new == 0
    assert sim.calls(KLINES) > 3  # full pages that stopped short were continued
    assert_same(stored(db_url, "binance", "BTC/USDT"), source(market, "BTC/USDT"))


def test_revised_candle_updates_in_place(sim: SimExchangeServer, db_url: str, market: MarketSim) -> None:
    collect_candles("binance", ["BTC/USDT"], "1h", since=START, until=END)
    last = source(market, "BTC/USDT").iloc[-1]
    sim.faults.add(KLINES, "revise", ts=last["ts"], field="close", factor=1.02, times=None)
    [r] = collect_candles("binance", ["BTC/USDT"], "1h", until=END)  # incremental: the look-back re-reads it
    assert (r.new, r.updated) == (0, 1)
    got = stored(db_url, "binance", "BTC/USDT")
    assert len(got) == 2880
    row = got.iloc[-1]
    assert row["close"] == pytest.approx(round(last["close"] * 1.02, 2))
    assert row["high"] >= row["close"]
    assert got.iloc[:-1]["close"].tolist() == source(market, "BTC/USDT").iloc[:-1]["close"].tolist()


def test_incomplete_current_candle_is_never_stored(sim: SimExchangeServer, db_url: str, market: MarketSim) -> None:
    market.now = "2023-04-30T12:30Z"
    [r] = collect_candles("binance", ["BTC/USDT"], "1h", since="2023-04-20", until="2023-04-30T12:30Z")
    assert r.incomplete_skipped == 1
    assert one(db_url, "SELECT max(ts) FROM market.candles")[0] == pd.Timestamp("2023-04-30 11:00", tz="UTC")
    market.now = "2023-04-30T13:30Z"
    collect_candles("binance", ["BTC/USDT"], "1h", until="2023-04-30T13:30Z")
    got = stored(db_url, "binance", "BTC/USDT")
    want = source(market, "BTC/USDT")
    want = want[want["ts"] >= pd.Timestamp("2023-04-20", tz="UTC")].reset_index(drop=True)
    assert got["ts"].iloc[-1] == pd.Timestamp("2023-04-30 12:00", tz="UTC")
    assert_same(got, want)  # the 12:00 bar landed with its final values


def test_real_gap_is_recorded_not_zero_filled_and_retried(sim: SimExchangeServer, db_url: str,
                                                          market: MarketSim) -> None:
    sim.faults.add(KLINES, "missing", start="2023-02-10T00:00Z", end="2023-02-10T06:00Z", times=1)
    [r] = collect_candles("binance", ["BTC/USDT"], "1h", since=START, until=END)
    assert r.gaps_new == 1 and r.new == 2874
    gap = one(db_url, "SELECT gap_start, gap_end, missing_bars, resolved_at FROM market.gaps")
    assert gap == (pd.Timestamp("2023-02-10 00:00", tz="UTC"), pd.Timestamp("2023-02-10 05:00", tz="UTC"), 6, None)
    assert one(db_url, "SELECT count(*) FROM market.candles WHERE ts >= '2023-02-10' AND ts < '2023-02-10 06:00'") \
        == (0,)
    [r2] = collect_candles("binance", ["BTC/USDT"], "1h", until=END)  # the next run re-fetches the gap
    assert r2.gaps_resolved == 1 and r2.new == 6
    assert one(db_url, "SELECT resolved_at IS NOT NULL FROM market.gaps") == (True,)
    assert_same(stored(db_url, "binance", "BTC/USDT"), source(market, "BTC/USDT"))


def test_permanent_gap_stays_open_without_duplicates(sim: SimExchangeServer, db_url: str) -> None:
    sim.faults.add(KLINES, "missing", start="2023-03-01T10:00Z", end="2023-03-01T12:00Z", times=None)
    collect_candles("binance", ["BTC/USDT"], "1h", since=START, until=END)
    [r] = collect_candles("binance", ["BTC/USDT"], "1h", until=END)
    assert (r.gaps_new, r.gaps_resolved) == (0, 0)
    assert one(db_url, "SELECT count(*), min(missing_bars) FROM market.gaps WHERE resolved_at IS NULL") == (1, 2)


def test_same_interval_twice_gives_an_identical_table(sim: SimExchangeServer, db_url: str) -> None:
    collect_candles("binance", ["BTC/USDT", "ETH/USDT"], "1h", since=START, until=END)
    first = checksum(db_url)
    again = collect_candles("binance", ["BTC/USDT", "ETH/USDT"], "1h", since=START, until=END)
    assert [(r.new, r.updated, r.unchanged) for r in again] == [(0, 0, 2880), (0, 0, 2880)]
    assert checksum(db_url) == first


def test_malformed_rows_are_quarantined_and_good_rows_land(sim: SimExchangeServer, db_url: str,
                                                           market: MarketSim) -> None:
    sim.faults.add(KLINES, "malformed", n=4, times=1)  # one row of each kind on the first page
    [r] = collect_candles("binance", ["BTC/USDT"], "1h", since=START, until=END)
    assert r.new == 2876 and r.quarantined >= 4 and r.gaps_new == 4  # bad bars are missing: gaps to re-fetch
    with psycopg.connect(db_url) as conn:
        reasons = {row[0] for row in conn.execute("SELECT DISTINCT reason FROM market.quarantine").fetchall()}
        bad_ts = conn.execute("SELECT count(DISTINCT ts) FROM market.quarantine").fetchone()
    assert bad_ts == (4,)
    assert {"high < max(open, close)", "negative volume", "non-positive price"} <= reasons
    assert any("NaN" in x for x in reasons)
    # a backfill over the same range, now clean, fills the quarantined bars
    collect_candles("binance", ["BTC/USDT"], "1h", since=START, until=END)
    assert_same(stored(db_url, "binance", "BTC/USDT"), source(market, "BTC/USDT"))
