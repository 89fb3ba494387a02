"""``entasis backtest``: a walk-forward from the database or straight from candle CSV files.

Heavy imports stay inside the command so ``entasis --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from entasis.domain import POOLED

TREES = ("rf", "xgb", "lgbm")


def model_specs(names: str, *, n_estimators: int | None, n_jobs: int | None) -> list[Any]:
    """'rf,xgb,lgbm,ensemble' → walk-forward specs, with tree sizes / threads applied to the tree models."""
    out: list[Any] = []
    for raw in names.split(","):
        n = raw.strip()
        if not n:
            continue
        if n in TREES:
            spec: dict[str, Any] = {"name": n}
            if n_estimators is not None:
                spec["n_estimators"] = n_estimators
            if n_jobs is not None:
                spec["n_jobs"] = n_jobs
            out.append(spec if len(spec) > 1 else n)
        else:
            out.append(n)
    if not out:
        raise typer.BadParameter("--models is empty; e.g. --models rf,xgb,lgbm,ensemble")
    return out


def product_specs(*, n_estimators: int | None = None, n_jobs: int | None = None) -> list[Any]:
    """What the product publishes: the stacked ensemble of ``train.models`` (with ``train.member_params``
    and the LSTM window / epochs of ``train``), and each member beside it (their forecasts are the
    ensemble's own members', not separate fits)."""
    from entasis.config import get_settings
    from entasis.models.train import member_params_from_settings

    s = get_settings()
    members = list(s.train.models)
    params = {k: dict(v) for k, v in member_params_from_settings(s).items() if k in members}
    for m in members:
        if m in TREES:
            if n_estimators is not None:
                params.setdefault(m, {})["n_estimators"] = n_estimators
            if n_jobs is not None:
                params.setdefault(m, {})["n_jobs"] = n_jobs
    ens: dict[str, Any] = {"name": "ensemble", "members": members, "member_params": params}
    return [ens, *({"name": m, **params[m]} if params.get(m) else m for m in members)]


def _fmt(v: Any, d: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "" if v is None else str(v)
    return "–" if f != f else f"{f:.{d}f}"


def _short(name: Any) -> str:
    """'baseline:majority' -> 'majority*' (baselines are starred in tables)."""
    n = str(name)
    return n.removeprefix("baseline:") + "*" if n.startswith("baseline:") else n


def summary_tables(result: Any) -> list[Table]:
    """Scores of every model and baseline, then each model against every baseline with bootstrap CIs."""
    s = result.summary(POOLED)
    t1 = Table(title=f"{', '.join(result.config['symbols'])} — {result.horizon}-day horizon, pooled out-of-sample "
                     f"({int(s['n'].dropna().iloc[0]) if s['n'].notna().any() else 0} forecasts)")
    for c in ("model", "accuracy", "bal. acc", "log-loss", "brier", "ECE", "total ret", "sharpe", "max DD"):
        t1.add_column(c, justify="left" if c == "model" else "right", no_wrap=c == "model")
    for r in s.to_dict("records"):
        t1.add_row(_short(r["model"]), _fmt(r.get("accuracy")), _fmt(r.get("balanced_accuracy")),
                   _fmt(r.get("log_loss")), _fmt(r.get("brier")), _fmt(r.get("ece")), _fmt(r.get("total_return"), 2),
                   _fmt(r.get("sharpe"), 2), _fmt(r.get("max_drawdown"), 2),
                   style="dim" if str(r["model"]).startswith("baseline:") else None)
    t2 = Table(title="Model − baseline (* = naive baseline; 95% moving-block bootstrap CI)")
    for c in ("model", "baseline", "Δ accuracy", "CI", "Δ log-loss", "CI "):
        t2.add_column(c, justify="left" if c in ("model", "baseline") else "right",
                      no_wrap=c in ("model", "baseline"))
    c = result.comparisons[result.comparisons["scope"] == POOLED]
    for (m, b), g in c.groupby(["model", "baseline"], sort=False):
        a = g[g["metric"] == "accuracy"].iloc[0]
        ll = g[g["metric"] == "log_loss"].iloc[0]
        sig = "green" if a["lo"] > 0 else ("red" if a["hi"] < 0 else None)
        t2.add_row(_short(m), _short(b), f"{a['estimate']:+.3f}", f"[{a['lo']:+.3f}, {a['hi']:+.3f}]",
                   f"{ll['estimate']:+.3f}", f"[{ll['lo']:+.3f}, {ll['hi']:+.3f}]", style=sig)
    return [t1, t2]


Opt = typer.Option
AssetOpt = Annotated[list[str] | None, Opt("--asset", "-a", help="Symbol, e.g. BTC/USDT (repeat: pooled run).")]
HorizonOpt = Annotated[list[int] | None, Opt("--horizon", help="Horizon in days (repeatable; default 7).")]
CsvOpt = Annotated[list[Path] | None, Opt("--csv", help=(
    "Candle CSV file(s), or a directory of <BASE><QUOTE>_<tf>.csv files; features are computed in-process."))]
RecordOpt = Annotated[bool | None, Opt("--record/--no-record", help=(
    "Write ml.backtest_* rows (default: yes from the database, no from CSV)."))]
LeakOpt = Annotated[float, Opt(help="Fail when a model beats the best baseline by more accuracy than this.")]
PermOpt = Annotated[bool, Opt("--permutation-check", help="Also train the first model on shuffled labels.")]
ModelsOpt = Annotated[str, Opt(help=(
    "Comma-separated models: rf, xgb, lgbm, lstm, ensemble. Default: what the product publishes (the stacked "
    "ensemble of train.models and its members)."))]
EmbargoOpt = Annotated[int, Opt(help="Extra days dropped before each test block, beyond the h-day purge.")]
ExchangeOpt = Annotated[str | None, Opt(help="Exchange of features.bars (default: universe.exchange).")]


def backtest(
    asset: AssetOpt = None,
    horizon: HorizonOpt = None,
    start: Annotated[str, Opt(help="First test day (YYYY-MM-DD).")] = "",
    end: Annotated[str, Opt(help="Last test day (YYYY-MM-DD, inclusive).")] = "",
    models: ModelsOpt = "",
    csv: CsvOpt = None,
    funding_csv: Annotated[Path | None, Opt(help="Funding-rate CSV (Binance export) of the perpetual.")] = None,
    timeframe: Annotated[str, Opt(help="Bar timeframe.")] = "1d",
    exchange: ExchangeOpt = None,
    refit_days: Annotated[int, Opt(help="Refit every N days.")] = 7,
    window: Annotated[str, Opt(help="expanding or rolling training window.")] = "expanding",
    train_days: Annotated[int | None, Opt(help="Rolling window length in days.")] = None,
    embargo_days: EmbargoOpt = 0,
    long_only: Annotated[bool, Opt("--long-only", help="Never short.")] = False,
    sizing: Annotated[str, Opt(help="full (notional) or confidence (2% x confidence, cap 5%).")] = "full",
    hold: Annotated[str, Opt(help="latest (daily rebalance) or block (hold h days).")] = "latest",
    fee_bps: Annotated[float, Opt(help="Fee per side, bps of turnover.")] = 10.0,
    slippage_bps: Annotated[float, Opt(help="Slippage per side, bps of turnover.")] = 0.0,
    n_estimators: Annotated[int | None, Opt(help="Trees per tree model (default: the model's own).")] = None,
    n_jobs: Annotated[int | None, Opt(help="Threads per tree model.")] = None,
    leak_threshold: LeakOpt = 0.10,
    permutation_check: PermOpt = False,
    n_boot: Annotated[int, Opt(help="Bootstrap resamples.")] = 2000,
    record: RecordOpt = None,
    report: Annotated[bool, Opt("--report/--no-report", help="Write the HTML report.")] = True,
    json_path: Annotated[Path | None, Opt("--json", help=(
        "Write per horizon, per model and baseline: n, accuracy, balanced accuracy, log-loss, Brier, ECE and "
        "Δ vs the best baseline with its CI, as JSON."))] = None,
) -> None:
    """Walk-forward backtest: models vs naive baselines, with bootstrap intervals and a trading simulation."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from entasis.backtest.folds import BacktestError, LeakageError
    from entasis.backtest.runner import load_csv_inputs, load_db_inputs, run_walk_forward
    from entasis.backtest.simulate import TradingConfig
    from entasis.config import ConfigError

    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the tables into 80 columns
        console = Console(width=150)
    if not start or not end:
        raise typer.BadParameter("--start and --end are required (YYYY-MM-DD)")
    horizons = horizon or [7]
    specs = model_specs(models, n_estimators=n_estimators, n_jobs=n_jobs) if models.strip() else \
        product_specs(n_estimators=n_estimators, n_jobs=n_jobs)
    out_json: dict[str, Any] = {"horizons": {}}
    try:
        trading = TradingConfig(long_only=long_only, sizing=sizing, hold=hold, fee_bps=fee_bps,  # type: ignore[arg-type]
                                slippage_bps=slippage_bps)
        if csv:
            src: Any = csv[0] if len(csv) == 1 else list(csv)
            inputs = load_csv_inputs(src, assets=asset, timeframe=timeframe, funding_csv=funding_csv)
        else:
            from entasis.store.db import connect

            with connect() as conn:
                inputs = load_db_inputs(conn, assets=asset, timeframe=timeframe, end=end, exchange=exchange)
        do_record = (not csv) if record is None else record
        for h in horizons:
            with Progress(TextColumn(f"[bold]{h}d[/] folds"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          TextColumn("{task.description}"), console=console, transient=False) as prog:
                task = prog.add_task("", total=None)

                def on_fold(done: int, total: int, info: dict[str, Any], _t: Any = task, _p: Any = prog) -> None:
                    _p.update(_t, total=total, completed=done, description=str(info["test_start"])[:10])

                result = run_walk_forward(horizon=h, start=start, end=end, models=specs, timeframe=timeframe,
                                          inputs=inputs, record=do_record, report=report, progress=on_fold,
                                          refit_days=refit_days, window=window, train_days=train_days,  # type: ignore[arg-type]
                                          embargo_days=embargo_days, trading=trading, leak_threshold=leak_threshold,
                                          permutation_check=permutation_check, n_boot=n_boot)
            for t in summary_tables(result):
                console.print(t)
            out_json["horizons"][str(h)] = result.to_json()
            if json_path is not None:
                import json

                json_path.parent.mkdir(parents=True, exist_ok=True)
                json_path.write_text(json.dumps(out_json, indent=2, default=str))
            if result.leakage.get("problems"):
                console.print("[bold red]leakage warnings:[/] " + "; ".join(result.leakage["problems"]))
            console.print(f"run [bold]{result.run_id}[/] in {result.timings['total']:.1f}s"
                          + (f"; report: {result.report_path}" if result.report_path else "")
                          + ("; recorded in ml.backtest_runs" if do_record else ""))
    except LeakageError as e:
        console.print(f"[bold red]leakage check failed:[/] {e}")
        raise typer.Exit(code=3) from None
    except (BacktestError, ConfigError, FileNotFoundError, ValueError) as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(code=1) from None


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest)
