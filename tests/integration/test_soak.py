"""The 1-day soak in CI: the hourly chain through dag.test() with faults on 10% of requests, two
database restarts and a SIGKILLed task, then fault-free; every table must end identical. The same
run plants a recognisable secret as the database password and the exchange API secret, and no
table, log line or file the run wrote may contain it.

The soak runs as ``entasis soak`` in its own process, as a user runs it, so that every line it
prints (Airflow's task logs included) lands in one file that the secret check reads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg
import pytest

SECRET = "Pl4nted-Soak-Secret-7f3a"


@pytest.fixture(scope="module")
def soak() -> Any:
    # not under pytest's basetemp: its 0700 parents keep the unprivileged PostgreSQL user out
    home = Path(tempfile.mkdtemp(prefix="entasis_soak_"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENTASIS_", "AIRFLOW"))}
    env.update({"ENTASIS_HOME": str(home / "entasis"), "AIRFLOW_HOME": str(home / "airflow"),
                "SOAK_TEST_SECRET": SECRET})
    out = home / "run-output.log"
    with open(out, "wb") as fh:
        proc = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
            [str(Path(sys.executable).parent / "entasis"), "soak", "--days", "1", "--fault-rate", "0.1",
             "--seed", "17", "--home", str(home / "soak"), "--json", str(home / "report.json"),
             "--plant-secret-env", "SOAK_TEST_SECRET"],
            env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=3000, check=False,
        )
    output = out.read_text(errors="replace")
    out.unlink()  # the file greps below cover what the run wrote, not this capture
    report = json.loads((home / "report.json").read_text()) if (home / "report.json").exists() else None
    yield {"rc": proc.returncode, "report": report, "home": home, "output": output}
    from entasis.store import embedded

    embedded.stop(home / "soak" / "pg")
    shutil.rmtree(home, ignore_errors=True)


def test_faulty_and_clean_runs_end_identical(soak: Any) -> None:
    r = soak["report"]
    assert r is not None, soak["output"][-5000:]
    assert r["diff"] == [], r
    assert r["ok"] is True and soak["rc"] == 0
    assert len(r["tables"]) >= 10
    for t in ("market.candles", "market.funding_rates", "market.open_interest", "market.option_quotes",
              "features.bars", "ml.predictions"):
        assert t in r["tables"] and r["tables"][t]["equal"], t
    assert r["tables"]["market.candles"]["rows_faulty"] > 0 and r["tables"]["ml.predictions"]["rows_faulty"] > 0


def test_the_faulty_run_really_was_faulty(soak: Any) -> None:
    f, c = soak["report"]["faulty"], soak["report"]["clean"]
    assert f["intervals"] == c["intervals"] == 24
    assert sum(f["faults"].values()) > 0.05 * f["requests"]
    assert {"429", "500", "503", "slow", "drop", "garbled", "malformed"} <= set(f["faults"])
    assert f["client_retries"] > 0
    assert len(f["db_restarts"]) == 2
    assert any("a task connected" in r for r in f["db_restarts"]), f["db_restarts"]  # one cut a task mid-flight
    assert len(f["kills"]) == 1 and "SIGKILLed" in f["kills"][0], f["kills"]
    assert f["tasks_retried"] >= 1  # the restarts cut running tasks, which Airflow retries
    assert c["faults"] == {} and not c["db_restarts"] and not c["kills"]


def _tables(conn: psycopg.Connection) -> list[tuple[str, str]]:
    return [(str(a), str(b)) for a, b in conn.execute(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
        "AND table_schema NOT IN ('pg_catalog', 'information_schema')").fetchall()]


def test_planted_secret_is_in_no_table_log_or_file(soak: Any) -> None:
    from psycopg import sql

    from entasis.store import embedded

    home: Path = soak["home"]
    server = embedded.ensure_running(home / "soak" / "pg", preferred_port=0)
    try:
        with psycopg.connect(server.admin_url) as conn:
            dbs = [str(r[0]) for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'soak%'").fetchall()]
        assert len(dbs) == 3
        found = []
        for db in dbs:
            with psycopg.connect(server.url.rsplit("/", 1)[0] + "/" + db) as conn:
                tables = _tables(conn)
                assert len(tables) > 20
                for schema, name in tables:
                    n = conn.execute(sql.SQL("SELECT count(*) FROM {} t WHERE t::text LIKE %s").format(
                        sql.Identifier(schema, name)), (f"%{SECRET}%",)).fetchone()[0]
                    if n:
                        found.append(f"{db}.{schema}.{name}: {n} row(s)")
    finally:
        embedded.stop(home / "soak" / "pg")
    assert found == []
    # every file the run wrote: Airflow's metadata DB (XComs, rendered fields) and logs, MLflow's
    # stores and artifacts, reports, the database server's log
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".mlflow.db") for p in files)
    assert any(p.suffix == ".db" and "airflow" in str(p) for p in files)
    leaked = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert leaked == []
    # every line the run printed: task logs (dag.test runs tasks in-process), client retry warnings
    out = soak["output"]
    assert len(out) > 100_000 and "[DAG TEST] running task" in out and "; retry " in out
    assert SECRET not in out
