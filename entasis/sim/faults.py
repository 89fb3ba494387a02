"""Switchable faults for the simulated exchange, so collectors can be tested against real failure modes.

``FaultInjector.add(route, kind, *, times=1, after=0, **params)`` arms a fault on one route
("<venue>:<path>", e.g. ``"binance:/api/v3/klines"``; ``"*"`` matches every route). It lets
``after`` matching requests pass, then fires on the next ``times`` requests (``times=None``: on every
one from then on). ``symbol=...`` among the params restricts it to requests for that venue symbol
(``symbol`` / ``instrument_name`` / ``currency`` query parameter). Kinds:

=============  =====================================================================================
``429``        HTTP 429 with ``Retry-After: retry_after`` (default 1 s) and the venue's rate-limit body
               (Binance -1003, Bybit retCode 10006, Deribit 10028).
``500``        HTTP 500 with an HTML body, as a load balancer sends (ccxt: ExchangeNotAvailable).
``503``        HTTP 503 with an HTML body (ccxt: ExchangeNotAvailable).
``slow``       waits ``delay_s`` (default 2 s) before answering normally (beyond a client timeout:
               ccxt RequestTimeout).
``overlap``    the page starts ``n`` (default 2) bars/records earlier than asked, so it repeats the
               tail of the previous page (duplicates).
``missing``    records with ``start`` <= ts < ``end`` (anything ``pandas.Timestamp`` accepts, or ms)
               are absent: a real gap, later records fill the page. Use ``times=None`` for a
               permanent hole.
``malformed``  ``n`` (default 1) rows of the page are corrupted; ``mode`` picks how (default: cycle
               through them): ``high_lt_low`` (high and low swapped), ``negative_volume``,
               ``non_numeric`` (the close is ``"abc"``), ``zero_price`` (open ``"0"``).
``revise``     the candle/record at ``ts`` is served with ``field`` (default ``close``) multiplied by
               ``factor`` (default 1.01); high/low widen so the candle stays consistent — a silently
               corrected bar, as exchanges sometimes do.
``auth``       the venue's authentication error (Binance 401 -2015, Bybit retCode 10003, Deribit
               13009 "unauthorized"): ccxt AuthenticationError.
``drop``       the connection is closed without a response (ccxt NetworkError), as when a proxy or
               the venue's load balancer drops it mid-request.
``garbled``    HTTP 200 with a truncated JSON body (a malformed body cut off in transit).
``bad_symbol`` the venue's invalid-symbol error (Binance 400 -1121, Bybit retCode 10001 "Not supported
               symbols": ccxt BadSymbol; Deribit -32602 "instrument not found", which ccxt maps to
               BadRequest, BadSymbol's parent).
=============  =====================================================================================

Data faults (``overlap``, ``missing``, ``malformed``, ``revise``) act on endpoints that return time
series (klines, funding, open interest); on other endpoints they are counted but change nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from entasis.domain import to_ms

ERROR_KINDS = ("429", "500", "503", "auth", "bad_symbol", "drop", "garbled")
DATA_KINDS = ("overlap", "missing", "malformed", "revise")
KINDS = (*ERROR_KINDS, "slow", *DATA_KINDS)
MALFORMED_MODES = ("high_lt_low", "negative_volume", "non_numeric", "zero_price")

_PARAMS: dict[str, set[str]] = {
    "429": {"retry_after"},
    "500": set(),
    "503": set(),
    "slow": {"delay_s"},
    "overlap": {"n"},
    "missing": {"start", "end"},
    "malformed": {"n", "mode"},
    "revise": {"ts", "field", "factor"},
    "auth": set(),
    "bad_symbol": set(),
    "drop": set(),
    "garbled": set(),
}


@dataclass
class Fault:
    """One armed fault; ``seen`` counts matching requests, ``fired`` how often it acted."""

    route: str
    kind: str
    times: int | None
    after: int
    params: dict[str, Any]
    symbol: str | None = None
    seen: int = 0
    fired: int = 0

    def matches(self, route: str, query: dict[str, str]) -> bool:
        if self.route not in ("*", route):
            return False
        if self.symbol is None:
            return True
        return self.symbol in (query.get("symbol"), query.get("instrument_name"), query.get("currency"))

    def take(self) -> bool:
        """Register one matching request; True when the fault fires on it."""
        self.seen += 1
        if self.seen <= self.after:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        self.fired += 1
        return True


@dataclass
class FaultInjector:
    """Thread-safe set of armed faults, consulted by the server on every request."""

    _faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, route: str, kind: str, *, times: int | None = 1, after: int = 0, **params: Any) -> Fault:
        """Arm a fault (see the module docstring for kinds and their params)."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(KINDS)}")
        if route != "*" and (":" not in route or not route.split(":", 1)[1].startswith("/")):
            raise ValueError(f"fault route {route!r} must look like 'binance:/api/v3/klines' (or '*')")
        if times is not None and times < 1:
            raise ValueError(f"times must be a positive count or None (permanent), not {times!r}")
        if after < 0:
            raise ValueError(f"after must be >= 0, not {after!r}")
        symbol = params.pop("symbol", None)
        unknown = set(params) - _PARAMS[kind]
        if unknown:
            raise ValueError(f"fault {kind!r} takes {sorted(_PARAMS[kind]) or 'no'} params, not {sorted(unknown)}")
        params = dict(params)
        if kind == "missing":
            if "start" not in params or "end" not in params:
                raise ValueError("fault 'missing' needs start and end (the gap is [start, end))")
            params["start"], params["end"] = to_ms(params["start"]), to_ms(params["end"])
            if params["end"] <= params["start"]:
                raise ValueError("fault 'missing' needs end > start")
        if kind == "revise":
            if "ts" not in params:
                raise ValueError("fault 'revise' needs ts (the open time of the bar to change)")
            params["ts"] = to_ms(params["ts"])
            params.setdefault("field", "close")
            params.setdefault("factor", 1.01)
        if kind == "malformed":
            params.setdefault("n", 1)
            mode = params.get("mode")
            if mode is not None and mode not in MALFORMED_MODES:
                raise ValueError(f"malformed mode {mode!r}; expected one of {', '.join(MALFORMED_MODES)}")
        if kind == "overlap":
            params.setdefault("n", 2)
        if kind == "429":
            params.setdefault("retry_after", 1)
        if kind == "slow":
            params.setdefault("delay_s", 2.0)
        fault = Fault(route, kind, times, after, params, symbol)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._faults.clear()

    @property
    def armed(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def fire(self, route: str, query: dict[str, str]) -> list[Fault]:
        """Faults that act on this request (each matching fault counts the request)."""
        out = []
        with self._lock:
            for f in self._faults:
                if f.matches(route, query) and f.take():
                    out.append(f)
        return out
