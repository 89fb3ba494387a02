"""The exchange client's pure parts: URL rewriting, backoff, Retry-After and row parsing.

These use real ccxt exchange objects; the retry tests (tenacity loop, Retry-After, fatal map) go over
HTTP to a small simulated exchange. Collection end to end is covered by the integration tests.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator

import ccxt
import numpy as np
import pytest
from pydantic import SecretStr

from entasis.collect.client import (
    ExchangeClient,
    RetryPolicy,
    _quote_volumes,
    _retry_after_s,
    ohlcv_frame,
    rewrite_urls,
)
from entasis.config import ExchangeConfig
from entasis.sim.exchange import SimExchangeServer, start_server
from entasis.sim.market import MarketSim

SIM = "http://127.0.0.1:9999"


def _all_strings(obj: object) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _all_strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _all_strings(v)]
    return []


@pytest.mark.parametrize(("exchange_id", "venue"), [("binance", "binance"), ("binanceusdm", "binance"),
                                                     ("bybit", "bybit"), ("deribit", "deribit")])
def test_sim_url_rewrites_every_api_url(exchange_id: str, venue: str) -> None:
    client = ExchangeClient(exchange_id, config=ExchangeConfig(sim_url=SIM + "/"))
    urls = _all_strings(client.ex.urls["api"])
    assert urls, "ccxt exposes API URLs"
    assert all(u.startswith(f"{SIM}/{venue}") for u in urls), [u for u in urls if not u.startswith(SIM)][:3]


def test_rewrite_keeps_path_and_maps_hosts() -> None:
    ex = ccxt.binance()
    api = rewrite_urls(ex.urls["api"], SIM, "binance")
    assert api["public"] == f"{SIM}/binance/api/v3"
    assert api["fapiPublic"] == f"{SIM}/binance/fapi/v1"
    assert api["fapiData"] == f"{SIM}/binance/futures/data"
    assert rewrite_urls({"rest": "https://www.deribit.com"}, SIM, "deribit") == {"rest": f"{SIM}/deribit"}
    assert rewrite_urls("https://api.{hostname}", SIM, "bybit") == f"{SIM}/bybit"


def test_without_sim_url_real_venues_are_used() -> None:
    client = ExchangeClient("binance", config=ExchangeConfig(sim_url=None))
    assert client.ex.urls["api"]["public"] == "https://api.binance.com/api/v3"
    assert client.ex.enableRateLimit is True
    assert client.ex.timeout == 10_000
    assert client.ex.rateLimit == ccxt.binance().rateLimit


def test_settings_drive_timeouts_retries_and_secrets(caplog: pytest.LogCaptureFixture) -> None:
    cfg = ExchangeConfig(timeout_ms=1234, max_retries=2, backoff_base_s=0.01, backoff_max_s=0.05,
                         api_key=SecretStr("k-123-secret"), api_secret=SecretStr("s-456-secret"))
    caplog.set_level(logging.DEBUG)
    client = ExchangeClient("bybit", config=cfg)
    assert client.ex.timeout == 1234
    assert client.policy.max_retries == 2 and client.policy.base_s == 0.01 and client.policy.max_s == 0.05
    assert client.ex.apiKey == "k-123-secret" and client.ex.secret == "s-456-secret"
    assert "s-456-secret" not in caplog.text and "k-123-secret" not in caplog.text
    assert client.ex.options["fetchMarkets"]["types"] == ["spot", "linear"]
    assert client.ex.has["fetchCurrencies"] is False  # no private call needed to load markets
    assert ccxt.bybit().has["fetchCurrencies"] is True  # ... without touching the class default


def test_unknown_exchange_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown exchange 'kraken'"):
        ExchangeClient("kraken", config=ExchangeConfig())


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    p = RetryPolicy(max_retries=5, base_s=0.5, max_s=4.0, rng=random.Random(1))
    for attempt, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)]:
        waits = [p.delay(attempt) for _ in range(200)]
        assert min(waits) >= cap / 2 and max(waits) <= cap
        assert len(set(waits)) > 100  # jittered, not constant
    assert p.delay(0, retry_after=3.0) == 3.0  # Retry-After is a floor
    assert p.delay(0, retry_after=100.0) == 4.0  # ... capped at backoff_max_s


def test_retry_after_header_forms() -> None:
    assert _retry_after_s({"Retry-After": "2"}) == 2.0
    assert _retry_after_s({"retry-after": "0.5"}) == 0.5
    assert _retry_after_s({}) is None
    assert _retry_after_s(None) is None
    assert _retry_after_s({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    assert _retry_after_s({"Retry-After": "soon"}) is None


def test_ohlcv_frame_parses_and_maps_quote_volume_by_position() -> None:
    raw = [[1000, "1", "2", "0.5", "1.5", "10", 1999, "15.0"], [2000, "1.5", "2", "1", "1", "3", 2999, "4.5"],
           [2000, "1.6", "2", "1", "1", "3", 2999, "4.8"]]
    parsed = [[1000, 1.0, 2.0, 0.5, 1.5, 10.0], [2000, 1.5, 2.0, 1.0, 1.0, 3.0], [2000, 1.6, 2.0, 1.0, 1.0, 3.0]]
    df = ohlcv_frame(parsed, _quote_volumes(raw))
    assert df["t"].tolist() == [1000, 2000, 2000]
    assert df["quote_volume"].tolist() == [15.0, 4.5, 4.8]
    bybit = {"retCode": 0, "result": {"list": [["2000", "1", "1", "1", "1", "1", "7.5"]]}}
    qv = _quote_volumes(bybit)
    assert qv is not None and qv[0].tolist() == [2000.0] and qv[1].tolist() == [7.5]
    unique = ohlcv_frame(parsed[:2], _quote_volumes(raw[:2]))
    assert unique["quote_volume"].tolist() == [15.0, 4.5]
    assert _quote_volumes({"code": -1121}) is None and _quote_volumes([]) is None
    bad = ohlcv_frame([[3000, "x", 2, 1, 1, 1], ["junk", 1, 1, 1, 1, 1]], None)
    assert bad["t"].tolist() == [3000]
    assert np.isnan(bad["open"].iloc[0]) and np.isnan(bad["quote_volume"].iloc[0])
    empty = ohlcv_frame([], None)
    assert empty.empty and "quote_volume" in empty.columns


def test_shared_throttle_spaces_requests_across_threads() -> None:
    """Parallel ticker calls must not raise the request rate above one client's ccxt spacing."""
    import threading
    import time

    from entasis.collect.client import _SharedThrottle

    throttle = _SharedThrottle(20.0)  # 20 ms per request
    starts: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            throttle()
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(starts) == 20
    assert max(starts) - t0 >= 19 * 0.020  # 20 requests need 19 intervals, however many threads ask


