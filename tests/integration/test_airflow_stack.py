"""Airflow as deployed: PostgreSQL metadata, LocalExecutor, api-server + scheduler + dag-processor +
triggerer as separate processes (the stack ``make airflow`` starts), a run of ``entasis_ingest``
triggered through the REST API (/api/v2, token from the simple auth manager), rows checked in the store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from entasis.deploy.airflow_stack import AirflowStack, StackError, free_port, metadata_url, sqlalchemy_url
from entasis.sim.exchange import start_server
from entasis.sim.market import MarketSim

INTERVAL_START = datetime(2024, 3, 1, 0, 5, tzinfo=UTC)
INTERVAL_END = INTERVAL_START + timedelta(hours=1)
BACKFILL = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def stack(db_url: str, pg_server: str, tmp_path: Path) -> Iterator[AirflowStack]:
    import uuid

    from psycopg.conninfo import make_conninfo

    market = MarketSim(seed=3, symbols=["BTC/USDT", "BTC/USDT:USDT"], start=BACKFILL,
                       end=INTERVAL_END + timedelta(days=2), now=INTERVAL_END)
    meta_db = f"airflow_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{meta_db}"')
    meta = sqlalchemy_url(make_conninfo(pg_server, dbname=meta_db))
    with start_server(market=market, option_currencies=("BTC",)) as sim:
        st = AirflowStack(home=tmp_path / "airflow", store_url=db_url, port=free_port(), extra_env={
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta,
            # only the run the test triggers: no scheduled runs for the wall-clock interval
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "ENTASIS_SIM_URL": sim.url,
            "ENTASIS_UNIVERSE__SYMBOLS": json.dumps(["BTC/USDT"]),
            "ENTASIS_UNIVERSE__TIMEFRAMES": json.dumps(["1d"]),
            "ENTASIS_UNIVERSE__PERP_SYMBOLS": json.dumps(["BTC/USDT:USDT"]),
            "ENTASIS_UNIVERSE__OPTION_CURRENCIES": json.dumps(["BTC"]),
            "ENTASIS_UNIVERSE__BACKFILL_SINCE": BACKFILL.date().isoformat(),
        })
        st.start(timeout=240)
        try:
            yield st
        finally:
            st.stop()
            with psycopg.connect(pg_server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{meta_db}" WITH (FORCE)')


def _api(stack: AirflowStack, token: str, method: str, path: str, **kw: Any) -> Any:
    r = requests.request(method, f"{stack.url}/api/v2{path}", headers={"Authorization": f"Bearer {token}"},
                         timeout=30, **kw)
    assert r.ok, f"{method} {path}: HTTP {r.status_code} {r.text[:500]}"
    return r.json()


def test_rest_triggered_ingest_run_writes_rows(stack: AirflowStack, db_url: str) -> None:
    # the metadata really is in PostgreSQL and the executor is the LocalExecutor
    env = stack.env()
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert set(stack.procs) == {"api-server", "scheduler", "dag-processor", "triggerer"}
    assert all(p.poll() is None for p in stack.procs.values())

    # no token, no API; a wrong password gets no token
    assert requests.get(f"{stack.url}/api/v2/dags", timeout=30).status_code == 401
    bad = requests.post(f"{stack.url}/auth/token", json={"username": "admin", "password": "wrong"}, timeout=30)
    assert bad.status_code == 401
    token = stack.token()

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # the dag processor parses dags/ after it starts
        r = requests.get(f"{stack.url}/api/v2/dags/entasis_ingest", headers={"Authorization": f"Bearer {token}"},
                         timeout=30)
        if r.ok:
            break
        time.sleep(2)
    assert r.ok, r.text
    _api(stack, token, "PATCH", "/dags/entasis_ingest", json={"is_paused": False})
    run = _api(stack, token, "POST", "/dags/entasis_ingest/dagRuns", json={
        "logical_date": INTERVAL_START.isoformat(), "data_interval_start": INTERVAL_START.isoformat(),
        "data_interval_end": INTERVAL_END.isoformat(), "conf": {},
    })
    run_id = run["dag_run_id"]
    state = run["state"]
    deadline = time.monotonic() + 240
    while state not in ("success", "failed") and time.monotonic() < deadline:
        time.sleep(3)
        state = _api(stack, token, "GET", f"/dags/entasis_ingest/dagRuns/{run_id}")["state"]
    tis = _api(stack, token, "GET", f"/dags/entasis_ingest/dagRuns/{run_id}/taskInstances")["task_instances"]
    assert state == "success", {t["task_id"]: t["state"] for t in tis}
    assert {t["task_id"]: t["state"] for t in tis} == {
        "candles": "success", "announce_candles": "success", "funding": "success", "open_interest": "success",
        "options": "success"}
    # new candles were stored, so the run emitted the CANDLES asset event (from its gate task only)
    events = _api(stack, token, "GET", "/assets/events",
                  params={"source_dag_id": "entasis_ingest", "source_run_id": run_id})["asset_events"]
    candle_events = [e for e in events if e["uri"] == "entasis://market/candles"]
    assert [e["source_task_id"] for e in candle_events] == ["announce_candles"]

    with psycopg.connect(db_url) as conn:
        n, first, last = conn.execute(  # type: ignore[misc]
            "SELECT count(*), min(ts), max(ts) FROM market.candles "
            "WHERE exchange = 'binance' AND symbol = 'BTC/USDT' AND timeframe = '1d'").fetchone()
        funding = conn.execute("SELECT count(*), max(ts) FROM market.funding_rates").fetchone() or (0, None)
        quotes = conn.execute("SELECT count(*), max(snapshot_ts) FROM market.option_quotes").fetchone() or (0, None)
        watermark = conn.execute(
            "SELECT last_run FROM market.ingest_state WHERE source = 'candles' AND symbol = 'BTC/USDT'").fetchone()
    # every closed daily bar from the backfill start to the interval end, and nothing after it
    assert first == BACKFILL
    assert last == datetime(2024, 2, 29, tzinfo=UTC)
    assert n == (last - first).days + 1
    assert funding[0] > 0 and funding[1] <= INTERVAL_END
    assert quotes[0] > 0 and quotes[1] <= INTERVAL_END
    assert watermark is not None and watermark[0] == INTERVAL_END


def test_metadata_url_prefers_the_override_and_names_a_failure(monkeypatch: pytest.MonkeyPatch,
                                                               pg_server: str) -> None:
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg2://u:p@db:5432/meta")
    assert metadata_url("postgresql://nobody@127.0.0.1:1/x") == "postgresql+psycopg2://u:p@db:5432/meta"
    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    with pytest.raises(StackError, match="AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        metadata_url("postgresql://nobody@127.0.0.1:1/x")
    # by default: a separate 'airflow' database on the store's own server, created when missing
    from psycopg.conninfo import make_conninfo

    store = make_conninfo(pg_server, dbname="entasis_store_x")
    url = metadata_url(store, database="airflow_default_it")
    assert url.endswith("/airflow_default_it") and url.startswith("postgresql+psycopg2://")
    with psycopg.connect(pg_server, autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = 'airflow_default_it'").fetchone()
        conn.execute('DROP DATABASE "airflow_default_it"')
    assert sqlalchemy_url("postgresql://a%40b:p%2Fw@h:5/d") == "postgresql+psycopg2://a%40b:p%2Fw@h:5/d"
