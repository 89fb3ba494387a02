"""The offline demo of the whole pipeline, run through Airflow itself.

Starts the embedded PostgreSQL server and the simulated exchange, then walks simulated time
forward and runs the real DAGs with ``dag.test()`` at each step, as the scheduler would:

1. at ``train_at`` (a Sunday): ingest (backfilling history) -> features -> train + walk-forward +
   promotion (the first model per horizon becomes champion, marked unproven) -> publish;
2. every ``step_days`` until ``now``: ingest -> features -> publish -> reconcile -> monitor, so
   earlier predictions meet their outcomes;
3. at ``now`` (again a Sunday): retrain, where the challenger must beat the champion and the
   baselines, then publish.

It ends by printing the predictions, ``ml.model_status`` and the path of the backtest report.
Everything is idempotent: running it again finds the data, models and predictions in place and
adds nothing twice (new model versions are registered, as a weekly retrain would).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from entasis.config import get_settings
from entasis.sim.exchange import start_server
from entasis.sim.market import MarketSim
from entasis.store.db import connect, database_url, ensure_schema

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parent.parent

DEMO_SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT"]
DEMO_PERPS = ["BTC/USDT:USDT", "ETH/USDT:USDT"]


@dataclass
class DemoPlan:
    start: datetime = datetime(2021, 1, 1, tzinfo=UTC)
    train_at: datetime = datetime(2024, 4, 28, 2, 0, tzinfo=UTC)  # a Sunday, 02:00 UTC
    now: datetime = datetime(2024, 6, 30, 2, 0, tzinfo=UTC)  # a Sunday, 02:00 UTC
    step_days: int = 21
    symbols: list[str] = field(default_factory=lambda: list(DEMO_SYMBOLS))
    perps: list[str] = field(default_factory=lambda: list(DEMO_PERPS))
    seed: int = 7
    max_epochs: int = 5
    # extra ENTASIS_* settings for this run (tests use a smaller universe and models)
    env: dict[str, str] = field(default_factory=dict)


@contextmanager
def log_to_file(path: Path) -> Iterator[TextIO]:
    """Send everything the process and its children write (Airflow task logs, Spark, warnings) to ``path``.

    Yields a stream on the original stdout for the demo's own progress lines. Works on the file
    descriptors, so the Spark JVM and other child processes are captured too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    out = os.fdopen(os.dup(saved_out), "w", buffering=1)
    with open(path, "w", buffering=1) as log_file:  # noqa: PTH123
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
        root = logging.getLogger()
        handlers = list(root.handlers)
        try:
            yield out
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            root.handlers = handlers
            out.flush()
            out.close()


def configure_env(home: Path, plan: DemoPlan) -> None:
    """Settings for this process (dag.test runs tasks in-process): the demo universe, quick training."""
    import json

    env = {
        "ENTASIS_HOME": str(home),
        "ENTASIS_UNIVERSE__SYMBOLS": json.dumps(plan.symbols),
        "ENTASIS_UNIVERSE__PERP_SYMBOLS": json.dumps(plan.perps),
        "ENTASIS_UNIVERSE__TIMEFRAMES": json.dumps(["1d"]),
        "ENTASIS_UNIVERSE__BACKFILL_SINCE": plan.start.date().isoformat(),
        # a reduced LSTM and walk-forward so the demo finishes in minutes on 2 cores; production
        # defaults follow the specification (128-64-32 LSTM, 90-bar windows, up to 100 epochs)
        "ENTASIS_TRAIN__MAX_EPOCHS": str(plan.max_epochs),
        "ENTASIS_TRAIN__SEQ_LEN": "30",
        "ENTASIS_TRAIN__MEMBER_PARAMS": json.dumps({
            "lstm": {"hidden": [32, 16, 8], "batch_size": 64, "patience": 3, "num_threads": 1},
            "rf": {"n_estimators": 150}, "xgb": {"n_estimators": 150}, "lgbm": {"n_estimators": 150},
        }),
        "ENTASIS_BACKTEST__LOOKBACK_DAYS": "180",
        "ENTASIS_BACKTEST__REFIT_DAYS": "45",
        "ENTASIS_BACKTEST__MODELS": json.dumps(["lgbm"]),
        "ENTASIS_BACKTEST__PROMOTION_WINDOW_DAYS": "90",
        "ENTASIS_BACKTEST__PROMOTION_REFIT_DAYS": "90",
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONFIG": str(REPO / "airflow.cfg"),
    }
    env.update(plan.env)
    for k, v in env.items():
        if k in plan.env or k.startswith("ENTASIS_"):
            os.environ[k] = v  # the demo's universe and model sizes win over the caller's environment
        else:
            os.environ.setdefault(k, v)
    if str(REPO / "plugins") not in sys.path:
        sys.path.insert(0, str(REPO / "plugins"))

    get_settings.cache_clear()


