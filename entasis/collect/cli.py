"""``entasis collect candles|funding|open-interest|options``: the CLI edge of the collectors.

This is the only place that reads the wall clock (``--until`` defaults to now); the collectors
themselves take the time explicitly, as Airflow passes its data interval.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from entasis.domain import from_ms, utc_datetime

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.progress import Progress as RichProgress

    from entasis.collect.client import ExchangeClient
    from entasis.collect.series import SeriesResult
    from entasis.collect.state import SeriesKey

console = Console()
collect_app = typer.Typer(help="Collect market data from exchanges (or the simulated one) into PostgreSQL.",
                          no_args_is_help=True)

EXCHANGE_HELP = "ccxt exchange id: binance, binanceusdm, bybit or deribit."
SYMBOLS_HELP = "Comma-separated unified symbols ('BTC/USDT' spot, 'BTC/USDT:USDT' perp); default: the universe."
SINCE_HELP = "Backfill from this time (ISO 8601, UTC); default: continue from each series' watermark."
UNTIL_HELP = "Collect up to this time (exclusive, ISO 8601, UTC); default: now."

ExchangeOpt = Annotated[
    str | None, typer.Option("--exchange", "-e", help=EXCHANGE_HELP + " Default: universe.exchange.")]
PerpExchangeOpt = Annotated[
    str | None, typer.Option("--exchange", "-e", help=EXCHANGE_HELP + " Default: universe.perp_exchange.")]
SymbolsOpt = Annotated[str | None, typer.Option("--symbols", "-s", help=SYMBOLS_HELP)]
PerpSymbolsOpt = Annotated[
    str | None, typer.Option("--symbols", "-s", help=SYMBOLS_HELP + " Spot forms become perpetuals.")]
TimeframesOpt = Annotated[
    list[str] | None, typer.Option("--timeframe", "-t", help="Timeframe(s), repeatable or comma-separated.")]
OiPeriodOpt = Annotated[str, typer.Option("--timeframe", "-t", help="Sampling period of the history (5m..1d).")]
SinceOpt = Annotated[str | None, typer.Option("--since", help=SINCE_HELP)]
UntilOpt = Annotated[str | None, typer.Option("--until", help=UNTIL_HELP)]
OptionsExchangeOpt = Annotated[str, typer.Option("--exchange", "-e", help="Only deribit lists the options we take.")]
CurrenciesOpt = Annotated[
    str | None, typer.Option("--symbols", "-s", help="Currencies, e.g. BTC,ETH; default: universe.option_currencies.")]
NowOpt = Annotated[str | None, typer.Option("--now", help="Snapshot time (ISO 8601, UTC); default: now.")]


class _Bar:
    """Rich progress over series (symbols x timeframes) and over the pages of the current one."""

    def __init__(self, progress: RichProgress, total_series: int) -> None:
        self.p = progress
        self.series_task = progress.add_task("series", total=total_series)
        self.page_task = progress.add_task("pages", total=None)

    def series_started(self, key: SeriesKey, pages: int) -> None:
        self.p.reset(self.page_task, total=max(pages, 1), description=f"  {key.symbol} {key.timeframe}".rstrip())

    def page_done(self, key: SeriesKey, rows: int) -> None:
        self.p.advance(self.page_task)

    def series_done(self, key: SeriesKey) -> None:
        self.p.advance(self.series_task)


def _split(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def _perp(symbol: str) -> str:
    """'BTC/USDT' -> 'BTC/USDT:USDT' (a linear perpetual settles in its quote currency)."""
    return symbol if ":" in symbol else f"{symbol}:{symbol.split('/')[1]}"


def _until(text: str | None) -> datetime:
    if text:
        return utc_datetime(text, "--until")
    return datetime.now(UTC).replace(microsecond=0)


def _client(exchange: str) -> ExchangeClient:
    """The exchange client, or a clean CLI error naming the bad exchange id."""
    from entasis.collect.client import ExchangeClient

    try:
        return ExchangeClient(exchange)
    except ValueError as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(code=1) from None


def _summary(results: list[SeriesResult], failures: list[tuple[str, str]]) -> None:
    from rich.table import Table

    table = Table("series", "pages", "new", "updated", "quarantined", "gaps new", "gaps resolved", "watermark",
                  title="collection summary")
    table.columns[0].overflow = "fold"
    for r in results:
        wm = from_ms(r.watermark).strftime("%Y-%m-%d %H:%M") if r.watermark is not None else "-"
        table.add_row(str(r.key), str(r.pages), f"{r.new:,}", f"{r.updated:,}", f"{r.quarantined:,}",
                      str(r.gaps_new), str(r.gaps_resolved), wm)
    for label, _ in failures:
        table.add_row(f"[red]{label}[/]", "-", "-", "-", "-", "-", "-", "[red]failed[/]")
    console.print(table)
    for label, msg in failures:
        console.print(f"[bold red]error:[/] {label}: {msg}")


def _run(jobs: list[tuple[str, object]], total: int) -> None:
    """Run each (label, fn(progress) -> results) job; a failure is reported, the others still run."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from entasis.collect.client import CollectError
    from entasis.config import ConfigError

    results: list[SeriesResult] = []
    failures: list[tuple[str, str]] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        bar = _Bar(progress, total)
        for label, fn in jobs:
            try:
                results.extend(fn(bar))  # type: ignore[operator]
            except (CollectError, ValueError, ConfigError) as e:
                failures.append((label, str(e)))
    _summary(results, failures)
    if failures:
        raise typer.Exit(code=1)


