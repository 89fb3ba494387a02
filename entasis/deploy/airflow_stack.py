"""Airflow as a real deployment on one machine: PostgreSQL metadata, LocalExecutor, four components.

``make airflow`` (``entasis airflow up``) and the integration test both start the stack through
:class:`AirflowStack`, so the test exercises exactly what users run:

* metadata in PostgreSQL: ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` when set, else a separate
  ``airflow`` database on the same server as the Entasis store (the embedded one by default);
* ``LocalExecutor``; ``airflow api-server``, ``scheduler``, ``dag-processor`` and ``triggerer`` as
  separate processes sharing one JWT secret (tasks authenticate to the execution API with it);
* the simple auth manager with one ``admin`` user whose password is generated once and kept in
  ``$AIRFLOW_HOME/simple_auth_manager_passwords.json`` (mode 0600), printed at start-up.

Every component logs to ``$AIRFLOW_HOME/logs/<component>.log``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN = "admin"


class StackError(RuntimeError):
    """The Airflow stack could not be prepared or did not come up; the message says which part."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sqlalchemy_url(libpq_url: str) -> str:
    """The SQLAlchemy (psycopg2) form of a libpq URL or key/value conninfo."""
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(libpq_url)
    user = quote(str(info.get("user") or "postgres"), safe="")
    pw = info.get("password")
    auth = f"{user}:{quote(str(pw), safe='')}" if pw else user
    host = info.get("host") or "127.0.0.1"
    port = info.get("port") or "5432"
    return f"postgresql+psycopg2://{auth}@{host}:{port}/{info.get('dbname', 'airflow')}"


def metadata_url(store_url: str, *, database: str = "airflow") -> str:
    """``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` when set; else ``database`` on the store's server, created if missing."""
    given = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if given:
        return given
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    info: dict[str, str] = {k: str(v) for k, v in conninfo_to_dict(store_url).items() if v is not None}
    admin = make_conninfo(**{**info, "dbname": "postgres"})
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
                conn.execute(f'CREATE DATABASE "{database}"')
                log.info("created the Airflow metadata database %r", database)
    except psycopg.Error as e:
        raise StackError(f"cannot create the Airflow metadata database {database!r} on the store's server "
                         f"({type(e).__name__}: {e}); create it or set AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") from None
    return sqlalchemy_url(make_conninfo(**{**info, "dbname": database}))


def _secret(path: Path, n: int = 32) -> str:
    """A random secret kept in ``path`` (0600) so restarts and every component agree on it."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(n)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


@dataclass
class AirflowStack:
    """The four Airflow components as child processes of this one."""

    home: Path
    store_url: str
    port: int = 8080
    host: str = "127.0.0.1"
    extra_env: dict[str, str] = field(default_factory=dict)
    parallelism: int = 4
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def password_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json"

    def password(self) -> str:
        return str(json.loads(self.password_file.read_text())[ADMIN])

    def env(self) -> dict[str, str]:
        """The environment every component (and so every task) runs with."""
        self.home.mkdir(parents=True, exist_ok=True)
        if not self.password_file.exists():
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({ADMIN: secrets.token_urlsafe(12)}, fh)
        bindir = str(Path(sys.executable).parent)
        env = dict(os.environ)
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW_CONFIG": str(REPO / "airflow.cfg"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url(self.store_url),
            "AIRFLOW__API__HOST": self.host,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": _secret(self.home / ".jwt_secret"),
            "AIRFLOW__API__SECRET_KEY": _secret(self.home / ".api_secret_key"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.password_file),
            "ENTASIS_DATABASE_URL": self.store_url,
            "PATH": f"{bindir}:{env.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "plugins"), env.get("PYTHONPATH", "")) if p),
        })
        env.update(self.extra_env)
        return env

    def migrate(self, env: dict[str, str] | None = None) -> None:
        """``airflow db migrate`` against the metadata database (a no-op when up to date)."""
        env = env or self.env()
        out = subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=env,
                             capture_output=True, text=True, timeout=600, check=False)
        if out.returncode != 0:
            raise StackError(f"airflow db migrate failed: {(out.stderr or out.stdout)[-2000:]}")

    def start(self, *, timeout: float = 180) -> AirflowStack:
        env = self.env()
        self.migrate(env)
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        airflow = str(Path(sys.executable).parent / "airflow")
        for comp in COMPONENTS:
            fh = open(logs / f"{comp}.log", "ab")  # noqa: SIM115 - closed in stop()
            self._logs.append(fh)
            args = [airflow, comp] + (["--port", str(self.port), "--host", self.host] if comp == "api-server" else [])
            self.procs[comp] = subprocess.Popen(args, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                                start_new_session=True)
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout: float) -> None:
        """Until the API answers and reports the scheduler, dag processor and triggerer healthy."""
        import requests

        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            for comp, p in self.procs.items():
                if p.poll() is not None:
                    raise StackError(f"airflow {comp} exited with {p.returncode}; see "
                                     f"{self.home / 'logs' / (comp + '.log')}")
            try:
                r = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5)
                if r.ok:
                    h = r.json()
                    bad = [k for k in ("metadatabase", "scheduler", "dag_processor", "triggerer")
                           if (h.get(k) or {}).get("status") != "healthy"]
                    if not bad:
                        return
                    last = f"unhealthy: {bad}"
                else:
                    last = f"HTTP {r.status_code}"
            except requests.RequestException as e:
                last = type(e).__name__
            time.sleep(1)
        raise StackError(f"Airflow did not become healthy within {timeout:.0f}s ({last}); logs in {self.home / 'logs'}")

    def token(self) -> str:
        """A JWT from the simple auth manager's token endpoint (POST /auth/token)."""
        import requests

        r = requests.post(f"{self.url}/auth/token", json={"username": ADMIN, "password": self.password()},
                          timeout=30)
        if r.status_code != 201:
            raise StackError(f"login failed: HTTP {r.status_code} {r.text[:200]}")
        return str(r.json()["access_token"])

    def stop(self) -> None:
        """SIGTERM every component's process group, then SIGKILL what is left after 30 s."""
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 30
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)
        self.procs.clear()
        for fh in self._logs:
            fh.close()
        self._logs.clear()

    def __enter__(self) -> AirflowStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
