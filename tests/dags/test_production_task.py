"""A real task run (Airflow's dag.test) with ENTASIS_DEPLOYMENT=production and no database configured
fails at once, without retries, with a message naming the missing setting; nothing local is started."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_ingest_task_fails_at_once_without_a_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from entasis.config import get_settings

    home = Path(os.environ["AIRFLOW_HOME"])  # the session's temp AIRFLOW_HOME (tests/conftest.py)
    if not (home / ".migrated").exists():
        subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True,
                       capture_output=True, env=os.environ.copy(), timeout=300)
        (home / ".migrated").touch()
    monkeypatch.syspath_prepend(str(REPO / "plugins"))
    monkeypatch.setenv("ENTASIS_DEPLOYMENT", "production")
    monkeypatch.setenv("ENTASIS_HOME", str(tmp_path / "worker"))
    for k in ("ENTASIS_DATABASE_URL", "AIRFLOW_CONN_ENTASIS_DB"):
        monkeypatch.delenv(k, raising=False)
    get_settings.cache_clear()
    dag = DagBag(dag_folder=str(REPO / "dags" / "entasis_ingest.py"), safe_mode=False).dags["entasis_ingest"]
    dr = dag.test(logical_date=dt.datetime(2024, 3, 1, 0, 5, tzinfo=dt.UTC))
    out = "".join(capfd.readouterr())  # task logs go to the process's stdout/stderr
    assert "failed" in str(dr.state)
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    for tid in ("candles", "funding", "open_interest", "options"):
        assert "failed" in str(tis[tid].state), (tid, tis[tid].state)
        assert tis[tid].try_number == 1  # AirflowFailException: a configuration error is not retried
    assert "no database: set ENTASIS_DATABASE_URL or the Airflow connection 'entasis_db'" in out
    assert not (tmp_path / "worker").exists()  # no embedded PostgreSQL was started
    get_settings.cache_clear()