def _run_perps(kind: str, exchange: str | None, symbols: str | None, until: str | None,
               collect: Callable[[str, str, datetime, ExchangeClient, _Bar], list[SeriesResult]],
               detail: str = "") -> None:
    """One job per perpetual symbol (the settings' universe unless given) on the perp exchange:
    ``collect(exchange, symbol, until, client, progress)``; jobs named ``kind exchange symbol detail``."""
    from entasis.config import get_settings

    s = get_settings()
    ex = exchange or s.universe.perp_exchange
    syms = [_perp(x) for x in (_split(symbols) or list(s.universe.symbols))]
    end = _until(until)
    client = _client(ex)
    jobs = [(f"{kind} {ex} {sym} {detail}".rstrip(), (lambda bar, sym=sym: collect(ex, sym, end, client, bar)))
            for sym in syms]
    _run(jobs, len(jobs))  # type: ignore[arg-type]


@collect_app.command("candles")
def candles_cmd(
    exchange: ExchangeOpt = None,
    symbols: SymbolsOpt = None,
    timeframe: TimeframesOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
) -> None:
    """OHLCV candles (spot or perpetual) for each symbol and timeframe."""
    from entasis.collect.candles import collect_candles
    from entasis.config import get_settings

    s = get_settings()
    ex = exchange or s.universe.exchange
    syms = _split(symbols) or list(s.universe.symbols)
    if ex == "binanceusdm":
        syms = [_perp(x) for x in syms]
    tfs = [t for x in (timeframe or []) for t in _split(x)] or list(s.universe.timeframes)
    end = _until(until)
    client = _client(ex)
    jobs = [(f"candles {ex} {sym} {tf}",
             (lambda bar, sym=sym, tf=tf: collect_candles(ex, [sym], tf, until=end, since=since, client=client,
                                                          progress=bar)))
            for sym in syms for tf in tfs]
    _run(jobs, len(jobs))  # type: ignore[arg-type]


@collect_app.command("funding")
def funding_cmd(
    exchange: PerpExchangeOpt = None,
    symbols: PerpSymbolsOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
) -> None:
    """Funding-rate history of perpetuals."""
    from entasis.collect.derivatives import collect_funding

    _run_perps("funding", exchange, symbols, until, lambda ex, sym, end, client, bar: collect_funding(
        ex, [sym], until=end, since=since, client=client, progress=bar))


@collect_app.command("open-interest")
def open_interest_cmd(
    exchange: PerpExchangeOpt = None,
    symbols: PerpSymbolsOpt = None,
    timeframe: OiPeriodOpt = "1h",
    since: SinceOpt = None,
    until: UntilOpt = None,
) -> None:
    """Open-interest history of perpetuals."""
    from entasis.collect.derivatives import collect_open_interest

    _run_perps("open_interest", exchange, symbols, until, lambda ex, sym, end, client, bar: collect_open_interest(
        ex, [sym], timeframe, until=end, since=since, client=client, progress=bar), detail=timeframe)


@collect_app.command("options")
def options_cmd(
    exchange: OptionsExchangeOpt = "deribit",
    symbols: CurrenciesOpt = None,
    now: NowOpt = None,
) -> None:
    """A snapshot of every listed option (quotes, mark IV, greeks, open interest)."""
    from entasis.collect.options import collect_options
    from entasis.config import get_settings

    if exchange != "deribit":
        console.print(f"[bold red]error:[/] option snapshots come from deribit, not {exchange!r}")
        raise typer.Exit(code=1)
    s = get_settings()
    curs = [c.split("/")[0].upper() for c in (_split(symbols) or list(s.universe.option_currencies))]
    at = _until(now)
    client = _client("deribit")
    jobs = [(f"options deribit {cur}",
             (lambda bar, cur=cur: collect_options([cur], now=at, client=client, progress=bar)))
            for cur in curs]
    _run(jobs, len(jobs))  # type: ignore[arg-type]


def register(app: typer.Typer) -> None:
    app.add_typer(collect_app, name="collect")
