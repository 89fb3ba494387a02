"""``entasis train`` and ``entasis models list|rollback``.

Heavy imports (torch, mlflow, pandas) happen inside the commands so ``entasis --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from entasis.models.train import TrainResult

console = Console()
models_app = typer.Typer(help="Registered models: versions, aliases, rollback.", no_args_is_help=True)


def _split_csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def parse_params(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["rf.n_estimators=50", "lstm.hidden=[64,32]"]`` -> ``{"rf": {"n_estimators": 50}, ...}`` (JSON values)."""
    import json

    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        member, dot, name = key.partition(".")
        if not sep or not dot or not member or not name:
            raise typer.BadParameter(f"--param must look like MEMBER.NAME=VALUE (e.g. rf.n_estimators=50); "
                                     f"got {item!r}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(member, {})[name] = value
    return out


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(code=1)


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * float(v):.1f}%"


def _num(v: Any) -> str:
    return "-" if v is None else f"{float(v):.4f}"


def _num3(v: Any) -> str:
    return "-" if v is None else f"{float(v):.3f}"


def summary_table(results: list[TrainResult]) -> Table:
    """Validation / test metrics of each ensemble beside the best naive baseline."""
    t = Table(title="training summary (out-of-sample)",
              caption="vol RMSE: volatility model / naive last realized vol / GARCH(1,1)")
    t.add_column("model", no_wrap=True, min_width=max([len(r.model_name) for r in results] or [5]))
    for col in ("version", "valid acc", "valid logloss", "test acc", "test logloss", "ece",
                "best baseline", "baseline acc", "baseline logloss", "beats", "vol RMSE"):
        t.add_column(col)
    for r in results:
        v, te = r.metrics.get("valid", {}), r.metrics.get("test", {})
        c = r.comparison
        vol = "/".join(_num3(r.vol.get(k, {}).get("rmse")) for k in ("model", "naive", "garch")) if r.vol else "-"
        t.add_row(r.model_name, r.version or "-", _pct(v.get("accuracy")), _num(v.get("log_loss")),
                  _pct(te.get("accuracy")), _num(te.get("log_loss")), _num(te.get("ece")),
                  str(c.get("best_baseline", "-")), _pct(c.get("best_baseline_accuracy")),
                  _num(c.get("best_baseline_log_loss")),
                  "[green]yes[/]" if c.get("beats_baseline") else "[yellow]no[/]", vol)
    return t


def members_table(results: list[TrainResult]) -> Table:
    t = Table(title="members and baselines on test")
    for col in ("model", "who", "accuracy", "log loss", "ece", "weight"):
        t.add_column(col)
    for r in results:
        for name, per in r.member_metrics.items():
            m = per.get("test", {})
            t.add_row(r.model_name, name, _pct(m.get("accuracy")), _num(m.get("log_loss")), _num(m.get("ece")),
                      f"{r.weights.get(name, 0):.2f}")
        for name, m in r.baselines.get("test", {}).items():
            t.add_row(r.model_name, f"baseline:{name}", _pct(m.get("accuracy")), _num(m.get("log_loss")),
                      _num(m.get("ece")), "-")
    return t


