"""The library entry the DAG and the CLI call: load → walk forward → record → report → MLflow.

Data come from the database (``features.bars`` for features and labels, ``market.candles`` for the
closes the trading simulation needs, ``market.funding_rates`` of the linear perpetual for funding), or
straight from candle CSV files (features computed in-process with the same
``entasis.features.compute.compute`` the pipeline uses), or from frames handed in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from entasis.backtest.folds import BacktestError, utc
from entasis.backtest.report import write_report
from entasis.backtest.store import record_backtest
from entasis.backtest.walkforward import DEFAULT_MODELS, ModelSpec, Progress, WalkForwardResult, walk_forward
from entasis.config import get_settings
from entasis.domain import POOLED
from entasis.features.catalog import pair_of, perp_of
from entasis.features.compute import LabelParams, compute
from entasis.features.csv_input import read_candle_csv, symbol_from_name
from entasis.features.store import load_bars
from entasis.store.db import connect

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

    from entasis.config import Settings

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    """What a walk-forward reads: features + labels, closes, and (optionally) funding."""

    frame: pd.DataFrame
    prices: pd.DataFrame | None
    funding: pd.DataFrame | None
    exchange: str | None
    source: str


# -- CSV -------------------------------------------------------------------------------------------
def csv_for(directory: Path, asset: str, timeframe: str) -> Path:
    """The shared-data file name of an asset: 'BTC/USDT' + '1d' -> BTCUSDT_1d.csv."""
    p = directory / f"{asset.split(':')[0].replace('/', '')}_{timeframe}.csv"
    if not p.exists():
        raise BacktestError(f"no candle CSV for {asset} {timeframe} in {directory} (looked for {p.name})")
    return p


def load_funding_csv(path: str | Path, symbol: str) -> pd.DataFrame:
    """Funding from a CSV: Binance's export (funding_date, funding_time, fundingRate) or ts, funding_rate."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise BacktestError(f"funding CSV {p} does not exist")
    raw = pd.read_csv(p)
    cols = {c.lower(): c for c in raw.columns}
    if "fundingrate" in cols and "funding_date" in cols and "funding_time" in cols:
        ts = pd.to_datetime(raw[cols["funding_date"]].astype(str) + " " + raw[cols["funding_time"]].astype(str),
                            utc=True, format="mixed")
        rate = pd.to_numeric(raw[cols["fundingrate"]], errors="coerce")
    elif "ts" in cols and "funding_rate" in cols:
        ts = pd.to_datetime(raw[cols["ts"]], utc=True, format="mixed")
        rate = pd.to_numeric(raw[cols["funding_rate"]], errors="coerce")
    else:
        raise BacktestError(f"{p}: expected columns funding_date, funding_time, fundingRate (Binance) or "
                            f"ts, funding_rate; got {list(raw.columns)}")
    out = pd.DataFrame({"symbol": symbol, "ts": ts, "funding_rate": rate}).dropna()
    return out.drop_duplicates(["symbol", "ts"]).sort_values("ts").reset_index(drop=True)


def load_csv_inputs(csv: str | Path | Sequence[str | Path], *, assets: Sequence[str] | None, timeframe: str,
                    funding_csv: str | Path | None = None, settings: Settings | None = None) -> Inputs:
    """Features, labels and closes computed in-process from candle CSV files.

    ``csv``: a directory (files found by asset name, e.g. ``BTCUSDT_1d.csv``) or file(s); with files,
    ``assets`` (if given) names each file's symbol in order, else the file name does.
    """
    import pandas as pd

    s = settings
    if s is None:
        s = get_settings()
    paths: list[Path]
    syms: list[str | None]
    if isinstance(csv, str | Path) and Path(csv).is_dir():
        if not assets:
            raise BacktestError("--csv is a directory: name the asset(s) to read from it with --asset")
        paths = [csv_for(Path(csv), a, timeframe) for a in assets]
        syms = list(assets)
    else:
        paths = [Path(csv)] if isinstance(csv, str | Path) else [Path(p) for p in csv]
        if assets and len(assets) != len(paths):
            raise BacktestError(f"{len(paths)} CSV file(s) but {len(assets)} asset(s); give one asset per file")
        syms = list(assets) if assets else [None] * len(paths)
    labels = LabelParams.from_settings(s)
    frames, prices = [], []
    for p, sym in zip(paths, syms, strict=True):
        if not p.is_file():
            raise BacktestError(f"candle CSV {p} does not exist")
        candles = read_candle_csv(p)
        symbol = sym or symbol_from_name(p)
        feats = compute(candles.drop(columns=[c for c in ("exchange", "symbol", "timeframe") if c in candles.columns]),
                        timeframe=timeframe, exchange="csv", symbol=symbol, labels=labels)
        frames.append(feats)
        c = candles[["ts", "close"]].copy()
        c["ts"] = pd.to_datetime(c["ts"], utc=True)
        c.insert(0, "symbol", symbol)
        prices.append(c.drop_duplicates("ts", keep="last"))
    funding = None
    if funding_csv is not None:
        funding = load_funding_csv(funding_csv, str(syms[0] or symbol_from_name(paths[0])))
    return Inputs(pd.concat(frames, ignore_index=True), pd.concat(prices, ignore_index=True), funding, "csv",
                  "csv:" + ",".join(str(p) for p in paths))


