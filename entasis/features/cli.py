"""``entasis features ...``: build features.bars, load sentiment, list the feature columns."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

features_app = typer.Typer(help="Features and labels (features.bars).", no_args_is_help=True)
console = Console()


def register(app: typer.Typer) -> None:
    app.add_typer(features_app, name="features")


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(code=1)


@features_app.command("build")
def build(
    full: bool = typer.Option(False, "--full", help="Recompute every row instead of the tail since the watermark."),
    timeframe: Annotated[list[str] | None, typer.Option("--timeframe", "-t",
                                                        help="Only this timeframe (repeatable).")] = None,
    symbol: Annotated[list[str] | None, typer.Option("--symbol", "-s",
                                                     help="Only this symbol (repeatable).")] = None,
    engine: str = typer.Option("spark", "--engine", help="spark (default) or pandas (one process, no JVM)."),
) -> None:
    """Compute features and labels from market.* into features.bars (Spark job by default)."""
    from entasis.features.build import BuildBusy, build_features

    if engine not in ("spark", "pandas"):
        _fail(f"--engine must be spark or pandas, not {engine!r}")
    try:
        s = build_features(full=full, timeframes=timeframe or None, symbols=symbol or None,
                           engine=engine)  # type: ignore[arg-type]
    except (BuildBusy, ValueError, FileNotFoundError) as e:
        _fail(str(e))
        return
    for w in s.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    t = Table("features build", "", show_header=True)
    for name, value in [
        ("engine", s.engine + (" (full rebuild)" if s.full else "")),
        ("series built", str(s.groups)),
        ("symbols", ", ".join(s.symbols) or "-"),
        ("series skipped (no new candles)", str(s.skipped)),
        ("rows computed", f"{s.rows_computed:,}"),
        ("rows inserted / updated", f"{s.inserted:,} / {s.updated:,}"),
        ("rows unchanged / deleted", f"{s.unchanged:,} / {s.deleted:,}"),
        ("seconds", f"{s.seconds:.1f}" + (f" (Spark start-up {s.spark_startup_s:.1f})" if s.spark_startup_s else "")),
    ]:
        t.add_row(name, value)
    console.print(t)


@features_app.command("load-sentiment")
def load_sentiment(
    csv: Annotated[Path, typer.Option("--csv", help="CSV with a date column and one value column (e.g. date,fng).")],
    source: str = typer.Option("fear_greed", "--source", help="Source name stored in market.sentiment."),
    value_column: Annotated[str | None, typer.Option("--value-column",
                                                     help="Value column when there are several.")] = None,
    publish_lag_hours: float = typer.Option(0.0, "--publish-lag-hours",
                                            help="Hours after 00:00 UTC of its date that a value is published."),
) -> None:
    """Upsert a sentiment series (e.g. the Crypto Fear & Greed index) into market.sentiment."""
    from entasis.features.store import load_sentiment_csv
    from entasis.store.db import connect

    try:
        with connect() as conn:
            r = load_sentiment_csv(conn, csv, source=source, value_column=value_column,
                                   publish_lag=timedelta(hours=publish_lag_hours))
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
        return
    console.print(f"{source}: {r.inserted} inserted, {r.updated} updated, {r.unchanged} unchanged")


@features_app.command("columns")
def columns() -> None:
    """The feature columns in their stable order, with what each means."""
    from entasis.config import get_settings
    from entasis.features.catalog import FEATURES, label_columns

    t = Table("column", "meaning")
    for name, desc in FEATURES.items():
        t.add_row(name, desc)
    t.add_row("warmup", "True while the bar has too little history for its indicators")
    for c in label_columns(get_settings().labels.horizons):
        t.add_row(c, "label (NULL until the horizon has passed)")
    console.print(t)