KLINES = "binance:/api/v3/klines"


@pytest.fixture(scope="module")
def sim_exchange() -> Iterator[SimExchangeServer]:
    with start_server(market=MarketSim(seed=7, symbols=["BTC/USDT"], start="2023-01-01", end="2023-01-10"),
                      option_currencies=()) as srv:
        yield srv


def _sim_client(srv: SimExchangeServer, sleeps: list[float], max_retries: int = 3,
               max_s: float = 10.0) -> ExchangeClient:
    cfg = ExchangeConfig(sim_url=srv.url, max_retries=max_retries, backoff_base_s=0.01, backoff_max_s=max_s)
    return ExchangeClient("binance", config=cfg, sleep=sleeps.append)


def test_retry_after_is_honoured_between_tenacity_attempts(sim_exchange: SimExchangeServer) -> None:
    """Real 429s over HTTP: each wait is the venue's Retry-After (not the 0.01 s backoff), then the page lands."""
    srv = sim_exchange
    srv.faults.clear()
    srv.faults.add(KLINES, "429", times=2, retry_after=3)
    sleeps: list[float] = []
    client = _sim_client(srv, sleeps)
    since = 1672531200000  # 2023-01-01
    df = client.fetch_ohlcv("BTC/USDT", "1h", since, since + 24 * 3_600_000, 1000)
    assert len(df) == 24
    assert sleeps == [3.0, 3.0]
    assert client.stats.retries == 2


