"""A simulated exchange: the public REST endpoints ccxt calls on Binance, Binance USD-M, Bybit and
Deribit, answered from :class:`~entasis.sim.market.MarketSim` (or replayed candle files) in the
venues' real formats, limits and pagination, with switchable faults.

Why: collectors must be testable offline with the real ccxt classes, including everything that
goes wrong against real venues (rate limits, outages, timeouts, duplicates, gaps, bad rows,
revisions, auth and symbol errors).

URL layout: each venue sits under a prefix and otherwise mirrors the real host's paths, so a client
rewrites ``https://<host>/<path>`` to ``{url}/<venue>/<path>`` (binance and binanceusdm share
``binance``)::

    {url}/binance/api/v3/{exchangeInfo,klines,time,ping}        spot
    {url}/binance/fapi/v1/{exchangeInfo,klines,fundingRate,time,ping,premiumIndex}   USD-M
    {url}/binance/futures/data/openInterestHist                 USD-M open interest history
    {url}/binance/dapi/v1/exchangeInfo                          COIN-M (lists nothing)
    {url}/bybit/v5/market/{instruments-info,kline,funding/history,open-interest,time}
    {url}/deribit/api/v2/public/{get_instruments,get_currencies,get_book_summary_by_currency,
                                 get_book_summary_by_instrument,ticker,get_index_price,get_time}

Routes are named ``"<venue>:<path>"`` (``"binance:/api/v3/klines"``) for :meth:`SimExchangeServer.calls`
and :class:`~entasis.sim.faults.FaultInjector` (whose docstring lists the fault kinds: 429, 500,
503, slow, overlap, missing, malformed, revise, auth, bad_symbol).

Time: the exchange's clock is ``market.now`` (set it to move time); candles with open time < now
are served and the last one is in progress when now is mid-bar, as on a real venue. Limits are
clamped to each endpoint's real maximum (Binance spot klines 1000, USD-M klines 1500, funding 1000,
open interest 500; Bybit klines 1000, funding and open interest 200), Bybit returns newest first.

Replay (``replay_dir``): candle CSVs found there (see :mod:`entasis.sim.replay` for the naming rules)
are served as-is, duplicates and bad rows included, on the spot kline endpoints; symbols without
files keep their simulated data.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from entasis.sim.faults import ERROR_KINDS, FaultInjector
from entasis.sim.market import MarketSim
from entasis.sim.replay import ReplayStore
from entasis.sim.venue import DROP, Ctx, Response, Venue
from entasis.sim.venue_binance import Binance
from entasis.sim.venue_bybit import Bybit
from entasis.sim.venue_deribit import Deribit

__all__ = ["FaultInjector", "SimExchangeServer", "start_server"]

log = logging.getLogger(__name__)


class SimExchangeServer:
    """A started simulated exchange on loopback; stop it with :meth:`stop` or a ``with`` block."""

    def __init__(
        self,
        market: MarketSim,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        replay: ReplayStore | None = None,
        option_currencies: tuple[str, ...] = ("BTC", "ETH"),
    ) -> None:
        self.market = market
        self.replay = replay
        self.option_currencies = tuple(c.upper() for c in option_currencies)
        self.faults = FaultInjector()
        self._calls: Counter[str] = Counter()
        self._calls_lock = threading.Lock()
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self.venues: dict[str, Venue] = {v.name: v for v in (Binance(self), Bybit(self), Deribit(self))}
        self._httpd = _HTTPServer((host, port), _make_handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="sim-exchange", daemon=True)
        self._started = False

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> SimExchangeServer:
        if not self._started:
            self._thread.start()
            self._started = True
        return self

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{host}:{port}"

    def stop(self) -> None:
        """Stop serving, drop open keep-alive connections and wake up slow responses."""
        self._stopping.set()
        if self._started:
            self._httpd.shutdown()
            self._started = False
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()

    def __enter__(self) -> SimExchangeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- accounting
    def calls(self, route: str) -> int:
        """How many requests reached ``route`` ("binance:/api/v3/klines"); ``"*"`` counts all."""
        with self._calls_lock:
            return sum(self._calls.values()) if route == "*" else self._calls[route]

    def reset_calls(self) -> None:
        with self._calls_lock:
            self._calls.clear()

    # ---------------------------------------------------------------- dispatch
    def handle(self, raw_path: str) -> Response:
        parts = urlsplit(raw_path)
        _, venue_name, rest = (parts.path.split("/", 2) + ["", ""])[:3]
        venue = self.venues.get(venue_name)
        path = "/" + rest
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if venue is None:
            return Response(404, {"error": f"unknown venue prefix {venue_name!r}; expected one of "
                                           f"{sorted(self.venues)}"})
        route = f"{venue_name}:{path}"
        with self._calls_lock:
            self._calls[route] += 1
        fired = self.faults.fire(route, query)
        ctx = Ctx(self, venue_name, path, query, [f for f in fired if f.kind not in (*ERROR_KINDS, "slow")])
        for f in fired:
            if f.kind == "slow":
                self._stopping.wait(float(f.params["delay_s"]))
        for f in fired:
            if f.kind == "drop":
                return DROP
            if f.kind == "garbled":
                return Response(200, '{"result": [[1700000000000, "42000.1", "42', content_type="application/json")
            if f.kind in ERROR_KINDS:
                return venue.error(f.kind, ctx, f)
        handler = venue.routes.get(path)
        if handler is None:
            return venue.not_found(ctx)
        return handler(ctx)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if np.isnan(o) else float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _make_handler(app: SimExchangeServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # small JSON replies: no 40 ms delayed-ACK stalls on loopback
        server_version = "entasis-sim-exchange/1.0"
        timeout = 30

        def setup(self) -> None:
            super().setup()
            with app._conns_lock:
                app._conns.add(self.connection)

        def finish(self) -> None:
            with app._conns_lock:
                app._conns.discard(self.connection)
            try:
                super().finish()
            except OSError:
                pass

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            log.debug("%s " + format, self.address_string(), *args)

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            try:
                resp = app.handle(self.path)
            except Exception as e:  # a bug must not kill the thread; the client sees a 500
                log.exception("sim exchange failed on %s", self.path)
                resp = Response(500, {"error": f"{type(e).__name__}: {e}"})
            if app._stopping.is_set():
                self.close_connection = True
            if resp is DROP:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            body = resp.body
            if isinstance(body, str):
                data = body.encode()
            elif isinstance(body, bytes):
                data = body
            else:
                data = json.dumps(body, separators=(",", ":"), default=_json_default).encode()
            try:
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.content_type)
                self.send_header("Content-Length", str(len(data)))
                for k, v in resp.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout fault)
                self.close_connection = True

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            self._serve()

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            self._serve()

        def do_DELETE(self) -> None:  # noqa: N802 - stdlib name
            self._serve()

    return _Handler


def start_server(
    *,
    seed: int = 7,
    host: str = "127.0.0.1",
    port: int = 0,
    replay_dir: Path | None = None,
    market: MarketSim | None = None,
    option_currencies: tuple[str, ...] = ("BTC", "ETH"),
) -> SimExchangeServer:
    """Start a simulated exchange in a background thread (port 0: any free port) and return it."""
    replay = None
    if replay_dir is not None:
        replay = ReplayStore.from_dir(Path(replay_dir))
    mkt = market if market is not None else MarketSim(seed=seed)
    return SimExchangeServer(mkt, host=host, port=port, replay=replay, option_currencies=option_currencies).start()
