"""``entasis options ...``: look at a snapshot's smiles and surface from the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from entasis.domain import utc_timestamp

if TYPE_CHECKING:
    import pandas as pd

    from entasis.options.store import Surface


def _fmt(x: Any, pct: bool = True, digits: int = 2) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    if v != v:  # NaN
        return "-"
    return f"{v * 100:.{digits}f}" if pct else f"{v:.{digits}f}"


def _load(currency: str, snapshot: str | None, csv: Path | None) -> pd.DataFrame:

    from entasis.options.deribit import read_chain_csv

    ts = None
    if snapshot is not None:
        ts = utc_timestamp(snapshot, "--snapshot")
    if csv is not None:
        return read_chain_csv(csv, snapshot_ts=ts, currency=currency)
    from entasis.options.store import load_quotes
    from entasis.store.db import connect

    with connect() as conn:
        q = load_quotes(conn, currency, ts)
    if q.empty:
        where = f"at {ts}" if ts is not None else "at all"
        raise LookupError(f"no deribit {currency} option quotes {where} in market.option_quotes")
    return q


def _print(surface: Surface, currency: str, console: Any, detail: bool, heston: bool) -> None:
    from rich.table import Table

    from entasis.options.svi import svi_total_variance

    f = surface.features.iloc[0]
    sm = surface.smiles
    table = Table(title=f"{currency} smiles at {f['snapshot_ts']:%Y-%m-%d %H:%M:%S} UTC (vols in %)")
    for col in ("expiry", "days", "forward", "quotes", "ATM", "25d call", "25d put", "RR25", "BF25", "SVI rmse",
                "arb-free", "Heston ATM"):
        table.add_column(col, justify="right")
    for _, r in sm.iterrows():
        arb = "-" if r["arb_free"] is None or str(r["arb_free"]) == "<NA>" else ("yes" if bool(r["arb_free"]) else "NO")
        table.add_row(f"{r['expiry']:%d%b%y}", f"{r['t_years'] * 365:.1f}", f"{r['forward']:,.1f}", str(r["n_quotes"]),
                      _fmt(r["atm_iv"]), _fmt(r["iv_25c"]), _fmt(r["iv_25p"]), _fmt(r["rr25"]), _fmt(r["bf25"]),
                      _fmt(r["fit_rmse"], digits=3), arb, _fmt(r["heston_atm_iv"]))
    console.print(table)
    feats = Table(title="snapshot features", show_header=True)
    for col in ("ATM 7d", "ATM 30d", "RR25 30d", "BF25 30d", "term slope", "put/call OI"):
        feats.add_column(col, justify="right")
    feats.add_row(_fmt(f["atm_iv_7d"]), _fmt(f["atm_iv_30d"]), _fmt(f["rr25_30d"]), _fmt(f["bf25_30d"]),
                  _fmt(f["term_slope"]), _fmt(f["pc_oi_ratio"], pct=False, digits=3))
    console.print(feats)
    cal = surface.calibration
    if cal is None:
        console.print("Heston: skipped (--no-heston)" if not heston else "Heston: not calibrated (fewer than 5 vols)")
    else:
        p = cal.params
        feller = "[green]satisfied[/]" if cal.feller_ok else "[yellow]violated[/] (variance can reach 0)"
        console.print(f"Heston: v0={p.v0:.4f} kappa={p.kappa:.3f} theta={p.theta:.4f} sigma={p.sigma:.3f} "
                      f"rho={p.rho:.3f}  iv rmse={cal.rmse_iv * 100:.2f} pts over {cal.n_options} options  "
                      f"Feller 2κθ>σ²: {feller}")
    if detail:
        pts = surface.points
        for _, r in sm.iterrows():
            t = Table(title=f"{r['expiry']:%d%b%y}: market vs SVI (%)")
            for col in ("strike", "ln(K/F)", "market", "SVI", "diff"):
                t.add_column(col, justify="right")
            p_ = pts[pts["expiry"] == r["expiry"]]
            par = r[["svi_a", "svi_b", "svi_rho", "svi_m", "svi_sigma"]].to_numpy(float)
            fit = (svi_total_variance(par, p_["k"].to_numpy(float)) / r["t_years"]) ** 0.5
            for (_, q), v in zip(p_.iterrows(), fit, strict=True):
                t.add_row(f"{q['strike']:,.0f}", f"{q['k']:+.4f}", _fmt(q["iv"]), _fmt(v), _fmt(v - q["iv"], digits=3))
            console.print(t)


def register(app: typer.Typer) -> None:
    """Add ``entasis options`` to the main CLI."""
    options_app = typer.Typer(help="Option analytics: implied vols, SVI smiles, Heston.", no_args_is_help=True)
    app.add_typer(options_app, name="options")

    @options_app.command("surface")
    def surface_cmd(
        currency: Annotated[str, typer.Option("--currency", "-c", help="Underlying coin, e.g. BTC or ETH.")] = "BTC",
        snapshot: Annotated[str | None, typer.Option(
            "--snapshot", help="Snapshot time (UTC); default the latest. With --csv: the file's snapshot time "
            "if it has none.")] = None,
        csv: Annotated[Path | None, typer.Option(
            "--csv", help="Read a Deribit chain CSV instead of the database.")] = None,
        out: Annotated[Path | None, typer.Option("--out", help="PNG path (default: reports dir).")] = None,
        store: Annotated[bool, typer.Option(
            "--store", help="Also upsert the surface into features.* (database mode).")] = False,
        detail: Annotated[bool, typer.Option(
            "--detail", help="Print each expiry's strikes: market vs SVI vol.")] = False,
        heston: Annotated[bool, typer.Option(
            "--heston/--no-heston", help="Calibrate Heston to the snapshot.")] = True,
    ) -> None:
        """Fit and show one snapshot's smiles (SVI), surface features and Heston parameters; write a PNG."""
        from rich.console import Console

        from entasis.config import get_settings
        from entasis.options.plot import plot_surface
        from entasis.options.store import build_surface

        console = Console()
        if not console.is_terminal:   # piped or captured: do not squeeze the tables into 80 columns
            console = Console(width=150)
        currency = currency.upper()
        if store and csv is not None:
            console.print("[bold red]error:[/] --store works on database snapshots only, not with --csv")
            raise typer.Exit(code=2)
        try:
            quotes = _load(currency, snapshot, csv)
            surf = build_surface(quotes, calibrate_heston=heston)
        except (LookupError, ValueError, FileNotFoundError) as e:
            console.print(f"[bold red]error:[/] {e}")
            raise typer.Exit(code=1) from None
        _print(surf, currency, console, detail, heston)
        ts = surf.features["snapshot_ts"].iloc[0]
        path = out or get_settings().reports_dir / f"options_surface_{currency}_{ts:%Y%m%dT%H%M%S}.png"
        plot_surface(surf, path, title=f"{currency} implied vol surface, {ts:%Y-%m-%d %H:%M} UTC")
        console.print(f"wrote {path}")
        if store:
            from entasis.options.store import store_surface
            from entasis.store.db import connect

            with connect() as conn:
                n = store_surface(conn, surf)
            console.print(f"stored {n} expiries in features.vol_surface and the snapshot in features.option_features")