# -- database ----------------------------------------------------------------------------------------
def load_db_inputs(conn: psycopg.Connection, *, assets: Sequence[str] | None, timeframe: str,
                   end: object, exchange: str | None = None, funding: bool = True,
                   settings: Settings | None = None) -> Inputs:
    """features.bars rows up to ``end`` (all history before it: expanding windows need it), closes up to
    one bar after ``end``, and the linear perpetual's funding rates when collected."""
    import pandas as pd

    s = settings
    if s is None:
        s = get_settings()
    ex = exchange or s.universe.exchange
    t_end = utc(end, what="end")
    frame = load_bars(conn, exchange=ex, symbols=list(assets) if assets else None, timeframe=timeframe, end=t_end)
    if frame.empty:
        raise BacktestError(f"features.bars has no rows for {list(assets) if assets else 'any asset'} on {ex} "
                            f"{timeframe} up to {t_end.date()}; run `entasis features build` first")
    if assets:
        missing = sorted(set(assets) - set(frame["symbol"].unique()))
        if missing:
            raise BacktestError(f"features.bars has no rows for {missing} on {ex} {timeframe}")
    syms = sorted(frame["symbol"].unique())
    step = pd.Timedelta(timeframe)
    with conn.cursor() as cur:
        cur.execute("SELECT symbol, ts, close FROM market.candles WHERE exchange = %s AND timeframe = %s "
                    "AND symbol = ANY(%s) AND ts <= %s ORDER BY symbol, ts",
                    (ex, timeframe, syms, (t_end + step).to_pydatetime()))
        prices = pd.DataFrame(cur.fetchall(), columns=["symbol", "ts", "close"])
    prices["ts"] = pd.to_datetime(prices["ts"], utc=True)
    prices["close"] = prices["close"].astype("float64")
    fund = None
    if funding:
        perps = {perp_of(x): x for x in syms}
        with conn.cursor() as cur:
            cur.execute("SELECT symbol, ts, funding_rate FROM market.funding_rates WHERE exchange = %s "
                        "AND symbol = ANY(%s) AND ts <= %s ORDER BY symbol, ts",
                    (s.universe.perp_exchange, list(perps), (t_end + step).to_pydatetime()))
            fund = pd.DataFrame(cur.fetchall(), columns=["symbol", "ts", "funding_rate"])
        if len(fund):
            fund["symbol"] = fund["symbol"].map(lambda x: perps.get(x, pair_of(x)))
            fund["ts"] = pd.to_datetime(fund["ts"], utc=True)
            fund["funding_rate"] = fund["funding_rate"].astype("float64")
        else:
            fund = None
    return Inputs(frame, prices if len(prices) else None, fund, ex, "db")


def blank_unknown_labels(frame: pd.DataFrame, known_by: object, timeframe: str) -> pd.DataFrame:
    """The rows as known at ``known_by``: rows of bars not closed by then (a bar opening at ``t``
    closes at ``t + timeframe``) are dropped, and every label whose outcome (the close of bar t + h)
    comes after ``known_by`` is NULLed.

    A backtest, training or promotion re-run for a past interval then sees exactly what was knowable at
    its end, whatever the database holds today: a daily bar that opened at 00:00 is not known at 02:00
    the same day, even when the database has it (and its features) by the time of the re-run.
    """
    import re

    import pandas as pd

    cut = utc(known_by, what="known_by")
    step = pd.Timedelta(timeframe)
    per_day = max(1, int(pd.Timedelta(days=1) / step))
    ts = pd.to_datetime(frame["ts"], utc=True)
    closed = (ts + step <= cut).to_numpy()
    out = frame.loc[closed].copy()
    ts = ts[closed]
    for col in frame.columns:
        m = re.fullmatch(r"y_(?:cls|ret|vol)_(\d+)d", str(col))
        if m:
            known_at = ts + step * (int(m.group(1)) * per_day + 1)
            out.loc[(known_at > cut).to_numpy(), col] = None
    return out


