"""The simulated exchange over raw HTTP: venue formats, limits, paging, clock, replay, lifecycle."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from entasis.sim.exchange import SimExchangeServer, start_server
from entasis.sim.market import MarketSim

H = 3_600_000
T0 = int(pd.Timestamp("2023-01-01", tz="UTC").value // 1_000_000)


@pytest.fixture(scope="module")
def server() -> Iterator[SimExchangeServer]:
    with start_server(market=MarketSim(seed=7, symbols=["BTC/USDT", "ETH/USDT"])) as srv:
        yield srv


def get(srv: SimExchangeServer, path: str) -> tuple[int, Any, dict[str, str]]:
    try:
        with urllib.request.urlopen(srv.url + path, timeout=10) as r:  # noqa: S310 - loopback test server
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body), dict(e.headers)
        except ValueError:
            return e.code, body.decode(), dict(e.headers)


def test_binance_spot_klines_paging_and_limits(server: SimExchangeServer) -> None:
    st, rows, _ = get(server, f"/binance/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={T0}&limit=3")
    assert st == 200 and [r[0] for r in rows] == [T0, T0 + H, T0 + 2 * H]
    r = rows[0]
    assert len(r) == 12 and r[6] == T0 + H - 1 and r[11] == "0" and isinstance(r[8], int)
    assert all(isinstance(x, str) and len(x.split(".")[1]) == 8 for x in r[1:6])
    ref = server.market.candles("BTC/USDT", "1h").set_index("ts").loc[pd.Timestamp(T0, unit="ms", tz="UTC")]
    assert [float(x) for x in r[1:6]] == [ref["open"], ref["high"], ref["low"], ref["close"], ref["volume"]]
    assert float(r[7]) == ref["quote_volume"]
    _, big, _ = get(server, f"/binance/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime={T0}&limit=5000")
    assert len(big) == 1000  # spot maximum
    _, fbig, _ = get(server, f"/binance/fapi/v1/klines?symbol=BTCUSDT&interval=1m&startTime={T0}&limit=5000")
    assert len(fbig) == 1500  # USD-M maximum
    _, default, _ = get(server, "/binance/api/v3/klines?symbol=BTCUSDT&interval=1d")
    assert len(default) == 500 and default[-1][0] == server.market.now_ms - 86_400_000  # newest 500
    _, end, _ = get(server, f"/binance/api/v3/klines?symbol=BTCUSDT&interval=1h&endTime={T0}&limit=2")
    assert [x[0] for x in end] == [T0 - H, T0]


def test_binance_errors(server: SimExchangeServer) -> None:
    st, body, _ = get(server, "/binance/api/v3/klines?symbol=NOPEUSDT&interval=1h")
    assert (st, body) == (400, {"code": -1121, "msg": "Invalid symbol."})
    st, body, _ = get(server, "/binance/api/v3/klines?symbol=BTCUSDT&interval=7m")
    assert (st, body["code"]) == (400, -1120)
    st, body, _ = get(server, "/binance/api/v3/klines?interval=1h")
    assert body["code"] == -1102 and "'symbol'" in body["msg"]
    st, body, _ = get(server, f"/binance/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={T0}&endTime={T0 - 1}")
    assert body["code"] == -1023
    st, _, _ = get(server, "/binance/api/v3/nothing")
    assert st == 404


def test_exchange_info_and_time(server: SimExchangeServer) -> None:
    _, info, _ = get(server, "/binance/api/v3/exchangeInfo")
    assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT"]
    tick = {f["filterType"]: f for f in info["symbols"][0]["filters"]}["PRICE_FILTER"]["tickSize"]
    assert float(tick) == 0.01
    _, finfo, _ = get(server, "/binance/fapi/v1/exchangeInfo")
    assert finfo["symbols"][0]["contractType"] == "PERPETUAL"
    _, t, _ = get(server, "/binance/api/v3/time")
    assert t == {"serverTime": server.market.now_ms}
    _, by, _ = get(server, "/bybit/v5/market/time")
    assert by["retCode"] == 0 and int(by["result"]["timeSecond"]) == server.market.now_ms // 1000


def test_funding_and_open_interest_paging(server: SimExchangeServer) -> None:
    _, fr, _ = get(server, f"/binance/fapi/v1/fundingRate?symbol=BTCUSDT&startTime={T0}&limit=5000")
    assert len(fr) == 1000 and fr[0]["fundingTime"] == T0 and fr[1]["fundingTime"] - T0 == 8 * H
    _, fr_default, _ = get(server, "/binance/fapi/v1/fundingRate?symbol=BTCUSDT")
    assert len(fr_default) == 100 and fr_default[-1]["fundingTime"] == server.market.now_ms - 8 * H
    _, oi, _ = get(server, f"/binance/futures/data/openInterestHist?symbol=ETHUSDT&period=1h&startTime={T0}")
    assert len(oi) == 30 and oi[0]["timestamp"] == T0
    _, oi5, _ = get(server, f"/binance/futures/data/openInterestHist?symbol=ETHUSDT&period=5m&startTime={T0}&limit=900")
    assert len(oi5) == 500 and oi5[1]["timestamp"] - oi5[0]["timestamp"] == 300_000
    st, body, _ = get(server, "/binance/futures/data/openInterestHist?symbol=ETHUSDT&period=7m")
    assert st == 400 and body["code"] == -1120


def test_bybit_newest_first_and_rules(server: SimExchangeServer) -> None:
    _, k, _ = get(server, f"/bybit/v5/market/kline?category=spot&symbol=BTCUSDT&interval=60&start={T0}&limit=3")
    ts = [int(r[0]) for r in k["result"]["list"]]
    assert ts == [T0 + 2 * H, T0 + H, T0] and len(k["result"]["list"][0]) == 7
    _, k2, _ = get(server, "/bybit/v5/market/kline?category=linear&symbol=BTCUSDT&interval=60&limit=5000")
    assert len(k2["result"]["list"]) == 1000
    _, f, _ = get(server, f"/bybit/v5/market/funding/history?category=linear&symbol=BTCUSDT&startTime={T0}")
    assert f["retCode"] == 10001  # startTime alone is refused, as Bybit documents
    _, f, _ = get(server, f"/bybit/v5/market/funding/history?category=linear&symbol=BTCUSDT&startTime={T0}"
                          f"&endTime={T0 + 24 * H}")
    assert [int(x["fundingRateTimestamp"]) for x in f["result"]["list"]] == [T0 + 24 * H - 8 * H * i
                                                                             for i in range(4)]
    _, oi, _ = get(server, f"/bybit/v5/market/open-interest?category=linear&symbol=BTCUSDT&intervalTime=1h"
                           f"&endTime={T0}&limit=3")
    lst = oi["result"]["list"]
    assert [int(x["timestamp"]) for x in lst] == [T0, T0 - H, T0 - 2 * H] and oi["result"]["nextPageCursor"]
    _, nxt, _ = get(server, f"/bybit/v5/market/open-interest?category=linear&symbol=BTCUSDT&intervalTime=1h"
                            f"&limit=3&cursor={oi['result']['nextPageCursor']}")
    assert int(nxt["result"]["list"][0]["timestamp"]) == T0 - 3 * H
    _, bad, _ = get(server, "/bybit/v5/market/kline?category=spot&symbol=NOPE&interval=60")
    assert bad["retCode"] == 10001 and bad["retMsg"] == "Not supported symbols"
    # a missing or unknown interval: Bybit's own messages, per endpoint
    for path, msg in [("kline?category=spot&symbol=BTCUSDT", "params error: interval is required"),
                      ("kline?category=spot&symbol=BTCUSDT&interval=7", "Invalid period!"),
                      ("open-interest?category=linear&symbol=BTCUSDT", "params error: intervalTime is required"),
                      ("open-interest?category=linear&symbol=BTCUSDT&intervalTime=2h",
                       "params error: intervalTime invalid")]:
        _, bad, _ = get(server, f"/bybit/v5/market/{path}")
        assert (bad["retCode"], bad["retMsg"]) == (10001, msg), path


def test_deribit_endpoints(server: SimExchangeServer) -> None:
    _, inst, _ = get(server, "/deribit/api/v2/public/get_instruments?currency=BTC&kind=option")
    assert inst["jsonrpc"] == "2.0" and len(inst["result"]) > 200
    name = inst["result"][0]["instrument_name"]
    _, tick, _ = get(server, f"/deribit/api/v2/public/ticker?instrument_name={name}")
    g = tick["result"]["greeks"]
    assert set(g) == {"delta", "gamma", "vega", "theta", "rho"} and tick["result"]["mark_iv"] > 0
    _, book, _ = get(server, "/deribit/api/v2/public/get_book_summary_by_currency?currency=ETH&kind=option")
    assert all("mark_iv" in b and b["base_currency"] == "ETH" for b in book["result"])
    _, idx, _ = get(server, "/deribit/api/v2/public/get_index_price?index_name=btc_usd")
    assert idx["result"]["index_price"] == pytest.approx(server.market.price_at("BTC/USDT", server.market.now_ms))
    st, err, _ = get(server, "/deribit/api/v2/public/ticker?instrument_name=BTC-1JAN99-1-C")
    assert st == 400 and err["error"]["code"] == -32602
    st, err, _ = get(server, "/deribit/api/v2/public/get_book_summary_by_currency?currency=DOGEZ")
    assert err["error"]["data"]["param"] == "currency"


def test_calls_are_counted_per_route(server: SimExchangeServer) -> None:
    server.reset_calls()
    for _ in range(3):
        get(server, "/binance/api/v3/time")
    get(server, "/bybit/v5/market/time")
    assert server.calls("binance:/api/v3/time") == 3 and server.calls("bybit:/v5/market/time") == 1
    assert server.calls("*") == 4
    server.reset_calls()
    assert server.calls("*") == 0


def test_error_faults_over_http(server: SimExchangeServer) -> None:
    server.faults.add("binance:/api/v3/klines", "429", retry_after=7)
    st, body, headers = get(server, "/binance/api/v3/klines?symbol=BTCUSDT&interval=1h")
    assert st == 429 and body["code"] == -1003 and headers["Retry-After"] == "7"
    st, _, _ = get(server, "/binance/api/v3/klines?symbol=BTCUSDT&interval=1h")
    assert st == 200  # fired once
    server.faults.add("bybit:/v5/market/kline", "503")
    st, body, _ = get(server, "/bybit/v5/market/kline?category=spot&symbol=BTCUSDT&interval=60")
    assert st == 503 and "Service" in body
    server.faults.clear()


def test_mid_bar_clock_serves_the_bar_in_progress() -> None:
    m = MarketSim(seed=7, symbols=["BTC/USDT"], now="2023-06-01T12:30Z")
    with start_server(market=m) as srv:
        _, rows, _ = get(srv, "/binance/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=2")
        assert rows[-1][0] == int(pd.Timestamp("2023-06-01 12:00", tz="UTC").value // 1_000_000)
        assert rows[-1][6] > m.now_ms  # its close time is still in the future
        first_close = rows[-1][4]
        m.now = "2023-06-01T12:45Z"
        _, rows2, _ = get(srv, "/binance/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=2")
        assert rows2[-1][0] == rows[-1][0] and float(rows2[-1][5]) > float(rows[-1][5])
        assert float(rows2[-1][4]) == m.price_at("BTC/USDT", m.now_ms) and float(first_close) == m.price_at(
            "BTC/USDT", "2023-06-01T12:30Z")


def test_replay_serves_files_as_is(shared_data: Path) -> None:
    with start_server(replay_dir=shared_data / "cdd_binance_spot_andrewsiah_2017_2021") as srv:
        t = int(pd.Timestamp("2017-08-17 04:00", tz="UTC").value // 1_000_000)
        _, rows, _ = get(srv, f"/binance/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={t}&limit=2")
        assert rows[0][0] == t and rows[0][1] == "16199.91000000"  # the bad open is served
        _, rows, _ = get(srv, f"/binance/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={t}&limit=1000")
        opens = [r[0] for r in rows]
        assert len(opens) == 1000 and opens == sorted(opens)  # ascending, as Binance pages
        dup_from = int(pd.Timestamp("2020-08-01 20:00", tz="UTC").value // 1_000_000)  # the overlap of formats
        _, page1, _ = get(srv, f"/binance/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={dup_from}&limit=1000")
        seen = [r[0] for r in page1]
        assert len(page1) == 1000 and len(seen) - len(set(seen)) >= 400  # duplicated hours reach the client
        dup = [r for r in page1 if r[0] == dup_from + 3 * H]
        assert len(dup) == 2 and dup[0][1] != dup[1][1]  # ...with their slightly different values
        _, info, _ = get(srv, "/binance/api/v3/exchangeInfo")
        listed = {s["symbol"] for s in info["symbols"]}
        assert {"BTCUSDT", "ADAUSDT", "BNBUSDT", "SOLUSDT"} <= listed
        _, none, _ = get(srv, "/binance/api/v3/klines?symbol=ETHUSDT&interval=4h")
        assert none == []  # replayed symbol without that timeframe
        _, by, _ = get(srv, f"/bybit/v5/market/kline?category=spot&symbol=BTCUSDT&interval=60&start={t}&limit=2")
        assert by["result"]["list"][-1][1] == "16199.91"


def test_start_is_fast_and_stop_releases_the_port() -> None:
    t = time.perf_counter()
    srv = start_server(market=MarketSim(seed=1))
    assert time.perf_counter() - t < 0.5
    host, port = srv.url.removeprefix("http://").split(":")
    get(srv, "/binance/api/v3/ping")
    t = time.perf_counter()
    srv.stop()
    assert time.perf_counter() - t < 1.0
    with socket.socket() as s:
        assert s.connect_ex((host, int(port))) != 0
