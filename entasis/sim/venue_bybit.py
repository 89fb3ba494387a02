"""Bybit v5 public market endpoints as ccxt's ``bybit`` class calls them.

Envelope ``{"retCode": 0, "retMsg": "OK", "result": {...}, "retExtInfo": {}, "time": ms}``; errors keep
HTTP 200 with a non-zero retCode, as Bybit does. Lists are newest first. Kline: ``start`` pages
forward from start, otherwise the newest ``limit`` up to ``end`` (default now). Funding history:
startTime alone is an error (as documented by Bybit), else newest first up to endTime. Open
interest walks back from endTime (a lone startTime bounds it) and returns a ``nextPageCursor``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

from entasis.domain import HOUR_MS, TIMEFRAME_MS
from entasis.sim.faults import Fault
from entasis.sim.series import ArraySource, Source, fmt_trim, page
from entasis.sim.timeframes import BYBIT_INTERVALS
from entasis.sim.venue import Ctx, OISource, Response, SimCandleSource, Venue, html_error, int_param

KLINE_MAX = 1000
KLINE_DEFAULT = 200
FUNDING_MAX = 200
OI_MAX = 200
OI_DEFAULT = 50
OI_INTERVALS = {"5min": "5m", "15min": "15m", "30min": "30m", "1h": "1h", "4h": "4h", "1d": "1d"}


class BybitError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def _int(q: dict[str, str], name: str) -> int | None:
    return int_param(q, name, lambda n: BybitError(10001, f"params error: {n} invalid"))


def _choice(q: dict[str, str], name: str, table: dict[str, str], invalid: str) -> str:
    """The value ``table`` maps the required parameter ``name`` to (``invalid``: Bybit's message for an unknown one)."""
    v = q.get(name)
    if not v:
        raise BybitError(10001, f"params error: {name} is required")
    got = table.get(v)
    if got is None:
        raise BybitError(10001, invalid)
    return got


def _limit(q: dict[str, str], default: int, maximum: int) -> int:
    v = _int(q, "limit")
    return default if v is None else max(1, min(v, maximum))


class Bybit(Venue):
    name = "bybit"

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self.routes = {
            "/v5/market/time": self.time,
            "/v5/market/instruments-info": self.instruments,
            "/v5/market/kline": self.kline,
            "/v5/market/funding/history": self.funding,
            "/v5/market/open-interest": self.open_interest,
        }
        for path, fn in list(self.routes.items()):
            self.routes[path] = self._guard(fn)

    def _ok(self, ctx: Ctx, result: dict[str, Any]) -> Response:
        return Response(200, {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": ctx.now})

    def _fail(self, ctx: Ctx, code: int, msg: str, status: int = 200) -> Response:
        return Response(status, {"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {}, "time": ctx.now})

    def _guard(self, fn: Any) -> Any:
        def run(ctx: Ctx) -> Response:
            try:
                return fn(ctx)
            except BybitError as e:
                return self._fail(ctx, e.code, e.msg)

        return run

    def error(self, kind: str, ctx: Ctx, fault: Fault | None = None) -> Response:
        if kind == "429":
            retry = str((fault.params if fault else {}).get("retry_after", 1))
            resp = self._fail(ctx, 10006, "Too many visits!", status=429)
            resp.headers["Retry-After"] = retry
            return resp
        if kind in ("500", "503"):
            return html_error(int(kind))
        if kind == "auth":
            return self._fail(ctx, 10003, "API key is invalid.", status=401)
        if kind == "bad_symbol":
            return self._fail(ctx, 10001, "Not supported symbols")
        raise ValueError(f"bybit: no error for fault kind {kind!r}")  # pragma: no cover

    # ------------------------------------------------------------------ symbols
    def _table(self, category: str) -> dict[str, str]:
        if category == "spot":
            syms = set(self.server.market.symbols)
            if self.server.replay is not None:
                syms |= set(self.server.replay.symbols)
            return {s.replace("/", ""): s for s in sorted(syms)}
        if category == "linear":
            return {s.replace("/", ""): s for s in self.server.market.symbols}
        return {}

    def _category(self, ctx: Ctx, allowed: tuple[str, ...]) -> str:
        cat = ctx.query.get("category")
        if not cat:
            raise BybitError(10001, "params error: category is required")
        if cat not in ("spot", "linear", "inverse", "option"):
            raise BybitError(10001, "params error: Category is invalid")
        if cat not in allowed:
            raise BybitError(10001, f"params error: category only support {','.join(allowed)}")
        return cat

    def _symbol(self, ctx: Ctx, category: str) -> tuple[str, str]:
        sid = ctx.query.get("symbol")
        if not sid:
            raise BybitError(10001, "params error: symbol is required")
        table = self._table(category)
        if sid not in table:
            raise BybitError(10001, "Not supported symbols")
        return sid, table[sid]

    # ------------------------------------------------------------------ endpoints
    def time(self, ctx: Ctx) -> Response:
        return self._ok(ctx, {"timeSecond": str(ctx.now // 1000), "timeNano": str(ctx.now * 1_000_000)})

    def instruments(self, ctx: Ctx) -> Response:
        cat = self._category(ctx, ("spot", "linear", "inverse", "option"))
        status = ctx.query.get("status")
        table = self._table(cat)
        if status and status != "Trading":
            table = {}
        if ctx.query.get("symbol"):
            table = {k: v for k, v in table.items() if k == ctx.query["symbol"]}
        m = self.server.market
        items: list[dict[str, Any]] = []
        for sid, sym in table.items():
            base, quote_ = sym.split("/")
            p = m.params(sym)
            tick = fmt_trim(10.0**-p.price_dp, 8)
            step = fmt_trim(10.0**-p.lot_dp, 8)
            if cat == "spot":
                items.append({
                    "symbol": sid, "baseCoin": base, "quoteCoin": quote_, "innovation": "0", "status": "Trading",
                    "marginTrading": "utaOnly", "stTag": "0",
                    "lotSizeFilter": {"basePrecision": step, "quotePrecision": "0.00000001", "minOrderQty": step,
                                      "maxOrderQty": "9000000", "minOrderAmt": "1", "maxOrderAmt": "4000000"},
                    "priceFilter": {"tickSize": tick},
                    "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.1"},
                })
            else:
                items.append({
                    "symbol": sid, "contractType": "LinearPerpetual", "status": "Trading", "baseCoin": base,
                    "quoteCoin": quote_, "launchTime": str(m.start_ms), "deliveryTime": "0", "deliveryFeeRate": "",
                    "priceScale": str(p.price_dp),
                    "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
                    "priceFilter": {"minPrice": tick, "maxPrice": "1999999.80", "tickSize": tick},
                    "lotSizeFilter": {"maxOrderQty": "1190.000", "minOrderQty": step, "qtyStep": step,
                                      "postOnlyMaxOrderQty": "1190.000", "maxMktOrderQty": "500.000",
                                      "minNotionalValue": "5"},
                    "unifiedMarginTrade": True, "fundingInterval": 480, "settleCoin": quote_, "copyTrading": "both",
                    "upperFundingRate": "0.005", "lowerFundingRate": "-0.005", "isPreListing": False,
                    "preListingInfo": None,
                })
        result: dict[str, Any] = {"category": cat, "list": items}
        if cat != "spot":
            result["nextPageCursor"] = ""
        return self._ok(ctx, result)

    def kline(self, ctx: Ctx) -> Response:
        cat = ctx.query.get("category") or "linear"
        if cat not in ("spot", "linear"):
            cat = self._category(ctx, ("spot", "linear"))
        sid, sym = self._symbol(ctx, cat)
        tf = _choice(ctx.query, "interval", BYBIT_INTERVALS, "Invalid period!")
        start, end = _int(ctx.query, "start"), _int(ctx.query, "end")
        limit = _limit(ctx.query, KLINE_DEFAULT, KLINE_MAX)
        hi = end if end is not None else ctx.now
        source: Source
        replay = self.server.replay
        if cat == "spot" and replay is not None and replay.has_symbol(sym):
            got = replay.source(sym, tf)
            if got is None:
                return self._ok(ctx, {"symbol": sid, "category": cat, "list": []})
            source = got
            dp = None
        else:
            source = SimCandleSource(self.server.market, sym, tf, "perp" if cat == "linear" else "spot", ctx.now)
            dp = source.price_dp
        backward = start is None
        pg = page(source, lo=start or 0, hi=hi, limit=limit, backward=backward, faults=ctx.faults, now=ctx.now)
        lot_dp = self.server.market.params(sym).lot_dp if dp is not None else None
        rows = []
        for i in range(len(pg) - 1, -1, -1):  # newest first
            c = pg.cols
            rows.append([str(int(pg.ts[i])), fmt_trim(c["open"][i], dp), fmt_trim(c["high"][i], dp),
                         fmt_trim(c["low"][i], dp), fmt_trim(c["close"][i], dp), fmt_trim(c["volume"][i], lot_dp),
                         fmt_trim(c["quote_volume"][i], 4 if dp is not None else None)])
        return self._ok(ctx, {"symbol": sid, "category": cat, "list": rows})

    def funding(self, ctx: Ctx) -> Response:
        cat = self._category(ctx, ("linear", "inverse"))
        sid, sym = self._symbol(ctx, cat)
        start, end = _int(ctx.query, "startTime"), _int(ctx.query, "endTime")
        if start is not None and end is None:
            raise BybitError(10001, "params error: please pass startTime and endTime together")
        limit = _limit(ctx.query, FUNDING_MAX, FUNDING_MAX)
        ts, rate, _ = self.server.market.funding_arrays(sym, now=ctx.now)
        src = ArraySource(ts, {"funding_rate": rate}, 8 * HOUR_MS)
        hi = end if end is not None else ctx.now
        pg = page(src, lo=start or 0, hi=hi, limit=limit, backward=True, faults=ctx.faults, now=ctx.now)
        rows = [{"symbol": sid, "fundingRate": fmt_trim(pg.cols["funding_rate"][i], 8),
                 "fundingRateTimestamp": str(int(pg.ts[i]))} for i in range(len(pg) - 1, -1, -1)]
        return self._ok(ctx, {"category": cat, "list": rows})

    def open_interest(self, ctx: Ctx) -> Response:
        cat = self._category(ctx, ("linear", "inverse"))
        sid, sym = self._symbol(ctx, cat)
        period = _choice(ctx.query, "intervalTime", OI_INTERVALS, "params error: intervalTime invalid")
        start, end = _int(ctx.query, "startTime"), _int(ctx.query, "endTime")
        limit = _limit(ctx.query, OI_DEFAULT, OI_MAX)
        hi = end if end is not None else ctx.now
        cursor = ctx.query.get("cursor")
        if cursor:
            try:
                hi = min(hi, int(dict(p.split("=", 1) for p in unquote(cursor).split("&"))["lasttime"]) * 1000 - 1)
            except (KeyError, ValueError):
                raise BybitError(10001, "params error: cursor invalid") from None
        src = OISource(self.server.market, sym, period, ctx.now)
        pg = page(src, lo=start or 0, hi=hi, limit=limit, backward=True, faults=ctx.faults, now=ctx.now)
        rows = [{"openInterest": fmt_trim(pg.cols["open_interest"][i], 8), "timestamp": str(int(pg.ts[i]))}
                for i in range(len(pg) - 1, -1, -1)]
        oldest = int(pg.ts[0]) if len(pg) else None
        more = oldest is not None and len(pg) == limit and oldest - TIMEFRAME_MS[period] >= max(start or 0,
                                                                                                  self.server.market.start_ms)
        nxt = quote(f"lastid={oldest}&lasttime={oldest // 1000}") if more and oldest is not None else ""
        return self._ok(ctx, {"symbol": sid, "category": cat, "list": rows, "nextPageCursor": nxt})
