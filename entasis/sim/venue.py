"""What a simulated venue is made of: the request context, the response, the venue base class and the
candle / open-interest sources its handlers page through.

Why a module of its own: the server (:mod:`entasis.sim.exchange`) builds the venues and the venues
(``venue_binance``, ``venue_bybit``, ``venue_deribit``) build on these classes; with them here neither
imports the other's module in a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from entasis.domain import TIMEFRAME_MS, timeframe_ms
from entasis.sim.faults import Fault
from entasis.sim.market import QV_DP
from entasis.sim.series import Page

if TYPE_CHECKING:
    from entasis.sim.exchange import SimExchangeServer
    from entasis.sim.market import MarketSim


@dataclass
class Response:
    status: int
    body: Any  # JSON-able object, or str/bytes sent as-is
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class Ctx:
    """One request as a venue handler sees it."""

    server: SimExchangeServer
    venue: str
    path: str
    query: dict[str, str]
    faults: list[Fault]

    @property
    def route(self) -> str:
        return f"{self.venue}:{self.path}"

    @property
    def now(self) -> int:
        return self.server.market.now_ms

    @property
    def market(self) -> MarketSim:
        return self.server.market


Handler = Callable[[Ctx], Response]


class Venue:
    """A venue: its routes and how it words errors."""

    name = ""

    def __init__(self, server: SimExchangeServer) -> None:
        self.server = server
        self.routes: dict[str, Handler] = {}

    def error(self, kind: str, ctx: Ctx, fault: Fault | None = None) -> Response:  # pragma: no cover
        raise NotImplementedError

    def not_found(self, ctx: Ctx) -> Response:
        return Response(404, "<html><body><h1>404 Not Found</h1></body></html>", content_type="text/html")


# The ``drop`` fault: the handler closes the connection without answering.
DROP = Response(0, b"")


def int_param(q: dict[str, str], name: str, bad: Callable[[str], Exception]) -> int | None:
    """An optional integer query parameter: None when absent or empty, ``bad(name)`` raised when not an int
    (each venue words that error its own way)."""
    v = q.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise bad(name) from None


def html_error(status: int) -> Response:
    text = {500: "500 Internal Server Error", 502: "502 Bad Gateway", 503: "503 Service Temporarily Unavailable"}
    msg = text.get(status, f"{status} Error")
    return Response(status, f"<html>\r\n<head><title>{msg}</title></head>\r\n<body>\r\n<center><h1>{msg}</h1>"
                            "</center>\r\n</body>\r\n</html>\r\n", content_type="text/html")


@dataclass
class SimCandleSource:
    """Candles of one simulated market, generated only for the window a request needs."""

    market: MarketSim
    symbol: str
    timeframe: str
    kind: str
    now: int
    dense: bool = True

    def __post_init__(self) -> None:
        self.step_ms = timeframe_ms(self.timeframe)
        p = self.market.params(self.symbol)
        self.price_dp: int | None = p.price_dp
        self.lot_dp = p.lot_dp

    def window(self, lo: int, hi: int) -> Page:
        b = self.market.bars(self.symbol, self.timeframe, self.kind, lo=lo, hi=hi, now=self.now)
        return Page(b.ts, {
            "open": b.open, "high": b.high, "low": b.low, "close": b.close,
            "volume": b.lots / 10.0**self.lot_dp, "quote_volume": b.qvu / 10.0**QV_DP,
        })



class OISource:
    """Open interest of one perp, computed for the requested window only."""

    dense = True
    price_dp: int | None = None

    def __init__(self, market: Any, symbol: str, period: str, now: int) -> None:
        self.market, self.symbol, self.period, self.now = market, symbol, period, now
        self.step_ms = TIMEFRAME_MS[period]

    def window(self, lo: int, hi: int) -> Page:
        ts, oi, val = self.market.open_interest_arrays(self.symbol, self.period, lo=lo, hi=hi, now=self.now)
        return Page(ts, {"open_interest": oi, "open_interest_value": val})
