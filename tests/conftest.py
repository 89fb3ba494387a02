"""Shared fixtures: a real embedded PostgreSQL server, fresh databases per test, shared data."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
TEMPLATE_DB = "entasis_test_template"


def pytest_configure(config: pytest.Config) -> None:
    """Airflow state for the test run lives in a temp dir, with our dags/ and no examples."""
    import tempfile

    if "AIRFLOW_HOME" not in os.environ:
        os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="entasis_airflow_")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Under CI=true a test that would skip for a missing prerequisite fails instead.

    CI has the real data, the JDK, the JDBC driver and every server; a skip there hides a broken
    install step. Only tests marked ``gpu`` may skip (CI never has a GPU).
    """
    outcome = yield
    report = outcome.get_result()
    if report.skipped and _in_ci() and item.get_closest_marker("gpu") is None and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which must have every prerequisite: {reason}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    """A real PostgreSQL server for the whole session, stopped cleanly at the end.

    With ENTASIS_TEST_DATABASE_URL set, an external server is used instead (e.g. TimescaleDB).
    """
    from entasis.store import embedded

    ext = os.environ.get("ENTASIS_TEST_DATABASE_URL")
    if ext:
        yield ext
        return
    # Not under pytest's basetemp: pytest prunes old basetemp folders, and another pytest session
    # on the same machine could delete a running server's data directory.
    import shutil
    import tempfile

    given = os.environ.get("ENTASIS_TEST_HOME")
    home = Path(given) if given else Path(tempfile.mkdtemp(prefix="entasis_pg_"))
    server = embedded.ensure_running(home, preferred_port=0)
    try:
        yield server.admin_url
    finally:
        embedded.stop(home)
        if not given:
            shutil.rmtree(home, ignore_errors=True)


def _swap_db(url: str, name: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    info = conninfo_to_dict(url)
    info["dbname"] = name
    return make_conninfo(**info)


@pytest.fixture(scope="session")
def _template(pg_server: str) -> str:
    """A migrated template database; each test clones it (fast) instead of migrating again."""
    import psycopg

    from entasis.store.migrate import upgrade

    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"')
        conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    with psycopg.connect(_swap_db(pg_server, TEMPLATE_DB), autocommit=True) as conn:
        upgrade(conn)
    return TEMPLATE_DB


@pytest.fixture
def db_url(pg_server: str, _template: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh migrated database for this test; ENTASIS_DATABASE_URL points at it."""
    import psycopg

    from entasis.config import get_settings

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_template}"')
    url = _swap_db(pg_server, name)
    monkeypatch.setenv("ENTASIS_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        yield url
    finally:
        get_settings.cache_clear()
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (or ENTASIS_SHARED_DATA); skips when absent, as in a user's clone."""
    p = Path(os.environ.get("ENTASIS_SHARED_DATA") or REPO.parent / "shared" / "data")
    if not (p / "SOURCES.md").exists():
        pytest.skip(f"real market data not found at {p} (set ENTASIS_SHARED_DATA)")
    return p


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test's ENTASIS_HOME (MLflow store, reports) out of the repo's .entasis."""
    from entasis.config import get_settings

    monkeypatch.setenv("ENTASIS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ENTASIS_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.delenv("ENTASIS_CONFIG", raising=False)
    get_settings.cache_clear()


@pytest.fixture
def sim_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """``sim_env(server, retries=None, **ENTASIS_VARS)`` points the exchange client at a simulated exchange:
    ENTASIS_SIM_URL, the given ENTASIS_* variables, and with ``retries`` that many retries on a short
    backoff; the server's faults and call counters start clean and settings are re-read. Its faults are
    cleared again, and settings re-read, at teardown."""
    from entasis.config import get_settings

    used: list[Any] = []

    def point(server: Any, *, retries: int | None = None, **env: str) -> Any:
        monkeypatch.setenv("ENTASIS_SIM_URL", server.url)
        if retries is not None:
            monkeypatch.setenv("ENTASIS_EXCHANGE__MAX_RETRIES", str(retries))
            monkeypatch.setenv("ENTASIS_EXCHANGE__BACKOFF_BASE_S", "0.01")
            monkeypatch.setenv("ENTASIS_EXCHANGE__BACKOFF_MAX_S", "0.05")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        server.faults.clear()
        server.reset_calls()
        used.append(server)
        return server

    yield point
    for server in used:
        server.faults.clear()
    get_settings.cache_clear()
