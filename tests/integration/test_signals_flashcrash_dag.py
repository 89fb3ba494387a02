"""The flash-crash DAG end to end: simulated exchange with injected crashes -> real ccxt -> PostgreSQL
-> detector, through Airflow's dag.test(), one 5-minute interval after another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
WINDOW_START = datetime(2023, 3, 2, 10, 15, tzinfo=UTC)
WINDOW_END = datetime(2023, 3, 2, 10, 40, tzinfo=UTC)
RERUN = datetime(2023, 3, 2, 10, 35, tzinfo=UTC)


def _airflow_ready() -> None:
    os.environ.setdefault("AIRFLOW_CONFIG", str(REPO / "airflow.cfg"))
    if str(REPO / "plugins") not in sys.path:
        sys.path.insert(0, str(REPO / "plugins"))
    home = Path(os.environ["AIRFLOW_HOME"])
    marker = home / ".entasis_migrated"
    if not marker.exists():
        home.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True,
                       stdout=subprocess.DEVNULL, env=os.environ.copy())
        marker.touch()


@pytest.fixture
def flash_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    from entasis.config import get_settings
    from entasis.sim.exchange import start_server
    from entasis.sim.market import MarketSim

    market = MarketSim(seed=5, symbols=SYMBOLS, start="2023-02-28", end="2023-03-03", now=WINDOW_START)
    crashes = [
        market.inject_flash_crash("ETH/USDT", "2023-03-02T10:16Z", depth=0.22, fall_minutes=2),
        # falls from 10:23 to the close of 10:26: straddles the (10:20, 10:25] and (10:25, 10:30] runs
        market.inject_flash_crash("SOL/USDT", "2023-03-02T10:23Z", depth=0.3, fall_minutes=4),
        market.inject_flash_crash("BTC/USDT", "2023-03-02T10:29Z", depth=0.18, fall_minutes=1, volume_mult=8.0),
    ]
    server = start_server(market=market)
    monkeypatch.setenv("ENTASIS_SIM_URL", server.url)
    monkeypatch.setenv("ENTASIS_SIGNALS__SYMBOLS", json.dumps(SYMBOLS))
    monkeypatch.setenv("ENTASIS_UNIVERSE__SYMBOLS", json.dumps(SYMBOLS))
    monkeypatch.setenv("ENTASIS_SIGNALS__FLASH_CRASH__RECOVERY_MINUTES", "5")  # events final sooner: fewer runs
    get_settings.cache_clear()
    try:
        yield {"market": market, "crashes": crashes, "url": db_url}
    finally:
        server.stop()
        get_settings.cache_clear()


def _run(dag: Any, market: Any, end: datetime) -> Any:
    market.now = end  # the exchange's clock stands at the interval end, as a live venue's would
    dr = dag.test(logical_date=end)
    assert "success" in str(dr.state), f"run ending {end}: {dr.state}"
    return dr


def test_dag_detects_injected_crashes_once_and_nothing_else(flash_env: dict[str, Any]) -> None:
    _airflow_ready()
    from airflow.dag_processing.dagbag import DagBag

    from entasis.store.market import table_checksum

    bag = DagBag(dag_folder=str(REPO / "dags" / "entasis_flashcrash.py"), safe_mode=False)
    assert bag.import_errors == {}
    dag = bag.dags["entasis_flashcrash"]
    market = flash_env["market"]
    ends = []
    t = WINDOW_START + timedelta(minutes=5)
    while t <= WINDOW_END:
        ends.append(t)
        t += timedelta(minutes=5)
    first = _run(dag, market, ends[0])
    # CronDataIntervalTimetable: the run at T covers (T - 5 min, T]
    assert first.data_interval_end == ends[0] and first.data_interval_start == ends[0] - timedelta(minutes=5)
    for end in ends[1:]:
        _run(dag, market, end)
    with psycopg.connect(flash_env["url"]) as conn:
        sums = {t: table_checksum(conn, t, ["exchange", "symbol", "start_ts"])
                for t in ("signals.flash_crash_events", "signals.flash_crash_alerts")}
    with psycopg.connect(flash_env["url"]) as conn:
        events = conn.execute(
            "SELECT symbol, start_ts, trough_ts, depth, volume_ratio, final_at, reported_in "
            "FROM signals.flash_crash_events ORDER BY start_ts").fetchall()
        alerts = conn.execute(
            "SELECT symbol, start_ts, detected_at, raised_in FROM signals.flash_crash_alerts ORDER BY start_ts"
        ).fetchall()
        n_1m = conn.execute("SELECT count(*) FROM market.candles WHERE timeframe = '1m'").fetchone()[0]
    assert n_1m > 3 * 60  # the 1-minute candles were collected through ccxt
    crashes = flash_env["crashes"]
    assert [e[0] for e in events] == [c.asset for c in crashes]  # each once, no false alarm
    assert [a[0] for a in alerts] == [c.asset for c in crashes]
    for c, e, a in zip(crashes, events, alerts, strict=True):
        start = datetime.fromtimestamp(c.start / 1000, tz=UTC)
        assert e[1] == start and a[1] == start
        assert abs(e[3] - c.depth) < 0.01, (e, c)
        assert e[4] >= 2.5
        assert e[6] - timedelta(minutes=5) < e[5] <= e[6]  # reported by the run whose interval holds final_at
        assert a[3] - timedelta(minutes=5) < a[2] <= a[3]
    # the straddling SOL crash: one alert when it first met the rule, the final depth from the later data
    sol = next(e for e in events if e[0] == "SOL/USDT")
    assert sol[2] >= datetime(2023, 3, 2, 10, 25, tzinfo=UTC)
    sol_alert = next(a for a in alerts if a[0] == "SOL/USDT")
    assert sol_alert[3] == datetime(2023, 3, 2, 10, 25, tzinfo=UTC)  # alerted before it was complete
    # re-running an interval that reported an event leaves both tables byte-identical
    _run(dag, market, RERUN)
    with psycopg.connect(flash_env["url"]) as conn:
        again = {t: table_checksum(conn, t, ["exchange", "symbol", "start_ts"]) for t in sums}
    assert again == sums


def test_recent_events_for_the_api(flash_env: dict[str, Any]) -> None:
    """What /metrics reads: alerts newest first, with final figures once the event is final."""
    from entasis.signals.jobs import detect_flash_crashes
    from entasis.signals.store import flash_crash_counts, recent_flash_crash_events
    from entasis.store.db import connect

    market = flash_env["market"]
    end = datetime(2023, 3, 2, 10, 20, tzinfo=UTC)
    market.now = end
    out = detect_flash_crashes(interval_start=end - timedelta(minutes=5), interval_end=end)
    assert out["alerts"] and not out["final_events"]
    with connect() as conn:
        recent = recent_flash_crash_events(conn)
        assert [(r["symbol"], r["final"]) for r in recent] == [("ETH/USDT", False)]
        assert flash_crash_counts(conn) == {("binance", "ETH/USDT"): 1}
        with pytest.raises(ValueError, match="limit"):
            recent_flash_crash_events(conn, limit=0)
    with pytest.raises(ValueError, match="interval_start"):
        detect_flash_crashes(interval_start=None, interval_end=end)