def init_airflow_db(home: Path) -> None:
    marker = home / "airflow" / ".migrated"
    if marker.exists():
        return
    (home / "airflow").mkdir(parents=True, exist_ok=True)
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True,
                   stdout=subprocess.DEVNULL, env=os.environ.copy())
    marker.touch()


def load_dags() -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"), safe_mode=False)
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    return dict(bag.dags)


def _run(dags: dict[str, Any], dag_id: str, logical_date: datetime, say: Any) -> None:
    t0 = time.perf_counter()
    if dag_id == "entasis_train":  # the one long stage: say so before it starts
        say(f"  {dag_id:<18} {logical_date:%Y-%m-%d %H:%M}  train, walk-forward, promote (minutes)")
    dr = dags[dag_id].test(logical_date=logical_date)
    state = str(getattr(dr, "state", "?")).removeprefix("DagRunState.").lower()
    say(f"  {dag_id:<18} {logical_date:%Y-%m-%d %H:%M}  {state:<8} {time.perf_counter() - t0:6.1f}s")
    if "success" not in state:
        raise RuntimeError(f"{dag_id} run at {logical_date} ended {state}; see the task logs above")


def run_demo(home: Path | None = None, plan: DemoPlan | None = None, say: Any = print) -> dict[str, Any]:
    """Run the demo; returns what it printed as data (predictions, status, report path)."""
    plan = plan or DemoPlan()
    home = (home or Path(os.environ.get("ENTASIS_HOME", ".entasis"))).resolve()
    configure_env(home, plan)

    t_all = time.perf_counter()
    url = database_url()
    ensure_schema(url)
    say(f"store: PostgreSQL ready ({'external' if os.environ.get('ENTASIS_DATABASE_URL') else 'embedded'})")
    market = MarketSim(seed=plan.seed, symbols=plan.symbols + plan.perps, start=plan.start,
                       end=plan.now + timedelta(days=1), now=plan.train_at)
    server = start_server(market=market)
    os.environ["ENTASIS_SIM_URL"] = server.url

    get_settings.cache_clear()
    say(f"simulated exchange: {server.url} (seed {plan.seed})")
    try:
        init_airflow_db(home)
        dags = load_dags()
        say(f"airflow: {len(dags)} DAGs loaded from dags/")

        def cycle(at: datetime, *, train: bool) -> None:
            # the hourly ingest run whose data interval ends at xx:05 just before ``at``; the exchange's
            # clock stands at that interval end, as a live exchange's would when the run starts
            ingest_at = at.replace(minute=5) - timedelta(hours=1) if at.minute < 5 else at.replace(minute=5)
            market.now = ingest_at
            say(f"-- simulated time {at:%Y-%m-%d %H:%M} UTC")
            _run(dags, "entasis_ingest", ingest_at, say)
            _run(dags, "entasis_features", at, say)
            if train:
                _run(dags, "entasis_train", at, say)
            _run(dags, "entasis_publish", at, say)
            _run(dags, "entasis_monitor", at, say)

        cycle(plan.train_at, train=True)
        at = plan.train_at + timedelta(days=plan.step_days)
        while at < plan.now:
            cycle(at, train=False)
            at += timedelta(days=plan.step_days)
        cycle(plan.now, train=True)
    finally:
        server.stop()
    result = summary(plan.now)
    say(f"demo finished in {time.perf_counter() - t_all:.0f}s")
    return result


def summary(now: datetime) -> dict[str, Any]:
    """The predictions table, model status and report path, as the demo prints them."""
    with connect() as conn:
        preds = conn.execute(
            """SELECT asset, horizon, as_of, model_version, predicted_class, round(p_bearish::numeric, 3),
                      round(p_neutral::numeric, 3), round(p_bullish::numeric, 3), round(confidence::numeric, 1),
                      confidence_level, target_date, actual_class, correct
               FROM ml.predictions ORDER BY as_of DESC, asset, horizon LIMIT 40"""
        ).fetchall()
        status_cols = ["asset", "horizon", "model_name", "champion_version", "unproven", "test_accuracy",
                       "best_baseline", "best_baseline_accuracy", "live_accuracy_30d", "live_reconciled_30d",
                       "n_predictions", "last_as_of"]
        status = conn.execute(
            f"SELECT {', '.join(status_cols)} FROM ml.model_status ORDER BY 1, 2"  # fixed column list
        ).fetchall()
        report = conn.execute(
            "SELECT report_path FROM ml.backtest_runs WHERE report_path IS NOT NULL ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
    return {"predictions": preds, "status": status, "status_columns": status_cols,
            "report": report[0] if report else None}
