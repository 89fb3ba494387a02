"""Focused tests for what the soak found, each at its cause.

1. A 200 answer whose body is not JSON (cut off in transit) was taken by ccxt as an empty answer:
   an option snapshot stored rows of NULL quotes, a candle page could come back empty. The client
   now retries it like any transient network error.
2. A NaN in a task's summary (the monitor's report) failed the task at the XCom push: XCom is JSON.
3. The simulated exchange can drop connections and garble bodies (new fault kinds the soak uses).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator

import pytest

from entasis.collect.client import ExchangeClient
from entasis.sim.exchange import SimExchangeServer, start_server
from entasis.sim.market import MarketSim

KLINES = "binance:/api/v3/klines"
TICKER = "deribit:/api/v2/public/ticker"


@pytest.fixture(scope="module")
def exchange() -> Iterator[SimExchangeServer]:
    market = MarketSim(seed=7, symbols=["BTC/USDT"], start="2023-01-01", end="2023-02-01", now="2023-01-20")
    with start_server(market=market, option_currencies=("BTC",)) as server:
        yield server


@pytest.fixture
def client(exchange: SimExchangeServer, sim_env: Callable[..., SimExchangeServer]) -> ExchangeClient:
    sim_env(exchange, retries=3)
    return ExchangeClient("binance")


def _ms(s: str) -> int:
    import pandas as pd

    return int(pd.Timestamp(s, tz="UTC").value // 1_000_000)


def test_garbled_candle_page_is_retried_not_taken_as_empty(client: ExchangeClient,
                                                            exchange: SimExchangeServer) -> None:
    clean = client.fetch_ohlcv("BTC/USDT", "1h", _ms("2023-01-02"), _ms("2023-01-03"), 100)
    exchange.faults.add(KLINES, "garbled", times=1)
    again = client.fetch_ohlcv("BTC/USDT", "1h", _ms("2023-01-02"), _ms("2023-01-03"), 100)
    assert len(clean) > 0
    assert again.equals(clean)
    assert client.stats.retries == 1


def test_garbled_option_ticker_is_retried_not_stored_as_nulls(exchange: SimExchangeServer,
                                                              client: ExchangeClient) -> None:
    deribit = ExchangeClient("deribit")
    opts = [s for s, m in deribit.load_markets().items() if m.get("option")]
    assert opts
    clean = deribit.fetch_greeks(opts[0])
    exchange.faults.add(TICKER, "garbled", times=1)
    again = deribit.fetch_greeks(opts[0])
    assert deribit.stats.retries == 1
    assert again.get("markPrice") is not None and again.get("markPrice") == clean.get("markPrice")


def test_dropped_connection_is_retried(client: ExchangeClient, exchange: SimExchangeServer) -> None:
    exchange.faults.add(KLINES, "drop", times=2)
    df = client.fetch_ohlcv("BTC/USDT", "1h", _ms("2023-01-05"), _ms("2023-01-06"), 100)
    assert len(df) > 0
    assert client.stats.retries == 2


def test_garbled_beyond_retries_fails_clearly(client: ExchangeClient, exchange: SimExchangeServer) -> None:
    from entasis.collect.client import RetriesExhausted

    exchange.faults.add(KLINES, "garbled", times=None)
    with pytest.raises(RetriesExhausted, match="not valid JSON"):
        client.fetch_ohlcv("BTC/USDT", "1h", _ms("2023-01-05"), _ms("2023-01-06"), 100)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_task_summaries_are_strict_json(value: float) -> None:
    import numpy as np

    from entasis.jobs import _plain

    out = _plain({"psi": value, "np": np.float64(value), "ok": 0.5, "nested": [{"x": value}], "n": np.int64(3)})
    text = json.dumps(out, allow_nan=False)  # what Airflow's XCom push needs
    assert json.loads(text) == {"psi": None, "np": None, "ok": 0.5, "nested": [{"x": None}], "n": 3}
    assert not math.isnan(_plain(1.5))


@pytest.mark.parametrize("venue", ["binance", "binanceusdm", "bybit", "deribit"])
def test_api_keys_do_not_send_public_collection_to_private_endpoints(
        venue: str, exchange: SimExchangeServer, sim_env: Callable[..., SimExchangeServer]) -> None:
    """4. With ENTASIS_EXCHANGE__API_KEY/SECRET set, ccxt's Binance loaded margin pairs from a signed
    private endpoint at load_markets; every collection failed before it started."""
    sim_env(exchange, ENTASIS_EXCHANGE__API_KEY="k", ENTASIS_EXCHANGE__API_SECRET="s3cr3t-for-test",
            ENTASIS_EXCHANGE__MAX_RETRIES="0")
    markets = ExchangeClient(venue).load_markets()
    assert markets
    assert exchange.calls("binance:/sapi/v1/margin/allPairs") == 0
