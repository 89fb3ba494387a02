"""Deribit's public JSON-RPC-over-HTTP endpoints (``/api/v2/public/...``) for options, as ccxt's
``deribit`` class calls them: load_markets (get_currencies, get_instruments), fetch_option_chain and
fetch_tickers (get_book_summary_by_currency, which includes ``mark_iv``), fetch_option
(get_book_summary_by_instrument), fetch_ticker / fetch_greeks (ticker, with greeks) and
get_index_price.

The chain is :meth:`MarketSim.option_chain_full` at the exchange's ``now``; a ``<CUR>-PERPETUAL``
inverse perpetual is listed beside the options. Errors are HTTP 400 with
``{"jsonrpc": "2.0", "error": {"message", "code", "data"}}``.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from entasis.sim.faults import Fault
from entasis.sim.venue import Ctx, Response, Venue, html_error

CURRENCY_NAMES = {"BTC": "Bitcoin", "ETH": "Ethereum", "USDC": "USD Coin", "USDT": "Tether", "SOL": "Solana"}
PERP_CONTRACT = {"BTC": 10.0, "ETH": 1.0}


class DeribitError(Exception):
    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


def _invalid(param: str, reason: str) -> DeribitError:
    return DeribitError(-32602, "Invalid params", {"reason": reason, "param": param})


def _num(x: Any) -> float | None:
    v = float(x)
    return None if math.isnan(v) else v


class Deribit(Venue):
    name = "deribit"

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        base = "/api/v2/public/"
        self.routes = {
            base + "get_time": self.get_time,
            base + "test": lambda c: self._ok(c, {"version": "1.2.26"}),
            base + "get_currencies": self.get_currencies,
            base + "get_instruments": self.get_instruments,
            base + "get_book_summary_by_currency": self.book_by_currency,
            base + "get_book_summary_by_instrument": self.book_by_instrument,
            base + "ticker": self.ticker,
            base + "get_index_price": self.index_price,
            base + "get_index_price_names": lambda c: self._ok(
                c, [f"{x.lower()}_usd" for x in self.server.option_currencies]),
        }
        for path, fn in list(self.routes.items()):
            self.routes[path] = self._guard(fn)

    # ------------------------------------------------------------------ envelope
    def _envelope(self, ctx: Ctx) -> dict[str, Any]:
        us = ctx.now * 1000
        return {"jsonrpc": "2.0", "usIn": us, "usOut": us + 137, "usDiff": 137, "testnet": False}

    def _ok(self, ctx: Ctx, result: Any) -> Response:
        return Response(200, {**self._envelope(ctx), "result": result})

    def _fail(self, ctx: Ctx, code: int, message: str, data: dict[str, Any] | None = None,
              status: int = 400) -> Response:
        err: dict[str, Any] = {"message": message, "code": code}
        if data is not None:
            err["data"] = data
        return Response(status, {**self._envelope(ctx), "error": err})

    def _guard(self, fn: Any) -> Any:
        def run(ctx: Ctx) -> Response:
            try:
                return fn(ctx)
            except DeribitError as e:
                return self._fail(ctx, e.code, e.message, e.data)

        return run

    def error(self, kind: str, ctx: Ctx, fault: Fault | None = None) -> Response:
        if kind == "429":
            resp = self._fail(ctx, 10028, "too_many_requests", status=429)
            resp.headers["Retry-After"] = str((fault.params if fault else {}).get("retry_after", 1))
            return resp
        if kind in ("500", "503"):
            return html_error(int(kind))
        if kind == "auth":
            return self._fail(ctx, 13009, "unauthorized", {"reason": "invalid_token"}, status=401)
        if kind == "bad_symbol":
            return self._fail(ctx, -32602, "Invalid params", {"reason": "instrument not found",
                                                              "param": "instrument_name"})
        raise ValueError(f"deribit: no error for fault kind {kind!r}")  # pragma: no cover

    def not_found(self, ctx: Ctx) -> Response:
        return self._fail(ctx, -32601, "Method not found")

    # ------------------------------------------------------------------ data
    def _currency(self, ctx: Ctx, required: bool) -> str | None:
        cur = ctx.query.get("currency")
        if not cur:
            if required:
                raise _invalid("currency", "must be present")
            return None
        if cur.lower() == "any":
            return None
        if cur.upper() not in CURRENCY_NAMES and cur.upper() not in self.server.option_currencies:
            raise _invalid("currency", "wrong format")
        return cur.upper()

    def _chain(self, ctx: Ctx, currency: str) -> Any:
        if currency not in self.server.option_currencies:
            return None
        try:
            return self.server.market.option_chain_full(currency, ctx.now)
        except ValueError:  # nothing listed (now too close to the simulated start)
            return None

    def _perp(self, ctx: Ctx, currency: str) -> dict[str, Any]:
        m = self.server.market
        sym = f"{currency}/USDT"
        mark = m.price_at(sym, ctx.now, "perp")
        index = m.price_at(sym, ctx.now)
        ts, rate, _ = m.funding_arrays(sym, now=ctx.now)
        funding = float(rate[-1]) if len(rate) else 0.0001
        return {"mark": round(mark, 2), "index": round(index, 2), "funding_8h": funding,
                "oi": float(round(m.open_interest_arrays(sym, "1h", lo=ctx.now - 3_600_000, now=ctx.now)[1][-1]
                                  * mark, -1)) if ctx.now - m.start_ms > 3_600_000 else 0.0}

    def get_time(self, ctx: Ctx) -> Response:
        return self._ok(ctx, ctx.now)

    def get_currencies(self, ctx: Ctx) -> Response:
        out = []
        for cur in sorted(set(self.server.option_currencies) | {"USDC", "USDT"}):
            out.append({
                "currency": cur, "currency_long": CURRENCY_NAMES.get(cur, cur), "coin_type": cur,
                "fee_precision": 4, "min_confirmations": 1, "min_withdrawal_fee": 0.0001, "withdrawal_fee": 0.0001,
                "withdrawal_priorities": [], "apr": 0.0, "in_cross_collateral_pool": True, "network_currency": cur,
                "network_fee": 0.0001,
            })
        return self._ok(ctx, out)

    def get_instruments(self, ctx: Ctx) -> Response:
        cur = self._currency(ctx, required=False)
        kind = ctx.query.get("kind")
        if kind and kind not in ("future", "option", "spot", "future_combo", "option_combo"):
            raise _invalid("kind", "wrong format")
        if ctx.query.get("expired") == "true":
            return self._ok(ctx, [])
        currencies = [cur] if cur else list(self.server.option_currencies)
        out: list[dict[str, Any]] = []
        for c in currencies:
            if kind in (None, "future") and c in self.server.option_currencies:
                out.append(self._perp_instrument(c))
            if kind not in (None, "option"):
                continue
            chain = self._chain(ctx, c)
            if chain is None:
                continue
            for row in chain.itertuples(index=False):
                out.append({
                    "tick_size": 0.0001, "tick_size_steps": [{"above_price": 0.005, "tick_size": 0.0005}],
                    "taker_commission": 0.0003, "maker_commission": 0.0003, "strike": float(row.strike),
                    "settlement_period": row.settlement_period, "settlement_currency": c, "quote_currency": c,
                    "price_index": f"{c.lower()}_usd", "option_type": row.kind, "min_trade_amount": 0.1,
                    "kind": "option", "is_active": True, "instrument_name": row.instrument,
                    "instrument_id": zlib.crc32(row.instrument.encode()) % 1_000_000,
                    "expiration_timestamp": int(row.expiry_ms), "creation_timestamp": int(row.creation_ms),
                    "counter_currency": "USD", "contract_size": 1.0, "block_trade_commission": 0.0003,
                    "block_trade_min_trade_amount": 25, "block_trade_tick_size": 0.0001, "base_currency": c,
                    "rfq": False,
                })
        return self._ok(ctx, out)

    def _perp_instrument(self, c: str) -> dict[str, Any]:
        return {
            "tick_size": 0.5 if c == "BTC" else 0.05, "taker_commission": 0.0005, "maker_commission": 0.0,
            "settlement_period": "perpetual", "settlement_currency": c, "quote_currency": "USD",
            "price_index": f"{c.lower()}_usd", "min_trade_amount": PERP_CONTRACT.get(c, 1.0),
            "max_liquidation_commission": 0.0075, "max_leverage": 50, "kind": "future", "is_active": True,
            "instrument_name": f"{c}-PERPETUAL", "instrument_id": 124972 if c == "BTC" else 124936,
            "future_type": "reversed", "instrument_type": "reversed",
            "expiration_timestamp": 32503708800000, "creation_timestamp": self.server.market.start_ms,
            "counter_currency": "USD", "contract_size": PERP_CONTRACT.get(c, 1.0), "block_trade_commission": 0.00025,
            "base_currency": c, "rfq": False,
        }

    def _option_summary(self, ctx: Ctx, row: Any) -> dict[str, Any]:
        bid, ask, mark = _num(row.bid), float(row.ask), float(row.mark_price)
        vol = float(row.volume)
        return {
            "volume": vol, "volume_usd": round(vol * mark * float(row.index_price), 2), "quote_currency":
            row.underlying, "price_change": None, "open_interest": float(row.open_interest),
            "mid_price": round((bid + ask) / 2, 5) if bid is not None else None, "mark_price": mark,
            "mark_iv": float(row.mark_iv), "low": round(mark, 4) if vol > 0 else None,
            "last": round(mark, 4) if vol > 0 else None, "interest_rate": 0.0, "instrument_name": row.instrument,
            "high": round(mark, 4) if vol > 0 else None, "estimated_delivery_price": float(row.index_price),
            "creation_timestamp": ctx.now, "bid_price": bid, "base_currency": row.underlying, "ask_price": ask,
            "underlying_index": row.underlying_index, "underlying_price": float(row.underlying_price),
        }

    def _perp_summary(self, ctx: Ctx, c: str) -> dict[str, Any]:
        p = self._perp(ctx, c)
        half = 0.25 if c == "BTC" else 0.025
        return {
            "volume": 10000.0, "volume_usd": 10000.0 * p["mark"], "quote_currency": "USD", "price_change": None,
            "open_interest": p["oi"], "mid_price": p["mark"], "mark_price": p["mark"], "low": None, "last": p["mark"],
            "interest_rate": 0.0, "instrument_name": f"{c}-PERPETUAL", "high": None,
            "estimated_delivery_price": p["index"], "creation_timestamp": ctx.now,
            "bid_price": p["mark"] - half, "base_currency": c, "ask_price": p["mark"] + half,
            "funding_8h": p["funding_8h"], "current_funding": 0.0,
        }

    def book_by_currency(self, ctx: Ctx) -> Response:
        cur = self._currency(ctx, required=True) or ""
        kind = ctx.query.get("kind")
        out: list[dict[str, Any]] = []
        if kind in (None, "future") and cur in self.server.option_currencies:
            out.append(self._perp_summary(ctx, cur))
        if kind in (None, "option"):
            chain = self._chain(ctx, cur)
            if chain is not None:
                out.extend(self._option_summary(ctx, row) for row in chain.itertuples(index=False))
        return self._ok(ctx, out)

    def _find(self, ctx: Ctx) -> tuple[str, Any]:
        name = ctx.query.get("instrument_name")
        if not name:
            raise _invalid("instrument_name", "must be present")
        cur = name.split("-")[0].split("_")[0].upper()
        if name == f"{cur}-PERPETUAL" and cur in self.server.option_currencies:
            return "perp", cur
        chain = self._chain(ctx, cur)
        if chain is not None:
            hit = chain[chain["instrument"] == name]
            if len(hit):
                return "option", next(hit.itertuples(index=False))
        raise _invalid("instrument_name", "instrument not found")

    def book_by_instrument(self, ctx: Ctx) -> Response:
        kind, found = self._find(ctx)
        if kind == "perp":
            return self._ok(ctx, [self._perp_summary(ctx, found)])
        return self._ok(ctx, [self._option_summary(ctx, found)])

    def ticker(self, ctx: Ctx) -> Response:
        kind, row = self._find(ctx)
        if kind == "perp":
            p = self._perp(ctx, row)
            half = 0.25 if row == "BTC" else 0.025
            return self._ok(ctx, {
                "timestamp": ctx.now, "stats": {"volume_usd": 10000.0 * p["mark"], "volume": 10000.0,
                                                "price_change": None, "low": None, "high": None},
                "state": "open", "settlement_price": p["mark"], "open_interest": p["oi"],
                "min_price": round(p["mark"] * 0.97, 1), "max_price": round(p["mark"] * 1.03, 1),
                "mark_price": p["mark"], "last_price": p["mark"], "instrument_name": f"{row}-PERPETUAL",
                "index_price": p["index"], "funding_8h": p["funding_8h"], "current_funding": 0.0,
                "interest_value": 0.0, "estimated_delivery_price": p["index"],
                "best_bid_price": p["mark"] - half, "best_bid_amount": 25000.0,
                "best_ask_price": p["mark"] + half, "best_ask_amount": 18000.0,
            })
        mark = float(row.mark_price)
        bid = _num(row.bid)
        draw = np.random.default_rng([zlib.crc32(row.instrument.encode()), ctx.now // 60000]).random(2)
        return self._ok(ctx, {
            "timestamp": ctx.now, "state": "open",
            "stats": {"volume_usd": round(float(row.volume) * mark * float(row.index_price), 2),
                      "volume": float(row.volume), "price_change": None, "low": None, "high": None},
            "settlement_price": mark, "open_interest": float(row.open_interest),
            "min_price": max(round(mark - 0.05, 4), 0.0001), "max_price": round(mark + 0.05, 4),
            "mark_price": mark, "mark_iv": float(row.mark_iv), "last_price": round(mark, 4) if row.volume else None,
            "interest_rate": 0.0, "instrument_name": row.instrument, "index_price": float(row.index_price),
            "greeks": {"rho": 0.0, "theta": float(row.theta), "vega": float(row.vega), "gamma": float(row.gamma),
                       "delta": float(row.delta)},
            "estimated_delivery_price": float(row.index_price), "bid_iv": float(row.bid_iv),
            "best_bid_price": bid if bid is not None else 0.0,
            "best_bid_amount": round(1.0 + 20 * float(draw[0]), 1) if bid is not None else 0.0,
            "best_ask_price": float(row.ask), "best_ask_amount": round(1.0 + 20 * float(draw[1]), 1),
            "ask_iv": float(row.ask_iv), "underlying_price": float(row.underlying_price),
            "underlying_index": row.underlying_index,
        })

    def index_price(self, ctx: Ctx) -> Response:
        name = ctx.query.get("index_name")
        if not name:
            raise _invalid("index_name", "must be present")
        cur = name.split("_")[0].upper()
        if not name.endswith("_usd") or cur not in self.server.option_currencies:
            raise _invalid("index_name", "wrong format")
        price = round(self.server.market.price_at(f"{cur}/USDT", ctx.now), 2)
        return self._ok(ctx, {"index_price": price, "estimated_delivery_price": price})
