"""Funding, open interest, option snapshots and the ``entasis collect`` CLI against the simulated exchange."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import psycopg
import pytest
from typer.testing import CliRunner

from entasis.collect.client import CollectError
from entasis.collect.derivatives import collect_funding, collect_open_interest
from entasis.collect.options import collect_options
from entasis.sim.exchange import SimExchangeServer, start_server
from entasis.sim.market import MarketSim

START, END = "2023-01-01", "2023-03-01"
PERP = "BTC/USDT:USDT"


@pytest.fixture(scope="module")
def market() -> MarketSim:
    return MarketSim(seed=11, symbols=["BTC/USDT", "ETH/USDT"], start=START, end=END)


@pytest.fixture(scope="module")
def exchange(market: MarketSim) -> Iterator[SimExchangeServer]:
    with start_server(market=market, option_currencies=("BTC",)) as server:
        yield server


@pytest.fixture
def sim(db_url: str, exchange: SimExchangeServer, sim_env: Callable[..., SimExchangeServer]) -> SimExchangeServer:
    return sim_env(exchange, retries=2)


def rows(url: str, sql: str, *args: object) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]  # type: ignore[arg-type]


def test_funding_history_equals_the_source_and_reruns_are_idempotent(sim: SimExchangeServer, db_url: str,
                                                                     market: MarketSim) -> None:
    [r] = collect_funding("binanceusdm", [PERP], since=START, until=END)
    want = market.funding("BTC/USDT")
    assert r.new == len(want) == 59 * 3 and r.quarantined == 0
    got = rows(db_url, "SELECT ts, funding_rate, mark_price FROM market.funding_rates ORDER BY ts")
    assert [g[0] for g in got] == list(want["ts"])
    assert np.allclose([g[1] for g in got], want["funding_rate"], rtol=0, atol=1e-12)
    assert np.allclose([g[2] for g in got], want["mark_price"], rtol=1e-12)
    [again] = collect_funding("binanceusdm", [PERP], until=END)  # incremental: nothing new
    assert (again.new, again.updated) == (0, 0)


def test_funding_quarantines_malformed_records(sim: SimExchangeServer, db_url: str) -> None:
    sim.faults.add("binance:/fapi/v1/fundingRate", "malformed", n=2, mode="non_numeric", times=1)
    [r] = collect_funding("binanceusdm", [PERP], since=START, until=END)
    assert r.quarantined == 2 and r.new == 59 * 3 - 2
    assert rows(db_url, "SELECT DISTINCT source, reason FROM market.quarantine") == [
        ("funding", "NaN or non-numeric funding_rate")]


def test_open_interest_covers_the_venue_history_window(sim: SimExchangeServer, db_url: str,
                                                       market: MarketSim) -> None:
    [r] = collect_open_interest("binanceusdm", [PERP], "1h", until=END)
    want = market.open_interest("BTC/USDT", "1h")
    first = pd.Timestamp(END, tz="UTC") - pd.Timedelta(days=30) + pd.Timedelta(hours=1)
    want = want[(want["ts"] >= first) & (want["ts"] + pd.Timedelta(hours=1) <= pd.Timestamp(END, tz="UTC"))]
    assert r.new == len(want) == 30 * 24 - 1 and r.gaps_new == 0
    got = rows(db_url, "SELECT ts, open_interest, open_interest_value FROM market.open_interest ORDER BY ts")
    assert [g[0] for g in got] == list(want["ts"])
    assert np.allclose([g[1] for g in got], want["open_interest"], rtol=1e-12)
    assert np.allclose([g[2] for g in got], want["open_interest_value"], rtol=1e-12)


def test_spot_symbol_for_a_perp_series_is_a_clear_error(sim: SimExchangeServer) -> None:
    with pytest.raises(ValueError, match="not a perpetual"):
        collect_funding("bybit", ["BTC/USDT"], since=START, until=END)


def test_option_snapshot_stores_every_listed_instrument(sim: SimExchangeServer, db_url: str,
                                                         market: MarketSim) -> None:
    now = market.now
    [r] = collect_options(["BTC"], now=now)
    chain = market.option_chain("BTC", now)
    assert r.new == len(chain) > 50 and r.quarantined == 0
    got = pd.DataFrame(rows(db_url, "SELECT instrument, snapshot_ts, underlying, expiry, strike, kind, bid, ask, "
                                    "mark_price, mark_iv, delta, gamma, vega, theta, underlying_price, open_interest "
                                    "FROM market.option_quotes ORDER BY instrument"),
                       columns=["instrument", "snapshot_ts", "underlying", "expiry", "strike", "kind", "bid", "ask",
                                "mark_price", "mark_iv", "delta", "gamma", "vega", "theta", "underlying_price",
                                "open_interest"])
    want = chain.sort_values("instrument").reset_index(drop=True)
    assert got["instrument"].tolist() == want["instrument"].tolist()
    assert (got["snapshot_ts"] == now).all()
    assert got["kind"].tolist() == want["kind"].tolist()
    assert (pd.to_datetime(got["expiry"], utc=True) == want["expiry"]).all()
    for c in ["strike", "ask", "mark_price", "mark_iv", "delta", "gamma", "vega", "theta", "underlying_price",
              "open_interest"]:
        assert np.allclose(got[c].astype(float), want[c].astype(float), rtol=1e-9, equal_nan=True), c
    no_bid = want["bid"].isna()
    assert got.loc[no_bid, "bid"].isna().all()
    assert np.allclose(got.loc[~no_bid, "bid"].astype(float), want.loc[~no_bid, "bid"].astype(float))
    assert rows(db_url, "SELECT status, watermark FROM market.ingest_state WHERE source = 'options'") == [("ok", now)]


def test_option_snapshot_cannot_be_back_dated(sim: SimExchangeServer, db_url: str, market: MarketSim) -> None:
    with pytest.raises(CollectError, match="cannot be back-dated"):
        collect_options(["BTC"], now=market.now - pd.Timedelta(days=1))
    assert rows(db_url, "SELECT count(*) FROM market.option_quotes") == [(0,)]
    assert rows(db_url, "SELECT status FROM market.ingest_state") == [("failed",)]


def test_cli_collects_and_prints_a_summary(sim: SimExchangeServer, db_url: str) -> None:
    from entasis.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["collect", "candles", "--exchange", "binance", "--symbols", "BTC/USDT,ETH/USDT",
                              "--timeframe", "1d", "--timeframe", "4h", "--since", START, "--until", END])
    assert res.exit_code == 0, res.output
    assert "collection summary" in res.output
    assert rows(db_url, "SELECT timeframe, count(*) FROM market.candles GROUP BY timeframe ORDER BY timeframe") == [
        ("1d", 2 * 59), ("4h", 2 * 59 * 6)]
    res = runner.invoke(app, ["collect", "funding", "--exchange", "binanceusdm", "--symbols", "BTC/USDT",
                              "--since", START, "--until", END])
    assert res.exit_code == 0, res.output
    assert rows(db_url, "SELECT DISTINCT symbol FROM market.funding_rates") == [(PERP,)]
    res = runner.invoke(app, ["collect", "open-interest", "--exchange", "binanceusdm", "--symbols", "ETH/USDT",
                              "--timeframe", "1h", "--until", END])
    assert res.exit_code == 0, res.output
    assert rows(db_url, "SELECT symbol, count(*) FROM market.open_interest GROUP BY symbol") == [
        ("ETH/USDT:USDT", 30 * 24 - 1)]  # the venue's 30-day window, hourly, closed bars
    # a perp job that fails is named by its kind, exchange, symbol (and period)
    bad_oi = runner.invoke(app, ["collect", "open-interest", "--exchange", "binanceusdm", "--symbols", "NOPE/USDT",
                                 "--timeframe", "4h", "--until", END], env={"COLUMNS": "200"})
    assert bad_oi.exit_code == 1 and "open_interest binanceusdm NOPE/USDT:USDT 4h" in bad_oi.output, bad_oi.output
    bad = runner.invoke(app, ["collect", "candles", "--exchange", "binance", "--symbols", "NOPE/USDT",
                              "--timeframe", "1d", "--since", START, "--until", END])
    assert bad.exit_code == 1
    assert "unknown symbol 'NOPE/USDT'" in bad.output
    worse = runner.invoke(app, ["collect", "candles", "--exchange", "kraken", "--until", END])
    assert worse.exit_code == 1 and "unknown exchange 'kraken'" in worse.output
