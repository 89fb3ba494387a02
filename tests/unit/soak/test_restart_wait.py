"""The soak's database restart says whether it really cut a connected task (real PostgreSQL)."""

from __future__ import annotations

import psycopg

from entasis.soak.runner import wait_for_client


def test_wait_for_client_reports_whether_a_task_was_connected(db_url: str, pg_server: str) -> None:
    name = str(psycopg.conninfo.conninfo_to_dict(db_url)["dbname"])
    waited, connected = wait_for_client(pg_server, name, timeout_s=0.3)
    assert connected is False and waited >= 0.3          # nobody connected: said so, after the timeout
    with psycopg.connect(db_url) as task:                 # a task holding a connection
        task.execute("SELECT 1")
        waited, connected = wait_for_client(pg_server, name, timeout_s=5.0)
    assert connected is True and waited < 5.0
    # the admin connection itself (to another database) never counts as a task
    assert wait_for_client(pg_server, "no_such_database", timeout_s=0.1)[1] is False
