"""The whole chain through Airflow's dag.test() on a small simulated universe:
ingest -> features (Spark) -> train -> walk-forward -> promote -> publish -> reconcile -> monitor.

One module-scoped run (it is the expensive part); the tests then assert on what it left behind,
re-run DAG runs for the same interval to prove idempotence, and force the monitor's hand.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from entasis.demo import DemoPlan

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
HORIZONS = [7, 14, 30]

SMALL = DemoPlan(
    start=datetime(2022, 6, 1, tzinfo=UTC),
    train_at=datetime(2023, 10, 1, 2, 0, tzinfo=UTC),  # Sundays
    now=datetime(2023, 11, 26, 2, 0, tzinfo=UTC),
    step_days=28,
    symbols=SYMBOLS,
    perps=["BTC/USDT:USDT"],
    max_epochs=2,
    env={
        "ENTASIS_TRAIN__SEQ_LEN": "10",
        "ENTASIS_UNIVERSE__OPTION_CURRENCIES": json.dumps(["BTC"]),
        "ENTASIS_TRAIN__MEMBER_PARAMS": json.dumps({
            "lstm": {"hidden": [8, 8, 4], "batch_size": 64, "num_threads": 1},
            "rf": {"n_estimators": 30, "n_jobs": 1}, "xgb": {"n_estimators": 30, "n_jobs": 1},
            "lgbm": {"n_estimators": 30, "n_jobs": 1},
        }),
        "ENTASIS_BACKTEST__LOOKBACK_DAYS": "90",
        "ENTASIS_BACKTEST__REFIT_DAYS": "45",
        "ENTASIS_BACKTEST__MODELS": json.dumps(["lgbm"]),
        "ENTASIS_BACKTEST__PROMOTION_WINDOW_DAYS": "90",
        "ENTASIS_BACKTEST__PROMOTION_REFIT_DAYS": "45",
    },
)

TABLES = {
    "market.candles": ["exchange", "symbol", "timeframe", "ts"],
    "market.funding_rates": ["exchange", "symbol", "ts"],
    "market.open_interest": ["exchange", "symbol", "ts"],
    "market.option_quotes": ["exchange", "instrument", "snapshot_ts"],
    "market.ingest_state": ["source", "exchange", "symbol", "timeframe"],
    "market.gaps": ["source", "exchange", "symbol", "timeframe", "gap_start"],
    "market.quarantine": ["source", "exchange", "symbol", "timeframe", "ts", "reason"],
    "features.bars": ["exchange", "symbol", "timeframe", "ts"],
    "features.option_features": ["underlying", "snapshot_ts"],
    "ml.predictions": ["asset", "horizon", "as_of", "model_version"],
    "ml.champions": ["asset", "horizon"],
}


def checksums(url: str) -> dict[str, str]:
    from entasis.store.market import table_checksum

    with psycopg.connect(url) as conn:
        return {t: table_checksum(conn, t, keys) for t, keys in TABLES.items()}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, pg_server: str, _template: str) -> dict[str, Any]:
    """Run the small demo once through every DAG, in its own database."""
    import os

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from entasis.config import get_settings
    from entasis.demo import run_demo

    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS pipeline_it WITH (FORCE)")
        conn.execute(f'CREATE DATABASE pipeline_it TEMPLATE "{_template}"')
    info = conninfo_to_dict(pg_server)
    info["dbname"] = "pipeline_it"
    url = make_conninfo(**info)
    home = tmp_path_factory.mktemp("pipeline_home")
    saved = dict(os.environ)
    os.environ["ENTASIS_DATABASE_URL"] = url
    os.environ["ENTASIS_HOME"] = str(home)
    os.environ["ENTASIS_REPORTS_DIR"] = str(home / "reports")
    get_settings.cache_clear()
    lines: list[str] = []
    try:
        result = run_demo(home=home, plan=SMALL, say=lines.append)
        yield {"url": url, "home": home, "result": result, "log": lines}
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def test_every_dag_ran_successfully(pipeline: dict[str, Any]) -> None:
    runs = [ln for ln in pipeline["log"] if ln.strip().startswith("entasis_")
            and not ln.rstrip().endswith("(minutes)")]  # the demo announces the long train stage before it runs
    assert runs, pipeline["log"]
    assert all("success" in ln for ln in runs), runs
    for dag_id in ("entasis_ingest", "entasis_features", "entasis_train", "entasis_publish", "entasis_monitor"):
        assert any(ln.strip().startswith(dag_id) for ln in runs), dag_id


def test_rows_in_every_table(pipeline: dict[str, Any]) -> None:
    with psycopg.connect(pipeline["url"]) as conn:
        may_be_empty = {"market.gaps", "market.quarantine"}  # the simulated exchange serves clean, gapless data
        for table in [*(t for t in TABLES if t not in may_be_empty), "ml.backtest_runs", "ml.backtest_metrics",
                      "ml.promotion_decisions"]:
            n = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            assert n > 0, f"{table} is empty"
        # daily candles for every symbol up to the last closed day before the final ingest
        last = conn.execute(
            # spot candles (ingest also stores the perpetuals' candles, under the perp exchange)
            "SELECT symbol, max(ts) FROM market.candles WHERE timeframe='1d' AND exchange = 'binance' "
            "GROUP BY symbol ORDER BY 1"
        ).fetchall()
    assert [r[0] for r in last] == sorted(SYMBOLS)
    assert all(r[1] == SMALL.now.replace(hour=0) - timedelta(days=1) for r in last), last


def test_one_well_formed_prediction_per_asset_and_horizon(pipeline: dict[str, Any]) -> None:
    with psycopg.connect(pipeline["url"]) as conn:
        latest = conn.execute("SELECT max(as_of) FROM ml.predictions").fetchone()[0]
        rows = conn.execute(
            """SELECT asset, horizon, predicted_class, p_bearish, p_neutral, p_bullish, confidence,
                      confidence_level, target_date, factors, model_version, run_id
               FROM ml.predictions WHERE as_of = %s ORDER BY asset, horizon""",
            (latest,),
        ).fetchall()
    assert latest == SMALL.now.replace(hour=0)  # the daily bar that closed last before the publish run
    assert [(r[0], r[1]) for r in rows] == [(s, h) for s in sorted(SYMBOLS) for h in HORIZONS]
    for (_, h, cls, pb, pn, pu, conf, level, target, factors, version, run_id) in rows:
        probs = [pb, pn, pu]
        assert sum(probs) == pytest.approx(1.0, abs=1e-9)
        assert cls == max(range(3), key=lambda i: probs[i])
        assert conf == pytest.approx(100 * max(probs))
        assert level == ("high" if conf >= 70 else "medium" if conf >= 50 else "low")
        assert target == latest + timedelta(days=h)
        assert isinstance(factors, list) and factors and {"feature", "value", "contribution"} <= set(factors[0])
        assert version and run_id


def test_outcomes_reconciled(pipeline: dict[str, Any]) -> None:
    with psycopg.connect(pipeline["url"]) as conn:
        done = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE correct = (predicted_class = actual_class)) "
            "FROM ml.predictions WHERE correct IS NOT NULL"
        ).fetchone()
        pending_past = conn.execute(
            "SELECT count(*) FROM ml.predictions WHERE correct IS NULL AND target_date <= %s",
            (SMALL.now - timedelta(days=SMALL.step_days + 1),),
        ).fetchone()[0]
    assert done[0] > 0 and done[0] == done[1]
    assert pending_past == 0


def test_first_champion_marked_unproven_and_status_view(pipeline: dict[str, Any]) -> None:
    with psycopg.connect(pipeline["url"]) as conn:
        first = conn.execute(
            "SELECT action, reason FROM ml.promotion_decisions WHERE action IN ('promote', 'keep') "
            "ORDER BY decided_at, model_name LIMIT 1"
        ).fetchone()
        status = conn.execute("SELECT count(*) FROM ml.model_status").fetchone()[0]
    assert first[0] == "promote"
    assert "unproven" in first[1].lower() or "first" in first[1].lower()
    assert status >= len(HORIZONS)
    # the report is stored as an artifact URI (the local MLflow store here; s3:// in production), never a
    # worker path, and that is what ml.backtest_runs holds
    report = pipeline["result"]["report"]
    assert report and report.startswith("file://") and report.endswith("/report.html"), report
    from urllib.parse import unquote, urlparse

    assert Path(unquote(urlparse(report).path)).exists()
    with psycopg.connect(pipeline["url"]) as conn:
        paths = [r[0] for r in conn.execute("SELECT report_path FROM ml.backtest_runs WHERE report_path IS NOT NULL")]
    assert paths and all(p.startswith("file://") for p in paths), paths


def test_rerunning_a_dag_run_changes_nothing(pipeline: dict[str, Any]) -> None:
    from entasis.demo import load_dags

    before = checksums(pipeline["url"])
    dags = load_dags()
    ingest_at = SMALL.now.replace(minute=5) - timedelta(hours=1)
    import os

    from entasis.config import get_settings
    from entasis.sim.exchange import start_server
    from entasis.sim.market import MarketSim

    market = MarketSim(seed=SMALL.seed, symbols=SMALL.symbols + SMALL.perps, start=SMALL.start,
                       end=SMALL.now + timedelta(days=1), now=ingest_at)
    with start_server(market=market, option_currencies=("BTC",)) as server:
        os.environ["ENTASIS_SIM_URL"] = server.url
        get_settings.cache_clear()
        for dag_id, at in (("entasis_ingest", ingest_at), ("entasis_features", SMALL.now),
                           ("entasis_publish", SMALL.now)):
            dr = dags[dag_id].test(logical_date=at)
            assert "success" in str(dr.state)
            if dag_id == "entasis_ingest":  # nothing new: no CANDLES event, so no Spark run is started
                gate = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}["announce_candles"]
                assert "skipped" in gate, gate
    assert checksums(pipeline["url"]) == before


def test_monitor_triggers_retrain_when_accuracy_is_forced_down(pipeline: dict[str, Any],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from entasis import jobs
    from entasis.config import get_settings

    with psycopg.connect(pipeline["url"]) as conn:
        n = conn.execute("UPDATE ml.predictions SET correct = false WHERE correct IS NOT NULL").rowcount
    assert n > 0
    monkeypatch.setenv("ENTASIS_MONITOR__MIN_RECONCILED", "1")
    monkeypatch.setenv("ENTASIS_MONITOR__LIVE_WINDOW_DAYS", "120")
    get_settings.cache_clear()
    report = jobs.monitor(now=SMALL.now)
    assert report["retrain"] is True
    assert any("live accuracy" in r for r in report["reasons"])
