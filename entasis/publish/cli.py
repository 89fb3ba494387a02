"""``entasis publish run|reconcile|show``: the CLI edge of the publisher.

This is the only place in the stage that reads the wall clock (``--as-of`` / ``--now`` default to
now); the library functions take the time explicitly, as Airflow passes its data interval.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from entasis.domain import CLASS_NAMES, utc_datetime

if TYPE_CHECKING:
    import pandas as pd

console = Console()
publish_app = typer.Typer(help="Publish predictions to ml.predictions, reconcile outcomes, show model status.",
                          no_args_is_help=True)

AsOfOpt = Annotated[
    str | None, typer.Option("--as-of", help="Run time (ISO 8601; UTC if no zone). Default: now.")]
AssetsOpt = Annotated[
    str | None, typer.Option("--assets", "-a", help="Comma-separated symbols; default: the universe.")]
HorizonsOpt = Annotated[
    str | None, typer.Option("--horizons", help="Comma-separated horizons in days; default: labels.")]
PublishedOpt = Annotated[
    str | None, typer.Option("--published-at", help="Stored publish time; default: each prediction's as_of.")]
NowOpt = Annotated[str | None, typer.Option("--now", help="Reconcile as of this time (ISO 8601). Default: now.")]
LimitOpt = Annotated[int, typer.Option("--limit", "-n", help="How many recent predictions to show.")]
AssetOpt = Annotated[str | None, typer.Option("--asset", help="Only this symbol.")]


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(code=1)


def _when(text: str | None, what: str) -> datetime:
    """An ISO time with a zone (or a bare UTC date; :func:`entasis.domain.utc_datetime`); the wall clock
    when none is given."""
    if not text:
        return datetime.now(UTC)
    try:
        return utc_datetime(text, what)
    except ValueError as e:
        _fail(str(e))
        raise


def _split(text: str | None) -> list[str] | None:
    parts = [s.strip() for s in (text or "").split(",") if s.strip()]
    return parts or None


def _fmt(v: Any, digits: int = 3) -> str:
    import math

    import pandas as pd

    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, datetime):
        return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    return str(v)


def predictions_table(df: pd.DataFrame) -> Table:
    t = Table(title="Recent predictions (ml.predictions)")
    for c in ("asset", "h", "as of", "model", "call", "p bear/neut/bull", "conf", "target", "top factor",
              "actual", "correct"):
        t.add_column(c)
    for r in df.itertuples(index=False):
        factors = r.factors or []
        top = f"{factors[0]['feature']} {factors[0]['contribution']:+.3f}" if factors else "-"
        actual = CLASS_NAMES[int(r.actual_class)] if r.actual_class is not None else "-"
        t.add_row(str(r.asset), str(r.horizon), _fmt(r.as_of), str(r.model_version),
                  CLASS_NAMES[int(r.predicted_class)],
                  f"{r.p_bearish:.2f}/{r.p_neutral:.2f}/{r.p_bullish:.2f}",
                  f"{r.confidence:.0f} {r.confidence_level}", _fmt(r.target_date), top, actual,
                  _fmt(r.correct))
    return t


def status_table(df: pd.DataFrame) -> Table:
    t = Table(title="Model status (ml.model_status)")
    for c in ("asset", "h", "champion", "scope", "trained", "unproven", "test acc", "best baseline",
              "beats", "live acc 30d", "live log-loss 30d", "n live", "predictions", "last published"):
        t.add_column(c)
    for r in df.itertuples(index=False):
        champ = f"{r.model_name}/{r.champion_version}" if r.model_name else "-"
        base = f"{r.best_baseline} {_fmt(r.best_baseline_accuracy)}" if r.best_baseline else "-"
        t.add_row(str(r.asset), str(r.horizon), champ, _fmt(r.champion_scope), _fmt(r.trained_at),
                  _fmt(r.unproven), _fmt(r.test_accuracy), base, _fmt(r.beats_baseline),
                  _fmt(r.live_accuracy_30d), _fmt(r.live_log_loss_30d), str(r.live_reconciled_30d),
                  str(r.n_predictions),
                  _fmt(r.last_published))
    return t


@publish_app.command("run")
def run_cmd(as_of: AsOfOpt = None, assets: AssetsOpt = None, horizons: HorizonsOpt = None,
            published_at: PublishedOpt = None) -> None:
    """Predict the latest complete bar of each asset with its @champion and upsert ml.predictions."""
    from entasis.publish.champions import ChampionError
    from entasis.publish.predictions import publish_predictions
    from entasis.store.db import connect

    when = _when(as_of, "--as-of")
    pub = _when(published_at, "--published-at") if published_at else None
    try:
        hs = [int(h) for h in _split(horizons) or []] or None
    except ValueError:
        _fail(f"--horizons must be whole numbers of days, got {horizons!r}")
        return
    try:
        with connect() as conn:
            summary = publish_predictions(conn, as_of=when, assets=_split(assets), horizons=hs, published_at=pub)
    except (ChampionError, ValueError) as e:
        _fail(str(e))
        return
    console.print(f"published {summary.published} prediction(s) at {when.isoformat()}: "
                  f"{summary.inserted} new, {summary.updated} changed, {summary.unchanged} unchanged")
    for sk in summary.skipped:
        console.print(f"[yellow]skipped[/] {sk.asset} h={sk.horizon if sk.horizon is not None else '*'}: {sk.reason}")
    if summary.published == 0:
        raise typer.Exit(code=1)


@publish_app.command("reconcile")
def reconcile_cmd(now: NowOpt = None) -> None:
    """Fill actual_class / realized_return / correct for predictions whose target date has passed."""
    from entasis.publish.reconcile import reconcile_outcomes
    from entasis.store.db import connect

    when = _when(now, "--now")
    try:
        with connect() as conn:
            n = reconcile_outcomes(conn, now=when)
    except ValueError as e:
        _fail(str(e))
        return
    console.print(f"reconciled {n} prediction(s) as of {when.isoformat()}")


@publish_app.command("show")
def show_cmd(limit: LimitOpt = 20, asset: AssetOpt = None) -> None:
    """Recent predictions and ml.model_status as tables."""
    from entasis.publish.status import model_status, recent_predictions
    from entasis.store.db import connect

    try:
        with connect() as conn:
            preds = recent_predictions(conn, limit=limit, asset=asset)
            status = model_status(conn)
    except ValueError as e:
        _fail(str(e))
        return
    if preds.empty:
        console.print("no predictions published yet")
    else:
        console.print(predictions_table(preds))
    if status.empty:
        console.print("no champion recorded and no predictions: ml.model_status is empty")
    else:
        console.print(status_table(status))


def register(app: typer.Typer) -> None:
    app.add_typer(publish_app, name="publish")
