"""Binance spot (``/api/v3``), USD-M futures (``/fapi/v1``, ``/futures/data``) and an empty COIN-M
(``/dapi/v1``) as ccxt's ``binance`` and ``binanceusdm`` classes call them.

Formats follow the real API (and ccxt's fixtures): klines are 12-element arrays with string prices,
errors are ``{"code": -1121, "msg": "Invalid symbol."}`` with HTTP 400. Paging: ``startTime`` pages
forward, otherwise the newest ``limit`` records up to ``endTime`` (default now).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from entasis.domain import HOUR_MS, TIMEFRAME_MS
from entasis.sim.faults import Fault
from entasis.sim.series import ArraySource, Page, Source, fmt, page
from entasis.sim.venue import Ctx, OISource, Response, SimCandleSource, Venue, html_error, int_param

SPOT_KLINE_MAX = 1000
FAPI_KLINE_MAX = 1500
FUNDING_MAX = 1000
FUNDING_DEFAULT = 100
OI_MAX = 500
OI_DEFAULT = 30
OI_PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")
AVG_TRADE_QUOTE = 400.0  # average trade size, to derive a plausible trade count


class BinanceError(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _err(code: int, msg: str, status: int = 400) -> BinanceError:
    return BinanceError(status, code, msg)


def _mandatory(name: str) -> BinanceError:
    return _err(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _int_param(q: dict[str, str], name: str) -> int | None:
    return int_param(q, name, lambda n: _err(
        -1100, f"Illegal characters found in parameter '{n}'; legal range is '^[0-9]{{1,20}}$'."))


def _limit(q: dict[str, str], default: int, maximum: int) -> int:
    v = _int_param(q, "limit")
    return default if v is None else max(1, min(v, maximum))


def _as_float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def pair_id(symbol: str) -> str:
    return symbol.replace("/", "")


class Binance(Venue):
    name = "binance"

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self.routes = {
            "/api/v3/ping": lambda c: Response(200, {}),
            "/api/v3/time": self.time,
            "/api/v3/exchangeInfo": self.spot_exchange_info,
            "/api/v3/klines": self.spot_klines,
            "/fapi/v1/ping": lambda c: Response(200, {}),
            "/fapi/v1/time": self.time,
            "/fapi/v1/exchangeInfo": self.fapi_exchange_info,
            "/fapi/v1/klines": self.fapi_klines,
            "/fapi/v1/fundingRate": self.funding_rate,
            "/fapi/v1/premiumIndex": self.premium_index,
            "/fapi/v1/openInterest": self.open_interest,
            "/futures/data/openInterestHist": self.open_interest_hist,
            "/dapi/v1/ping": lambda c: Response(200, {}),
            "/dapi/v1/time": self.time,
            "/dapi/v1/exchangeInfo": self.dapi_exchange_info,
        }
        for path, fn in list(self.routes.items()):
            self.routes[path] = self._guard(fn)

    @staticmethod
    def _guard(fn: Any) -> Any:
        def run(ctx: Ctx) -> Response:
            try:
                return fn(ctx)
            except BinanceError as e:
                return Response(e.status, {"code": e.code, "msg": e.msg})

        return run

    # ------------------------------------------------------------------ errors
    def error(self, kind: str, ctx: Ctx, fault: Fault | None = None) -> Response:
        if kind == "429":
            retry = str((fault.params if fault else {}).get("retry_after", 1))
            return Response(429, {"code": -1003, "msg": "Too many requests; current limit of IP(127.0.0.1) is 6000 "
                                  "requests per minute. Please use the websocket for live updates to avoid polling "
                                  "the API."}, headers={"Retry-After": retry})
        if kind in ("500", "503"):
            return html_error(int(kind))
        if kind == "auth":
            return Response(401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})
        if kind == "bad_symbol":
            return Response(400, {"code": -1121, "msg": "Invalid symbol."})
        raise ValueError(f"binance: no error for fault kind {kind!r}")  # pragma: no cover

    def not_found(self, ctx: Ctx) -> Response:
        return Response(404, "<html><body><h2>404 Not found</h2></body></html>", content_type="text/html")

    # ------------------------------------------------------------------ symbols
    def _spot_symbols(self) -> dict[str, str]:
        syms = set(self.server.market.symbols)
        if self.server.replay is not None:
            syms |= set(self.server.replay.symbols)
        return {pair_id(s): s for s in sorted(syms)}

    def _perp_symbols(self) -> dict[str, str]:
        return {pair_id(s): s for s in self.server.market.symbols}

    def _symbol(self, ctx: Ctx, table: dict[str, str]) -> tuple[str, str]:
        sid = ctx.query.get("symbol")
        if not sid:
            raise _mandatory("symbol")
        if sid not in table:
            raise _err(-1121, "Invalid symbol.")
        return sid, table[sid]

    # ------------------------------------------------------------------ general
    def time(self, ctx: Ctx) -> Response:
        return Response(200, {"serverTime": ctx.now})

    def _filters(self, symbol: str, spot: bool) -> list[dict[str, Any]]:
        p = self.server.market.params(symbol)
        tick = fmt(10.0**-p.price_dp, 8)
        step = fmt(10.0**-p.lot_dp, 8)
        price = [{"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000", "tickSize": tick}]
        lot = [{"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000000.00000000", "stepSize": step}]
        if spot:
            return price + lot + [
                {"filterType": "ICEBERG_PARTS", "limit": 10},
                {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "1000000.00000000",
                 "stepSize": "0.00000000"},
                {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10, "maxTrailingAboveDelta": 2000,
                 "minTrailingBelowDelta": 10, "maxTrailingBelowDelta": 2000},
                {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5", "bidMultiplierDown": "0.2",
                 "askMultiplierUp": "5", "askMultiplierDown": "0.2", "avgPriceMins": 5},
                {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
                 "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
            ]
        return price + lot + [
            {"filterType": "MARKET_LOT_SIZE", "minQty": step, "maxQty": "1000000", "stepSize": step},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": "5"},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
             "multiplierDecimal": "4"},
        ]

    def spot_exchange_info(self, ctx: Ctx) -> Response:
        table = self._spot_symbols()
        wanted = self._wanted(ctx, table)
        symbols = []
        for sid in wanted:
            base, quote = table[sid].split("/")
            symbols.append({
                "symbol": sid, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8, "quoteAsset": quote,
                "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
                "quoteCommissionPrecision": 8,
                "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
                "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True, "quoteOrderQtyMarketAllowed": True,
                "allowTrailingStop": True, "cancelReplaceAllowed": True, "amendAllowed": True,
                "isSpotTradingAllowed": True, "isMarginTradingAllowed": True,
                "filters": self._filters(table[sid], True), "permissions": [], "permissionSets": [["SPOT", "MARGIN"]],
                "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
            })
        return Response(200, {
            "timezone": "UTC", "serverTime": ctx.now,
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ],
            "exchangeFilters": [], "symbols": symbols,
        })

    def _wanted(self, ctx: Ctx, table: dict[str, str]) -> list[str]:
        if ctx.query.get("symbol"):
            ids = [ctx.query["symbol"]]
        elif ctx.query.get("symbols"):
            import json

            try:
                ids = list(json.loads(ctx.query["symbols"]))
            except (ValueError, TypeError):
                raise _err(-1100, "Illegal characters found in parameter 'symbols'.") from None
        else:
            return list(table)
        for i in ids:
            if i not in table:
                raise _err(-1121, "Invalid symbol.")
        return ids

    def fapi_exchange_info(self, ctx: Ctx) -> Response:
        table = self._perp_symbols()
        symbols = []
        onboard = self.server.market.start_ms
        for sid, sym in table.items():
            base, quote = sym.split("/")
            p = self.server.market.params(sym)
            symbols.append({
                "symbol": sid, "pair": sid, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
                "onboardDate": onboard, "status": "TRADING", "maintMarginPercent": "2.5000",
                "requiredMarginPercent": "5.0000", "baseAsset": base, "quoteAsset": quote, "marginAsset": quote,
                "pricePrecision": p.price_dp, "quantityPrecision": p.lot_dp, "baseAssetPrecision": 8,
                "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": ["Layer-1"],
                "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
                "maxMoveOrderLimit": 10000, "filters": self._filters(sym, False),
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                               "TRAILING_STOP_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"], "permissionSets": ["GRID", "COPY"],
            })
        return Response(200, {
            "timezone": "UTC", "serverTime": ctx.now, "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": symbols,
        })

    def dapi_exchange_info(self, ctx: Ctx) -> Response:
        return Response(200, {"timezone": "UTC", "serverTime": ctx.now, "rateLimits": [], "exchangeFilters": [],
                              "symbols": []})

    # ------------------------------------------------------------------ klines
    def _window(self, ctx: Ctx, default: int, maximum: int) -> tuple[int, int, int, bool]:
        start = _int_param(ctx.query, "startTime")
        end = _int_param(ctx.query, "endTime")
        limit = _limit(ctx.query, default, maximum)
        if start is not None and end is not None and start > end:
            raise _err(-1023, "Start time is greater than end time.")
        if start is not None:
            return start, end if end is not None else ctx.now, limit, False
        return 0, end if end is not None else ctx.now, limit, True

    def _klines(self, ctx: Ctx, *, perp: bool) -> Response:
        table = self._perp_symbols() if perp else self._spot_symbols()
        _, symbol = self._symbol(ctx, table)
        tf = ctx.query.get("interval")
        if not tf:
            raise _mandatory("interval")
        if tf not in TIMEFRAME_MS:
            raise _err(-1120, "Invalid interval.")
        lo, hi, limit, backward = self._window(ctx, 500, FAPI_KLINE_MAX if perp else SPOT_KLINE_MAX)
        source: Source
        replay = self.server.replay
        if not perp and replay is not None and replay.has_symbol(symbol):
            got = replay.source(symbol, tf)
            if got is None:
                return Response(200, [])
            source = got
        else:
            source = SimCandleSource(self.server.market, symbol, tf, "perp" if perp else "spot", ctx.now)
        pg = page(source, lo=lo, hi=hi, limit=limit, backward=backward, faults=ctx.faults, now=ctx.now)
        if perp:
            p = self.server.market.params(symbol)
            return Response(200, kline_rows(pg, TIMEFRAME_MS[tf], p.price_dp, p.lot_dp, 5))
        return Response(200, kline_rows(pg, TIMEFRAME_MS[tf], 8, 8, 8))

    def spot_klines(self, ctx: Ctx) -> Response:
        return self._klines(ctx, perp=False)

    def fapi_klines(self, ctx: Ctx) -> Response:
        return self._klines(ctx, perp=True)

    # ------------------------------------------------------------------ funding / open interest
    def funding_rate(self, ctx: Ctx) -> Response:
        table = self._perp_symbols()
        ids = [self._symbol(ctx, table)[0]] if ctx.query.get("symbol") else list(table)
        lo, hi, limit, backward = self._window(ctx, FUNDING_DEFAULT, FUNDING_MAX)
        rows: list[tuple[int, dict[str, Any]]] = []
        for sid in ids:
            ts, rate, mark = self.server.market.funding_arrays(table[sid], now=ctx.now)
            src = ArraySource(ts, {"funding_rate": rate, "mark_price": mark}, 8 * HOUR_MS)
            pg = page(src, lo=lo, hi=hi, limit=limit, backward=backward, faults=ctx.faults, now=ctx.now)
            dp = self.server.market.params(table[sid]).price_dp
            for i in range(len(pg)):
                rows.append((int(pg.ts[i]), {
                    "symbol": sid, "fundingTime": int(pg.ts[i]), "fundingRate": fmt(pg.cols["funding_rate"][i], 8),
                    "markPrice": fmt(pg.cols["mark_price"][i], max(dp, 8)),
                }))
        rows.sort(key=lambda r: r[0])
        rows = rows[-limit:] if backward else rows[:limit]
        return Response(200, [r for _, r in rows])

    def premium_index(self, ctx: Ctx) -> Response:
        table = self._perp_symbols()
        ids = [self._symbol(ctx, table)[0]] if ctx.query.get("symbol") else list(table)
        out = []
        m = self.server.market
        period = 8 * HOUR_MS
        for sid in ids:
            sym = table[sid]
            ts, rate, mark = m.funding_arrays(sym, now=ctx.now)
            dp = m.params(sym).price_dp
            out.append({
                "symbol": sid, "markPrice": fmt(m.price_at(sym, ctx.now, "perp"), max(dp, 8)),
                "indexPrice": fmt(m.price_at(sym, ctx.now), max(dp, 8)),
                "estimatedSettlePrice": fmt(m.price_at(sym, ctx.now), max(dp, 8)),
                "lastFundingRate": fmt(rate[-1] if len(rate) else 0.0001, 8), "interestRate": "0.00010000",
                "nextFundingTime": (ctx.now // period + 1) * period, "time": ctx.now,
            })
        return Response(200, out[0] if ctx.query.get("symbol") else out)

    def open_interest(self, ctx: Ctx) -> Response:
        sid, sym = self._symbol(ctx, self._perp_symbols())
        ts, oi, _ = self.server.market.open_interest_arrays(sym, "5m", lo=ctx.now - 300_000, now=ctx.now)
        value = oi[-1] if len(oi) else 0.0
        return Response(200, {"openInterest": fmt(value, 3), "symbol": sid, "time": ctx.now})

    def open_interest_hist(self, ctx: Ctx) -> Response:
        sid, sym = self._symbol(ctx, self._perp_symbols())
        period = ctx.query.get("period")
        if not period:
            raise _mandatory("period")
        if period not in OI_PERIODS:
            raise _err(-1120, "Invalid period.")
        lo, hi, limit, backward = self._window(ctx, OI_DEFAULT, OI_MAX)
        src = OISource(self.server.market, sym, period, ctx.now)
        pg = page(src, lo=lo, hi=hi, limit=limit, backward=backward, faults=ctx.faults, now=ctx.now)
        return Response(200, [
            {"symbol": sid, "sumOpenInterest": fmt(pg.cols["open_interest"][i], 8),
             "sumOpenInterestValue": fmt(pg.cols["open_interest_value"][i], 8), "CMCCirculatingSupply": "0",
             "timestamp": int(pg.ts[i])}
            for i in range(len(pg))
        ])


def kline_rows(pg: Page, step: int, price_dp: int, qty_dp: int, quote_dp: int) -> list[list[Any]]:
    """Binance's 12-field kline arrays."""
    out: list[list[Any]] = []
    c = pg.cols
    for i in range(len(pg)):
        o, h, lo, cl, v, qv = (c[k][i] for k in ("open", "high", "low", "close", "volume", "quote_volume"))
        of, hf, lf, cf, vf, qf = (_as_float(x) for x in (o, h, lo, cl, v, qv))
        if qf != qf:  # replayed files without quote volume: the typical price times volume
            qf = vf * (of + hf + lf + cf) / 4.0
        rng = hf - lf
        share = 0.5 + 0.2 * float(np.clip((cf - of) / rng, -1.0, 1.0)) if rng == rng and rng > 0 else 0.5
        trades = int(max(qf / AVG_TRADE_QUOTE, 1.0)) if qf == qf and qf > 0 else 0
        t = int(pg.ts[i])
        out.append([
            t, fmt(o, price_dp), fmt(h, price_dp), fmt(lo, price_dp), fmt(cl, price_dp), fmt(v, qty_dp),
            t + step - 1, fmt(qf, quote_dp), trades,
            fmt(round(vf * share, qty_dp) if vf == vf else vf, qty_dp),
            fmt(round(qf * share, quote_dp) if qf == qf else qf, quote_dp), "0",
        ])
    return out
