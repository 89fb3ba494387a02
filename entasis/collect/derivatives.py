"""Perpetual-futures series: funding-rate history and open interest, incremental and validated."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from entasis.collect.candles import prepare_symbols
from entasis.collect.client import FUNDING_LIMIT, OPEN_INTEREST_LIMIT, PAGES_FROM_END, ExchangeClient
from entasis.collect.quality import check_funding, check_open_interest
from entasis.collect.series import BATCH_PAGES, Progress, SeriesResult, SeriesSpec, keyed_rows, run_bounds, run_series
from entasis.collect.state import SeriesKey
from entasis.domain import timeframe_ms, timeframe_origin_ms
from entasis.store.market import write_funding, write_open_interest

if TYPE_CHECKING:
    import pandas as pd

HOUR_MS = 3_600_000
#: Funding settles at most hourly on the venues we use, so a window of ``limit`` hours fits one page.
FUNDING_MIN_INTERVAL_MS = HOUR_MS
#: How far back each venue serves open-interest history (Binance: the latest 30 days only).
OPEN_INTEREST_HISTORY_MS = {"binanceusdm": 30 * 24 * HOUR_MS}


def _check_perp(client: ExchangeClient, symbol: str) -> None:
    m = client.check_symbol(symbol)
    if not (m.get("swap") or m.get("future")):
        raise ValueError(f"{client.id}: {symbol!r} is not a perpetual; use the ':USDT' form, e.g. 'BTC/USDT:USDT'")


def funding_spec(client: ExchangeClient, symbol: str) -> SeriesSpec:
    limit = FUNDING_LIMIT.get(client.id, 200)
    key = {"exchange": client.id, "symbol": symbol}

    def rows(good: pd.DataFrame) -> pd.DataFrame:
        out = keyed_rows(good, ["ts", "funding_rate", "mark_price"], key)
        # venues report 0 where they did not record a mark price (Binance before 2023-11)
        out["mark_price"] = out["mark_price"].where(out["mark_price"] > 0)
        return out

    return SeriesSpec(
        table="market.funding_rates",
        filters=key,
        step_ms=None,
        window_ms=limit * FUNDING_MIN_INTERVAL_MS,
        fetch=lambda lo, hi: client.fetch_funding(symbol, lo, hi, limit),
        check=lambda df, ctx: check_funding(df),
        rows=rows,
        write=lambda conn, df: write_funding(conn, df),
        backward=client.id in PAGES_FROM_END,
        page_limit=limit,
    )


def open_interest_spec(client: ExchangeClient, symbol: str, timeframe: str) -> SeriesSpec:
    step = timeframe_ms(timeframe)
    limit = OPEN_INTEREST_LIMIT.get(client.id, 200)
    key = {"exchange": client.id, "symbol": symbol}
    return SeriesSpec(
        table="market.open_interest",
        filters=key,
        step_ms=step,
        window_ms=limit * step,
        fetch=lambda lo, hi: client.fetch_open_interest(symbol, timeframe, lo, hi, limit),
        check=lambda df, ctx: check_open_interest(df, step, timeframe),
        rows=lambda good: keyed_rows(good, ["ts", "open_interest", "open_interest_value"], key),
        write=lambda conn, df: write_open_interest(conn, df),
        origin_ms=timeframe_origin_ms(timeframe),
        backward=client.id in PAGES_FROM_END,
        page_limit=limit,
    )


def collect_funding(
    exchange: str,
    symbols: Iterable[str],
    *,
    until: datetime | str | int,
    since: datetime | str | int | None = None,
    client: ExchangeClient | None = None,
    progress: Progress | None = None,
    batch_pages: int = BATCH_PAGES,
) -> list[SeriesResult]:
    """Funding-rate history of perpetual ``symbols`` settled before ``until``."""
    cl = client or ExchangeClient(exchange)
    since_ms, until_ms = run_bounds(since, until)
    syms = prepare_symbols(cl, symbols, lambda s: _check_perp(cl, s))
    return [run_series(funding_spec(cl, s), SeriesKey("funding", exchange, s), until=until_ms, since=since_ms,
                       batch_pages=batch_pages, progress=progress) for s in syms]


def collect_open_interest(
    exchange: str,
    symbols: Iterable[str],
    timeframe: str = "1h",
    *,
    until: datetime | str | int,
    since: datetime | str | int | None = None,
    client: ExchangeClient | None = None,
    progress: Progress | None = None,
    batch_pages: int = BATCH_PAGES,
) -> list[SeriesResult]:
    """Open-interest history sampled every ``timeframe`` up to ``until``.

    market.open_interest has no timeframe column, so collect one sampling period per symbol.
    A venue that keeps only recent history (Binance: 30 days) is asked only for that window.
    """
    cl = client or ExchangeClient(exchange)
    since_ms, until_ms = run_bounds(since, until)
    step = timeframe_ms(timeframe)
    syms = prepare_symbols(cl, symbols, lambda s: _check_perp(cl, s))
    horizon = OPEN_INTEREST_HISTORY_MS.get(exchange)
    earliest = until_ms - horizon + step if horizon is not None else None
    return [run_series(open_interest_spec(cl, s, timeframe), SeriesKey("open_interest", exchange, s, timeframe),
                       until=until_ms, since=since_ms, earliest=earliest, batch_pages=batch_pages,
                       progress=progress) for s in syms]