def train_cmd(
    assets: str | None = typer.Option(None, "--assets", help="Comma-separated symbols, e.g. BTC/USDT,ETH/USDT "
                                      "(default: every symbol in features.bars)."),
    horizons: str | None = typer.Option(None, "--horizons", help="Comma-separated days (default: labels.horizons)."),
    models: str | None = typer.Option(None, "--models", help="Comma-separated members: lstm,rf,xgb,lgbm "
                                      "(default: train.models)."),
    timeframe: str = typer.Option("1d", "--timeframe", help="Bar timeframe of features.bars to train on."),
    exchange: str | None = typer.Option(None, "--exchange", help="Exchange (default: universe.exchange when "
                                        "features.bars holds several)."),
    pooled: bool | None = typer.Option(None, "--pooled/--per-asset", help="One pooled model or one per asset "
                                       "(default: train.pooled)."),
    weights: str = typer.Option("default", "--weights", help="'default' (0.4/0.2/0.2/0.2) or 'learned'."),
    register: bool = typer.Option(True, "--register/--no-register", help="Register as @challenger."),
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="Member parameter override, repeatable: MEMBER.NAME=VALUE, e.g. "
        "--param lgbm.n_estimators=200 --param lstm.hidden=[64,32].")] = None,
) -> None:
    """Train the ensemble per horizon from features.bars, compare with baselines, register in MLflow."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from entasis.config import ConfigError
    from entasis.models.base import ModelError
    from entasis.models.train import train_and_register
    from entasis.store.db import connect

    try:
        hs = [int(h) for h in _split_csv(horizons) or []] or None
    except ValueError:
        _fail(f"--horizons must be comma-separated whole days; got {horizons!r}")
        return
    if weights not in ("default", "learned"):
        _fail(f"--weights must be 'default' or 'learned'; got {weights!r}")
    member_list = _split_csv(models)
    overrides = parse_params(param)
    results: list[TrainResult] = []
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as prog:
        tasks: dict[str, Any] = {}

        def on_event(event: str, info: dict[str, Any]) -> None:
            name = info.get("name", "")
            if event == "unit_start":
                tasks[name] = prog.add_task(f"{name}: starting", total=len(info["members"]) + 1)
            elif event == "member_start":
                prog.update(tasks[name], description=f"{name}: training {info['member']}")
            elif event == "member_done":
                prog.advance(tasks[name])
            elif event == "unit_done":
                prog.update(tasks[name], description=f"{name}: done", completed=prog.tasks[tasks[name]].total)

        try:
            with connect() as conn:
                results = train_and_register(conn, horizons=hs, assets=_split_csv(assets), models=member_list,
                                             timeframe=timeframe, exchange=exchange, pooled=pooled,
                                             weights=weights, member_params=overrides, register=register,
                                             progress=on_event)
        except (ModelError, ConfigError, ValueError, RuntimeError) as e:
            _fail(str(e))
            return
    console.print(summary_table(results))
    console.print(members_table(results))
    suspicious = [r.model_name for r in results if r.comparison.get("edge_suspicious")]
    if suspicious:
        console.print(f"[bold yellow]warning:[/] {', '.join(suspicious)} beat the best baseline by more than 5 "
                      "points out of sample; on real data that is usually a leak. Check before promoting.")


@models_app.command("list")
def list_cmd(name: str | None = typer.Option(None, "--name", help="Only this registered model.")) -> None:
    """Registered models, their versions and aliases, and the honesty tags of the champion (else challenger)."""
    from entasis.registry.models import CHAMPION, list_models

    rows = [m for m in list_models() if name is None or m.name == name]
    if not rows:
        console.print("no registered Entasis models" + (f" named {name}" if name else ""))
        return
    t = Table(title="registered models")
    t.add_column("name", no_wrap=True, min_width=max(len(m.name) for m in rows))
    t.add_column("versions")
    t.add_column("aliases", no_wrap=True)
    for col in ("test acc", "best baseline acc", "beats"):
        t.add_column(col)
    for m in rows:
        tags = m.champion_tags
        t.add_row(m.name, ", ".join(m.versions), ", ".join(f"@{a}=v{v}" for a, v in sorted(m.aliases.items())),
                  _pct(tags.get("test_accuracy")), _pct(tags.get("best_baseline_accuracy")),
                  tags.get("beats_baseline", "-"))
    console.print(t)
    if not any(CHAMPION in m.aliases for m in rows):
        console.print("no @champion yet: promotion happens after the walk-forward backtest")


@models_app.command("rollback")
def rollback_cmd(
    name: str | None = typer.Argument(None, help="Registered model name, e.g. entasis-pooled-7d."),
    asset: str | None = typer.Option(None, "--asset", help="Asset of a per-asset model (instead of NAME)."),
    horizon: int | None = typer.Option(None, "--horizon", help="Horizon in days (instead of NAME)."),
) -> None:
    """Point @champion back at the previous champion version."""
    from entasis.registry.models import RegistryError, model_name, rollback

    if name is None:
        if horizon is None:
            _fail("give a model NAME or --horizon (with --asset for a per-asset model)")
            return
        name = model_name(asset, horizon)
    try:
        old, new = rollback(name)
    except RegistryError as e:
        _fail(str(e))
        return
    console.print(f"{name}: @champion moved from v{old} back to v{new}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.add_typer(models_app, name="models")