# -- the entry point ---------------------------------------------------------------------------------
def run_walk_forward(*, horizon: int, start: object, end: object, assets: Sequence[str] | None = None,
                     models: Sequence[ModelSpec] = DEFAULT_MODELS, timeframe: str = "1d",
                     exchange: str | None = None, frame: pd.DataFrame | None = None,
                     prices: pd.DataFrame | None = None, funding: pd.DataFrame | None = None,
                     csv: str | Path | Sequence[str | Path] | None = None, funding_csv: str | Path | None = None,
                     record: bool = True, report: bool = True, report_dir: str | Path | None = None,
                     log_mlflow: bool = True, settings: Settings | None = None,
                     progress: Progress | None = None, inputs: Inputs | None = None,
                     known_by: object | None = None, **options: Any) -> WalkForwardResult:
    """Run a walk-forward for one horizon and record it: what the backtest DAG task calls.

    Data: ``inputs`` (already loaded), else ``frame`` (+ ``prices`` / ``funding``), else ``csv``, else
    the database. ``options`` go to :func:`entasis.backtest.walkforward.walk_forward` (refit_days,
    window, trading=TradingConfig(...), leak_threshold, permutation_check, ...). With ``record`` the run
    is upserted into ml.backtest_runs / ml.backtest_metrics / ml.backtest_predictions; with ``report``
    the HTML report is written under ``reports_dir/backtest/<run_id>``; with ``log_mlflow`` and an
    active MLflow run, the pooled metrics and the report are logged to it. ``known_by`` (e.g. the DAG's
    data interval end) blanks labels not yet known then (:func:`blank_unknown_labels`), so a re-run of a
    past interval is reproducible.
    """
    if inputs is None:
        if frame is not None:
            sel = frame if not assets else frame[frame["symbol"].isin(list(assets))]
            if sel.empty:
                raise BacktestError(f"the frame has no rows for {list(assets or [])}")
            inputs = Inputs(sel, prices, funding, exchange, "frame")
        elif csv is not None:
            inputs = load_csv_inputs(csv, assets=assets, timeframe=timeframe, funding_csv=funding_csv,
                                     settings=settings)
        else:
            with connect(settings) as conn:
                inputs = load_db_inputs(conn, assets=assets, timeframe=timeframe, end=end, exchange=exchange,
                                        settings=settings)
    if known_by is not None:
        inputs = Inputs(blank_unknown_labels(inputs.frame, known_by, timeframe), inputs.prices, inputs.funding,
                        inputs.exchange, inputs.source)
    result = walk_forward(inputs.frame, horizon=horizon, start=start, end=end, models=models,
                          prices=inputs.prices, funding=inputs.funding, timeframe=timeframe, progress=progress,
                          **options)
    result.config["source"] = inputs.source
    report_path = None
    if report:
        report_path = write_report(result, report_dir)
        result.report_path = report_path
    mlflow_run = _log_mlflow(result) if log_mlflow else None
    if record:
        with connect(settings) as conn:
            record_backtest(conn, result, exchange=inputs.exchange,
                            report_path=str(report_path) if report_path else None, mlflow_run_id=mlflow_run)
    return result


def _log_mlflow(result: WalkForwardResult) -> str | None:
    """Log pooled metrics and the report to the active MLflow run, if there is one."""
    try:
        import mlflow
    except ImportError:  # pragma: no cover - mlflow is a dependency
        return None
    run = mlflow.active_run()
    if run is None:
        return None
    h = result.horizon
    flat: dict[str, float] = {}
    for m in [*result.models, *result.baselines]:
        met = result.metrics[m].get(POOLED, {})
        key = m.replace(":", "_")
        for k in ("accuracy", "balanced_accuracy", "log_loss", "brier", "ece", "f1_macro"):
            if k in met:
                flat[f"bt{h}d_{key}_{k}"] = float(met[k])
    for strat, per in result.trading.items():
        port = per.get("portfolio", {})
        for k in ("total_return", "sharpe", "max_drawdown"):
            if k in port and port[k] == port[k]:
                flat[f"bt{h}d_{strat.replace(':', '_')}_{k}"] = float(port[k])
    mlflow.log_metrics(flat)
    mlflow.set_tag(f"backtest_{h}d_run_id", result.run_id)
    if result.report_path is not None:
        mlflow.log_artifacts(str(Path(result.report_path).parent), artifact_path=f"backtest/{result.run_id}")
    return str(run.info.run_id)
