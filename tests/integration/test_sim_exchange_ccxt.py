"""Real ccxt classes against the simulated exchange: every venue, paging, and every fault kind.

The URL rewrite is the one the collectors do: ``https://<host>/<path>`` -> ``{url}/<venue>/<path>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import ccxt
import numpy as np
import pandas as pd
import pytest

from entasis.sim.exchange import SimExchangeServer, start_server
from entasis.sim.market import MarketSim

H = 3_600_000
T0 = int(pd.Timestamp("2023-03-01", tz="UTC").value // 1_000_000)


def route_to(ex: ccxt.Exchange, base: str, venue: str) -> ccxt.Exchange:
    def fix(v: Any) -> Any:
        if isinstance(v, str):
            return re.sub(r"^https://[^/]+", f"{base}/{venue}", ex.implode_hostname(v))
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v

    ex.urls["api"] = fix(ex.urls["api"])
    return ex


@pytest.fixture(scope="module")
def srv() -> Iterator[SimExchangeServer]:
    with start_server(market=MarketSim(seed=7)) as s:
        yield s


@pytest.fixture(autouse=True)
def _no_faults(srv: SimExchangeServer) -> Iterator[None]:
    srv.faults.clear()
    yield
    srv.faults.clear()


def _client(cls: type[ccxt.Exchange], srv: SimExchangeServer, venue: str) -> ccxt.Exchange:
    ex = route_to(cls({"enableRateLimit": False, "timeout": 5000, "enableLastJsonResponse": True}), srv.url, venue)
    ex.load_markets()
    return ex


@pytest.fixture(scope="module")
def binance(srv: SimExchangeServer) -> ccxt.binance:
    return _client(ccxt.binance, srv, "binance")


@pytest.fixture(scope="module")
def usdm(srv: SimExchangeServer) -> ccxt.binanceusdm:
    return _client(ccxt.binanceusdm, srv, "binance")


@pytest.fixture(scope="module")
def bybit(srv: SimExchangeServer) -> ccxt.bybit:
    return _client(ccxt.bybit, srv, "bybit")


@pytest.fixture(scope="module")
def deribit(srv: SimExchangeServer) -> ccxt.deribit:
    return _client(ccxt.deribit, srv, "deribit")


def _paginate(ex: ccxt.Exchange, symbol: str, tf: str, since: int, until: int, limit: int) -> list[list[float]]:
    out: list[list[float]] = []
    while since < until:
        page = ex.fetch_ohlcv(symbol, tf, since=since, limit=limit)
        if not page:
            break
        out += [c for c in page if c[0] < until]
        since = page[-1][0] + ex.parse_timeframe(tf) * 1000
    return out


def _expected(srv: SimExchangeServer, symbol: str, tf: str, since: int, until: int, kind: str = "spot") -> np.ndarray:
    m = srv.market
    c = m.to_frame(symbol, m.bars(symbol, tf, kind, lo=since, hi=until - 1))
    ms = c["ts"].astype("datetime64[ms, UTC]").astype("int64").to_numpy()
    return np.column_stack([ms, c[["open", "high", "low", "close", "volume"]].to_numpy()])


def test_binance_spot(srv: SimExchangeServer, binance: ccxt.binance) -> None:
    assert {"BTC/USDT", "ADA/USDT"} <= set(binance.markets) and binance.markets["BTC/USDT"]["spot"]
    until = T0 + 2500 * H
    got = np.array(_paginate(binance, "ETH/USDT", "1h", T0, until, 1000), dtype=float)
    np.testing.assert_array_equal(got, _expected(srv, "ETH/USDT", "1h", T0, until))
    assert srv.calls("binance:/api/v3/klines") >= 3
    latest = binance.fetch_ohlcv("BTC/USDT", "1d", limit=3)
    assert latest[-1][0] == srv.market.now_ms - 86_400_000


def test_binance_usdm(srv: SimExchangeServer, usdm: ccxt.binanceusdm) -> None:
    m = usdm.markets["BTC/USDT:USDT"]
    assert m["swap"] and m["linear"]
    got = np.array(_paginate(usdm, "BTC/USDT:USDT", "4h", T0, T0 + 400 * 4 * H, 150), dtype=float)
    np.testing.assert_array_equal(got, _expected(srv, "BTC/USDT", "4h", T0, T0 + 1600 * H, kind="perp"))
    rates: list[dict[str, Any]] = []
    since = T0
    while since < T0 + 300 * 8 * H:
        page = usdm.fetch_funding_rate_history("BTC/USDT:USDT", since=since, limit=100)
        rates += page
        since = page[-1]["timestamp"] + 1
    ref = srv.market.funding("BTC/USDT").set_index("ts")["funding_rate"]
    ts = [r["timestamp"] for r in rates]
    assert ts == sorted(set(ts)) and ts[0] == T0
    assert [r["fundingRate"] for r in rates] == ref.loc[pd.to_datetime(ts, unit="ms", utc=True)].tolist()
    oi = usdm.fetch_open_interest_history("BTC/USDT:USDT", "1h", since=T0, limit=48)
    ref_oi = srv.market.open_interest("BTC/USDT").set_index("ts")
    assert len(oi) == 48 and oi[0]["timestamp"] == T0
    first = ref_oi.loc[pd.Timestamp(T0, unit="ms", tz="UTC")]
    assert oi[0]["openInterestAmount"] == first["open_interest"]
    assert oi[0]["openInterestValue"] == pytest.approx(first["open_interest_value"])


def test_bybit(srv: SimExchangeServer, bybit: ccxt.bybit) -> None:
    assert {"BTC/USDT", "BTC/USDT:USDT"} <= set(bybit.markets)
    until = T0 + 1500 * H
    spot = np.array(_paginate(bybit, "SOL/USDT", "1h", T0, until, 1000), dtype=float)
    np.testing.assert_array_equal(spot, _expected(srv, "SOL/USDT", "1h", T0, until))
    perp = np.array(_paginate(bybit, "SOL/USDT:USDT", "15m", T0, T0 + 300 * 900_000, 200), dtype=float)
    np.testing.assert_array_equal(perp, _expected(srv, "SOL/USDT", "15m", T0, T0 + 300 * 900_000, kind="perp"))
    fr = bybit.fetch_funding_rate_history("SOL/USDT:USDT", since=T0, limit=50)
    ref = srv.market.funding("SOL/USDT").set_index("ts")["funding_rate"]
    assert len(fr) == 50 and fr[0]["timestamp"] >= T0
    assert [f["fundingRate"] for f in fr] == ref.loc[pd.to_datetime([f["timestamp"] for f in fr], unit="ms",
                                                                    utc=True)].tolist()
    oi = bybit.fetch_open_interest_history("SOL/USDT:USDT", "1h", since=T0, limit=24)
    assert len(oi) >= 23 and all(o["openInterestAmount"] > 0 for o in oi)
    assert [o["timestamp"] for o in oi] == sorted(o["timestamp"] for o in oi)


def test_deribit_options_with_greeks(srv: SimExchangeServer, deribit: ccxt.deribit) -> None:
    opts = [s for s, m in deribit.markets.items() if m["option"] and m["base"] == "BTC"]
    sim_chain = srv.market.option_chain("BTC", srv.market.now_ms)
    assert len(opts) == len(sim_chain)
    chain = deribit.fetch_option_chain("BTC")
    assert len(chain) == len(sim_chain)
    row = sim_chain.iloc[len(sim_chain) // 2]
    sym = next(s for s in opts if deribit.markets[s]["id"] == row["instrument"])
    opt = chain[sym]
    assert opt["markPrice"] == row["mark_price"] and opt["underlyingPrice"] == row["underlying_price"]
    assert opt["info"]["mark_iv"] == row["mark_iv"]
    g = deribit.fetch_greeks(sym)
    assert g["delta"] == row["delta"] and g["gamma"] == row["gamma"] and g["markImpliedVolatility"] == row["mark_iv"]
    assert g["vega"] == row["vega"] and g["theta"] == row["theta"]
    tickers = deribit.fetch_tickers(params={"code": "ETH"})
    assert len(tickers) > 100 and "ETH/USD:ETH" in tickers
    perp = deribit.fetch_ticker("BTC/USD:BTC")
    assert perp["markPrice"] == pytest.approx(srv.market.price_at("BTC/USDT", srv.market.now_ms, "perp"), rel=1e-6)


def test_incomplete_current_candle_through_ccxt(srv: SimExchangeServer, binance: ccxt.binance) -> None:
    m = srv.market
    old = m.now_ms
    try:
        m.now = "2023-11-20T14:20Z"
        bars = binance.fetch_ohlcv("BTC/USDT", "1h", limit=2)
        assert bars[-1][0] == int(pd.Timestamp("2023-11-20 14:00", tz="UTC").value // 1_000_000)
        assert bars[-1][4] == m.price_at("BTC/USDT", m.now_ms)
        m.now = "2023-11-20T15:00Z"
        done = binance.fetch_ohlcv("BTC/USDT", "1h", limit=2)
        assert done[-1][0] == bars[-1][0] and done[-1][5] > bars[-1][5]
    finally:
        m.now = pd.Timestamp(old, unit="ms", tz="UTC")


# ------------------------------------------------------------------------------ faults
CALLS = {
    "binance": ("binance:/api/v3/klines", lambda ex: ex.fetch_ohlcv("BTC/USDT", "1h", since=T0, limit=5)),
    "bybit": ("bybit:/v5/market/kline", lambda ex: ex.fetch_ohlcv("BTC/USDT", "1h", since=T0, limit=5)),
    "deribit": ("deribit:/api/v2/public/get_book_summary_by_currency", lambda ex: ex.fetch_option_chain("BTC")),
}
EXPECTED = {
    ("429", "binance"): ccxt.DDoSProtection,
    ("429", "bybit"): ccxt.RateLimitExceeded,
    ("429", "deribit"): ccxt.DDoSProtection,
    ("500", "*"): ccxt.ExchangeNotAvailable,
    ("503", "*"): ccxt.ExchangeNotAvailable,
    ("auth", "*"): ccxt.AuthenticationError,
    ("bad_symbol", "binance"): ccxt.BadSymbol,
    ("bad_symbol", "bybit"): ccxt.BadSymbol,
    ("bad_symbol", "deribit"): ccxt.BadRequest,  # ccxt maps Deribit's -32602 to BadSymbol's parent
}


@pytest.mark.parametrize("venue", ["binance", "bybit", "deribit"])
@pytest.mark.parametrize("kind", ["429", "500", "503", "auth", "bad_symbol"])
def test_error_faults_raise_the_right_ccxt_error(
    request: pytest.FixtureRequest, srv: SimExchangeServer, venue: str, kind: str
) -> None:
    ex = request.getfixturevalue(venue)
    route, call = CALLS[venue]
    err = EXPECTED.get((kind, venue)) or EXPECTED[(kind, "*")]
    srv.faults.add(route, kind, retry_after=3) if kind == "429" else srv.faults.add(route, kind)
    with pytest.raises(err):
        call(ex)
    if kind in ("429", "500", "503"):
        assert issubclass(err, ccxt.NetworkError)  # retryable
    if kind == "429":
        assert ex.last_response_headers.get("Retry-After") == "3"
    assert call(ex)  # the fault fired once; the next request is served


@pytest.mark.parametrize("venue", ["binance", "bybit", "deribit"])
def test_slow_response_times_out(request: pytest.FixtureRequest, srv: SimExchangeServer, venue: str) -> None:
    ex = request.getfixturevalue(venue)
    route, call = CALLS[venue]
    srv.faults.add(route, "slow", delay_s=1.5)
    ex.timeout = 300
    try:
        with pytest.raises(ccxt.RequestTimeout):
            call(ex)
    finally:
        ex.timeout = 5000
    assert call(ex)


@pytest.mark.parametrize("venue", ["binance", "bybit"])
def test_overlap_and_missing_reach_the_client(request: pytest.FixtureRequest, srv: SimExchangeServer,
                                              venue: str) -> None:
    ex = request.getfixturevalue(venue)
    route, _ = CALLS[venue]
    srv.faults.add(route, "overlap", n=3)
    page = ex.fetch_ohlcv("BTC/USDT", "1h", since=T0 + 10 * H, limit=10)
    raw_first = ex.last_json_response  # ccxt filters rows before `since`; the raw page holds the repeats
    rows = raw_first if venue == "binance" else raw_first["result"]["list"][::-1]
    assert int(rows[0][0]) == T0 + 7 * H and len(page) == 7
    srv.faults.add(route, "missing", start=T0 + 2 * H, end=T0 + 5 * H, times=None)
    got = [c[0] for c in ex.fetch_ohlcv("BTC/USDT", "1h", since=T0, limit=8)]
    assert got == [T0, T0 + H] + [T0 + k * H for k in range(5, 11)]  # a real gap; the page stays full
    again = [c[0] for c in ex.fetch_ohlcv("BTC/USDT", "1h", since=T0, limit=8)]
    assert again == got  # permanent


def test_malformed_and_revised_rows(srv: SimExchangeServer, binance: ccxt.binance) -> None:
    ref = binance.fetch_ohlcv("ETH/USDT", "1h", since=T0, limit=8)
    srv.faults.add("binance:/api/v3/klines", "malformed", n=4)
    bad = binance.fetch_ohlcv("ETH/USDT", "1h", since=T0, limit=8)
    assert any(c[2] < c[3] for c in bad)  # high < low
    assert any(c[5] is not None and c[5] < 0 for c in bad)  # negative volume
    assert any(c[4] is None for c in bad)  # "abc" close parses to None
    assert any(c[1] == 0 for c in bad)  # zero open
    srv.faults.add("binance:/api/v3/klines", "revise", ts=T0 + 3 * H, field="close", factor=1.02)
    rev = binance.fetch_ohlcv("ETH/USDT", "1h", since=T0, limit=8)
    assert rev[3][4] == pytest.approx(round(ref[3][4] * 1.02, 2)) and rev[3][2] >= rev[3][4]
    assert [r for i, r in enumerate(rev) if i != 3] == [r for i, r in enumerate(ref) if i != 3]


def test_funding_faults(srv: SimExchangeServer, usdm: ccxt.binanceusdm) -> None:
    srv.faults.add("binance:/fapi/v1/fundingRate", "missing", start=T0 + 8 * H, end=T0 + 24 * H)
    got = [r["timestamp"] for r in usdm.fetch_funding_rate_history("BTC/USDT:USDT", since=T0, limit=4)]
    assert got == [T0, T0 + 24 * H, T0 + 32 * H, T0 + 40 * H]