def test_retry_after_is_capped_and_exhaustion_names_the_attempts(sim_exchange: SimExchangeServer,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    from entasis.collect.client import RetriesExhausted

    srv = sim_exchange
    srv.faults.clear()
    srv.faults.add(KLINES, "429", times=None, retry_after=60)
    sleeps: list[float] = []
    cfg = ExchangeConfig(sim_url=srv.url, max_retries=2, backoff_base_s=0.01, backoff_max_s=5.0,
                         api_key=SecretStr("key-7f3a"), api_secret=SecretStr("secret-9c1e"))
    client = ExchangeClient("binance", config=cfg, sleep=sleeps.append)
    client.load_markets()
    caplog.set_level(logging.DEBUG)
    since = 1672531200000
    try:
        with pytest.raises(RetriesExhausted, match=r"gave up after 3 attempts; last error DDoSProtection") as err:
            client.fetch_ohlcv("BTC/USDT", "1h", since, since + 3_600_000, 1000)
    finally:
        srv.faults.clear()
    assert sleeps == [5.0, 5.0]  # Retry-After 60 s is capped at backoff_max_s
    assert "retry 1/2 in 5.00s" in caplog.text and "retry 2/2 in 5.00s" in caplog.text
    for secret in ("key-7f3a", "secret-9c1e"):  # neither the retry log nor the error carries a key
        assert secret not in caplog.text and secret not in str(err.value)


def test_fatal_errors_are_not_retried(sim_exchange: SimExchangeServer) -> None:
    from entasis.collect.client import FatalExchangeError

    sleeps: list[float] = []
    client = _sim_client(sim_exchange, sleeps)
    with pytest.raises(FatalExchangeError, match="unknown symbol 'NOPE/USDT'"):
        client.check_symbol("NOPE/USDT")
    calls = client.stats.calls
    with pytest.raises(FatalExchangeError, match="does not know this symbol"):
        client.call("fetch_ohlcv", "NOPE/USDT", "1h")
    assert sleeps == [] and client.stats.retries == 0 and client.stats.calls == calls + 1


def test_funding_and_open_interest_frames_parse_and_drop_rows_without_time() -> None:
    from entasis.collect.client import funding_frame, open_interest_frame

    fr = funding_frame([{"timestamp": 1000, "fundingRate": "0.0001", "info": {"markPrice": "42000.5"}},
                        {"timestamp": None, "fundingRate": 0.0002, "info": {}},
                        {"timestamp": "2000", "fundingRate": "n/a", "info": "junk"}])
    assert fr["t"].tolist() == [1000, 2000] and str(fr["t"].dtype) == "int64"
    assert fr["funding_rate"].iloc[0] == 0.0001 and np.isnan(fr["funding_rate"].iloc[1])
    assert fr["mark_price"].iloc[0] == 42000.5 and np.isnan(fr["mark_price"].iloc[1])
    oi = open_interest_frame([{"timestamp": 5, "openInterestAmount": "12.5", "openInterestValue": 100},
                              {"timestamp": 6, "baseVolume": 3, "quoteVolume": "x"}])
    assert oi.columns.tolist() == ["t", "open_interest", "open_interest_value"]
    assert oi["open_interest"].tolist() == [12.5, 3.0]
    assert oi["open_interest_value"].iloc[0] == 100.0 and np.isnan(oi["open_interest_value"].iloc[1])
    assert funding_frame([]).columns.tolist() == ["t", "funding_rate", "mark_price"]
