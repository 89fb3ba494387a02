"""OHLCV candles (spot and perpetuals) into market.candles, incrementally and validated.

Symbols are ccxt's unified ones: spot 'BTC/USDT', USDT-margined perpetuals 'BTC/USDT:USDT'.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from entasis.collect.client import OHLCV_LIMIT, PAGES_FROM_END, ExchangeClient
from entasis.collect.quality import CONTEXT_BARS, check_candles
from entasis.collect.series import BATCH_PAGES, Progress, SeriesResult, SeriesSpec, keyed_rows, run_bounds, run_series
from entasis.collect.state import SeriesKey
from entasis.domain import timeframe_ms, timeframe_origin_ms
from entasis.store.db import connect
from entasis.store.market import register_instruments as _register
from entasis.store.market import write_candles

#: Bars re-read before the watermark on incremental runs: venues revise the last bar shortly after it closes.
LOOKBACK_BARS = 2


def register_instruments(client: ExchangeClient) -> int:
    """Record every market the client loaded, so the store's writers accept its symbols."""
    frame = client.instruments_frame()
    with connect() as conn:
        return _register(conn, frame).written


def candle_spec(client: ExchangeClient, symbol: str, timeframe: str) -> SeriesSpec:
    step = timeframe_ms(timeframe)
    limit = OHLCV_LIMIT.get(client.id, 500)
    key = {"exchange": client.id, "symbol": symbol, "timeframe": timeframe}
    return SeriesSpec(
        table="market.candles",
        filters=key,
        step_ms=step,
        window_ms=limit * step,
        fetch=lambda lo, hi: client.fetch_ohlcv(symbol, timeframe, lo, hi, limit),
        check=lambda df, ctx: check_candles(df, step, timeframe, ctx),
        rows=lambda good: keyed_rows(good, ["ts", "open", "high", "low", "close", "volume", "quote_volume"], key),
        write=lambda conn, df: write_candles(conn, df),
        lookback=LOOKBACK_BARS,
        context_col="close",
        context_rows=CONTEXT_BARS,
        origin_ms=timeframe_origin_ms(timeframe),
        backward=client.id in PAGES_FROM_END,
        page_limit=limit,
    )


def prepare_symbols(client: ExchangeClient, symbols: Iterable[str], check: Callable[[str], object]) -> list[str]:
    """The symbols of one collection run, each checked against the freshly registered markets.

    Every check runs before any data call, so a bad symbol fails the run at once (one request).
    """
    syms = list(symbols)
    if not syms:
        raise ValueError("no symbols to collect")
    register_instruments(client)
    for s in syms:
        check(s)
    return syms


def collect_candles(
    exchange: str,
    symbols: Iterable[str],
    timeframe: str,
    *,
    until: datetime | str | int,
    since: datetime | str | int | None = None,
    client: ExchangeClient | None = None,
    progress: Progress | None = None,
    batch_pages: int = BATCH_PAGES,
) -> list[SeriesResult]:
    """Collect closed ``timeframe`` bars of ``symbols`` up to ``until`` (exclusive; explicit, never the clock).

    With ``since`` the run backfills from there; without, it continues from each series' watermark.
    The first failing series stops the run (its batch in flight rolls back) and the error propagates.
    """
    cl = client or ExchangeClient(exchange)
    if cl.id != exchange:
        raise ValueError(f"client is for {cl.id!r}, not {exchange!r}")
    timeframe_ms(timeframe)
    since_ms, until_ms = run_bounds(since, until)
    syms = prepare_symbols(cl, symbols, cl.check_symbol)
    out = []
    for s in syms:
        key = SeriesKey("candles", exchange, s, timeframe)
        out.append(run_series(candle_spec(cl, s, timeframe), key, until=until_ms, since=since_ms,
                              batch_pages=batch_pages, progress=progress))
    return out
