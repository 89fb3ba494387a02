"""``entasis levels``: nearest support/resistance of an asset, printed and drawn on its price chart."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import pandas as pd


def plot_levels(candles: pd.DataFrame, levels: pd.DataFrame, path: str | Path, *, title: str = "",
                bars: int = 250) -> Path:
    """PNG of the last ``bars`` closes (high-low band) with the supports (green) and resistances (red)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tail = candles.sort_values("ts").tail(bars)
    fig = Figure(figsize=(12, 6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.fill_between(tail["ts"], tail["low"], tail["high"], color="0.85", lw=0, label="high-low")
    ax.plot(tail["ts"], tail["close"], color="black", lw=1.0, label="close")
    for lv in levels.itertuples():
        color = "tab:green" if lv.side == "support" else "tab:red"
        ax.axhline(float(lv.price), color=color, lw=2.2 if lv.rank == 1 else 1.0, ls="-" if lv.rank == 1 else "--",
                   alpha=0.9)
        ax.annotate(f"{lv.side[0].upper()}{lv.rank} {lv.price:,.6g} (s={lv.strength:.2f}, {lv.touches} touches)",
                    (tail["ts"].iloc[0], float(lv.price)), fontsize=8, color=color, va="bottom")
    ax.set_title(title)
    ax.set_ylabel("price")
    ax.legend(loc="lower right", fontsize=8)
    fig.autofmt_xdate()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def register(app: typer.Typer) -> None:
    """Add ``entasis levels`` and ``entasis levels-eval`` to the main CLI."""
    register_eval(app)

    @app.command("levels")
    def levels_cmd(
        asset: Annotated[str, typer.Option("--asset", "-a", help="Symbol, e.g. BTC/USDT.")],
        timeframe: Annotated[str | None, typer.Option(
            "--timeframe", "-t", help="Bars to use (default: signals.levels.timeframe, 1d).")] = None,
        exchange: Annotated[str | None, typer.Option("--exchange", help="Default: universe.exchange.")] = None,
        at: Annotated[str | None, typer.Option(
            "--at", help="Levels as of the close of the bar opening at this time (default: the last bar).")] = None,
        csv: Annotated[Path | None, typer.Option(
            "--csv", help="Read candles from a CSV (e.g. ../shared/data/...) instead of the database.")] = None,
        out: Annotated[Path | None, typer.Option("--out", help="PNG path (default: reports dir).")] = None,
        store: Annotated[bool, typer.Option(
            "--store", help="Also upsert the levels into ml.levels (database mode).")] = False,
    ) -> None:
        """Print the nearest support and resistance levels (strength, touches, distance in ATR) and draw them."""
        from datetime import UTC, datetime

        import pandas as pd
        from rich.console import Console
        from rich.table import Table

        from entasis.config import get_settings
        from entasis.features.catalog import timeframe_seconds
        from entasis.signals.levels import LevelParams, levels_at

        console = Console()
        s = get_settings()
        tf = timeframe or s.signals.levels.timeframe
        ex = exchange or s.universe.exchange
        params = LevelParams.from_config(s.signals.levels)
        try:
            if csv is not None:
                from entasis.features.csv_input import read_candle_csv

                candles = read_candle_csv(csv)
            else:
                from entasis.signals.jobs import load_candles
                from entasis.store.db import connect

                step = pd.Timedelta(seconds=timeframe_seconds(tf))
                end_dt = (pd.Timestamp(at, tz="UTC") + step).to_pydatetime() if at else datetime(2200, 1, 1, tzinfo=UTC)
                with connect() as conn:
                    candles = load_candles(conn, exchange=ex, symbols=[asset], timeframe=tf, start=None, end=end_dt)
            if candles.empty:
                raise ValueError(f"no {tf} candles for {asset} on {ex}" + (f" in {csv}" if csv else ""))
            if at:
                candles = candles[candles["ts"] <= pd.Timestamp(at, tz="UTC")]
            lv = levels_at(candles, params=params)
        except (ValueError, FileNotFoundError) as e:
            console.print(f"[bold red]error:[/] {e}")
            raise typer.Exit(code=1) from None
        last = candles["ts"].max()
        close, atr = lv.attrs.get("close"), lv.attrs.get("atr")
        table = Table(title=f"{asset} {tf}: levels as of the close of {last:%Y-%m-%d %H:%M} UTC "
                            f"(close {close:,.6g}, ATR {atr:,.4g})")
        for col in ("side", "rank", "price", "strength", "touches", "distance (ATR)"):
            table.add_column(col, justify="right" if col not in ("side",) else "left")
        for r in lv.itertuples():
            table.add_row(r.side, str(r.rank), f"{r.price:,.6g}", f"{r.strength:.2f}", str(r.touches),
                          f"{r.distance_atr:.2f}")
        console.print(table)
        if lv.empty:
            console.print(f"no levels: fewer than {params.min_bars} bars or no pivots yet")
        path = out or Path(s.reports_dir) / f"levels_{asset.replace('/', '')}_{tf}.png"
        png = plot_levels(candles, lv, path, title=f"{asset} {tf} support / resistance", bars=params.lookback_bars)
        console.print(f"chart: {png}")
        if store and csv is None and not lv.empty:
            from entasis.signals.store import write_levels
            from entasis.store.db import connect

            frame = lv.copy()
            frame.insert(0, "as_of", last + pd.Timedelta(seconds=timeframe_seconds(tf)))
            frame.insert(0, "asset", asset)
            frame["exchange"], frame["timeframe"], frame["close"], frame["atr"] = ex, tf, close, atr
            with connect() as conn:
                n = write_levels(conn, frame)
            console.print(f"stored {n} level row(s) in ml.levels")


def register_eval(app: typer.Typer) -> None:
    """Add ``entasis levels-eval`` (the honest check of the levels on real candles)."""

    @app.command("levels-eval")
    def levels_eval_cmd(
        data: Annotated[Path, typer.Option("--data", help="Folder of candle CSVs (e.g. ../shared/data/"
                                           "binance_spot_yanniedog/1d).", exists=True, file_okay=False)],
        k: Annotated[int, typer.Option("--k", help="Bars after the touch in which a reversal counts.")] = 5,
        move_atr: Annotated[float, typer.Option("--move-atr", help="Reversal / break size in ATR.")] = 1.0,
        controls: Annotated[int, typer.Option("--controls", help="Random control levels per real one.")] = 10,
        split: Annotated[str, typer.Option("--split", help="Also report before / from this date.")] = "2021-01-01",
        seed: Annotated[int, typer.Option("--seed")] = 0,
    ) -> None:
        """Reversal rate after touching a level vs random control levels at the same distances (bootstrap CI)."""
        import json

        import pandas as pd
        from rich.console import Console
        from rich.table import Table

        from entasis.config import get_settings
        from entasis.features.csv_input import read_candle_csv
        from entasis.signals.evaluate import compare, touch_events
        from entasis.signals.levels import LevelParams

        console = Console()
        params = LevelParams.from_config(get_settings().signals.levels)
        parts = []
        for f in sorted(data.glob("*.csv")):
            ev = touch_events(read_candle_csv(f), params=params, k=k, move_atr=move_atr, n_controls=controls,
                              seed=seed)
            ev["asset"] = f.stem.split("_")[0]
            parts.append(ev)
        if not parts:
            console.print(f"[bold red]error:[/] no CSV files in {data}")
            raise typer.Exit(code=1)
        events = pd.concat(parts, ignore_index=True)
        cut = pd.Timestamp(split, tz="UTC")
        subsets = {
            "all": events, "support": events[events["side"] == "support"],
            "resistance": events[events["side"] == "resistance"],
            f"before {split}": events[events["ts"] < cut], f"from {split}": events[events["ts"] >= cut],
        }
        table = Table(title=f"{data.name}: reversal within {k} bars ({move_atr} ATR) after a touch, "
                            f"{len(parts)} assets")
        for col in ("subset", "touches real", "touches control", "rate real", "rate control",
                    "diff (pp)", "95% CI (pp)", "months"):
            table.add_column(col, justify="left" if col == "subset" else "right")
        out = {}
        for name, sub in subsets.items():
            if sub.empty or sub["kind"].nunique() < 2:
                continue
            r = compare(sub, seed=seed)
            out[name] = r.as_dict()
            table.add_row(name, str(r.touches_real), str(r.touches_control), f"{r.rate_real:.3f}",
                          f"{r.rate_control:.3f}", f"{100 * r.diff:+.2f}",
                          f"[{100 * r.ci_low:+.2f}, {100 * r.ci_high:+.2f}]", str(r.n_months))
        console.print(table)
        verdict = "better than" if out["all"]["ci_low"] > 0 else (
            "worse than" if out["all"]["ci_high"] < 0 else "no different from")
        console.print(f"levels are {verdict} random control levels (all touches, 95% month-block bootstrap CI)")
        print(json.dumps({"eval": "levels_vs_random", "data": data.name, "k": k, "move_atr": move_atr, **out}))
