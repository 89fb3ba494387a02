"""Soak finding (7-day run): a row served corrupted was quarantined and then lost for good.

The collector counted a quarantined bar as present, so no gap was recorded and the watermark moved
past it: in the 7-day soak, 5 hourly open-interest rows hit by a malformed body were missing from
the faulty run's ``market.open_interest`` (and so the data_hash of 3 predictions differed). A
quarantined bar is now a gap that the next run re-fetches; for irregular series (funding) the
watermark stops before the first quarantined record. After one fault-free rerun the table equals a
fault-free collection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest

from entasis.collect.derivatives import collect_funding, collect_open_interest
from entasis.sim.exchange import SimExchangeServer, start_server
from entasis.sim.market import MarketSim

START, END = "2023-01-01", "2023-03-01"
PERP = "BTC/USDT:USDT"
OI = "binance:/futures/data/openInterestHist"
FUNDING = "binance:/fapi/v1/fundingRate"


@pytest.fixture(scope="module")
def exchange() -> Iterator[SimExchangeServer]:
    with start_server(market=MarketSim(seed=11, symbols=["BTC/USDT"], start=START, end=END)) as server:
        yield server


@pytest.fixture
def sim(db_url: str, exchange: SimExchangeServer, sim_env: Callable[..., SimExchangeServer]) -> SimExchangeServer:
    return sim_env(exchange, retries=2)


def _rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["non_numeric", "negative_volume"])
def test_quarantined_open_interest_is_refetched_by_the_next_run(sim: SimExchangeServer, db_url: str,
                                                                mode: str) -> None:
    [clean] = collect_open_interest("binanceusdm", [PERP], "1h", until=END)
    want = _rows(db_url, "SELECT ts, open_interest, open_interest_value FROM market.open_interest ORDER BY ts")
    with psycopg.connect(db_url) as conn:  # start again from an empty store, now with a corrupted page
        conn.execute("TRUNCATE market.open_interest, market.ingest_state, market.gaps, market.quarantine")
    sim.faults.add(OI, "malformed", n=3, mode=mode, times=1)
    [faulty] = collect_open_interest("binanceusdm", [PERP], "1h", until=END)
    assert faulty.quarantined == 3 and faulty.new == clean.new - 3
    assert faulty.gaps_new >= 1  # the corrupted bars are missing, and recorded as such
    assert _rows(db_url, "SELECT count(*) FROM market.gaps WHERE resolved_at IS NULL")[0][0] >= 1
    [rerun] = collect_open_interest("binanceusdm", [PERP], "1h", until=END)  # the next, fault-free run
    assert rerun.new == 3 and rerun.gaps_resolved >= 1
    got = _rows(db_url, "SELECT ts, open_interest, open_interest_value FROM market.open_interest ORDER BY ts")
    assert got == want
    assert _rows(db_url, "SELECT count(*) FROM market.gaps WHERE resolved_at IS NULL")[0][0] == 0
    again = collect_open_interest("binanceusdm", [PERP], "1h", until=END)[0]  # nothing left to re-fetch
    assert (again.new, again.updated, again.gaps_new) == (0, 0, 0)


def test_a_corruption_that_persists_stays_a_visible_gap(sim: SimExchangeServer, db_url: str) -> None:
    sim.faults.add(OI, "malformed", n=1, mode="non_numeric", times=None)  # every page, every run
    [first] = collect_open_interest("binanceusdm", [PERP], "1h", until=END)
    [second] = collect_open_interest("binanceusdm", [PERP], "1h", until=END)
    assert first.quarantined >= 1 and second.quarantined >= 1
    assert _rows(db_url, "SELECT count(*) FROM market.gaps WHERE resolved_at IS NULL")[0][0] >= 1


def test_quarantined_funding_is_refetched_by_the_next_run(sim: SimExchangeServer, db_url: str) -> None:
    [clean] = collect_funding("binanceusdm", [PERP], since=START, until=END)
    want = _rows(db_url, "SELECT ts, funding_rate, mark_price FROM market.funding_rates ORDER BY ts")
    with psycopg.connect(db_url) as conn:
        conn.execute("TRUNCATE market.funding_rates, market.ingest_state, market.quarantine")
    sim.faults.add(FUNDING, "malformed", n=2, mode="non_numeric", times=1)
    [faulty] = collect_funding("binanceusdm", [PERP], since=START, until=END)
    assert faulty.quarantined == 2 and faulty.new == clean.new - 2
    [rerun] = collect_funding("binanceusdm", [PERP], until=END)  # incremental: from the watermark
    assert rerun.new == 2
    assert _rows(db_url, "SELECT ts, funding_rate, mark_price FROM market.funding_rates ORDER BY ts") == want
    again = collect_funding("binanceusdm", [PERP], until=END)[0]
    assert (again.new, again.updated) == (0, 0)
